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
each table to its pinned version before it starts.

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
from dataclasses import asdict
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
    "RepoReader",
    "RepoWriter",
    "path_id",
    "write",
]


class LanceStore:
    """The database: repository metadata, writers and readers."""

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

    def _all_meta(self) -> dict[str, IndexMeta]:
        """Every ``repos`` row, re-read only when the table has a new version.

        Queries read this on every call, to follow index runs of other
        processes; a version check costs far less than a scan.
        """
        with self._meta_lock:
            table = self._repos_table()
            if table is None:
                return {}
            table.checkout_latest()
            if table.version != self._meta_version:
                rows = table.to_arrow().to_pylist()
                self._meta_cache = {r["name"]: _meta(r) for r in rows}
                self._meta_version = table.version
            return self._meta_cache

    def list_meta(self) -> list[IndexMeta]:
        """Every indexed repository, by name."""
        return sorted(self._all_meta().values(), key=lambda m: m.name)

    def meta(self, name: str) -> IndexMeta | None:
        return self._all_meta().get(name)

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
        """Forget a repository: its metadata row, then its tables."""
        if self.meta(name) is None:
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
        """
        return RepoWriter(self, name, dimension, drop_vectors)

    def reader(self, name: str) -> RepoReader:
        meta = self.meta(name)
        if meta is None:
            raise RepoNotFound(
                f"no index named {name!r}", hint="run `ctxsvc index PATH --name NAME` first"
            )
        return RepoReader(self, meta)


def _meta(row: dict[str, Any]) -> IndexMeta:
    data = json.loads(row["meta"])
    meta = IndexMeta(**data)
    if meta.schema_version != SCHEMA_VERSION:
        raise StoreCorrupt(
            f"index {meta.name!r} has schema version {meta.schema_version}, this ctxsvc reads {SCHEMA_VERSION}",
            hint="rebuild with `ctxsvc index PATH --rebuild`",
        )
    return meta
