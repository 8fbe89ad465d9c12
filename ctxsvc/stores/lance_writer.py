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
from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from ctxsvc.errors import CtxError, StoreCorrupt, StoreError
from ctxsvc.models import Chunk, FileRecord, Import, Reference, Symbol
from ctxsvc.stores.lance_reader import Unreadable, cause, check_files
from ctxsvc.stores.lance_schema import (
    ALL_TABLES,
    DATA_TABLES,
    IndexMeta,
    file_records,
    in_list,
    pa,
    path_id,
    schemas,
    table_name,
    with_path_id,
)
from ctxsvc.stores.lance_snapshots import keep_age, kept_hashes, usable

if TYPE_CHECKING:
    from ctxsvc.stores.lance import LanceStore, OutdatedIndex

DELETE_BATCH = 400
WRITE_ATTEMPTS = 3
WRITE_BACKOFF_SECONDS = 0.2  # then 0.8, each with jitter
# A run prunes versions older than this once its commit has moved readers on
# (readers still on an older one re-pin: see lance_reader).
KEEP_VERSIONS = timedelta(minutes=10)
RETIRED_GRACE = timedelta(minutes=10)  # how long a rebuild keeps the set it replaced
NEVER = timedelta(days=36500)  # compaction before a commit prunes nothing
PIN_MARGIN = timedelta(seconds=1)  # clock slack when pruning up to the version just pinned
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
    """Writes one repository's tables; :meth:`commit` publishes them.

    ``vectors_lost`` says why the stored vectors could not be used (they
    were unreadable, and a new vectors table starts empty), when so;
    ``snapshots_lost``, the branch snapshots the commit dropped as unreadable.
    """

    def __init__(
        self, store: LanceStore, name: str, dimension: int | None, drop_vectors: bool, rebuild: bool
    ) -> None:
        self.store = store
        self.name = name
        self.dimension = dimension
        self.vectors_lost: str | None = None
        # The snapshots the commit dropped, unreadable (and why).
        self.snapshots_lost: list[tuple[IndexMeta, str]] = []
        found = store.find(name)
        # Over an outdated index: none to build on; this run writes a new set, and
        # commit() replaces its row.
        self.previous = found if isinstance(found, IndexMeta) else None
        in_use, retired = _in_use(name, found)
        self._retired = self._drop_unused(in_use, retired)
        self._n = 1 + max(store.tables_of(name).values(), default=-1)  # the next set's number
        self._schemas = schemas(dimension)
        self._replaced: list[str] = []  # tables in use that the commit retires
        self._names: dict[str, str] = {}
        self._tables: dict[str, Any] = {}
        self._behind: set[str] = set()  # tables read at their pin, restored before a write
        fresh = rebuild or self.previous is None
        for t in DATA_TABLES:
            if fresh:
                if t in in_use:
                    self._replaced.append(in_use[t])
                self._names[t] = table_name(name, t, self._n)
                self._tables[t] = store.create_table(self._names[t], self._schemas[t])
            else:
                assert self.previous is not None
                self._names[t] = in_use[t]
                self._tables[t] = self._reopen(self.previous, t)
        self._hashes: set[str] = set()
        self._vectors = self._open_vectors(in_use.get("vectors"), drop_vectors)
        self._wrote = False  # a row added or deleted by replace_paths

    def _drop_unused(self, in_use: dict[str, str], retired: dict[str, str]) -> dict[str, str]:
        """Drop the tables of this index that no reader can pin: left by a run that
        never committed, or retired longer than ``RETIRED_GRACE`` ago; the retired
        tables kept, with when they were retired."""
        now = datetime.now(UTC)
        keep: dict[str, str] = {}
        for t, when in retired.items():
            try:
                recent = now - datetime.fromisoformat(when) < RETIRED_GRACE
            except (TypeError, ValueError):
                recent = False
            if recent:
                keep[t] = when
        for t in self.store.tables_of(self.name):
            if t not in in_use.values() and t not in keep:
                log.info("dropping an unused table", extra={"repo": self.name, "table": t})
                self.store.drop_table(t)
        return keep

    def _reopen(self, previous: IndexMeta, t: str) -> Any:
        """Table ``t`` as ``previous`` pins it, checked, and writable from there."""
        full, pinned = previous.table(t), previous.versions[t]
        try:
            if self.store.path is not None:  # on object storage the reads find what is gone
                check_files(self.store.path / f"{full}.lance", pinned)
        except Unreadable as exc:
            raise self.store.corrupt(previous, t, exc.cause) from None
        table = self.store.open(full)
        if table.version != pinned:
            # A run died after writing this table (or a commit's prune made a version after
            # the pin): read at the pin, and back to it before the first write, so that a run
            # that writes nothing writes no version either.
            table.checkout(pinned)
            self._behind.add(t)
        return table

    def _writable(self, t: str) -> Any:
        """Table ``t``, its latest version made its pin's again if it was behind."""
        table = self._tables[t]
        if t in self._behind:
            write(f"restoring {t} of {self.name!r}", table.restore)
            self._behind.discard(t)
        return table

    def _open_vectors(self, old: str | None, drop: bool) -> Any | None:
        """The vectors table to add to: the stored one unless ``drop``, or unreadable."""
        if old is not None and old not in self.store.table_names():
            old = None
        if old is not None and drop:
            self._replaced.append(old)
            old = None
        if old is not None:
            try:
                table = self.store.open(old)  # its latest version: vectors are never rolled back
                if self.dimension is not None:
                    got = table.search().select(["content_hash"]).limit(None).to_arrow()
                    self._hashes = set(got.column("content_hash").to_pylist())
            except Exception as exc:  # damaged: embedded again, not a failed run
                self.vectors_lost = cause(exc)
                log.warning(
                    "stored vectors unreadable", extra={"repo": self.name, "error": cause(exc)}
                )
                self._replaced.append(old)
                old = None
            else:
                dim = table.schema.field("vector").type.list_size
                if self.dimension is not None and dim != self.dimension:
                    raise StoreCorrupt(
                        f"vector table {old} has dimension {dim}, expected {self.dimension}"
                    )
                self._names["vectors"] = old
                return table
        if self.dimension is None:
            return None
        self._names["vectors"] = table_name(self.name, "vectors", self._n)
        return self.store.create_table(self._names["vectors"], self._schemas["vectors"])

    # -- reads --------------------------------------------------------------

    def files(self) -> dict[str, FileRecord]:
        return self._read("files", file_records)

    @property
    def has_vectors(self) -> bool:
        """Whether this index has a vectors table (it was embedded by some model)."""
        return self._vectors is not None

    def vector_hashes(self) -> set[str]:
        """The content hashes that have a vector."""
        return set(self._hashes) if self._vectors is not None else set()

    def chunk_hashes(self) -> set[str]:
        return self._read(
            "chunks",
            lambda t: set(
                t.search().select(["content_hash"]).limit(None).to_arrow().column(0).to_pylist()
            ),
        )

    def chunk_hash_list(self) -> list[str]:
        """The content hash of every chunk, one per chunk (chunks may share one)."""
        return self._read(
            "chunks",
            lambda t: [
                str(h)
                for h in t.search().select(["content_hash"]).limit(None).to_arrow().column(0)
                .to_pylist()
            ],
        )  # fmt: skip

    def counts(self, tables: Sequence[str]) -> dict[str, int]:
        return {t: self._read(t, lambda table: int(table.count_rows())) for t in tables}

    def _read(self, t: str, fn: Callable[[Any], T]) -> T:
        """``fn`` of table ``t``; a table the previous commit pins that fails is damaged."""
        try:
            return fn(self._tables[t])
        except CtxError:
            raise
        except Exception as exc:  # Lance raises several types (see lance_reader)
            if self.previous is not None and self._names[t] == self.previous.table(t):
                raise self.store.corrupt(self.previous, t, cause(exc)) from exc
            raise StoreError(
                f"reading {t} of {self.name!r} failed: {cause(exc)}",
                hint="the previous index version is intact and still answers; run the index again",
            ) from exc

    # -- writes -------------------------------------------------------------

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
        self._wrote = self._wrote or bool(ids or files or chunks or symbols or refs or imports)
        for t in DATA_TABLES:
            if ids:
                delete_rows(self._writable(t), "path_id", ids, f"deleting rows of {self.name!r}")
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
                write(f"writing {t} of {self.name!r}", partial(self._writable(t).add, table))

    def changes_nothing(self, meta: IndexMeta) -> bool:
        """Whether committing ``meta`` would give readers the index the row pins now: the
        same tables, no row written or deleted, nothing retired or dropped, and ``meta``
        saying what the row says (commit, branch, model, vectors, counts...). Such a run
        (a refresh that found every file as indexed) commits nothing, and writes no table
        version: a new generation would cost a compaction, and every process's view a
        reload, for nothing. The row's ``indexed_at`` stays the time its text last changed."""
        before = self.previous
        if before is None or self._wrote or self._replaced or self._retired != before.retired:
            return False
        if self.name in self.store.damaged():  # a commit clears what was found damaged
            return False
        tables = {t: before.table(t) for t in before.versions}
        return self._names == tables and _facts(meta) == _facts(before)

    def commit(self, meta: IndexMeta, *, rebuild_fts: bool) -> IndexMeta:
        """Index and compact, pin the new versions, then prune versions nobody pins.

        Of ``meta.snapshots``, those naming this run's tables are kept: their
        chunks' vectors are not stale, their versions are not pruned.
        """
        from lancedb.index import FTS

        for t in DATA_TABLES:
            self._writable(t)  # every table at its pin's content again before versions are pinned
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
        snapshots = usable(meta.snapshots, self._names)
        kept, self.snapshots_lost = kept_hashes(self.store, snapshots)
        snapshots = tuple(
            s for s in snapshots if all(s is not lost for lost, _ in self.snapshots_lost)
        )
        if vectors is not None and kept is not None and meta.vectors == "complete":
            stale = sorted(self.vector_hashes() - self.chunk_hashes() - kept)
            delete_rows(vectors, "content_hash", stale, f"deleting stale vectors of {self.name!r}")
            self._hashes.difference_update(stale)
        tables = [*self._tables.items(), *([("vectors", vectors)] if vectors is not None else [])]
        fresh: list[tuple[str, Any]] = []  # tables whose pinned version the compaction just made
        for t, table in tables:
            before = table.version
            # Nothing pruned yet: readers pin the versions of the previous commit.
            write(f"compacting {self.name!r}", partial(table.optimize, cleanup_older_than=NEVER))
            if table.version != before:
                fresh.append((t, table))
        compacted = time.monotonic()
        versions = {t: int(self._tables[t].version) for t in DATA_TABLES}
        if vectors is not None:
            versions["vectors"] = int(vectors.version)
        now = datetime.now(UTC).isoformat(timespec="seconds")
        pinned = replace(
            meta,
            versions=versions,
            tables={t: n for t, n in self._names.items() if t in versions},
            retired={**self._retired, **dict.fromkeys(self._replaced, now)},
            snapshots=snapshots,
        )
        self.store.commit_meta(pinned)
        self.store.repaired(self.name)
        for t, table in fresh:
            keep = keep_age(table, self._names[t], t, snapshots)
            prune(table, compacted, self.name, keep=keep)
        return pinned


