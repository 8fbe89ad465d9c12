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
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from ctxsvc.errors import InvalidRequest, RepoNotFound, StoreCorrupt, StoreError
from ctxsvc.models import Chunk, FileRecord, Import, Reference, Symbol, embed_text
from ctxsvc.stores.locks import FileLock

SCHEMA_VERSION = 1
DATA_TABLES = ("files", "chunks", "symbols", "refs", "imports")
_DELETE_BATCH = 400
WRITE_ATTEMPTS = 3
WRITE_BACKOFF_SECONDS = 0.2  # then 0.8, each with jitter
log = logging.getLogger(__name__)
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


@dataclass(frozen=True)
class IndexMeta:
    """The ``repos`` row: what an index is, and the table versions it pins."""

    name: str
    root: str
    commit: str | None
    indexed_at: str
    model: str | None
    dimension: int | None
    tokenizer: str
    vectors: str  # "complete", "missing" or "disabled"
    versions: dict[str, int]
    stats: dict[str, Any] = field(default_factory=dict)
    generation: int = 0  # counts successful runs
    schema_version: int = SCHEMA_VERSION


def _pa() -> Any:
    import pyarrow as pa

    return pa


def _schemas(dim: int | None) -> dict[str, Any]:
    pa = _pa()
    s, i32, i64 = pa.string(), pa.int32(), pa.int64()
    common = [pa.field("path", s), pa.field("path_id", s)]
    out = {
        "files": pa.schema(
            [
                *common,
                pa.field("sha256", s),
                pa.field("size", i64),
                pa.field("mtime_ns", i64),
                pa.field("language", s),
                pa.field("status", s),
                pa.field("reason", s),
                pa.field("detail", s),
                pa.field("syntax_errors", i32),
                pa.field("lossy", pa.bool_()),
                pa.field("chunks", i32),
                pa.field("tokens", i32),
            ]
        ),
        "chunks": pa.schema(
            [
                *common,
                pa.field("id", s),
                pa.field("language", s),
                pa.field("start_line", i32),
                pa.field("end_line", i32),
                pa.field("header", s),
                pa.field("text", s),
                pa.field("symbols", pa.list_(s)),
                pa.field("tokens", i32),
                pa.field("content_hash", s),
                pa.field("terms", s),
            ]
        ),
        "symbols": pa.schema(
            [
                *common,
                pa.field("name", s),
                pa.field("qualname", s),
                pa.field("kind", s),
                pa.field("start_line", i32),
                pa.field("end_line", i32),
                pa.field("signature", s),
                pa.field("docstring", s),
                pa.field("parent", s),
            ]
        ),
        "refs": pa.schema(
            [
                *common,
                pa.field("name", s),
                pa.field("line", i32),
                pa.field("kind", s),
                pa.field("scope", s),
            ]
        ),
        "imports": pa.schema(
            [*common, pa.field("line", i32), pa.field("module", s), pa.field("names", pa.list_(s))]
        ),
    }
    if dim is not None:
        out["vectors"] = pa.schema(
            [pa.field("content_hash", s), pa.field("vector", pa.list_(pa.float32(), dim))]
        )
    return out


def path_id(path: str) -> str:
    """A SQL-safe key for a path (paths may hold quotes, newlines, anything)."""
    return hashlib.sha1(path.encode("utf-8", "surrogatepass")).hexdigest()


def _in_list(values: Sequence[str]) -> str:
    # Only ever hex digests and content hashes: no quoting issues.
    return ", ".join(f"'{v}'" for v in values)


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

    # -- metadata -----------------------------------------------------------

    def _tables(self) -> set[str]:
        result = self._db.list_tables()
        names = getattr(result, "tables", result)
        return set(names)

    def _repos_table(self) -> Any | None:
        if self._repos is None and "repos" in self._tables():
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

    def _commit_meta(self, meta: IndexMeta) -> None:
        pa = _pa()
        row = {"name": meta.name, "name_id": path_id(meta.name), "meta": json.dumps(asdict(meta))}
        schema = pa.schema(
            [
                pa.field("name", pa.string()),
                pa.field("name_id", pa.string()),
                pa.field("meta", pa.string()),
            ]
        )
        data = pa.Table.from_pylist([row], schema=schema)
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
        existing = self._tables()
        for t in (*DATA_TABLES, "vectors"):
            if f"{name}__{t}" in existing:
                self._db.drop_table(f"{name}__{t}")

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

    def open(self, table: str, version: int | None = None) -> Any:
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


