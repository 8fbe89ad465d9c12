"""Candidate retrieval: four signals, fused by weighted reciprocal rank.

- ``fts``: BM25 over code-aware terms (camelCase and snake_case split, path
  segments), from LanceDB's full-text index;
- ``vector``: cosine similarity of the query's embedding to each chunk's;
- ``symbol``: words of the query that name a definition (``resolve_fixture``,
  ``Session``), rarer names first;
- ``graph``: personalised PageRank over the code graph, seeded by the best
  chunks of the other signals, so the code they call and that calls them
  comes along.

Every signal can be switched off (``RetrievalConfig``), for ablation and for
degraded indexes. The view is pinned to one committed index version, so a
query never sees a half-written run.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from ctxsvc.graph import personalized_pagerank
from ctxsvc.models import Hit
from ctxsvc.view import RepoView
from indexers.terms import code_terms

SIGNALS = ("fts", "vector", "symbol", "graph")

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{2,}")
# Words of commit messages that name no code even when a definition is so called.
_STOP = frozenset(
    """the and for with from that this when into add adds added fix fixes fixed use uses used
    make makes remove removes removed update updates updated allow allows support supports
    new not now all any can should would will are was were has have had its also only more
    than then them they there which while where what how why test tests bug issue error
    default value values type types name names file files list data get set run""".split()
)


@dataclass(frozen=True)
class RetrievalConfig:
    """Which signals run and how they are weighed; chosen by measurement."""

    fts: bool = True
    vector: bool = True
    symbol: bool = True
    graph: bool = True
    weights: Mapping[str, float] = field(
        default_factory=lambda: {"fts": 1.0, "vector": 1.0, "symbol": 1.0, "graph": 0.5}
    )
    rrf_k: int = 60
    graph_seeds: int = 8  # fused hits that seed PageRank
    file_boost: float = 0.0  # file-aware fusion: weight of the file's best other chunks
    # Priors: a task in words is usually about source code, less often about
    # prose (docs, changelogs) or tests; 1.0 switches a prior off.
    prose_weight: float = 0.25
    test_weight: float = 0.25
    # Share of the budget given first to the best chunk of each ranked file.
    spread: float = 0.0

    def enabled(self, signal: str) -> bool:
        return bool(getattr(self, signal))


def retrieve(
    view: RepoView,
    query: str,
    query_vector: npt.NDArray[np.float32] | None,
    config: RetrievalConfig,
    *,
    limit: int,
) -> list[Hit]:
    """Ranked chunks for ``query``: the first ``limit`` candidates of each signal, fused."""
    rankings: dict[str, list[int]] = {}
    if config.fts:
        terms = " ".join(dict.fromkeys(code_terms(query)))
        rankings["fts"] = [
            view.chunk_index[c.id]
            for c, _ in view.reader.fts(terms, limit)
            if c.id in view.chunk_index
        ]
    if config.vector and query_vector is not None:
        rankings["vector"] = [i for i, _ in view.nearest(query_vector, limit)]
    if config.symbol:
        rankings["symbol"] = symbol_matches(view, query)[:limit]
    scores = fuse(rankings, config.weights, config.rrf_k)
    if config.graph and scores:
        seeds = sorted(scores, key=scores.__getitem__, reverse=True)[: config.graph_seeds]
        rankings["graph"] = graph_ranking(view, {i: scores[i] for i in seeds})[:limit]
        scores = fuse(rankings, config.weights, config.rrf_k)
    if config.file_boost:
        scores = boost_files(view, scores, config.file_boost)
    if config.prose_weight != 1.0 or config.test_weight != 1.0:
        scores = {
            i: s * path_prior(view.chunks[i].path, view.chunks[i].language, config)
            for i, s in scores.items()
        }
    why: dict[int, list[str]] = defaultdict(list)
    for signal, ranked in rankings.items():
        for rank, i in enumerate(ranked, start=1):
            why[i].append(f"{signal}#{rank}")
    order = sorted(
        scores, key=lambda i: (-scores[i], view.chunks[i].path, view.chunks[i].start_line)
    )
    return [Hit(view.chunks[i], round(scores[i], 6), tuple(why[i])) for i in order]


def fuse(
    rankings: Mapping[str, Sequence[int]], weights: Mapping[str, float], k: int
) -> dict[int, float]:
    """Weighted reciprocal-rank fusion: sum over signals of weight / (k + rank)."""
    scores: dict[int, float] = defaultdict(float)
    for signal, ranked in rankings.items():
        w = weights.get(signal, 1.0)
        for rank, i in enumerate(ranked, start=1):
            scores[i] += w / (k + rank)
    return dict(scores)


def symbol_matches(view: RepoView, query: str) -> list[int]:
    """Chunks defining a name the query mentions; identifier-like and rare names first."""
    found: dict[int, float] = {}
    for word in dict.fromkeys(_WORD.findall(query)):
        low = word.lower()
        if low in _STOP:
            continue
        defs = view.defs_by_name.get(low)
        if not defs or len(defs) > 20:
            continue
        identifier = "_" in word.strip("_") or any(ch.isupper() for ch in word[1:])
        weight = (2.0 if identifier else 1.0) / len(defs)
        for d in defs:
            s = view.symbols[d]
            pos = view.chunk_at(s.path, s.start_line)
            if pos is not None:
                found[pos] = max(found.get(pos, 0.0), weight)
    return sorted(found, key=lambda i: (-found[i], view.chunks[i].path, view.chunks[i].start_line))


def graph_ranking(view: RepoView, seeds: Mapping[int, float]) -> list[int]:
    """Chunks by the PageRank of their definitions, restarted at the seed chunks."""
    node_seeds: dict[int, float] = defaultdict(float)
    for pos, w in seeds.items():
        nodes = view.chunk_nodes[pos]
        for n in nodes:
            node_seeds[n] += w / len(nodes)
    if not node_seeds:
        return []
    rank = personalized_pagerank(view.graph, node_seeds)
    chunk_of, node_of = view.node_pairs
    score = np.zeros(len(view.chunks))
    np.maximum.at(score, chunk_of, rank[node_of])
    order = np.argsort(-score, kind="stable")
    return [int(i) for i in order[: int((score > 0).sum())]]


def boost_files(view: RepoView, scores: Mapping[int, float], weight: float) -> dict[int, float]:
    """File-aware fusion: a chunk gains from the other strong chunks of its file."""
    per_file: dict[str, list[float]] = defaultdict(list)
    for i, s in scores.items():
        per_file[view.chunks[i].path].append(s)
    file_score = {p: sum(sorted(v, reverse=True)[:3]) for p, v in per_file.items()}
    return {i: s + weight * (file_score[view.chunks[i].path] - s) for i, s in scores.items()}


_TEST_PATH = re.compile(
    r"(^|/)(tests?|testing|spec|specs|__tests__|benches|examples?)/|(^|/)test_[^/]*$|_test\.[a-z]+$|\.(test|spec)\.[a-z]+$"
)


def path_prior(path: str, language: str | None, config: RetrievalConfig) -> float:
    """How much less a file counts for being prose or a test, example or benchmark."""
    weight = 1.0
    if language is None:
        weight *= config.prose_weight
    if _TEST_PATH.search(path):
        weight *= config.test_weight
    return weight
