"""LanceDB storage: the one owner of ``lancedb`` and ``pyarrow``.

One database under ``CTXSVC_HOME/lance`` (or on object storage, below). Each repository name owns six
tables (files, chunks, symbols, refs, imports and vectors: ``<name>__files``
... after a first run); the ``repos`` table holds one row of metadata per
repository, and that row is the commit point of an index run.

Crash safety rests on Lance's versioned tables. Every write makes a new table
version atomically, but a run writes several tables, so readers never follow
a table's latest version: they check out the versions pinned in the
``repos`` row. A run writes all its tables first and pins their new versions
last, in one atomic merge. A run killed before that leaves the previous pins,
so readers keep seeing the previous, consistent index; the next run restores
each table to its pinned version before it starts.

A run compacts its tables before its commit but prunes old versions only
after it, once the row pins the new ones, and then only versions created
more than ``KEEP_VERSIONS`` (10 minutes) ago: a version the previous row
pinned may go at once if it is that old, so a reader that finds its pinned
files gone follows the row to its new pins and reads again (below).
A rebuild (``--rebuild``, or an index of an older schema) never writes into
the tables readers pin: it writes a new *set* of tables beside them, named
``_r<n>.<name>__<table>`` (``IndexMeta.tables``), inside the repository lock,
and its commit swaps the row over to the new set. Until then readers keep
the old index (no "not found", no error); a rebuild killed before its commit
leaves the old index answering, and the next run drops the half-written set
(tables of the index that the row neither uses nor lists as retired). The
commit lists the replaced tables in ``IndexMeta.retired`` with the time, and
the first run after ``RETIRED_GRACE`` (10 minutes) drops them. A reader that
finds its pinned files gone anyway (it held a view across several runs)
follows the row to its new pins and reads again (``lance_reader``).
A row also keeps the rows of branches the working tree left (branch
snapshots, ``lance_snapshots``), committed in the same merge: a prune spares
the versions they pin, and stale-vector deletion the vectors their chunks use.

Vectors are a content-addressed cache (content hash -> vector), filled in
after a run commits its text (``lance_vectors``): appended one batch per add
and never rolled back, so a killed fill loses at most the batch in flight and
the next one resumes from the rest; the ``repos`` row pins the vectors every
few seconds. The chunk whose content hash has a vector is searchable by
vector; rows no chunk refers to any more are deleted once every chunk has one. A rebuild keeps using
the vectors table (the same model's vectors serve the same content) unless
it re-embeds (``--reembed``, another model) or finds that table unreadable:
then it starts a new one in its set and embeds again, and says so.

Damage (a data file truncated or gone, a garbled manifest, a deleted
``_versions``) is found when a reader opens the index, or by the read that
meets it, and raises ``StoreCorrupt`` naming the index, the table and the
version, with the hint to rebuild; :meth:`LanceStore.damaged` lists such
indexes until a run commits them again. A rebuild reads nothing of the
damaged tables, so it repairs them.

A write that fails (an I/O error, a full disk) leaves no trace in Lance: the
table keeps its last version. Each write is retried a few times with
exponential backoff and jitter, then fails as ``StoreError`` (retryable) and
the previous index keeps answering.

The database may sit on an S3-compatible object store (``CTXSVC_INDEX_URI=
s3://bucket/prefix``, ``ctxsvc.stores.blobs``). The same versions make it
safe there: a reader on another host follows the ``repos`` row's newest
version (asked at most every ``REMOTE_POLL_SECONDS``) and opens the pinned
versions. The locks stay files of each host; one writer per index across
hosts is the job queue's (``ctxsvc.jobs``). The per-file manifest check is a
local stat per file, so on a store it is left to the reads themselves: a
missing object fails the read that meets it, as ``StoreCorrupt`` all the same.

This module holds the database and its ``repos`` table (:class:`LanceStore`);
``lance_writer`` writes a repository (and retries writes), ``lance_reader``
reads one and checks its files, ``lance_schema`` spells out the tables. Their
public names are importable from here.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ctxsvc.errors import CtxError, RepoNotFound, StoreCorrupt, StoreError
from ctxsvc.limits import ANN_MIN_VECTORS
from ctxsvc.stores.blobs import REMOTE_POLL_SECONDS, Blobs, is_remote, passing
from ctxsvc.stores.lance_reader import RepoReader, cause
from ctxsvc.stores.lance_schema import (
    DATA_TABLES,
    SCHEMA_VERSION,
    IndexMeta,
    owned_tables,
    pa,
    path_id,
    schema,
    split_table,
)
from ctxsvc.stores.lance_writer import (
    KEEP_VERSIONS,
    RETIRED_GRACE,
    WRITE_ATTEMPTS,
    RepoWriter,
    write,
)
from ctxsvc.stores.locks import FileLock

log = logging.getLogger("ctxsvc.stores.lance")

__all__ = [
    "DATA_TABLES",
    "KEEP_VERSIONS",
    "RETIRED_GRACE",
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

    def __init__(
        self,
        path: Path | str,
        *,
        ann_min_vectors: int = ANN_MIN_VECTORS,
        locks: Path | None = None,
    ) -> None:
        # A local directory, or an object-store URI (``s3://bucket/prefix``: see
        # ``ctxsvc.stores.blobs``). ``path`` is the directory, None on a store.
        self.uri = str(path)
        self.remote = is_remote(self.uri)
        self.path: Path | None = None if self.remote else Path(path)
        # Files beside the tables (git history): a directory, or objects under the prefix.
        self.blobs = Blobs.beside(self.uri)
        # From this many vectors an index's vectors table gets an approximate index
        # (``ctxsvc.stores.lance_ann``) and its views search that, not a matrix.
        self.ann_min_vectors = ann_min_vectors
        # vectors table -> its latest version when building its approximate index failed
        self.ann_failures: dict[str, int] = {}
        # The repository lock and the fill lock are this host's files: on a shared
        # store, the job queue keeps one writer per index across hosts.
        if locks is None and self.path is None:
            raise StoreError("an index on object storage needs a local directory for its locks")
        self._locks = locks if locks is not None else Path(path).parent / "locks"
        self._polled = 0.0  # when the registry's latest version was last asked for (remote)
        try:
            import lancedb

            if self.path is not None:
                self.path.mkdir(parents=True, exist_ok=True)
            self._db = lancedb.connect(self.uri)
            if self.remote:
                self._db.list_tables()  # an unreachable store fails here, loudly, not mid-run
        except Exception as exc:  # OSError locally; the object store's client raises others
            hint = "check the directory is writable"
            if self.remote:
                hint = (
                    "check the bucket exists and AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, "
                    "AWS_SECRET_ACCESS_KEY, AWS_REGION (and AWS_ALLOW_HTTP=true for http)"
                )
            raise StoreError(
                f"cannot open the index database at {self.uri}: {cause(exc)}", hint=hint
            ) from exc
        self._repos: Any | None = None
        self._meta_lock = threading.Lock()
        self._meta_cache: dict[str, IndexMeta] = {}
        self._outdated: dict[str, OutdatedIndex] = {}
        self._meta_version: int | None = None
        # index name -> (the pins found damaged, what is wrong)
        self._damaged: dict[str, tuple[Any, str]] = {}

    @property
    def db(self) -> Any:
        """The ``lancedb`` connection."""
        return self._db

    # -- tables -------------------------------------------------------------

    def table_names(self) -> set[str]:
        """Every table in the database."""
        result = self._db.list_tables()
        names = getattr(result, "tables", result)
        return set(names)

    def open(self, table: str, version: int | None = None) -> Any:
        """Table ``table``, checked out at ``version`` when given (a writable handle)."""
        try:
            t = self._db.open_table(table)
            if version is not None:
                t.checkout(version)
            return t
        except Exception as exc:  # Lance raises several types, a Rust panic among them
            name, part = split_table(table)
            raise StoreCorrupt(
                f"index {name!r}: table {part} (version {version or 'latest'}) is damaged: "
                f"{cause(exc)}",
                hint=f"run `ctxsvc index --rebuild {name}`",
            ) from exc

    def create_table(self, table: str, schema: Any) -> Any:
        """A new, empty table with the Arrow ``schema``."""
        return write(f"creating table {table}", lambda: self._db.create_table(table, schema=schema))

    def drop_table(self, table: str) -> None:
        """Delete table ``table``, damaged or not."""
        try:
            self._db.drop_table(table)
        except Exception:  # a damaged table (no _versions, say) is not one Lance drops
            if self.path is None:
                log.warning("a damaged table left on the object store", extra={"table": table})
            else:
                log.warning("dropping a damaged table by its directory", extra={"table": table})
        if self.path is not None:
            shutil.rmtree(self.path / f"{table}.lance", ignore_errors=True)

    # -- damage ---------------------------------------------------------------

    def corrupt(self, meta: IndexMeta, table: str, why: str) -> StoreCorrupt:
        """The error of ``meta``'s table ``table`` found damaged, remembered (:meth:`damaged`)."""
        line = f"table {table} (version {meta.versions.get(table)}) is damaged: {why}"
        with self._meta_lock:
            known = self._damaged.get(meta.name) == (meta.pins(), line)
            self._damaged[meta.name] = (meta.pins(), line)
        if not known:  # the error itself reaches the caller (the CLI, the API's log)
            log.info("damaged index", extra={"repo": meta.name, "table": table, "error": why})
        return StoreCorrupt(
            f"index {meta.name!r}: {line}", hint=f"run `ctxsvc index --rebuild {meta.name}`"
        )

    def damaged(self) -> dict[str, str]:
        """Indexes found damaged (name -> what is wrong), until a run commits them again."""
        with self._meta_lock:
            found = dict(self._damaged)
        out: dict[str, str] = {}
        for name, (pins, line) in sorted(found.items()):
            now = self.current(name)
            if now is not None and now.pins() == pins:
                out[name] = line
            else:
                self.repaired(name)
        return out

    def repaired(self, name: str, meta: IndexMeta | None = None) -> None:
        """Forget that ``name`` was damaged (at ``meta``'s pins, when given): it reads again."""
        with self._meta_lock:
            got = self._damaged.get(name)
            if got is not None and (meta is None or got[0] == meta.pins()):
                del self._damaged[name]

    # -- metadata -----------------------------------------------------------

    def _repos_table(self) -> Any | None:
        if self._repos is None and "repos" in self.table_names():
            self._repos = self._db.open_table("repos")
        return self._repos

    def _all_meta(
        self, *, stale_ok: bool = False
    ) -> tuple[dict[str, IndexMeta], dict[str, OutdatedIndex]]:
        """The ``repos`` rows, readable and outdated, re-read only on a new table version.

        Queries read this on every call, to follow index runs of other
        processes; a version check costs far less than a scan. On an object
        store the check is a request, so a caller that may see a row up to
        ``REMOTE_POLL_SECONDS`` old (``stale_ok``: a query resolving its index)
        gets the row read last within that time; every other caller (writes,
        and a read that meets missing files and follows the newest row) asks.
        """
        with self._meta_lock:
            now = time.monotonic()
            if (
                stale_ok
                and self.remote
                and self._meta_version is not None
                and now - self._polled < REMOTE_POLL_SECONDS
            ):
                return self._meta_cache, self._outdated  # asked the store a moment ago
            try:
                table = self._repos_table()
                if table is None:
                    return {}, {}
                table.checkout_latest()
                self._polled = now
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
            except CtxError:
                raise
            except Exception as exc:  # Lance raises RuntimeError, OSError, panics...
                self._repos = None  # opened again on the next call
                registry = f"{self.uri}/repos.lance"
                if self.remote and passing(cause(exc)):
                    raise StoreError(
                        f"cannot read the index registry {registry}: {cause(exc)}",
                        hint="the object store did not answer as asked; retry, and check "
                        "its endpoint and credentials (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID)",
                    ) from exc
                raise StoreCorrupt(
                    f"the index registry {registry} is damaged: {cause(exc)}",
                    hint=f"move {registry} aside (the indexes beside it stay on disk) and "
                    "index each repository again with `ctxsvc index PATH --rebuild`",
                ) from exc
            return self._meta_cache, self._outdated

    def list_meta(self, *, stale_ok: bool = False) -> list[IndexMeta]:
        """Every readable index, by name (those of another schema: :meth:`list_outdated`)."""
        return sorted(self._all_meta(stale_ok=stale_ok)[0].values(), key=lambda m: m.name)

    def list_outdated(self, *, stale_ok: bool = False) -> list[OutdatedIndex]:
        """Every index of another schema version, by name."""
        return sorted(self._all_meta(stale_ok=stale_ok)[1].values(), key=lambda o: o.name)

    def meta(self, name: str) -> IndexMeta | None:
        """The metadata of index ``name``; ``StoreCorrupt`` if it is of another schema."""
        metas, outdated = self._all_meta()
        if name in outdated:
            raise outdated[name].error()
        return metas.get(name)

    def find(self, name: str, *, stale_ok: bool = False) -> IndexMeta | OutdatedIndex | None:
        """Index ``name``, readable or of another schema version (``stale_ok``: see
        :meth:`_all_meta`)."""
        metas, outdated = self._all_meta(stale_ok=stale_ok)
        return metas.get(name) or outdated.get(name)

    def outdated(self, name: str) -> OutdatedIndex | None:
        """Index ``name`` when it is of a schema version this ctxsvc does not read."""
        return self._all_meta()[1].get(name)

    def current(self, name: str) -> IndexMeta | None:
        """The row of ``name`` committed now, when readable (None if gone or outdated)."""
        return self._all_meta()[0].get(name)

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
            else:
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
        with self._meta_lock:  # after any poll under way: this process reads its own commit
            self._polled = 0.0

    def drop(self, name: str) -> None:
        """Forget a repository (outdated or not): its metadata row, then every table of it.

        The caller holds the repository lock.
        """
        if self.outdated(name) is None and self.meta(name) is None:
            raise RepoNotFound(f"no index named {name!r}")
        with FileLock(self._locks / "_repos.lock", "the repository registry", wait=True):
            table = self._repos_table()
            if table is not None:
                table.checkout_latest()
                table.delete(f"name_id = '{path_id(name)}'")
        with self._meta_lock:
            self._polled = 0.0
        for t in owned_tables(name, self.table_names()):
            self.drop_table(t)
        self.repaired(name)

    # -- access -------------------------------------------------------------

    def writer(
        self,
        name: str,
        *,
        dimension: int | None,
        drop_vectors: bool = False,
        rebuild: bool = False,
    ) -> RepoWriter:
        """A writer for ``name``; the caller must hold the repository lock.

        ``drop_vectors`` starts the vectors again (a model change). With
        ``rebuild``, or over an outdated index, it writes a new set of tables
        from empty, reading nothing of the old set but its vectors, and its
        commit swaps the row over: until then readers see the old index.
        """
        return RepoWriter(self, name, dimension, drop_vectors, rebuild)

    def reader(self, name: str) -> RepoReader:
        meta = self.meta(name)
        if meta is None:
            raise RepoNotFound(
                f"no index named {name!r}", hint="run `ctxsvc index PATH --name NAME` first"
            )
        return RepoReader(self, meta)

    def tables_of(self, name: str) -> dict[str, int]:
        """Every table of index ``name`` in the database, with its set number."""
        return owned_tables(name, self.table_names())


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
    return IndexMeta(**{**data, "snapshots": tuple(_snapshots(data.get("snapshots")))})


def _snapshots(raw: object) -> list[IndexMeta]:
    """The branch snapshots of a row; one that does not fit IndexMeta is left out (it
    is answered as not kept, and its versions are no longer protected)."""
    out: list[IndexMeta] = []
    for data in raw if isinstance(raw, list) else []:
        try:
            out.append(IndexMeta(**{**data, "snapshots": ()}))
        except TypeError:
            log.warning(
                "a branch snapshot of another shape left out", extra={"row": str(data)[:200]}
            )
    return out
