"""Answers over several indexes in one call: scores made comparable, the budget shared.

A context or search call may name up to ``MAX_REPOS`` indexes. Each is asked
as it would be alone (its own retrieval, ranker, session ledger, freshness
and degraded signals); what they found is then merged here:

- **Scores** are normalised per index, min-max over that index's candidates:
  its best becomes 1, its weakest 0. Raw scores do not compare across
  indexes: BM25 depends on each corpus's term statistics, fused reciprocal
  ranks on how many signals ran (an index without vectors scores lower
  throughout), and the learned ranker's margins are relative to one list and
  may be negative (so dividing by the top score is not defined). Min-max
  keeps the shape of each index's list, which rank-only fusion would throw
  away: an index with one good match and then a cliff yields less than one
  with ten good ones. Each index keeps its own order (the merge takes the
  best head of the lists, ties to the index named first), so whatever each
  index's packer would have preferred, it still prefers.
- **The budget** is shared (``ctxsvc.packing.pack``): each of the n indexes
  with candidates is guaranteed room // n, in its own order; what one leaves
  unused goes to the others' remaining candidates, by merged score. Search
  lists share their ``limit`` the same way: each index its best limit // n
  entries, the rest by merged score.
- Every item, left-out entry, already-sent span and hit names its index; the
  text's file headings do too (``## repo: path``). Degraded notes start with
  the index they concern, and ``indexes`` gives each one's version.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from ctxsvc.blocks import Block
from ctxsvc.errors import InvalidRequest
from ctxsvc.limits import MAX_REPOS
from ctxsvc.models import ContextPack, DeliveredSpan, IndexVersion, SearchResult
from ctxsvc.packing import pack
from ctxsvc.tokens import TokenCounter

T = TypeVar("T")


def repo_names(repo: str | None, repos: Sequence[str] | None) -> list[str]:
    """The indexes a call names: ``repo`` (if given), then ``repos``; 1 to ``MAX_REPOS``,
    none twice."""
    names = [*([] if repo is None else [repo]), *(repos or ())]
    if not names:
        raise InvalidRequest("repo or repos is required", hint="name an index, or several in repos")
    if len(names) > MAX_REPOS:
        raise InvalidRequest(f"at most {MAX_REPOS} repositories in one call, got {len(names)}")
    twice = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if twice is not None:
        raise InvalidRequest(f"repository {twice!r} is named twice", hint="name each index once")
    return names


def distinct(names: Sequence[str], resolve: Callable[[str], str]) -> list[str]:
    """The index name of each of ``names`` (a name or a root directory), every one checked
    before any is asked (``RepoNotFound`` names the first unknown); two that are one
    index are refused."""
    found = [resolve(n) for n in names]
    for i, name in enumerate(found):
        if name in found[:i]:
            first = names[found.index(name)]
            raise InvalidRequest(
                f"{first!r} and {names[i]!r} are the same index {name!r}",
                hint="name each index once",
            )
    return found


@dataclass(frozen=True)
class Part:
    """One index's part of an answer over several: its candidates, in its own order."""

    repo: str
    blocks: Sequence[Block]
    index: IndexVersion
    degraded: Sequence[str] = ()
    already: Sequence[DeliveredSpan] = ()  # what the session holds of it, unchanged


def normalised(scores: Sequence[float]) -> list[float]:
    """``scores`` mapped to 0..1 by min-max: the best 1, the weakest 0 (all 1 when equal)."""
    real = [s for s in scores if math.isfinite(s)]
    lo, hi = (min(real), max(real)) if real else (0.0, 0.0)
    if hi <= lo:
        return [1.0] * len(scores)
    return [(s - lo) / (hi - lo) if math.isfinite(s) else 0.0 for s in scores]


def merge(lists: Sequence[Sequence[tuple[T, float]]]) -> list[tuple[int, T, float]]:
    """Every entry of ``lists`` (each ``(entry, normalised score)`` in its own order), as
    ``(list, entry, score)``: the best head of the lists first, ties to the earlier list."""
    heads = [(-xs[0][1], i, 0) for i, xs in enumerate(lists) if xs]
    heapq.heapify(heads)
    out: list[tuple[int, T, float]] = []
    while heads:
        _, i, k = heapq.heappop(heads)
        entry, score = lists[i][k]
        out.append((i, entry, score))
        if k + 1 < len(lists[i]):
            heapq.heappush(heads, (-lists[i][k + 1][1], i, k + 1))
    return out


def pack_many(
    parts: Sequence[Part],
    query: str,
    budget_tokens: int,
    counter: TokenCounter,
    *,
    detail: str = "snippets",
    session_id: str | None = None,
) -> ContextPack:
    """The pack over ``parts``: their candidates merged by normalised score, the budget
    shared fairly (see the module's docstring), each file's heading naming its index."""
    lists = [
        list(zip(p.blocks, normalised([b.score for b in p.blocks]), strict=True)) for p in parts
    ]
    blocks: list[Block] = []
    for i, block, score in merge(lists):
        block.repo, block.score = parts[i].repo, score
        blocks.append(block)
    names = tuple(p.repo for p in parts)
    result = pack(
        ",".join(names), query, blocks, budget_tokens, counter, detail=detail,
        degraded=[f"{p.repo}: {d}" for p in parts for d in p.degraded], session_id=session_id,
        already_sent=[replace(s, repo=p.repo) for p in parts for s in p.already],
    )  # fmt: skip
    return replace(result, repos=names, indexes={p.repo: p.index for p in parts})


def merge_search(results: Sequence[SearchResult], limit: int) -> SearchResult:
    """One search result of several indexes' (each filled with its ``repo``, in the
    request's order): files and symbols normalised per index, shared fairly."""
    names = tuple(r.repos[0] if r.repos else r.repo for r in results)
    files = _shared([[(f, f.score) for f in r.files] for r in results], limit)
    symbols = _shared([[(s, s.score) for s in r.symbols] for r in results], limit)
    return SearchResult(
        repo=",".join(names), query=results[0].query if results else "",
        files=tuple(replace(f, score=score) for f, score in files),
        symbols=tuple(replace(s, score=score) for s, score in symbols),
        degraded=tuple(f"{n}: {d}" for n, r in zip(names, results, strict=True) for d in r.degraded),
        repos=names,
        indexes={n: r.index for n, r in zip(names, results, strict=True) if r.index is not None},
    )  # fmt: skip


def _shared(lists: Sequence[Sequence[tuple[T, float]]], limit: int) -> list[tuple[T, float]]:
    """At most ``limit`` entries of ``lists`` (each best first): each list's first
    limit // n are kept, then the best of the rest, all in merged order."""
    order = merge(
        [list(zip((e for e, _ in xs), normalised([s for _, s in xs]), strict=True)) for xs in lists]
    )
    quota = limit // max(1, len(lists))
    kept: set[int] = set()
    taken = [0] * len(lists)
    for k, (i, _, _) in enumerate(order):
        if taken[i] < quota:
            kept.add(k)
            taken[i] += 1
    for k in range(len(order)):
        if len(kept) >= limit:
            break
        kept.add(k)
    return [(order[k][1], order[k][2]) for k in sorted(kept)]
