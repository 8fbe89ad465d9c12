"""Reading one repository's index: :class:`RepoReader`, at the versions its row pins."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ctxsvc.errors import InvalidRequest
from ctxsvc.models import Chunk, FileRecord, Import, Reference, Symbol
from ctxsvc.stores.lance_schema import CHUNK_COLUMNS, IndexMeta, chunk, file_records, in_list

if TYPE_CHECKING:
    from ctxsvc.stores.lance import LanceStore


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
        return file_records(self.table("files"))

    def chunks(self, where: str | None = None) -> list[Chunk]:
        q = self.table("chunks").search()
        if where:
            q = q.where(where)
        rows = q.limit(None).select(CHUNK_COLUMNS).to_list()
        return [chunk(r) for r in rows]

    def symbols(self) -> list[Symbol]:
        return [Symbol(**{**r, "parent": r["parent"] or None}) for r in self._rows("symbols")]

    def references(self) -> list[Reference]:
        return [Reference(**{**r, "scope": r["scope"] or None}) for r in self._rows("refs")]

    def imports(self) -> list[Import]:
        return [Import(**{**r, "names": tuple(r["names"] or ())}) for r in self._rows("imports")]

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
            for c in self.chunks(f"content_hash IN ({in_list(sorted(set(hashes)))})"):
                out.setdefault(c.content_hash, []).append(c)
        return out

    def fts(self, terms: str, limit: int) -> list[tuple[Chunk, float]]:
        """Full-text (BM25) search over the chunks' code-aware terms."""
        table = self.table("chunks")
        if not terms.strip() or not table.list_indices():
            return []
        rows = (
            table.search(terms, query_type="fts", fts_columns="terms")
            .select([*CHUNK_COLUMNS, "_score"])
            .limit(limit)
            .to_list()
        )
        return [(chunk(r), float(r["_score"])) for r in rows]

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

    def _rows(self, name: str) -> list[dict[str, Any]]:
        """Every row of table ``name``, without its ``path_id``."""
        rows: list[dict[str, Any]] = (
            self.table(name).to_arrow().drop_columns(["path_id"]).to_pylist()
        )
        return rows