def _facts(meta: IndexMeta) -> tuple[Any, ...]:
    """What a row says of its index besides its tables, run and time."""
    return (
        meta.root, meta.commit, meta.branch, meta.model, meta.dimension, meta.tokenizer,
        meta.vectors, meta.stats, tuple(meta.root_identity), meta.head_moved,
        meta.schema_version, meta.snapshots,
    )  # fmt: skip


def prune(table: Any, compacted: float, name: str, *, keep: timedelta = timedelta(0)) -> None:
    """Delete the versions of ``table`` older than ``KEEP_VERSIONS``, now that the row
    pins a newer one.

    Pruning makes a newer version, so the one just pinned is kept by its age:
    only a table whose pinned version a compaction made at ``compacted`` (a
    monotonic time) is pruned, and only of older versions. Nor any version
    younger than ``keep`` (those a branch snapshot pins, and all after them).
    """
    age = timedelta(seconds=time.monotonic() - compacted) + PIN_MARGIN
    try:
        write(
            f"pruning old versions of {name!r}",
            partial(table.optimize, cleanup_older_than=max(KEEP_VERSIONS, age, keep)),
        )
    except StoreError as exc:  # committed: old versions only take room until next time
        log.warning("pruning failed", extra={"repo": name, "error": exc.message})


def _in_use(
    name: str, found: IndexMeta | OutdatedIndex | None
) -> tuple[dict[str, str], dict[str, str]]:
    """The tables the row of ``name`` uses (table -> full name), and those it lists as retired."""
    if isinstance(found, IndexMeta):
        return {t: found.table(t) for t in found.versions}, dict(found.retired)
    if found is None:
        return {}, {}
    # Another schema's row: its tables by their names then, whatever it pinned.
    tables, retired = found.written.get("tables"), found.written.get("retired")
    tables = tables if isinstance(tables, dict) else {}
    retired = retired if isinstance(retired, dict) else {}
    names = {t: str(tables.get(t) or table_name(name, t)) for t in ALL_TABLES}
    return names, {str(k): str(v) for k, v in retired.items()}


def delete_rows(table: Any, column: str, values: Sequence[str], what: str) -> None:
    """Delete the rows of ``table`` whose ``column`` is in ``values``, a batch at a time."""
    for i in range(0, len(values), DELETE_BATCH):
        where = f"{column} IN ({in_list(values[i : i + DELETE_BATCH])})"
        write(what, partial(table.delete, where))
