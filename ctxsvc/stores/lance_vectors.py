"""Filling in the vectors of a committed index, one batch at a time.

An index run commits text, symbols and the graph first (queryable at once),
then the vectors fill in behind it: each batch of vectors is one atomic add
to the index's vectors table, and every so often the ``repos`` row is
committed again pinning the vectors table's new version, so that readers
see the share grow. Vectors are keyed by content hash and only ever added
while filling, so a batch embedded while a text run committed still serves
every chunk of that text. The caller holds the repository lock around each
call here, and never while it embeds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ctxsvc.errors import CtxError, StoreError
from ctxsvc.stores.lance_ann import ensure, needed
from ctxsvc.stores.lance_reader import RepoReader, cause, content_hashes
from ctxsvc.stores.lance_schema import IndexMeta, pa, schemas
from ctxsvc.stores.lance_snapshots import dropped_note, keep_age, kept_hashes
from ctxsvc.stores.lance_writer import NEVER, delete_rows, prune, write
from ctxsvc.stores.locks import FileLock

if TYPE_CHECKING:
    from ctxsvc.stores.lance import LanceStore

log = logging.getLogger("ctxsvc.store")


class VectorWriter:
    """Adds vectors to the vectors table ``meta`` names, and commits their share.

    ``meta`` is the row committed now; it must name a vectors table (an index
    embedded by a model). Reads the chunks ``meta`` pins to know what lacks a
    vector.
    """

    def __init__(self, store: LanceStore, meta: IndexMeta) -> None:
        self.store = store
        self._reader = RepoReader(store, meta)
        self.meta = self._reader.meta  # a run may have committed since: read at that row
        self.table_name = self.meta.table("vectors")
        chunks = self._reader.chunks()
        try:
            self._vectors = store.open(self.table_name)  # its latest version: never rolled back
            got = content_hashes(self._vectors)
        except CtxError:
            raise
        except Exception as exc:  # Lance raises several types (see lance_reader)
            raise StoreError(
                f"reading the vectors of {self.meta.name!r} failed: {cause(exc)}",
                hint="the index answers without them; `ctxsvc index` embeds again what it lacks",
            ) from exc
        self._hashes: set[str] = set(got)
        self._chunk_hashes = [c.content_hash for c in chunks]
        self._texts = {
            c.content_hash: c.embed_text for c in chunks if c.content_hash not in self._hashes
        }
        self._schema = schemas(self.meta.dimension)["vectors"]

    def missing(self) -> dict[str, str]:
        """What to embed: content hash -> the text the model reads, for every chunk
        of the committed index without a vector."""
        return {h: t for h, t in self._texts.items() if h not in self._hashes}

    def embedded(self) -> int:
        """How many of the index's chunks have a vector."""
        return sum(1 for h in self._chunk_hashes if h in self._hashes)

    def add(self, hashes: Sequence[str], vectors: npt.NDArray[np.float32]) -> None:
        """Append one batch: one atomic commit, kept across crashes."""
        fresh = [i for i, h in enumerate(hashes) if h not in self._hashes]
        if not fresh:
            return
        arrow = pa()
        kept = np.ascontiguousarray(vectors[fresh], dtype=np.float32)
        data = arrow.Table.from_arrays(
            [
                arrow.array([hashes[i] for i in fresh], arrow.string()),
                arrow.FixedSizeListArray.from_arrays(arrow.array(kept.reshape(-1)), kept.shape[1]),
            ],
            schema=self._schema,
        )
        write(f"storing vectors of {self.meta.name!r}", partial(self._vectors.add, data))
        self._hashes.update(hashes[i] for i in fresh)

    def commit(self) -> IndexMeta:
        """Pin the vectors stored so far in the ``repos`` row: readers see them.

        Once every chunk has its vector, the vectors of chunks gone since are
        deleted (not those a branch snapshot's chunks use), the table compacted,
        and versions no reader can pin pruned.
        """
        done = len(self.missing()) == 0
        table = self._vectors
        snapshots = self.meta.snapshots
        if done:
            kept, lost = kept_hashes(self.store, snapshots)
            for note in dropped_note(self.meta.name, lost):
                log.warning(note)
            snapshots = tuple(s for s in snapshots if all(s is not x for x, _ in lost))
            # A snapshot unread for want of a resource: none is stale this time.
            stale = (
                sorted(self._hashes - set(self._chunk_hashes) - kept) if kept is not None else []
            )
            delete_rows(
                table, "content_hash", stale, f"deleting stale vectors of {self.meta.name!r}"
            )
            self._hashes.difference_update(stale)
            write(
                f"compacting the vectors of {self.meta.name!r}",
                partial(table.optimize, cleanup_older_than=NEVER),
            )
        compacted = time.monotonic()
        embedded = self.embedded()
        meta = replace(
            self.meta,
            versions={**self.meta.versions, "vectors": int(table.version)},
            vectors="complete" if done else "partial",
            stats={**self.meta.stats, "embedded": embedded},
            snapshots=snapshots,
        )
        self.store.commit_meta(meta)
        self.meta = meta
        if done:
            keep = keep_age(table, self.table_name, "vectors", snapshots)
            prune(table, compacted, self.meta.name, keep=keep)
        log.info(
            "vectors committed",
            extra={"repo": meta.name, "embedded": embedded, "chunks": len(self._chunk_hashes)},
        )
        return meta


