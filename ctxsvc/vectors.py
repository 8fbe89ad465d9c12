"""The vector signal of a query: its embedding, or why there is none.

A query is answered without vectors, and says so, when the index has none,
when the service runs another model than the index was built with, or when
the model fails or stalls on the query: the vector signal degrades an answer,
never fails it.
"""

from __future__ import annotations

import threading

import numpy as np
import numpy.typing as npt

from ctxsvc.indexers.embed import Embedder, ModelLoading
from ctxsvc.stores.lance import IndexMeta

QUERY_CACHE_SIZE = 1024


class QueryVectors:
    """Embeds queries for indexes built with ``embedder``'s model.

    ``query_embedder`` (default: ``embedder``) embeds queries, typically the
    same model under a shorter timeout. ``embedder_error`` says why there is
    no embedder when loading one failed. Vectors are cached per query text:
    agents repeat queries at other budgets and detail levels.
    """

    def __init__(
        self,
        embedder: Embedder | None,
        *,
        query_embedder: Embedder | None = None,
        embedder_error: str | None = None,
    ) -> None:
        self.embedder = embedder
        self.query_embedder = query_embedder or embedder
        self.embedder_error = embedder_error
        self._cache: dict[tuple[str, str], npt.NDArray[np.float32]] = {}
        self._lock = threading.Lock()

    def vector(
        self, meta: IndexMeta, query: str
    ) -> tuple[npt.NDArray[np.float32] | None, list[str]]:
        """The query's vector for ``meta``, or None; and what is degraded."""
        if meta.vectors == "disabled" or not meta.model:
            return None, ["vector: this index was built without vectors"]
        if self.embedder is None or self.query_embedder is None:
            return None, [
                f"vector: no embedding model loaded ({self.embedder_error or 'none configured'})"
            ]
        if meta.model != self.embedder.name:
            return None, [
                f"vector: the index holds {meta.model} vectors, the service runs {self.embedder.name}"
            ]
        notes = []
        if meta.vectors == "partial":
            notes.append(
                f"vectors: partial {meta.vectors_percent()}: chunks without a vector yet "
                "are ranked by the other signals"
            )
        elif meta.vectors != "complete":
            notes.append(f"vector: only some chunks have vectors ({meta.vectors})")
        try:
            return self._embed(self.query_embedder, query), notes
        except ModelLoading:
            return None, ["vector: the embedding model is still loading: answered without it"]
        except Exception as exc:  # a failing or stalled model degrades the answer, never fails it
            return None, [f"vector: the query could not be embedded ({type(exc).__name__}: {exc})"]

    def _embed(self, embedder: Embedder, query: str) -> npt.NDArray[np.float32]:
        key = (embedder.name, query)
        with self._lock:
            cached = self._cache.get(key)
        if cached is None:
            cached = np.asarray(embedder.embed([query])[0], dtype=np.float32)
            with self._lock:
                self._cache[key] = cached
                while len(self._cache) > QUERY_CACHE_SIZE:
                    self._cache.pop(next(iter(self._cache)))
        return cached
