"""The benchmark's plots, from a small synthetic report: what they draw, not their pixels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ctxsvc.bench.metrics import aggregate
from ctxsvc.bench.report import (
    Report,
    plot_recall,
    plot_tokens,
    recall_per_kilotoken,
    whole_repo_per_kilotoken,
)

BUDGETS = [1000, 2000]
REPO_TOKENS = {"alpha": 40_000, "beta": 10_000}
PNG = b"\x89PNG\r\n\x1a\n"


def row(system: str, repo: str, task: str, budget: int, recall: float | None, tokens: int) -> Any:
    overrun = tokens > budget
    return {
        "system": system, "repo": repo, "task": task, "budget": budget, "name_leak": False,
        "file_hit": None if recall is None else (0.0 if overrun else min(1.0, recall + 0.1)),
        "region_recall": None if recall is None else (0.0 if overrun else recall),
        "tokens": tokens, "overrun": overrun, "savings": 1 - tokens / REPO_TOKENS[repo],
        "latency_ms": None if system == "whole-repo" else 5.0, "items": 1, "degraded": [],
    }  # fmt: skip


def synthetic() -> Report:
    """Two repositories of two tasks; ctxsvc and BM25 both fill every budget, with
    different recall; the oracle sends few tokens; the whole repository overruns."""
    rows = []
    for repo in REPO_TOKENS:
        for task in (f"{repo}-1", f"{repo}-2"):
            for b in BUDGETS:
                ctx = 0.8 if b == 1000 else 0.9
                if repo == "beta":
                    ctx -= 0.2
                rows.append(row("ctxsvc", repo, task, b, ctx, b))
                rows.append(row("bm25-windows", repo, task, b, ctx / 2, b))
                rows.append(row("oracle", repo, task, b, 1.0, 250))
                rows.append(row("whole-repo", repo, task, b, 1.0, REPO_TOKENS[repo]))
        # A task without gold regions counts for nothing, its tokens included.
        for b in BUDGETS:
            rows.append(row("ctxsvc", repo, f"{repo}-none", b, None, b))
    _, overall = aggregate(rows)
    systems = ["ctxsvc", "bm25-windows", "oracle", "whole-repo"]
    return {
        "config": {"budgets": BUDGETS, "systems": systems},
        "repos": {name: {"tasks": 3, "repo_tokens": t} for name, t in REPO_TOKENS.items()},
        "mean": overall,
        "per_task": rows,
    }


def test_recall_per_kilotoken_tells_apart_systems_that_send_the_same_tokens() -> None:
    report = synthetic()
    # The old plot's bars: every system but the oracle at the same height, the budget.
    tokens = {s: [report["mean"][s][str(b)]["tokens"] for b in BUDGETS] for s in report["mean"]}
    assert tokens["ctxsvc"] == tokens["bm25-windows"] == [1000, 2000]
    computed = recall_per_kilotoken(report)
    assert list(computed) == ["ctxsvc", "bm25-windows", "oracle"]  # not the overrunning whole
    series = {s: [v for v in ys if v is not None] for s, ys in computed.items()}
    assert all(len(ys) == len(BUDGETS) for ys in series.values())
    # Per repository: recall summed over tasks per 1K tokens; then the mean of alpha and beta.
    assert series["ctxsvc"] == pytest.approx([(0.8 + 0.6) / 2, (0.9 + 0.7) / 2 / 2])
    assert series["bm25-windows"] == pytest.approx([v / 2 for v in series["ctxsvc"]])
    assert series["oracle"] == pytest.approx([1000 / 250] * 2)
    for j in range(len(BUDGETS)):
        assert series["oracle"][j] > series["ctxsvc"][j] > series["bm25-windows"][j]
    assert whole_repo_per_kilotoken(report) == pytest.approx((1000 / 40_000 + 1000 / 10_000) / 2)


def test_a_cell_without_regions_is_none() -> None:
    report = synthetic()
    report["per_task"] = [
        r for r in report["per_task"] if not (r["system"] == "bm25-windows" and r["budget"] == 2000)
    ]
    assert recall_per_kilotoken(report)["bm25-windows"][1] is None


def test_both_plots_are_written_as_png(tmp_path: Path) -> None:
    report = synthetic()
    for plot, name in ((plot_recall, "recall.png"), (plot_tokens, "tokens.png")):
        path = tmp_path / name
        plot(report, path)
        assert path.read_bytes()[:8] == PNG and path.stat().st_size > 10_000


def test_the_recall_legend_is_outside_the_axes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import matplotlib.pyplot as plt

    figures: list[Any] = []
    close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig: figures.append(fig))
    plot_recall(synthetic(), tmp_path / "recall.png")
    plot_tokens(synthetic(), tmp_path / "tokens.png")
    for fig in figures:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        legends = [*fig.legends, *(a.get_legend() for a in fig.axes if a.get_legend())]
        assert legends
        for legend in legends:
            box = legend.get_window_extent(renderer)
            for ax in fig.axes:
                assert not box.overlaps(ax.get_window_extent(renderer))
        close(fig)