def index_wanted(store: LanceStore, name: str) -> bool:
    """Whether the complete vectors of ``name`` call for an approximate index build (or
    drop) not done yet: a count and the table's index list."""
    try:
        return _due(store, store.meta(name)) is not None
    except Exception:  # a damaged table (Lance raises several types): the next read says so
        return False


def _due(store: LanceStore, meta: IndexMeta | None) -> Any | None:
    """The latest version of ``meta``'s vectors table when it is complete and its
    approximate index is due, and the last build did not fail at that version."""
    if meta is None or meta.vectors != "complete" or "vectors" not in meta.versions:
        return None
    table = store.open(meta.table("vectors"))  # latest: a killed run may have left more
    if store.ann_failures.get(meta.table("vectors")) == int(table.version):
        return None  # failed at this very version: not again until the vectors change
    return table if needed(table, store.ann_min_vectors) else None


def index_vectors(store: LanceStore, name: str, lock: Path) -> str | None:
    """Give the complete vectors of index ``name`` the approximate index their number
    calls for (``ctxsvc.stores.lance_ann``), and pin it in the ``repos`` row.

    The caller holds the fill lock, not the repository lock ``lock``: a build takes
    minutes at a million vectors, and index runs go on meanwhile. The build works on
    the table's latest version. The row is re-pinned to it, under ``lock``, only if
    that version holds the very vectors the row pins (compared before the lock: both
    versions are immutable) and the row still pins them; a run that committed since
    pins the latest version itself. Returns a warning when anything failed: the
    vectors are then searched as before, and no build is tried again in this process
    until the table has another version.
    """
    meta = store.meta(name)
    if meta is None or "vectors" not in meta.versions:
        return None
    table_name = meta.table("vectors")
    pinned = meta.versions["vectors"]
    table: Any = None
    try:
        table = _due(store, meta)
        if table is None:
            return None
        ensure(table, store.ann_min_vectors, f"the vectors of {name!r}")
        latest = int(table.version)
        old = store.open(table_name, pinned)
        if pinned < latest and set(content_hashes(old)) == set(content_hashes(table)):
            with FileLock(lock, f"index {name!r}", wait=True):
                current = store.meta(name)
                if (
                    current is not None
                    and current.table("vectors") == table_name
                    and current.versions.get("vectors") == pinned
                ):
                    versions = {**current.versions, "vectors": latest}
                    store.commit_meta(replace(current, versions=versions))
    except Exception as exc:  # Lance raises several types (see lance_reader); ours too
        if table is not None:
            store.ann_failures[table_name] = int(table.version)
        detail = exc.message if isinstance(exc, CtxError) else cause(exc)
        why = (
            f"building the approximate vector index of {name!r} failed: {detail}; its "
            "vectors are searched as before, and a run that changes them tries again"
        )
        log.warning(why, extra={"repo": name})
        return why
    store.ann_failures.pop(table_name, None)
    return None
