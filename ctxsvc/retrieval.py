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
from ctxsvc.indexers.terms import code_terms
from ctxsvc.models import Hit
from ctxsvc.ranking import TEST_PATH, Ranker, Signals, features
from ctxsvc.view import RepoView

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
    # "learned": the shipped LambdaRank model orders candidates (fusion when it cannot
    # load, said in ``degraded``); "fusion": the hand weights above, for ablation.
    ranker: str = "learned"
    history: bool = True  # git history features (file and lines' changes, co-change)
    # Share of the budget given first to the best chunk of each ranked file.
    spread: float = 0.0
    whole_definitions: bool = True  # a hit inside a definition brings the whole of it

    def enabled(self, signal: str) -> bool:
        return bool(getattr(self, signal))


def retrieve(
    view: RepoView,
    query: str,
    query_vector: npt.NDArray[np.float32] | None,
    config: RetrievalConfig,
    *,
    limit: int,
    ranker: Ranker | None = None,
) -> list[Hit]:
    """Ranked chunks for ``query``: the first ``limit`` candidates of each signal, fused.

    With ``ranker``, the learned model orders the candidates; without one, the
    hand-weighted fusion of ``config`` does.
    """
    signals = gather(view, query, query_vector, config, limit=limit)
    if ranker is None or not signals.fused:
        return fusion_hits(view, signals, config)
    pos, x = features(view, query, signals, history=config.history)
    learned = ranker.score(x)
    why = _why(signals)
    order = sorted(
        range(len(pos)),
        key=lambda r: (-learned[r], view.chunks[pos[r]].path, view.chunks[pos[r]].start_line),
    )
    # A score in (0, 1) as the other rankings give (the logistic of the model's, which
    # keeps its order; clipped so that no exponent overflows).
    scores = 1.0 / (1.0 + np.exp(-np.clip(learned, -30.0, 30.0)))
    return [Hit(view.chunks[pos[r]], float(scores[r]), why[pos[r]]) for r in order]


def gather(
    view: RepoView,
    query: str,
    query_vector: npt.NDArray[np.float32] | None,
    config: RetrievalConfig,
    *,
    limit: int,
) -> Signals:
    """Each enabled signal's first ``limit`` candidates with scores, and their fusion."""
    signals = Signals(query_vector=query_vector if config.vector else None)
    if config.fts:
        terms = " ".join(dict.fromkeys(code_terms(query)))
        signals.add(
            "fts",
            [(view.chunk_index[c.id], s) for c, s in view.reader.fts(terms, limit)
             if c.id in view.chunk_index],
        )  # fmt: skip
    if config.vector and query_vector is not None:
        signals.add("vector", view.nearest(query_vector, limit))
    if config.symbol:
        signals.add("symbol", symbol_scores(view, query)[:limit])
    rankings = {k: sorted(v, key=lambda i: v[i][0]) for k, v in signals.ranked.items()}
    scores = fuse(rankings, config.weights, config.rrf_k)
    if config.graph and scores:
        seeds = sorted(scores, key=scores.__getitem__, reverse=True)[: config.graph_seeds]
        signals.add("graph", graph_scores(view, {i: scores[i] for i in seeds})[:limit])
        rankings["graph"] = [i for i, _ in sorted(signals.ranked["graph"].items(),
                                                  key=lambda kv: kv[1][0])]  # fmt: skip
        scores = fuse(rankings, config.weights, config.rrf_k)
    signals.fused = scores
    return signals


def fusion_hits(view: RepoView, signals: Signals, config: RetrievalConfig) -> list[Hit]:
    """The candidates ordered by hand-weighted fusion, file boost and path priors."""
    scores = signals.fused
    if config.file_boost:
        scores = boost_files(view, scores, config.file_boost)
    if config.prose_weight != 1.0 or config.test_weight != 1.0:
        scores = {
            i: s * path_prior(view.chunks[i].path, view.chunks[i].language, config)
            for i, s in scores.items()
        }
    why = _why(signals)
    order = sorted(
        scores, key=lambda i: (-scores[i], view.chunks[i].path, view.chunks[i].start_line)
    )
    return [Hit(view.chunks[i], round(scores[i], 6), why[i]) for i in order]


def _why(signals: Signals) -> dict[int, tuple[str, ...]]:
    why: dict[int, list[str]] = defaultdict(list)
    for signal, ranked in signals.ranked.items():
        for i, (rank, _) in sorted(ranked.items(), key=lambda kv: kv[1][0]):
            why[i].append(f"{signal}#{rank}")
    return defaultdict(tuple, {i: tuple(w) for i, w in why.items()})


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


def symbol_scores(view: RepoView, query: str) -> list[tuple[int, float]]:
    """Chunks defining a name the query mentions, with a weight: identifier-like and
    rare names first."""
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
    order = sorted(found, key=lambda i: (-found[i], view.chunks[i].path, view.chunks[i].start_line))
    return [(i, found[i]) for i in order]


def graph_scores(view: RepoView, seeds: Mapping[int, float]) -> list[tuple[int, float]]:
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
    return [(int(i), float(score[i])) for i in order[: int((score > 0).sum())]]


def boost_files(view: RepoView, scores: Mapping[int, float], weight: float) -> dict[int, float]:
    """File-aware fusion: a chunk gains from the other strong chunks of its file."""
    per_file: dict[str, list[float]] = defaultdict(list)
    for i, s in scores.items():
        per_file[view.chunks[i].path].append(s)
    file_score = {p: sum(sorted(v, reverse=True)[:3]) for p, v in per_file.items()}
    return {i: s + weight * (file_score[view.chunks[i].path] - s) for i, s in scores.items()}


def path_prior(path: str, language: str | None, config: RetrievalConfig) -> float:
    """How much less a file counts for being prose or a test, example or benchmark."""
    weight = 1.0
    if language is None:
        weight *= config.prose_weight
    if TEST_PATH.search(path):
        weight *= config.test_weight
    return weight
