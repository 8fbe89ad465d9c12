"""Candidate retrieval: full text and vector signals, fused by rank.

The reader is pinned to one committed index version, so a query never sees
a half-written run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ctxsvc.models import Chunk, Hit
from ctxsvc.stores.lance import RepoReader
from indexers.embed import Embedder
from indexers.terms import code_terms

RRF_K = 60


def fuse(rankings: Mapping[str, Sequence[Chunk]], *, k: int = RRF_K) -> list[Hit]:
    """Reciprocal-rank fusion: score = sum over signals of 1 / (k + rank)."""
    scores: dict[str, float] = {}
    chunks: dict[str, Chunk] = {}
    why: dict[str, list[str]] = {}
    for signal, ranked in rankings.items():
        for rank, chunk in enumerate(ranked, start=1):
            scores[chunk.id] = scores.get(chunk.id, 0.0) + 1.0 / (k + rank)
            chunks[chunk.id] = chunk
            why.setdefault(chunk.id, []).append(f"{signal}#{rank}")
    order = sorted(scores, key=lambda cid: (-scores[cid], chunks[cid].path, chunks[cid].start_line))
    return [Hit(chunks[c], round(scores[c], 6), tuple(why[c])) for c in order]


def retrieve(
    reader: RepoReader, query: str, embedder: Embedder | None, *, limit: int = 60
) -> tuple[list[Hit], list[str]]:
    """Ranked candidates for ``query`` and the list of signals that were unavailable."""
    degraded: list[str] = []
    rankings: dict[str, list[Chunk]] = {}
    terms = " ".join(dict.fromkeys(code_terms(query)))
    rankings["fts"] = [c for c, _ in reader.fts(terms, limit)]
    if embedder is None:
        degraded.append("vector: no embedding model loaded")
    elif reader.meta.model != embedder.name:
        degraded.append(
            f"vector: index holds {reader.meta.model} vectors, the service runs {embedder.name}"
        )
    elif "vectors" not in reader.meta.versions:
        degraded.append("vector: this index has no vectors")
    else:
        if reader.meta.vectors != "complete":
            degraded.append(f"vector: only some chunks have vectors ({reader.meta.vectors})")
        nearest = reader.vector_search(embedder.embed([query])[0], limit)
        by_hash = reader.chunks_by_hash([h for h, _ in nearest])
        rankings["vector"] = [c for h, _ in nearest for c in by_hash.get(h, [])]
    return fuse(rankings), degraded
