"""The code graph and personalised PageRank, on graphs small enough to reason about."""

from __future__ import annotations

import numpy as np

from ctxsvc.graph import build_graph, node_key, personalized_pagerank
from ctxsvc.models import Import, Reference, Symbol
from ctxsvc.retrieval import fuse


def sym(path: str, qualname: str, parent: str | None = None) -> Symbol:
    return Symbol(
        qualname.rsplit(".", 1)[-1],
        qualname,
        "function",
        path,
        1,
        2,
        f"def {qualname}()",
        parent=parent,
    )


SYMBOLS = [
    sym("a.py", "caller"),
    sym("b.py", "target"),
    sym("c.py", "unrelated"),
    sym("d.py", "Klass"),
    sym("d.py", "Klass.method", parent="Klass"),
]
REFS = [Reference("target", "a.py", 2, "call", "caller")]


def test_edges_follow_references_both_ways_and_containment() -> None:
    g = build_graph(SYMBOLS, REFS)
    a, b = g.index[node_key("a.py", "caller")], g.index[node_key("b.py", "target")]
    rank = personalized_pagerank(g, {a: 1.0})
    c = g.index[node_key("c.py", "unrelated")]
    assert rank[b] > 0.1 and rank[c] == 0.0  # relevance flows to the callee, not elsewhere
    back = personalized_pagerank(g, {b: 1.0})
    assert back[a] > 0.0  # and back to the caller, more weakly
    assert back[a] < rank[b]
    k, m = g.index[node_key("d.py", "Klass")], g.index[node_key("d.py", "Klass.method")]
    assert personalized_pagerank(g, {m: 1.0})[k] > 0.1
    assert abs(rank.sum() - 1.0) < 1e-6


def test_ambiguous_names_do_not_link() -> None:
    many = [sym(f"m{i}.py", "get") for i in range(20)]
    g = build_graph([*SYMBOLS, *many], [Reference("get", "a.py", 3, "call", "caller")])
    a = g.index[node_key("a.py", "caller")]
    rank = personalized_pagerank(g, {a: 1.0})
    assert all(rank[g.index[node_key(f"m{i}.py", "get")]] == 0.0 for i in range(20))


def test_imports_link_files_to_definitions() -> None:
    g = build_graph(SYMBOLS, [], [Import("c.py", 1, "b", ("target",))])
    rank = personalized_pagerank(g, {g.index[node_key("c.py", None)]: 1.0})
    assert rank[g.index[node_key("b.py", "target")]] > 0.1


def test_empty_inputs() -> None:
    g = build_graph([], [])
    assert len(g) == 0 and personalized_pagerank(g, {}).size == 0
    assert np.all(personalized_pagerank(build_graph(SYMBOLS, REFS), {}) == 0)


def test_weighted_reciprocal_rank_fusion() -> None:
    scores = fuse({"fts": [1, 2, 3], "vector": [3, 1]}, {"fts": 1.0, "vector": 2.0}, k=60)
    assert scores[1] == 1 / 61 + 2 / 62
    assert scores[3] == 1 / 63 + 2 / 61
    assert max(scores, key=scores.__getitem__) == 3
    assert scores[2] == 1 / 62
