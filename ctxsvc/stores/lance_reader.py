"""Reading one repository's index: :class:`RepoReader`, at the versions its row pins.

Opening a reader checks each pinned table before Lance reads it: its
manifest is a whole Lance manifest, and every file it lists (data,
deletions, index parts) is there at its recorded size. Any read that fails
afterwards is explained the same way. If the ``repos`` row has moved on since
the reader pinned the table (a run committed and then pruned the old version,
or a rebuild retired the set), the reader re-pins that table to the row now
committed and reads once more; otherwise the table is damaged, which raises
``StoreCorrupt`` naming the index, the table and the version, and the store
remembers it (:meth:`LanceStore.damaged`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import numpy.typing as npt

from ctxsvc.errors import (
    BranchNotIndexed,
    CtxError,
    InvalidRequest,
    RepoNotFound,
    StoreCorrupt,
    StoreError,
)
from ctxsvc.models import Chunk, FileRecord, Import, Reference, Symbol
from ctxsvc.stores.blobs import Blobs, passing
from ctxsvc.stores.lance_ann import REFINE, REFINED_MAX, AnnIndex, find, probes
from ctxsvc.stores.lance_schema import CHUNK_COLUMNS, IndexMeta, chunk, file_records, in_list

if TYPE_CHECKING:
    from ctxsvc.stores.lance import LanceStore

T = TypeVar("T")
FOLLOW = 3  # re-pins a read follows (runs committing one after another) before it gives up
_LOCATION = re.compile(r",\s*/\S+\.rs:\d+(?::\d+)?")
TRANSIENT = ("Too many open files", "os error 24", "Cannot allocate memory", "os error 12")


class Unreadable(Exception):
    """A table that cannot be read as pinned; ``cause`` says why, in one line."""

    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


def cause(exc: BaseException) -> str:
    """What ``exc`` (raised by Lance or Arrow) says, on one line, without Rust source paths."""
    if isinstance(exc, Unreadable):
        return exc.cause
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = _LOCATION.sub("", text).replace("lance error: ", "").replace("LanceError(IO): ", "")
    return text[:240]


class RepoReader:
    """One consistent version of a repository's index, for queries.

    ``meta`` is the row the reader opened; ``moved`` says whether a read has
    since followed the row to a later commit (then some tables are of that
    later version, and a view built from this reader is not consistent).
    A reader of a branch snapshot (``snapshot``) never follows: its versions
    stay while the row keeps it, and one released meanwhile is not kept.
    """

    def __init__(self, store: LanceStore, meta: IndexMeta, *, snapshot: bool = False) -> None:
        self._store = store
        self._snapshot = snapshot
        self.moved = False
        for _ in range(FOLLOW):
            tables: dict[str, Any] = {}
            try:
                for t in meta.versions:
                    opening = t
                    tables[t] = open_pinned(store, meta, t)
            except Unreadable as exc:
                meta = self._explain(meta, opening, exc)
                continue
            self.meta, self._tables = meta, tables
            self._pinned = dict.fromkeys(tables, meta)  # the row each table is read at
            return
        raise _still_moving(meta.name)

    @property
    def blobs(self) -> Blobs:
        """The files beside the database (git history)."""
        return self._store.blobs

    def table(self, name: str) -> Any:
        if name not in self._tables:
            raise InvalidRequest(f"index {self.meta.name!r} has no {name} table")
        return self._tables[name]

    def files(self) -> dict[str, FileRecord]:
        return self._read("files", file_records)

    def chunks(self, where: str | None = None) -> list[Chunk]:
        def rows(table: Any) -> list[dict[str, Any]]:
            q = table.search()
            if where:
                q = q.where(where)
            got: list[dict[str, Any]] = q.limit(None).select(CHUNK_COLUMNS).to_list()
            return got

        return [chunk(r) for r in self._read("chunks", rows)]

    def symbols(self) -> list[Symbol]:
        return [Symbol(**{**r, "parent": r["parent"] or None}) for r in self._rows("symbols")]

    def references(self) -> list[Reference]:
        # By column: a large repository has hundreds of thousands (a dict a row costs twice).
        c = self._read("refs", lambda t: t.to_arrow().to_pydict())
        return [
            Reference(name, path, line, kind, scope or None)
            for name, path, line, kind, scope in zip(
                c["name"], c["path"], c["line"], c["kind"], c["scope"], strict=True
            )
        ]

    def imports(self) -> list[Import]:
        return [Import(**{**r, "names": tuple(r["names"] or ())}) for r in self._rows("imports")]

    def vectors(self) -> tuple[list[str], npt.NDArray[np.float32]] | None:
        """Every stored vector with its content hash, or None without vectors."""
        if "vectors" not in self._tables:
            return None
        data = self._read("vectors", lambda t: t.to_arrow())
        return data.column("content_hash").to_pylist(), _matrix(data)

    def vector_hashes(self) -> list[str] | None:
        """The content hash of every stored vector (not the vectors), or None without."""
        if "vectors" not in self._tables:
            return None
        return self._read("vectors", content_hashes)

    def ann(self) -> AnnIndex | None:
        """The approximate index of the vectors table at the version pinned, if any."""
        if "vectors" not in self._tables:
            return None
        return self._read("vectors", find)

    def vectors_of(self, hashes: Sequence[str]) -> dict[str, npt.NDArray[np.float32]]:
        """The stored vectors of these content hashes (a lookup, not a scan, where the
        table has an approximate index: a scalar index on the hash comes with it)."""
        if "vectors" not in self._tables or not hashes:
            return {}
        where = f"content_hash IN ({in_list(sorted(set(hashes)))})"
        data = self._read(
            "vectors",
            lambda t: t.search().where(where).select(["content_hash", "vector"]).limit(None)
            .to_arrow(),
        )  # fmt: skip
        return dict(zip(data.column("content_hash").to_pylist(), _matrix(data), strict=True))

    def chunks_by_hash(self, hashes: Sequence[str]) -> dict[str, list[Chunk]]:
        """Current chunks with these content hashes (several chunks may share one)."""
        out: dict[str, list[Chunk]] = {}
        if hashes:
            for c in self.chunks(f"content_hash IN ({in_list(sorted(set(hashes)))})"):
                out.setdefault(c.content_hash, []).append(c)
        return out

    def fts(self, terms: str, limit: int) -> list[tuple[Chunk, float]]:
        """Full-text (BM25) search over the chunks' code-aware terms."""
        if not terms.strip():
            return []

        def search(table: Any) -> list[dict[str, Any]]:
            if not table.list_indices():
                return []
            got: list[dict[str, Any]] = (
                table.search(terms, query_type="fts", fts_columns="terms")
                .select([*CHUNK_COLUMNS, "_score"])
                .limit(limit)
                .to_list()
            )
            return got

        return [(chunk(r), float(r["_score"])) for r in self._read("chunks", search)]

    def vector_search(
        self, vector: npt.NDArray[np.float32], limit: int, *, approximate: AnnIndex | None = None
    ) -> list[tuple[str, float]]:
        """Nearest content hashes to ``vector``, with cosine similarity: through the
        table's approximate index ``approximate`` (``RepoReader.ann``), else exact."""
        if "vectors" not in self._tables:
            return []
        # Full vectors re-ranked: REFINE per result, a few thousand at most.
        refine = max(1, min(REFINE, REFINED_MAX // max(limit, 1)))
        nprobes = 0 if approximate is None else probes(approximate, len(vector))

        def search(table: Any) -> list[dict[str, Any]]:
            q = (
                table.search(vector.astype(np.float32), vector_column_name="vector")
                .distance_type("cosine")
                .select(["content_hash", "_distance"])
                .limit(limit)
            )
            if nprobes:
                q = q.nprobes(nprobes).refine_factor(refine)
            got: list[dict[str, Any]] = q.to_list()
            return got

        rows = self._read("vectors", search)
        return [(r["content_hash"], 1.0 - float(r["_distance"])) for r in rows]

    def _rows(self, name: str) -> list[dict[str, Any]]:
        """Every row of table ``name``, without its ``path_id``."""
        rows: list[dict[str, Any]] = self._read(
            name, lambda t: t.to_arrow().drop_columns(["path_id"]).to_pylist()
        )
        return rows

    def _read(self, name: str, fn: Callable[[Any], T]) -> T:
        """``fn(table)``, re-pinned to the committed row when the pinned files are gone."""
        for _ in range(FOLLOW):
            table = self.table(name)
            try:
                return fn(table)
            # Lance raises RuntimeError, ValueError, OSError, or a Rust panic (an
            # Exception); Arrow its own: whichever, the table is what is wrong.
            except CtxError:
                raise
            except Exception as exc:
                fresh = self._explain(self._pinned[name], name, exc)
                try:
                    self._tables[name] = open_pinned(self._store, fresh, name)
                except Unreadable as again:
                    raise self._store.corrupt(fresh, name, again.cause) from again
                self._pinned[name] = fresh
                self.moved = True
        raise _still_moving(self.meta.name)

    def _explain(self, pinned: IndexMeta, table: str, exc: BaseException) -> IndexMeta:
        """The row now committed, when it pins ``table`` elsewhere than ``pinned`` did;
        else (the same files, unreadable) ``StoreCorrupt``, and the index is remembered
        as damaged."""
        why = cause(exc)
        if any(m in why for m in TRANSIENT):
            raise StoreError(
                f"index {pinned.name!r}: reading table {table} failed: {why}",
                hint="the system ran out of a resource; retry",
            ) from exc
        if self._store.remote and passing(why):
            raise StoreError(
                f"index {pinned.name!r}: reading table {table} from the object store failed: {why}",
                hint="retry; if it persists, check the store and its endpoint and credentials",
            ) from exc
        fresh = self._store.current(pinned.name)
        if fresh is None:
            raise RepoNotFound(f"index {pinned.name!r} was deleted while it was read") from exc
        if self._snapshot:
            if any(s.pins() == pinned.pins() for s in fresh.snapshots):
                raise StoreCorrupt(
                    f"index {pinned.name!r}: table {table} of the snapshot of {pinned.place!r} "
                    f"(version {pinned.versions.get(table)}) is damaged: {why}",
                    hint="ask without the branch; indexing that branch again replaces it",
                ) from exc
            raise BranchNotIndexed(
                f"index {pinned.name!r} released its snapshot of {pinned.place!r} while it "
                "was read",
                hint="check out that branch and run `ctxsvc index` to index it again",
            ) from exc
        if _pin(fresh, table) == _pin(pinned, table):
            raise self._store.corrupt(pinned, table, why) from exc
        if table not in fresh.versions:
            raise _still_moving(pinned.name) from exc
        return fresh


def content_hashes(table: Any) -> list[str]:
    """The ``content_hash`` column of a vectors table (its version as opened)."""
    got = table.search().select(["content_hash"]).limit(None).to_arrow()
    hashes: list[str] = got.column("content_hash").to_pylist()
    return hashes


def _matrix(data: Any) -> npt.NDArray[np.float32]:
    """The ``vector`` column of Arrow rows of a vectors table, a row per vector."""
    dim = data.schema.field("vector").type.list_size
    flat = data.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return np.asarray(flat, dtype=np.float32).reshape(data.num_rows, dim)


def _pin(meta: IndexMeta, table: str) -> tuple[str, int | None]:
    return meta.table(table), meta.versions.get(table)


def _still_moving(name: str) -> StoreError:
    return StoreError(
        f"index {name!r} changed {FOLLOW} times while it was read",
        hint="index runs are committing one after another; retry",
    )


def open_pinned(store: LanceStore, meta: IndexMeta, table: str) -> Any:
    """Table ``table`` of ``meta``, checked and opened read-only at its pinned version.

    ``Unreadable`` if its manifest or a file it lists is missing, short or
    garbled, or if Lance cannot open or count it.
    """
    name, version = meta.table(table), meta.versions[table]
    if store.path is not None:  # on object storage the reads themselves find what is gone
        check_files(store.path / f"{name}.lance", version)
    try:
        handle = store.db.open_table(name, version=version)
        handle.count_rows()
        return handle
    except CtxError:
        raise
    except Exception as exc:  # as in RepoReader._read
        raise Unreadable(cause(exc)) from exc


# -- the manifest check -------------------------------------------------------------------

_U64 = 2**64 - 1
_MAGIC = b"LANC"


def check_files(root: Path, version: int) -> None:
    """``Unreadable`` unless the manifest of ``version`` under ``root`` and the latest one
    (Lance reads it to open any version) are whole, and every file the first lists is there
    at its recorded size. Cheap: a manifest read and a stat per file."""
    versions = root / "_versions"
    if not versions.is_dir():
        raise Unreadable(f"{_rel(versions)} is missing")
    pinned = _manifest_path(versions, version)
    if pinned is None:
        raise Unreadable(f"the manifest of version {version} is missing")
    manifest, data = _read_manifest(pinned)
    latest = _latest_manifest(versions)
    if latest is not None and latest != pinned:
        _read_manifest(latest)
    for path, size in _listed_files(manifest, data):
        try:
            st = os.stat(root / path)
        except FileNotFoundError:
            raise Unreadable(f"{_rel(root / path)} is missing") from None
        except OSError as exc:
            raise Unreadable(f"{_rel(root / path)} cannot be read: {exc.strerror}") from None
        if size and st.st_size != size:
            raise Unreadable(
                f"{_rel(root / path)} has {st.st_size} bytes, its manifest records {size}"
            )


def _rel(path: Path) -> str:
    """``path`` from its table's directory on (``demo__chunks.lance/data/x.lance``)."""
    return next(
        (f"{p.name}/{path.relative_to(p)}" for p in path.parents if p.suffix == ".lance"), str(path)
    )


def _manifest_path(versions: Path, version: int) -> Path | None:
    # Lance names manifests u64::MAX - version (zero-padded), or the version itself (older tables).
    for name in (f"{_U64 - version:020d}.manifest", f"{version}.manifest"):
        if (versions / name).is_file():
            return versions / name
    return None


def _latest_manifest(versions: Path) -> Path | None:
    numbers: list[tuple[int, Path]] = []
    for p in versions.glob("*.manifest"):
        if p.stem.isdigit():
            n = int(p.stem)
            numbers.append((_U64 - n if len(p.stem) == 20 else n, p))
    return max(numbers)[1] if numbers else None


def _read_manifest(path: Path) -> tuple[list[tuple[int, int, Any]], bytes]:
    """The top-level fields of the Manifest protobuf in the file at ``path``, and its bytes."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise Unreadable(f"{_rel(path)} cannot be read: {exc.strerror}") from None
    garbled = Unreadable(f"{_rel(path)} is garbled")
    # Footer: u64 position of the manifest, u16 major, u16 minor, b"LANC".
    if len(data) < 16 or data[-4:] != _MAGIC:
        raise garbled
    pos = int.from_bytes(data[-16:-8], "little")
    if pos + 4 > len(data) - 16:
        raise garbled
    size = int.from_bytes(data[pos : pos + 4], "little")
    if pos + 4 + size > len(data) - 16:
        raise garbled
    fields = _fields(data[pos + 4 : pos + 4 + size])
    if fields is None:
        raise garbled
    return fields, data


def _listed_files(manifest: list[tuple[int, int, Any]], data: bytes) -> list[tuple[str, int]]:
    """(path under the table, recorded size or 0) of each file the manifest lists.

    Only what this reader knows of the format; a part it does not recognise
    (a file of another base, a newer layout) is left unchecked rather than
    taken for damage.
    """
    out: list[tuple[str, int]] = []
    for field, _, value in manifest:
        if field == 2 and isinstance(value, bytes):  # DataFragment
            fragment = _fields(value) or []
            frag_id = next((v for f, w, v in fragment if f == 1 and w == 0), 0)
            for f, _, v in fragment:
                sub = _fields(v) if isinstance(v, bytes) else None
                if sub is None:
                    continue
                got = {k: x for k, _, x in sub}
                if 7 in got:  # base_id: the file lives elsewhere
                    continue
                if f == 2 and isinstance(got.get(1), bytes):  # DataFile: path, size
                    out.append(_file("data", got, 6))
                elif f == 3:  # DeletionFile: type, read version, id
                    ext = "bin" if got.get(1) == 1 else "arrow"
                    name = f"{frag_id}-{got.get(2, 0)}-{got.get(3, 0)}.{ext}"
                    out.append((f"_deletions/{name}", 0))
    section = next((v for f, w, v in manifest if f == 6 and w == 0), None)
    if isinstance(section, int) and section + 4 <= len(data):
        size = int.from_bytes(data[section : section + 4], "little")
        indices = _fields(data[section + 4 : section + 4 + size]) or []
        for f, _, v in indices:
            if f == 1 and isinstance(v, bytes):
                out.extend(_index_files(v))
    return out


def _index_files(value: bytes) -> list[tuple[str, int]]:
    """The files of one IndexMetadata: uuid (1) names the folder, files (10) the parts."""
    meta = _fields(value) or []
    uuid = next((v for f, _, v in meta if f == 1 and isinstance(v, bytes)), None)
    raw = next((v for f, _, v in (_fields(uuid) or []) if f == 1), None) if uuid else None
    if any(f == 9 for f, _, _ in meta) or not isinstance(raw, bytes) or len(raw) != 16:
        return []
    h = raw.hex()
    folder = f"_indices/{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
    out = []
    for f, _, v in meta:
        entry = _fields(v) if f == 10 and isinstance(v, bytes) else None
        if entry:
            got = {k: x for k, _, x in entry}
            if isinstance(got.get(1), bytes):
                out.append(_file(folder, got, 2))
    return out


def _file(folder: str, got: dict[int, Any], size_field: int) -> tuple[str, int]:
    """The path (field 1, under ``folder``) and the recorded size of a listed file."""
    size = got.get(size_field)
    return f"{folder}/{got[1].decode(errors='replace')}", size if isinstance(size, int) else 0


def _fields(buf: bytes) -> list[tuple[int, int, Any]] | None:
    """The (field, wire type, value) of a protobuf message, or None if it is not one.

    Values: int for varints and fixed-width fields, bytes for length-delimited
    ones (a nested message is decoded by calling this on them).
    """
    out: list[tuple[int, int, Any]] = []
    i, n = 0, len(buf)
    while i < n:
        key, i = _varint(buf, i)
        if key is None or key >> 3 == 0:
            return None
        field, wire = key >> 3, key & 7
        value: int | bytes | None
        if wire == 0:
            value, i = _varint(buf, i)
            if value is None:
                return None
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            if i + width > n:
                return None
            value, i = int.from_bytes(buf[i : i + width], "little"), i + width
        elif wire == 2:
            size, i = _varint(buf, i)
            if size is None or i + size > n:
                return None
            value, i = buf[i : i + size], i + size
        else:
            return None
        out.append((field, wire, value))
    return out


def _varint(buf: bytes, i: int) -> tuple[int | None, int]:
    value = shift = 0
    while i < len(buf) and shift < 70:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7
    return None, i
