"""Localization metrics: pure functions over delivered line spans.

A context is reduced to the lines it delivers, per path: a mapping from a
repository-relative path to sorted, disjoint, 1-based inclusive spans. Gold
comes from a task: ``gold`` (files) and ``regions`` (path -> ``[[start, end]]``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

Span = tuple[int, int]
Delivered = dict[str, list[Span]]


def merge_spans(spans: Iterable[Span]) -> list[Span]:
    """Sorted, disjoint spans covering the same lines (adjacent spans join)."""
    out: list[Span] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def delivered_lines(items: Iterable[tuple[str, int, int]]) -> Delivered:
    """The union of ``(path, start_line, end_line)`` items, per path."""
    by_path: dict[str, list[Span]] = defaultdict(list)
    for path, start, end in items:
        by_path[path].append((start, end))
    return {path: merge_spans(spans) for path, spans in by_path.items()}


def covers(spans: Sequence[Span], start: int, end: int) -> bool:
    """Whether every line of ``start..end`` lies in ``spans`` (merged)."""
    return any(s <= start and end <= e for s, e in spans)


def all_covered(delivered: Mapping[str, Sequence[Span]], path: str, start: int, end: int) -> bool:
    return covers(delivered.get(path, ()), start, end)


def file_hit(delivered: Mapping[str, Sequence[Span]], gold: Sequence[str]) -> float | None:
    """Share of gold files with at least one delivered line (None without gold)."""
    if not gold:
        return None
    return sum(1 for path in gold if delivered.get(path)) / len(gold)


def region_recall(
    delivered: Mapping[str, Sequence[Span]], regions: Mapping[str, Sequence[Sequence[int]]]
) -> float | None:
    """Share of gold regions wholly covered by delivered lines (None without regions).

    ``delivered`` must hold merged spans (``delivered_lines`` or ``merge_spans``),
    so a region spanning two adjacent snippets counts as covered.
    """
    flat = [(path, int(r[0]), int(r[1])) for path, rs in regions.items() for r in rs]
    if not flat:
        return None
    return sum(1 for path, s, e in flat if all_covered(delivered, path, s, e)) / len(flat)


def savings(tokens_delivered: int, repo_tokens: int) -> float:
    """1 - delivered / whole repository: the share of tokens not sent."""
    return 1.0 - tokens_delivered / repo_tokens if repo_tokens else 0.0


def mean(values: Iterable[float | None]) -> float | None:
    """Mean of the values that are not None; None when there are none."""
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) with linear interpolation; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


METRICS = ("file_hit", "region_recall", "tokens", "savings")

Cell = dict[str, float | int | None]


def aggregate(rows: Iterable[Mapping[str, object]]) -> tuple[dict[str, object], dict[str, object]]:
    """Per-repository means over tasks, then means over repositories.

    ``rows`` carry ``system``, ``budget``, ``repo``, the ``METRICS``,
    ``overrun`` (bool) and optionally ``latency_ms``. Returns
    ``(per_repo, overall)`` keyed ``[system][str(budget)][repo]`` and
    ``[system][str(budget)]``. Overruns are counted, not averaged; latency
    percentiles (``p50_ms``, ``p95_ms``) pool every query of the cell, since
    percentiles of repositories cannot be averaged.
    """
    groups: dict[tuple[str, int, str], list[Mapping[str, object]]] = defaultdict(list)
    for row in rows:
        groups[(str(row["system"]), int(row["budget"]), str(row["repo"]))].append(row)  # type: ignore[call-overload]
    per_repo: dict[str, dict[str, dict[str, Cell]]] = {}
    pooled: dict[tuple[str, str], list[float]] = defaultdict(list)
    for (system, budget, repo), members in sorted(groups.items()):
        cell: Cell = {m: mean(_num(r.get(m)) for r in members) for m in METRICS}
        cell["overruns"] = sum(1 for r in members if r.get("overrun"))
        cell["tasks"] = len(members)
        ms = [v for r in members if (v := _num(r.get("latency_ms"))) is not None]
        cell["p50_ms"], cell["p95_ms"] = percentile(ms, 50), percentile(ms, 95)
        pooled[(system, str(budget))].extend(ms)
        per_repo.setdefault(system, {}).setdefault(str(budget), {})[repo] = cell
    overall: dict[str, dict[str, Cell]] = {}
    for system, budgets in per_repo.items():
        for key, repos in budgets.items():
            cell = {m: mean(_num(c[m]) for c in repos.values()) for m in METRICS}
            cell["overruns"] = sum(int(c["overruns"] or 0) for c in repos.values())
            cell["tasks"] = sum(int(c["tasks"] or 0) for c in repos.values())
            cell["repos"] = len(repos)
            ms = pooled[(system, key)]
            cell["p50_ms"], cell["p95_ms"] = percentile(ms, 50), percentile(ms, 95)
            overall.setdefault(system, {})[key] = cell
    return dict(per_repo), dict(overall)


def _num(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
