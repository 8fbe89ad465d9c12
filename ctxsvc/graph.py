"""The code graph and personalised PageRank over it.

Nodes are definitions (``path::qualname``) plus one node per file for code
outside any definition (``path::``). An edge runs from the place a name is
used to every definition of that name, weighted down when the name is
defined in many places (``get`` says little; ``resolve_fixture`` says a
lot), as Aider's repository map does for files. Calls weigh more than other
uses; a definition and its parent are joined both ways, so a class and its
methods share relevance; and every edge has a weaker reverse edge, because a
task that touches a function often touches its callers too.

Seeded with the symbols of the first retrieval hits, PageRank spreads their
relevance to the code they call and the code that calls them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt

from ctxsvc.models import Import, Reference, Symbol

CALL_WEIGHT = 1.0
USE_WEIGHT = 0.5
IMPORT_WEIGHT = 0.5
CONTAINS_WEIGHT = 0.5
REVERSE_WEIGHT = 0.5
MAX_DEFS_PER_NAME = 12  # a name defined more often than this is noise, not a link


def node_key(path: str, qualname: str | None) -> str:
    return f"{path}::{qualname or ''}"


@dataclass(frozen=True)
class CodeGraph:
    """A weighted directed graph, rows normalised for PageRank."""

    keys: tuple[str, ...]
    index: Mapping[str, int]
    # CSR arrays of the row-normalised transition matrix (row = source)
    indptr: npt.NDArray[np.int64]
    indices: npt.NDArray[np.int64]
    weights: npt.NDArray[np.float64]
    edges: int

    def __len__(self) -> int:
        return len(self.keys)

    @cached_property
    def transposed(self) -> Any:
        """The transition matrix transposed (scipy CSR), for fast propagation."""
        from scipy.sparse import csr_matrix

        n = len(self.keys)
        return csr_matrix((self.weights, self.indices, self.indptr), shape=(n, n)).T.tocsr()

    @cached_property
    def dangling(self) -> npt.NDArray[np.bool_]:
        out: npt.NDArray[np.bool_] = np.diff(self.indptr) == 0
        return out


def build_graph(
    symbols: Sequence[Symbol], refs: Iterable[Reference], imports: Iterable[Import] = ()
) -> CodeGraph:
    """The code graph of a repository from its definitions, references and imports."""
    keys: list[str] = []
    index: dict[str, int] = {}

    def node(key: str) -> int:
        i = index.get(key)
        if i is None:
            i = index[key] = len(keys)
            keys.append(key)
        return i

    defs_by_name: dict[str, list[int]] = defaultdict(list)
    for s in symbols:
        i = node(node_key(s.path, s.qualname))
        defs_by_name[s.name].append(i)
        node(node_key(s.path, None))
    weights: dict[tuple[int, int], float] = defaultdict(float)
    for s in symbols:
        child = index[node_key(s.path, s.qualname)]
        parent = (
            index.get(node_key(s.path, s.parent)) if s.parent else index[node_key(s.path, None)]
        )
        if parent is not None:
            weights[(child, parent)] += CONTAINS_WEIGHT
            weights[(parent, child)] += CONTAINS_WEIGHT
    for r in refs:
        targets = defs_by_name.get(r.name)
        if not targets or len(targets) > MAX_DEFS_PER_NAME:
            continue
        src = index.get(node_key(r.path, r.scope))
        if src is None:
            src = node(node_key(r.path, None))
        w = (CALL_WEIGHT if r.kind == "call" else USE_WEIGHT) / len(targets)
        for dst in targets:
            if dst != src:
                weights[(src, dst)] += w
                weights[(dst, src)] += w * REVERSE_WEIGHT
    for imp in imports:
        src = node(node_key(imp.path, None))
        for name in imp.names:
            targets = defs_by_name.get(name)
            if not targets or len(targets) > MAX_DEFS_PER_NAME:
                continue
            for dst in targets:
                weights[(src, dst)] += IMPORT_WEIGHT / len(targets)
                weights[(dst, src)] += IMPORT_WEIGHT * REVERSE_WEIGHT / len(targets)
    return _csr(tuple(keys), index, weights)


def _csr(
    keys: tuple[str, ...], index: dict[str, int], weights: Mapping[tuple[int, int], float]
) -> CodeGraph:
    n = len(keys)
    if not weights:
        empty = np.zeros(0, dtype=np.int64)
        return CodeGraph(keys, index, np.zeros(n + 1, dtype=np.int64), empty, np.zeros(0), 0)
    pairs = np.array(list(weights.keys()), dtype=np.int64)
    vals = np.array(list(weights.values()), dtype=np.float64)
    order = np.lexsort((pairs[:, 1], pairs[:, 0]))
    src, dst, vals = pairs[order, 0], pairs[order, 1], vals[order]
    out_sum = np.bincount(src, weights=vals, minlength=n)
    vals = vals / out_sum[src]
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(src, minlength=n), out=indptr[1:])
    return CodeGraph(keys, index, indptr, dst, vals, len(vals))


def personalized_pagerank(
    graph: CodeGraph,
    seeds: Mapping[int, float],
    *,
    damping: float = 0.85,
    iterations: int = 25,
    tol: float = 1e-5,
) -> npt.NDArray[np.float64]:
    """Stationary visit probabilities of a walk that restarts at ``seeds``.

    Dangling nodes (no out-edges) return to the seeds.
    """
    n = len(graph)
    if n == 0 or not seeds:
        return np.zeros(n)
    restart = np.zeros(n)
    for i, w in seeds.items():
        restart[i] += max(w, 0.0)
    total = restart.sum()
    if total <= 0:
        return np.zeros(n)
    restart /= total
    matrix, dangling = graph.transposed, graph.dangling
    rank = restart.copy()
    for _ in range(iterations):
        new = damping * (matrix @ rank + rank[dangling].sum() * restart) + (1 - damping) * restart
        if np.abs(new - rank).sum() < tol:
            return np.asarray(new)
        rank = new
    return rank
