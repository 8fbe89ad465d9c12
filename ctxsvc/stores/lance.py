"""LanceDB storage: the one owner of ``lancedb`` and ``pyarrow``.

One database under ``CTXSVC_HOME/lance``. Each repository name owns six
tables (``<name>__files``, ``__chunks``, ``__symbols``, ``__refs``,
``__imports``, ``__vectors``); the ``repos`` table holds one row of metadata
per repository, and that row is the commit point of an index run.

Crash safety rests on Lance's versioned tables. Every write makes a new table
version atomically, but a run writes several tables, so readers never follow
a table's latest version: they check out the versions pinned in the
``repos`` row. A run writes all its tables first and pins their new versions
last, in one atomic merge. A run killed before that leaves the previous pins,
so readers keep seeing the previous, consistent index; the next run restores
each table to its pinned version before it starts. A run over an index of an
older schema writes new tables from empty and replaces the old row only at
its commit: killed before, it leaves that row, which readers refuse with the
rebuild hint, and the vectors (see below).

Vectors are a content-addressed cache (content hash -> vector), appended one
batch per commit and never rolled back, so a killed run loses at most the
batch in flight and the next run resumes from the rest. The chunk whose
content hash has a vector is searchable by vector; rows no chunk refers to
any more are deleted at the end of a successful run.

A write that fails (an I/O error, a full disk) leaves no trace in Lance: the
table keeps its last version. Each write is retried a few times with
exponential backoff and jitter, then fails as ``StoreError`` (retryable) and
the previous index keeps answering.

This module holds the database and its ``repos`` table (:class:`LanceStore`);
``lance_writer`` writes a repository (and retries writes), ``lance_reader``
reads one, ``lance_schema`` spells out the tables. Their public names are
importable from here.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ctxsvc.errors import RepoNotFound, StoreCorrupt, StoreError
from ctxsvc.stores.lance_reader import RepoReader
from ctxsvc.stores.lance_schema import (
    DATA_TABLES,
    SCHEMA_VERSION,
    IndexMeta,
    pa,
    path_id,
    schema,
)
from ctxsvc.stores.lance_writer import WRITE_ATTEMPTS, RepoWriter, write
from ctxsvc.stores.locks import FileLock

__all__ = [
    "DATA_TABLES",
    "SCHEMA_VERSION",
    "WRITE_ATTEMPTS",
    "IndexMeta",
    "LanceStore",
    "OutdatedIndex",
    "RepoReader",
    "RepoWriter",
    "path_id",
    "write",
]


@dataclass(frozen=True)
class OutdatedIndex:
    """A ``repos`` row of another schema version, which this ctxsvc does not read."""

    name: str
    root: str
    schema_version: int
    model: str | None  # whose vectors the index holds
    dimension: int | None
    written: dict[str, Any]  # the row's metadata as that version wrote it (for status)

    def error(self) -> StoreCorrupt:
        """What reading this index raises: it needs a rebuild (or a newer ctxsvc)."""
        if self.schema_version < SCHEMA_VERSION:
            hint = (
                f"run `ctxsvc index {self.root}` to rebuild it (an index run rebuilds an older one)"
            )
        else:
            hint = f"upgrade ctxsvc, or replace it with `ctxsvc index {self.root} --rebuild`"
        return StoreCorrupt(
            f"index {self.name!r} has schema version {self.schema_version}, "
            f"this ctxsvc reads {SCHEMA_VERSION}",
            hint=hint,
        )


class LanceStore:
    """The database: repository metadata, writers and readers.

    An index of another schema version is listed apart, by :meth:`list_outdated`
    and :meth:`outdated`; reading it raises ``StoreCorrupt`` (an index run
    rebuilds one of an older schema), and it never hides the other indexes.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            import lancedb

            path.mkdir(parents=True, exist_ok=True)
            self._db = lancedb.connect(str(path))
        except OSError as exc:
            raise StoreError(f"cannot open the index database at {path}: {exc}") from exc
        self._locks = path.parent / "locks"
        self._repos: Any | None = None
        self._meta_lock = threading.Lock()
        self._meta_cache: dict[str, IndexMeta] = {}
        self._outdated: dict[str, OutdatedIndex] = {}
        self._meta_version: int | None = None

    # -- tables -------------------------------------------------------------

    def table_names(self) -> set[str]:
        """Every table in the database."""
        result = self._db.list_tables()
        names = getattr(result, "tables", result)
        return set(names)

    def open(self, table: str, version: int | None = None) -> Any:
        """Table ``table``, checked out at ``version`` when given."""
        try:
            t = self._db.open_table(table)
            if version is not None:
                t.checkout(version)
            return t
        except (ValueError, OSError, RuntimeError) as exc:
            raise StoreCorrupt(
                f"index table {table} (version {version}) cannot be opened: {exc}",
                hint="rebuild with `ctxsvc index PATH --rebuild`",
            ) from exc

    def create_table(self, table: str, schema: Any) -> Any:
        """A new, empty table with the Arrow ``schema``."""
        return self._db.create_table(table, schema=schema)

    def drop_table(self, table: str) -> None:
        self._db.drop_table(table)

    # -- metadata -----------------------------------------------------------

    def _repos_table(self) -> Any | None:
        if self._repos is None and "repos" in self.table_names():
            self._repos = self._db.open_table("repos")
        return self._repos

    def _all_meta(self) -> tuple[dict[str, IndexMeta], dict[str, OutdatedIndex]]:
        """The ``repos`` rows, readable and outdated, re-read only on a new table version.

        Queries read this on every call, to follow index runs of other
        processes; a version check costs far less than a scan.
        """
        with self._meta_lock:
            table = self._repos_table()
            if table is None:
                return {}, {}
            table.checkout_latest()
            if table.version != self._meta_version:
                metas: dict[str, IndexMeta] = {}
                outdated: dict[str, OutdatedIndex] = {}
                for r in table.to_arrow().to_pylist():
                    got = _meta(r)
                    if isinstance(got, IndexMeta):
                        metas[got.name] = got
                    else:
                        outdated[got.name] = got
                self._meta_cache, self._outdated = metas, outdated
                self._meta_version = table.version
            return self._meta_cache, self._outdated

    def list_meta(self) -> list[IndexMeta]:
        """Every readable index, by name (those of another schema: :meth:`list_outdated`)."""
        return sorted(self._all_meta()[0].values(), key=lambda m: m.name)

    def list_outdated(self) -> list[OutdatedIndex]:
        """Every index of another schema version, by name."""
        return sorted(self._all_meta()[1].values(), key=lambda o: o.name)

    def meta(self, name: str) -> IndexMeta | None:
        """The metadata of index ``name``; ``StoreCorrupt`` if it is of another schema."""
        metas, outdated = self._all_meta()
        if name in outdated:
            raise outdated[name].error()
        return metas.get(name)

    def find(self, name: str) -> IndexMeta | OutdatedIndex | None:
        """Index ``name``, readable or of another schema version."""
        metas, outdated = self._all_meta()
        return metas.get(name) or outdated.get(name)

    def outdated(self, name: str) -> OutdatedIndex | None:
        """Index ``name`` when it is of a schema version this ctxsvc does not read."""
        return self._all_meta()[1].get(name)

    def commit_meta(self, meta: IndexMeta) -> None:
        """Write ``meta`` as the ``repos`` row of its repository: the commit point of a run."""
        row = {"name": meta.name, "name_id": path_id(meta.name), "meta": json.dumps(asdict(meta))}
        data = pa().Table.from_pylist([row], schema=schema("repos"))
        # One short global lock: runs of different repositories share this table.
        with FileLock(self._locks / "_repos.lock", "the repository registry", wait=True):
            table = self._repos_table()
            if table is None:
                write(
                    "creating the repository registry",
                    lambda: self._db.create_table("repos", data=data),
                )
                return
            table.checkout_latest()
            write(
                f"committing index {meta.name!r}",
                lambda: (
                    table.merge_insert("name_id")
                    .when_matched_update_all()
                    .when_not_matched_insert_all()
                    .execute(data)
                ),
            )

    def drop(self, name: str) -> None:
        """Forget a repository (outdated or not): its metadata row, then its tables."""
        if self.outdated(name) is None and self.meta(name) is None:
            raise RepoNotFound(f"no index named {name!r}")
        with FileLock(self._locks / "_repos.lock", "the repository registry", wait=True):
            table = self._repos_table()
            if table is not None:
                table.checkout_latest()
                table.delete(f"name_id = '{path_id(name)}'")
        existing = self.table_names()
        for t in (*DATA_TABLES, "vectors"):
            if f"{name}__{t}" in existing:
                self.drop_table(f"{name}__{t}")

    # -- access -------------------------------------------------------------

    def writer(self, name: str, *, dimension: int | None, drop_vectors: bool = False) -> RepoWriter:
        """A writer for ``name``; the caller must hold the repository lock.

        ``drop_vectors`` deletes every stored vector first (a model change).
        Over an outdated index it starts from empty tables, and its commit
        replaces the outdated row: until then readers see that row, and
        ``StoreCorrupt``.
        """
        return RepoWriter(self, name, dimension, drop_vectors)

    def reader(self, name: str) -> RepoReader:
        meta = self.meta(name)
        if meta is None:
            raise RepoNotFound(
                f"no index named {name!r}", hint="run `ctxsvc index PATH --name NAME` first"
            )
        return RepoReader(self, meta)


def _meta(row: dict[str, Any]) -> IndexMeta | OutdatedIndex:
    data = json.loads(row["meta"])
    version = data.get("schema_version", 1)
    if version != SCHEMA_VERSION:
        # Only the fields every version has: another version's row may not fit IndexMeta.
        return OutdatedIndex(
            name=row["name"],
            root=str(data.get("root", "")),
            schema_version=version,
            model=data.get("model"),
            dimension=data.get("dimension"),
            written=data,
        )
    return IndexMeta(**data)
