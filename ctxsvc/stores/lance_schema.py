"""What the LanceDB tables hold: their Arrow schemas, the ``repos`` row, row conversions.

Each repository owns the tables of ``DATA_TABLES`` and a ``vectors`` table;
``COLUMNS`` spells out their columns. A first run names them
``<name>__files`` ...; a rebuild writes a new set beside the old one, named
``_r<n>.<name>__files`` ... (see :func:`table_name`), and the ``repos`` row
says which set each table of the index is (:attr:`IndexMeta.tables`). Arrow
(``pyarrow``) is imported only when a schema is built.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ctxsvc.models import Chunk, FileRecord

SCHEMA_VERSION = 2  # 2: chunk texts are the file's bytes (CRLF, whitespace-only lines kept)
DATA_TABLES = ("files", "chunks", "symbols", "refs", "imports")
ALL_TABLES = (*DATA_TABLES, "vectors")

# The columns of each table as "name:type"; "[t]" is a list of t. The data
# tables start with "path" and "path_id" (see path_id()).
_PATH = "path:str path_id:str "
COLUMNS = {
    "files": _PATH + "sha256:str size:i64 mtime_ns:i64 language:str status:str reason:str"
    " detail:str syntax_errors:i32 lossy:bool chunks:i32 tokens:i32",
    "chunks": _PATH + "id:str language:str start_line:i32 end_line:i32 header:str text:str"
    " symbols:[str] tokens:i32 content_hash:str terms:str",
    "symbols": _PATH + "name:str qualname:str kind:str start_line:i32 end_line:i32"
    " signature:str docstring:str parent:str head_start:i32 head_end:i32",
    "refs": _PATH + "name:str line:i32 kind:str scope:str",
    "imports": _PATH + "line:i32 module:str names:[str]",
    "repos": "name:str name_id:str meta:str",
}


def names(table: str) -> list[str]:
    """The column names of ``table`` (a key of ``COLUMNS``), in order."""
    return [column.split(":")[0] for column in COLUMNS[table].split()]


# What a Chunk is read from (the full-text terms stay in the table).
CHUNK_COLUMNS = [n for n in names("chunks") if n not in ("path_id", "terms")]


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
    vectors: str  # "complete", "partial" (filling in), "missing" or "disabled"
    versions: dict[str, int]
    stats: dict[str, Any] = field(default_factory=dict)
    generation: int = 0  # counts successful runs
    schema_version: int = SCHEMA_VERSION
    # The name of each table ("chunks" -> "_r2.demo__chunks"); one not listed is
    # "<name>__<table>", as a first run and every run before rebuilds wrote new sets.
    tables: dict[str, str] = field(default_factory=dict)
    # Tables of replaced sets -> when they were replaced (ISO, UTC); a run drops
    # each once readers that still pin it have had time to let go.
    retired: dict[str, str] = field(default_factory=dict)
    # (st_dev, st_ino) of the root directory indexed; empty when unknown (an older row).
    # A root that is no longer that directory is not read (``RootChanged``).
    root_identity: list[int] = field(default_factory=list)
    # Names the index run that committed this text (a vector fill keeps it): a drop and a
    # new first run may repeat generation, tables and versions, never this.
    run_id: str = ""
    # The branch HEAD was on (None: detached, or outside git), beside ``commit``.
    branch: str | None = None
    # The rows of the branches (or detached commits) the working tree left, most recently
    # left first, each pinning its own versions (``ctxsvc.stores.lance_snapshots``). A
    # snapshot holds none itself.
    snapshots: tuple[IndexMeta, ...] = ()
    # The run saw HEAD move (or a git command under way): its files may mix two commits,
    # so this row is never kept as a snapshot.
    head_moved: bool = False

    @property
    def place(self) -> str | None:
        """Where the working tree was: its branch, or its commit when detached (None
        outside git, or on an unborn branch with nothing to tell apart)."""
        return self.branch or self.commit

    def table(self, table: str) -> str:
        """The full name of this index's table ``table`` (a key of ``ALL_TABLES``)."""
        return self.tables.get(table) or table_name(self.name, table)

    def pins(self) -> tuple[tuple[str, str, int | None], ...]:
        """Which table, at which version, holds each part: equal pins, equal index."""
        return tuple((t, self.table(t), self.versions.get(t)) for t in sorted(self.versions))

    def text_pins(self) -> tuple[object, ...]:
        """The pins of everything but the vectors: equal for the rows a vector fill
        commits over one index run's."""
        return (
            self.run_id,
            self.generation,
            self.indexed_at,
            tuple(p for p in self.pins() if p[0] != "vectors"),
            self.table("vectors") if "vectors" in self.versions else None,
        )

    def vectors_share(self) -> float | None:
        """The share of chunks with a vector, when this index holds vectors."""
        if not self.model or self.vectors == "disabled":
            return None
        if self.vectors == "complete":
            return 1.0
        chunks = int(self.stats.get("chunks", 0))
        return min(1.0, int(self.stats.get("embedded", 0)) / chunks) if chunks else 1.0

    def vectors_percent(self) -> str:
        """The share of chunks with a vector in whole percent; 100% only when whole."""
        share = self.vectors_share() or 0.0
        return "100%" if share >= 1 else f"{min(int(share * 100), 99)}%"