def _meta(row: dict[str, Any]) -> IndexMeta:
    data = json.loads(row["meta"])
    meta = IndexMeta(**data)
    if meta.schema_version != SCHEMA_VERSION:
        raise StoreCorrupt(
            f"index {meta.name!r} has schema version {meta.schema_version}, this ctxsvc reads {SCHEMA_VERSION}",
            hint="rebuild with `ctxsvc index PATH --rebuild`",
        )
    return meta


class RepoWriter:
    """Writes one repository's tables; :meth:`commit` publishes them."""

    def __init__(
        self, store: LanceStore, name: str, dimension: int | None, drop_vectors: bool
    ) -> None:
        self.store = store
        self.name = name
        self.dimension = dimension
        self.previous = store.meta(name)
        self._schemas = _schemas(dimension)
        self._tables: dict[str, Any] = {}
        existing = store._tables()
        for t in DATA_TABLES:
            full = f"{name}__{t}"
            pinned = self.previous.versions.get(t) if self.previous else None
            if full in existing and pinned is None:
                store._db.drop_table(full)  # left by a first run that never committed
                existing.discard(full)
            if full in existing:
                table = store.open(full)
                if table.version != pinned:
                    # A run died after writing this table: roll back to the pin.
                    table.checkout(pinned)
                    table.restore()
                self._tables[t] = table
            else:
                self._tables[t] = store._db.create_table(full, schema=self._schemas[t])
        if drop_vectors and f"{name}__vectors" in existing:
            store._db.drop_table(f"{name}__vectors")
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
        return self.store._db.create_table(full, schema=self._schemas["vectors"])

    # -- reads --------------------------------------------------------------

    def files(self) -> dict[str, FileRecord]:
        cols = [f.name for f in self._schemas["files"] if f.name != "path_id"]
        rows = self._tables["files"].to_arrow().select(cols).to_pylist()
        return {r["path"]: FileRecord(**{**r, "language": r["language"] or None}) for r in rows}

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
        pa = _pa()
        dim = vectors.shape[1]
        flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
        data = pa.Table.from_arrays(
            [pa.array(list(hashes), pa.string()), pa.FixedSizeListArray.from_arrays(flat, dim)],
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
            for i in range(0, len(ids), _DELETE_BATCH):
                where = f"path_id IN ({_in_list(ids[i : i + _DELETE_BATCH])})"
                write(
                    f"deleting rows of {self.name!r}",
                    partial(self._tables[t].delete, where),
                )
        rows = {
            "files": [_row(asdict(f), f.path) for f in files],
            "chunks": [
                _row({**asdict(c), "symbols": list(c.symbols), "terms": tm}, c.path)
                for c, tm in zip(chunks, terms, strict=True)
            ],
            "symbols": [_row({**asdict(s), "parent": s.parent or ""}, s.path) for s in symbols],
            "refs": [_row({**asdict(r), "scope": r.scope or ""}, r.path) for r in refs],
            "imports": [_row({**asdict(i), "names": list(i.names)}, i.path) for i in imports],
        }
        pa = _pa()
        for t, data in rows.items():
            if data:
                schema = self._schemas[t]
                table = pa.Table.from_pylist(
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
            for i in range(0, len(stale), _DELETE_BATCH):
                where = f"content_hash IN ({_in_list(stale[i : i + _DELETE_BATCH])})"
                write(f"deleting stale vectors of {self.name!r}", partial(vectors.delete, where))
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
        self.store._commit_meta(pinned)
        return pinned


def _row(data: dict[str, Any], path: str) -> dict[str, Any]:
    data["path_id"] = path_id(path)
    return data


class RepoReader:
    """One consistent version of a repository's index, for queries."""

    def __init__(self, store: LanceStore, meta: IndexMeta) -> None:
        self.meta = meta
        self._store = store
        self._tables = {t: store.open(f"{meta.name}__{t}", v) for t, v in meta.versions.items()}

    def table(self, name: str) -> Any:
        if name not in self._tables:
            raise InvalidRequest(f"index {self.meta.name!r} has no {name} table")
        return self._tables[name]

    def files(self) -> dict[str, FileRecord]:
        rows = self.table("files").to_arrow().drop_columns(["path_id"]).to_pylist()
        return {r["path"]: FileRecord(**{**r, "language": r["language"] or None}) for r in rows}

    def chunks(self, where: str | None = None) -> list[Chunk]:
        q = self.table("chunks").search()
        if where:
            q = q.where(where)
        rows = q.limit(None).select(_CHUNK_COLS).to_list()
        return [_chunk(r) for r in rows]

    def symbols(self) -> list[Symbol]:
        rows = self.table("symbols").to_arrow().drop_columns(["path_id"]).to_pylist()
        return [Symbol(**{**r, "parent": r["parent"] or None}) for r in rows]

    def references(self) -> list[Reference]:
        rows = self.table("refs").to_arrow().drop_columns(["path_id"]).to_pylist()
        return [Reference(**{**r, "scope": r["scope"] or None}) for r in rows]

    def imports(self) -> list[Import]:
        rows = self.table("imports").to_arrow().drop_columns(["path_id"]).to_pylist()
        return [Import(**{**r, "names": tuple(r["names"] or ())}) for r in rows]

    def vectors(self) -> tuple[list[str], npt.NDArray[np.float32]] | None:
        """Every stored vector with its content hash, or None without vectors."""
        if "vectors" not in self._tables:
            return None
        data = self._tables["vectors"].to_arrow()
        hashes = data.column("content_hash").to_pylist()
        dim = data.schema.field("vector").type.list_size
        flat = data.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        return hashes, np.asarray(flat, dtype=np.float32).reshape(len(hashes), dim)

    def chunks_by_hash(self, hashes: Sequence[str]) -> dict[str, list[Chunk]]:
        """Current chunks with these content hashes (several chunks may share one)."""
        out: dict[str, list[Chunk]] = {}
        if hashes:
            for c in self.chunks(f"content_hash IN ({_in_list(sorted(set(hashes)))})"):
                out.setdefault(c.content_hash, []).append(c)
        return out

    def fts(self, terms: str, limit: int) -> list[tuple[Chunk, float]]:
        """Full-text (BM25) search over the chunks' code-aware terms."""
        table = self.table("chunks")
        if not terms.strip() or not table.list_indices():
            return []
        rows = (
            table.search(terms, query_type="fts", fts_columns="terms")
            .select([*_CHUNK_COLS, "_score"])
            .limit(limit)
            .to_list()
        )
        return [(_chunk(r), float(r["_score"])) for r in rows]

    def vector_search(self, vector: npt.NDArray[np.float32], limit: int) -> list[tuple[str, float]]:
        """Nearest content hashes to ``vector``, with cosine similarity."""
        if "vectors" not in self._tables:
            return []
        rows = (
            self._tables["vectors"]
            .search(vector.astype(np.float32), vector_column_name="vector")
            .distance_type("cosine")
            .select(["content_hash", "_distance"])
            .limit(limit)
            .to_list()
        )
        return [(r["content_hash"], 1.0 - float(r["_distance"])) for r in rows]


_CHUNK_COLS = [
    "id",
    "path",
    "language",
    "start_line",
    "end_line",
    "header",
    "text",
    "symbols",
    "tokens",
    "content_hash",
]


def _chunk(r: dict[str, Any]) -> Chunk:
    return Chunk(
        id=r["id"],
        path=r["path"],
        language=r["language"] or None,
        start_line=int(r["start_line"]),
        end_line=int(r["end_line"]),
        header=r["header"],
        text=r["text"],
        symbols=tuple(r["symbols"] or ()),
        tokens=int(r["tokens"]),
        content_hash=r["content_hash"],
    )
