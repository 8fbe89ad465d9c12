"""The approximate vector index of a large index's vectors table.

Below ``min_rows`` vectors a view holds the whole matrix and searches it by brute
force (exact, about a millisecond per 100K chunks, 1.5 KB per chunk in memory).
From ``min_rows`` on, the vectors table carries an IVF-PQ index: the view then
holds no matrix, and asks Lance for the nearest vectors (the fifth of the
partitions nearest the query, their product-quantized codes, and the best
``REFINE`` times the limit re-ranked on the full vectors read from the table).

The index lives in the table itself, so every version a reader pins says
whether it has one, and readers on other hosts follow it with the version.
It is trained once, on the rows there are; each fill that ends extends it with
its new rows (Lance's ``optimize`` adds them to the trained partitions), and it
is trained again once the table has doubled since (the partitions fit the old
rows). Its name records how many rows it was trained on: the row of the index
is rewritten by every run, the table's indexes are not.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("ctxsvc.store")

PREFIX = "vector_ann_"  # + the rows it was trained on
KIND = "IVF_PQ"
# Partitions searched per query: a fifth of them, 32 at least (``probes``). Chosen on
# moby's 92K static vectors (``benchmarks/ann.py --sweep``; moby is none of the six
# held-out repositories): of 303 partitions, 32 probes found 0.93 of the true top 10 and
# 64 found 0.975 (with 16 re-ranked per result); a fifth is 61.
NPROBES = 32
PROBE_SHARE = 0.2
REFINE = 16  # candidates re-ranked on full vectors, per result
REFINED_MAX = 4096  # and at most this many per query
HASH_INDEX = "content_hash_idx"
# Product quantization trains 256 centroids per sub-vector: with fewer rows Lance
# makes an index that holds none of them.
MIN_ROWS = 256


@dataclass(frozen=True)
class AnnIndex:
    """What a vectors table's approximate index is (``None`` where it has none)."""

    name: str
    trained_rows: int


def find(table: Any) -> AnnIndex | None:
    """The approximate index on ``table``'s vectors (its version as opened), if any."""
    for ix in table.list_indices():
        name = str(getattr(ix, "name", ""))
        if name.startswith(PREFIX) and name[len(PREFIX) :].isdigit():
            return AnnIndex(name, int(name[len(PREFIX) :]))
    return None


def plan(rows: int, dimension: int) -> tuple[int, int]:
    """(partitions, sub-vectors) for ``rows`` vectors of ``dimension``: about the square
    root of the rows in partitions (a thousand at 1M), at most one per 256 rows (what
    Lance trains), and sub-vectors of 8 dimensions (or 4, or 2, whichever divides it)."""
    partitions = max(1, min(4096, round(math.sqrt(rows)), rows // 256))
    width = next(w for w in (8, 4, 2, 1) if dimension % w == 0)
    return partitions, dimension // width


def probes(index: AnnIndex, dimension: int) -> int:
    """Partitions a query searches in ``index``: :data:`PROBE_SHARE` of them, at least
    :data:`NPROBES` (all of them, for a small index)."""
    partitions = plan(index.trained_rows, dimension)[0]
    return max(NPROBES, math.ceil(partitions * PROBE_SHARE))


def needed(table: Any, min_rows: int) -> bool:
    """Whether :func:`ensure` has work on ``table``: cheap (a count and the index list)."""
    rows = int(table.count_rows())
    have = find(table)
    if rows < max(min_rows, MIN_ROWS):
        return have is not None and rows < min_rows // 2
    return have is None or rows >= 2 * have.trained_rows or not _has_hash_index(table)


def ensure(table: Any, min_rows: int, what: str) -> AnnIndex | None:
    """Give ``table`` (its latest version) the approximate index its size calls for:
    none below ``min_rows`` (one there is dropped once the table has shrunk to half of
    it), trained when missing or when the rows have doubled since it was trained.
    The hash index comes first, and a retrained index replaces the old one only once
    it is built and holds the rows. Returns the index the table has now. Lance's
    errors pass through (the caller words them)."""
    rows = int(table.count_rows())
    have = find(table)
    if rows < max(min_rows, MIN_ROWS):
        if have is not None and rows < min_rows // 2:
            table.drop_index(have.name)
            log.info("approximate vector index dropped", extra={"what": what, "rows": rows})
            return None
        return have
    from lancedb.index import BTree, IvfPq  # the lance store's own dependency

    if not _has_hash_index(table):
        # The view reads the vectors of its candidates by hash (``vectors_of``).
        table.create_index("content_hash", config=BTree(), name=HASH_INDEX)
    if have is not None and rows < 2 * have.trained_rows:
        return have
    t0 = time.perf_counter()
    dimension = int(table.schema.field("vector").type.list_size)
    partitions, sub_vectors = plan(rows, dimension)
    name = f"{PREFIX}{rows}"
    table.create_index(
        "vector",
        config=IvfPq(
            distance_type="cosine", num_partitions=partitions, num_sub_vectors=sub_vectors
        ),
        name=name,
        replace=True,
    )
    covered = table.index_stats(name)
    if covered is None or covered.num_indexed_rows == 0:
        table.drop_index(name)
        raise RuntimeError(f"the approximate index of {rows} vectors holds none of them")
    if have is not None:  # readers keep the versions they pin, with the old index
        table.drop_index(have.name)
    log.info(
        "approximate vector index built",
        extra={
            "what": what,
            "rows": rows,
            "partitions": partitions,
            "sub_vectors": sub_vectors,
            "seconds": round(time.perf_counter() - t0, 3),
        },
    )
    return AnnIndex(name, rows)


def _has_hash_index(table: Any) -> bool:
    return any(str(getattr(ix, "name", "")) == HASH_INDEX for ix in table.list_indices())