def table_name(name: str, table: str, n: int = 0) -> str:
    """The name of table ``table`` of index ``name`` in set ``n`` (0: a first run's).

    A set's prefix starts with "_", which no index name does, so no index's
    tables can be taken for another's.
    """
    return f"{name}__{table}" if n == 0 else f"_r{n}.{name}__{table}"


def owned_tables(name: str, tables: Iterable[str]) -> dict[str, int]:
    """The tables among ``tables`` that belong to index ``name``, with their set number."""
    pattern = re.compile(rf"(?:_r(\d+)\.)?{re.escape(name)}__({'|'.join(ALL_TABLES)})", re.ASCII)
    found: dict[str, int] = {}
    for t in tables:
        m = pattern.fullmatch(t)
        if m:
            found[t] = int(m.group(1) or 0)
    return found


def split_table(full: str) -> tuple[str, str]:
    """The index name and the table of a full table name (``"_r2.demo__chunks"``)."""
    m = re.fullmatch(r"(?:_r\d+\.)?(.+)__([a-z]+)", full)
    return (m.group(1), m.group(2)) if m else (full, full)


def pa() -> Any:
    """The ``pyarrow`` module, imported on first use."""
    import pyarrow

    return pyarrow


def schema(table: str) -> Any:
    """The Arrow schema of ``table`` (a key of ``COLUMNS``)."""
    arrow = pa()
    types = {
        "str": arrow.string(),
        "i32": arrow.int32(),
        "i64": arrow.int64(),
        "bool": arrow.bool_(),
    }
    fields = []
    for column in COLUMNS[table].split():
        name, kind = column.split(":")
        is_list = kind.startswith("[")
        kind = kind.strip("[]")
        fields.append(arrow.field(name, arrow.list_(types[kind]) if is_list else types[kind]))
    return arrow.schema(fields)


def schemas(dim: int | None) -> dict[str, Any]:
    """The schemas of a repository's tables; ``vectors`` only with a dimension."""
    out = {t: schema(t) for t in DATA_TABLES}
    if dim is not None:
        arrow = pa()
        out["vectors"] = arrow.schema(
            [
                arrow.field("content_hash", arrow.string()),
                arrow.field("vector", arrow.list_(arrow.float32(), dim)),
            ]
        )
    return out


def path_id(path: str) -> str:
    """A SQL-safe key for a path (paths may hold quotes, newlines, anything)."""
    return hashlib.sha1(path.encode("utf-8", "surrogatepass")).hexdigest()


def in_list(values: Sequence[str]) -> str:
    """``values`` as the body of a SQL ``IN (...)``."""
    # Only ever hex digests and content hashes: no quoting issues.
    return ", ".join(f"'{v}'" for v in values)


def with_path_id(data: dict[str, Any], path: str) -> dict[str, Any]:
    """``data`` (a row to write) with the ``path_id`` of ``path``."""
    data["path_id"] = path_id(path)
    return data


def file_records(table: Any) -> dict[str, FileRecord]:
    """The rows of a ``files`` table, by path."""
    rows = table.to_arrow().drop_columns(["path_id"]).to_pylist()
    return {r["path"]: FileRecord(**{**r, "language": r["language"] or None}) for r in rows}


def chunk(r: dict[str, Any]) -> Chunk:
    """A ``Chunk`` from a row of ``CHUNK_COLUMNS``."""
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
