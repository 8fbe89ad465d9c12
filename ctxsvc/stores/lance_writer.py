"""Writing one repository's index: :class:`RepoWriter`, and :func:`write`, the retry
every write to Lance goes through.

How a run commits, and what a failed or killed write leaves behind, is told in
``ctxsvc.stores.lance``.
"""

from __future__ import annotations

import errno
import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import numpy.typing as npt

from ctxsvc.errors import StoreCorrupt, StoreError
from ctxsvc.models import Chunk, FileRecord, Import, Reference, Symbol, embed_text
from ctxsvc.stores.lance_schema import (
    DATA_TABLES,
    IndexMeta,
    file_records,
    in_list,
    pa,
    path_id,
    schemas,
    with_path_id,
)

if TYPE_CHECKING:
    from ctxsvc.stores.lance import LanceStore

DELETE_BATCH = 400
WRITE_ATTEMPTS = 3
WRITE_BACKOFF_SECONDS = 0.2  # then 0.8, each with jitter
log = logging.getLogger("ctxsvc.stores.lance")  # the logger of the index store, as before the split
T = TypeVar("T")


def _disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says no more can be written: ENOSPC, EFBIG, or a quota."""
    codes = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
    if isinstance(exc, OSError) and exc.errno in codes:
        return True
    text = str(exc)
    return any(f"os error {n})" in text or f"Errno {n}]" in text for n in codes) or any(
        m in text for m in ("No space left", "File too large", "Disk quota exceeded")
    )


def write(what: str, fn: Callable[[], T]) -> T:
    """``fn()``, retried on I/O failures with backoff; then ``StoreError`` naming ``what``."""
    for attempt in range(WRITE_ATTEMPTS):
        try:
            return fn()
        except (OSError, RuntimeError) as exc:
            if attempt + 1 == WRITE_ATTEMPTS:
                full = _disk_full(exc)
                raise StoreError(
                    f"{what} failed after {WRITE_ATTEMPTS} attempts: {exc}",
                    hint=("the disk is full or the file size limit was reached; " if full else "")
                    + "the previous index version is intact and still answers; "
                    "run the index again once the cause is fixed",
                ) from exc
            delay = WRITE_BACKOFF_SECONDS * 4**attempt * random.uniform(0.5, 1.0)
            log.warning(
                "index write failed, retrying",
                extra={"what": what, "attempt": attempt + 1, "error": str(exc)[:300]},
            )
            time.sleep(delay)
    raise AssertionError("unreachable")


class RepoWriter:
    """Writes one repository's tables; :meth:`commit` publishes them."""

    def __init__(
        self, store: LanceStore, name: str, dimension: int | None, drop_vectors: bool
    ) -> None:
        self.store = store
        self.name = name
        self.dimension = dimension
        # Over an outdated index: none to build on; its tables, of another schema, are
        # dropped below as a first run's, and commit() replaces its row.
        self.previous = None if store.outdated(name) else store.meta(name)
        self._schemas = schemas(dimension)
        self._tables: dict[str, Any] = {}
        existing = store.table_names()
        for t in DATA_TABLES:
            full = f"{name}__{t}"
            pinned = self.previous.versions.get(t) if self.previous else None
            if full in existing and pinned is None:
                store.drop_table(full)  # left by a first run that never committed
                existing.discard(full)
            if full in existing:
                table = store.open(full)
                if table.version != pinned:
                    # A run died after writing this table: roll back to the pin.
                    table.checkout(pinned)
                    table.restore()
                self._tables[t] = table
            else:
                self._tables[t] = store.create_table(full, self._schemas[t])
        if drop_vectors and f"{name}__vectors" in existing:
            store.drop_table(f"{name}__vectors")
            existing.discard(f"{name}__vectors")
        self._vectors = self._open_vectors(existing)

    def _open_vectors(self, existing: set[str]) -> Any | None:
        full = f"{self.name}__vectors"
        if self.dimension is None:
            return self.store.open(full) if full in existing else None
        if full in existing:
            table = self.store.open(full)
            dim = table.schema.field("vector").type.list_size
            if dim != self.dimension:
                raise StoreCorrupt(
                    f"vector table {full} has dimension {dim}, expected {self.dimension}"
                )
            return table
        return self.store.create_table(full, self._schemas["vectors"])

    # -- reads --------------------------------------------------------------

    def files(self) -> dict[str, FileRecord]:
        return file_records(self._tables["files"])

    def vector_hashes(self) -> set[str]:
        if self._vectors is None:
            return set()
        return set(self._vectors.to_arrow().column("content_hash").to_pylist())

    def chunk_hashes(self) -> set[str]:
        return set(self._tables["chunks"].to_arrow().column("content_hash").to_pylist())

    def counts(self, tables: Sequence[str]) -> dict[str, int]:
        return {t: int(self._tables[t].count_rows()) for t in tables}

    def embed_texts(self, hashes: set[str]) -> dict[str, str]:
        """What to embed for stored chunks whose content hash is in ``hashes``."""
        cols = (
            self._tables["chunks"].to_arrow().select(["content_hash", "header", "text"]).to_pylist()
        )
        return {
            r["content_hash"]: embed_text(r["header"], r["text"])
            for r in cols
            if r["content_hash"] in hashes
        }

    # -- writes -------------------------------------------------------------

    def add_vectors(self, hashes: Sequence[str], vectors: npt.NDArray[np.float32]) -> None:
        """Append one batch of vectors: one atomic commit, kept across crashes."""
        if self._vectors is None or not hashes:
            return
        arrow = pa()
        dim = vectors.shape[1]
        flat = arrow.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
        data = arrow.Table.from_arrays(
            [
                arrow.array(list(hashes), arrow.string()),
                arrow.FixedSizeListArray.from_arrays(flat, dim),
            ],
            schema=self._schemas["vectors"],
        )
        write(f"storing vectors of {self.name!r}", partial(self._vectors.add, data))

    def replace_paths(
        self,
        removed: Iterable[str],
        files: Sequence[FileRecord],
        chunks: Sequence[Chunk],
        symbols: Sequence[Symbol],
        refs: Sequence[Reference],
        imports: Sequence[Import],
        terms: Sequence[str],
    ) -> None:
        """Delete every row of ``removed`` paths, then add the given rows.

        ``terms`` holds the full-text terms of each chunk, in order.
        """
        ids = sorted({path_id(p) for p in removed})
        for t in DATA_TABLES:
            _delete(self._tables[t], "path_id", ids, f"deleting rows of {self.name!r}")
        rows = {
            "files": [with_path_id(asdict(f), f.path) for f in files],
            "chunks": [
                with_path_id({**asdict(c), "symbols": list(c.symbols), "terms": tm}, c.path)
                for c, tm in zip(chunks, terms, strict=True)
            ],
            "symbols": [
                with_path_id({**asdict(s), "parent": s.parent or ""}, s.path) for s in symbols
            ],
            "refs": [with_path_id({**asdict(r), "scope": r.scope or ""}, r.path) for r in refs],
            "imports": [
                with_path_id({**asdict(i), "names": list(i.names)}, i.path) for i in imports
            ],
        }
        arrow = pa()
        for t, data in rows.items():
            if data:
                schema = self._schemas[t]
                table = arrow.Table.from_pylist(
                    [{k: r.get(k) for k in schema.names} for r in data], schema=schema
                )
                write(f"writing {t} of {self.name!r}", partial(self._tables[t].add, table))

    def commit(self, meta: IndexMeta, *, rebuild_fts: bool) -> IndexMeta:
        """Index, garbage-collect and compact, then pin the new versions."""
        from lancedb.index import FTS

        chunks = self._tables["chunks"]
        config = FTS(
            base_tokenizer="whitespace", lower_case=True, stem=True, remove_stop_words=True
        )
        if chunks.count_rows() and (rebuild_fts or not chunks.list_indices()):
            write(
                f"building the full-text index of {self.name!r}",
                lambda: chunks.create_index("terms", config=config, replace=True),
            )
        vectors = self._vectors
        if vectors is not None and meta.vectors == "complete":
            stale = sorted(self.vector_hashes() - self.chunk_hashes())
            _delete(vectors, "content_hash", stale, f"deleting stale vectors of {self.name!r}")
        keep = timedelta(minutes=10)  # readers pinned to older versions finish well within this
        for table in [*self._tables.values(), vectors]:
            if table is not None:
                write(
                    f"compacting {self.name!r}",
                    partial(table.optimize, cleanup_older_than=keep),
                )
        versions = {t: int(self._tables[t].version) for t in DATA_TABLES}
        if self._vectors is not None:
            versions["vectors"] = int(self._vectors.version)
        pinned = IndexMeta(**{**asdict(meta), "versions": versions})
        self.store.commit_meta(pinned)
        return pinned


def _delete(table: Any, column: str, values: Sequence[str], what: str) -> None:
    """Delete the rows of ``table`` whose ``column`` is in ``values``, a batch at a time."""
    for i in range(0, len(values), DELETE_BATCH):
        where = f"{column} IN ({in_list(values[i : i + DELETE_BATCH])})"
        write(what, partial(table.delete, where))
