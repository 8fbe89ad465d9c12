"""The benchmark's report: one JSON-able dict, written as JSON, Markdown and PNG plots.

The one owner of ``matplotlib`` (imported when plotting, with the Agg backend).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ctxsvc.bench.metrics import aggregate, mean, percentile
from ctxsvc.bench.runner import RepoRun
from ctxsvc.errors import ConfigError

Report = dict[str, Any]

MEANING = """\
- **Queries** are commit messages (cleaned of PR numbers, URLs and trailers), as an agent
  would get a task in words; each task is answered on the commit before the change, so the
  answer is never in the index.
- **file hit**: share of the files the commit changed (source files only) of which the
  context holds at least one line.
- **region recall**: share of the changed line ranges that the context holds whole;
  in words, the lines that had to change were in the context.
- **tokens**: the context's exact size (cl100k_base unless configured otherwise);
  **savings**: 1 - tokens / tokens of the whole repository (every text file indexed).
- **region recall per 1K tokens** (the second plot): in each repository, region recall
  summed over its tasks per 1,000 tokens their contexts held, then the mean over
  repositories: what a reader gets of the change for what it reads. Every system but the
  oracle fills its budget, so token counts alone do not tell them apart.
- **overruns**: contexts larger than the budget; they score 0. Whole-repository injection
  overruns every budget smaller than the repository.
- **latency**: wall time to build one context: for ctxsvc the whole `context()` call
  (freshness check, retrieval, packing) with the query's vector already computed, since an
  agent's query is embedded once whatever the budget (the embedding is timed apart, under
  *What the run cost*); for BM25 and the grep agent the ranking plus the packing.
- **grep agent**: what a tool-using agent without an index gets: the query's identifiers
  as written (a qualified name found nowhere, by its tails), then its other words (rarest
  first, stop words dropped), 8 terms at most, searched like `rg -i -F -l`; the files are
  read whole in order of distinct terms matched, then matches, the last one cut at the
  budget."""

SYSTEM_NAMES = {
    "ctxsvc": "ctxsvc",
    "ctxsvc-fusion": "ctxsvc, hand-weighted fusion",
    "ctxsvc-no-history": "ctxsvc, no git history",
    "ctxsvc-fragments": "ctxsvc, no region completion",
    "bm25-files": "BM25 over whole files",
    "bm25-windows": "BM25 over 60-line windows",
    "grep-agent": "grep agent (query terms, whole files)",
    "oracle": "oracle (changed lines ±10)",
    "whole-repo": "whole-repository injection",
}


def build_report(runs: Sequence[RepoRun], config: Mapping[str, Any], seconds: float) -> Report:
    """The report of one run over one or more repositories."""
    rows = [asdict(s) for run in runs for s in run.scores]
    per_repo, overall = aggregate(rows)
    _, without_leaks = aggregate(r for r in rows if not r["name_leak"])
    repos: dict[str, Any] = {}
    for run in runs:
        snaps = run.snapshots
        repos[run.repo] = {
            "tasks": len(run.tasks),
            "name_leaks": sum(t.name_leak for t in run.tasks),
            "index": run.index,
            "snapshots": len(snaps),
            "repo_tokens": round(mean(s.repo_tokens for s in snaps) or 0),
            "seconds": round(run.seconds, 1),
            "checkout_seconds": round(sum(s.checkout_seconds for s in snaps), 1),
            "index_seconds": round(sum(s.index_seconds for s in snaps), 1),
            "files_indexed": sum(s.files_indexed for s in snaps),
            "chunks_embedded": sum(s.chunks_embedded for s in snaps),
            "chunks_reused": sum(s.chunks_reused for s in snaps),
            "index_stage_seconds": {
                stage: round(sum(s.stages.get(stage, 0.0) for s in snaps), 1)
                for stage in dict.fromkeys(k for s in snaps for k in s.stages)
            },
            "system_seconds": {k: round(v, 1) for k, v in run.system_seconds.items()},
            "query_embed_p50_ms": percentile(run.embed_ms, 50),
            "query_embed_p95_ms": percentile(run.embed_ms, 95),
            "degraded_tasks": len(
                {s.task for s in run.scores if s.system == "ctxsvc" and s.degraded}
            ),
            "per_snapshot": [asdict(s) for s in snaps],
        }
    return {
        "config": dict(config),
        "seconds": round(seconds, 1),
        "repos": repos,
        "mean": overall,
        "mean_without_name_leaks": without_leaks,
        "per_repo": per_repo,
        "per_task": rows,
        "tasks": [t.to_json() for run in runs for t in run.tasks],
    }


def write_report(report: Report, out: Path, stem: str = "report") -> list[Path]:
    """``{stem}.json``, ``{stem}.md`` and the plots ``{stem}-recall.png`` and ``{stem}-tokens.png``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.{ext}" for ext in ("json", "md")]
    images = [out / f"{stem}-recall.png", out / f"{stem}-tokens.png"]
    paths[0].write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    paths[1].write_text(markdown(report, [p.name for p in images]), encoding="utf-8")
    plot_recall(report, images[0])
    plot_tokens(report, images[1])
    return paths + images


# -- Markdown --------------------------------------------------------------------


def fmt(v: object, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def summary_rows(report: Report) -> list[list[str]]:
    """system, budget, file hit, region recall, tokens, savings, overruns, p50 ms, p95 ms."""
    rows = []
    for system in systems_in_order(report):
        for budget in report["config"]["budgets"]:
            m = report["mean"][system][str(budget)]
            rows.append(
                [system, fmt(budget), fmt(m["file_hit"]), fmt(m["region_recall"]),
                 fmt(m["tokens"], 0), fmt(m["savings"], 3), fmt(m["overruns"]),
                 fmt(m["p50_ms"], 1), fmt(m["p95_ms"], 1)]
            )  # fmt: skip
    return rows


SUMMARY_COLUMNS = (
    "system", "budget", "file hit", "region recall", "tokens", "savings", "overruns",
    "p50 ms", "p95 ms",
)  # fmt: skip


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def markdown(report: Report, images: Sequence[str] = ()) -> str:
    cfg = report["config"]
    repos = report["repos"]
    tasks = sum(r["tasks"] for r in repos.values())
    leaks = sum(r["name_leaks"] for r in repos.values())
    over = "tasks" if len(repos) == 1 else "tasks per repository, then over repositories"
    whole = ", ".join(f"{name} {fmt(r['repo_tokens'])}" for name, r in repos.items())
    parts = [
        f"# ctxsvc bench: {', '.join(repos)}",
        f"{tasks} tasks ({leaks} whose query names a changed file), budgets "
        f"{', '.join(fmt(b) for b in cfg['budgets'])} tokens. Tasks {cfg.get('source', '')}.",
        f"## Results (mean over {over})",
        _table(SUMMARY_COLUMNS, summary_rows(report)),
        f"Whole repository, the denominator of savings (tokens, mean over snapshots): {whole}.",
    ]
    ctx = report["mean_without_name_leaks"].get("ctxsvc")
    if ctx and leaks:
        parts.append(
            "ctxsvc without the tasks whose query names a changed file (file hit / region "
            "recall): "
            + ", ".join(
                f"{fmt(b)}: {fmt(ctx[str(b)]['file_hit'])} / {fmt(ctx[str(b)]['region_recall'])}"
                for b in cfg["budgets"]
                if str(b) in ctx
            )
            + "."
        )
    parts += [f"![{name}]({name})" for name in images]
    parts += ["## What the numbers mean", MEANING]
    if len(repos) > 1:
        parts += [
            "## Per repository (file hit / region recall)",
            _table(["system", "budget", *repos], per_repo_rows(report)),
        ]
    parts += [
        "## What the run cost",
        _table(
            [
                "repository",
                "tasks",
                "snapshots",
                "files parsed",
                "chunks embedded",
                "index s",
                "checkout s",
                "query embedding p50 / p95 ms",
                "wall s",
            ],
            [
                [
                    name,
                    fmt(r["tasks"]),
                    fmt(r["snapshots"]),
                    fmt(r["files_indexed"]),
                    fmt(r["chunks_embedded"]),
                    fmt(r["index_seconds"], 1),
                    fmt(r["checkout_seconds"], 1),
                    f"{fmt(r['query_embed_p50_ms'], 1)} / {fmt(r['query_embed_p95_ms'], 1)}",
                    fmt(r["seconds"], 1),
                ]
                for name, r in repos.items()
            ],
        ),
        "Index seconds per stage: "
        + "; ".join(
            f"{name} " + ", ".join(f"{k} {fmt(v, 1)}" for k, v in r["index_stage_seconds"].items())
            for name, r in repos.items()
        )
        + ".",
        f"Total wall time {fmt(report['seconds'], 1)} s on {cfg.get('cpus') or '?'} CPUs.",
        "## Tasks",
        _task_table(report),
    ]
    return "\n\n".join(p.strip("\n") for p in parts) + "\n"


def systems_in_order(report: Report) -> list[str]:
    """The report's systems in the configured order (ctxsvc first by default)."""
    order = list(report["config"].get("systems") or [])
    return sorted(report["mean"], key=lambda s: order.index(s) if s in order else len(order))


def per_repo_rows(report: Report) -> list[list[str]]:
    rows = []
    for system in systems_in_order(report):
        for budget in report["config"]["budgets"]:
            cells = report["per_repo"][system].get(str(budget), {})
            rows.append(
                [system, fmt(budget)]
                + [
                    f"{fmt(c['file_hit'])} / {fmt(c['region_recall'])}"
                    if (c := cells.get(r))
                    else "-"
                    for r in report["repos"]
                ]
            )
    return rows


def _task_table(report: Report) -> str:
    budgets = report["config"]["budgets"]
    got: dict[tuple[str, int], Mapping[str, Any]] = {
        (r["task"], r["budget"]): r for r in report["per_task"] if r["system"] == "ctxsvc"
    }
    rows = []
    for t in report["tasks"]:
        query = t["query"] if len(t["query"]) <= 80 else t["query"][:77] + "..."
        cells = [
            f"{fmt(g['file_hit'])} / {fmt(g['region_recall'])}"
            if (g := got.get((t["id"], b)))
            else "-"
            for b in budgets
        ]
        rows.append(
            [
                t["id"],
                t["commit"][:10],
                query.replace("|", "\\|"),
                ", ".join(t["gold"]),
                "yes" if t["name_leak"] else "",
                *cells,
            ]
        )
    header = ["task", "commit", "query", "gold", "name leak"]
    return _table([*header, *(f"ctxsvc @{fmt(b)}" for b in budgets)], rows)


# -- plots ---------------------------------------------------------------------


def require_plotting() -> None:
    """Raise a ConfigError now if the plots cannot be drawn (matplotlib missing)."""
    _pyplot()


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ConfigError(
            "the plots need matplotlib, which is not installed",
            hint="pip install 'ctxsvc[bench]'",
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_recall(report: Report, path: Path) -> None:
    """Region recall and file hit against budget, one line per system; the legend below
    the axes, where it covers no point.

    Whole-repository injection is drawn only where it fits a budget: elsewhere
    it overruns and scores zero, which says less than its token count does.
    """
    plt = _pyplot()
    budgets = report["config"]["budgets"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
    panels = (
        (axes[0], "region_recall", "region recall (share of changed regions held whole)"),
        (axes[1], "file_hit", "file hit (share of changed files touched)"),
    )
    for ax, metric, label in panels:
        for system in systems_in_order(report):
            ys = [report["mean"][system][str(b)][metric] for b in budgets]
            if system == "whole-repo" and not any(ys):
                continue
            ax.plot(
                budgets, [float("nan") if y is None else y for y in ys],
                "--" if system in ("oracle", "whole-repo") else "-",
                marker="o", label=SYSTEM_NAMES.get(system, system),
            )  # fmt: skip
        _budget_axis(ax, budgets)
        ax.set_ylim(0, 1.02)
        ax.set_ylabel(label)
    fig.suptitle(_title(report, "what the context holds (mean over tasks)"))
    fig.tight_layout()
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:  # one legend for both panels, under them
        fig.legend(
            handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0),
            ncol=min(len(handles), 3), fontsize=8, frameon=False,
        )  # fmt: skip
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def recall_per_kilotoken(report: Report) -> dict[str, list[float | None]]:
    """Region recall per 1,000 tokens sent, per system and budget (``config["budgets"]``):
    how much of the change a reader gets for the tokens it reads.

    From the per-task results: in each repository, the region recall summed over its
    tasks (those with regions) per 1,000 of the tokens their contexts held, then the
    mean over repositories, as the report's other means. None where no task has regions.
    Whole-repository injection is left out (it overruns every budget and scores zero):
    :func:`whole_repo_per_kilotoken` is its unbudgeted reference.
    """
    sums: dict[tuple[str, int, str], list[float]] = {}
    for row in report["per_task"]:
        if row["region_recall"] is None or row["system"] == "whole-repo":
            continue
        cell = sums.setdefault((row["system"], int(row["budget"]), row["repo"]), [0.0, 0.0])
        cell[0] += row["region_recall"]
        cell[1] += row["tokens"]
    per_repo: dict[tuple[str, int], list[float | None]] = {}
    for (system, budget, _), (recall, tokens) in sums.items():
        per_repo.setdefault((system, budget), []).append(1000 * recall / tokens if tokens else None)
    systems = [s for s in systems_in_order(report) if s != "whole-repo"]
    return {
        system: [mean(per_repo.get((system, int(b)), [])) for b in report["config"]["budgets"]]
        for system in systems
    }


def whole_repo_per_kilotoken(report: Report) -> float | None:
    """The same ratio for the whole repository sent unbudgeted (every region, at the
    repository's size): the mean over repositories of 1000 / its tokens."""
    return mean(1000 / r["repo_tokens"] for r in report["repos"].values() if r["repo_tokens"])


def plot_tokens(report: Report, path: Path) -> None:
    """Region recall per 1,000 tokens sent, per budget and system (log scale), against the
    whole repository sent unbudgeted: every system fills its budget, so this, not the
    token count, tells them apart. ctxsvc's bars are labelled with their value."""
    plt = _pyplot()
    budgets = report["config"]["budgets"]
    series = recall_per_kilotoken(report)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / max(len(series), 1)
    drawn = False
    for i, (system, ys) in enumerate(series.items()):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(budgets))]
        values = [float("nan") if y is None else y for y in ys]
        bars = ax.bar(xs, values, width, label=SYSTEM_NAMES.get(system, system))
        drawn |= any(y for y in ys)
        if system == "ctxsvc":
            ax.bar_label(bars, [_short(y) for y in ys], fontsize=7, padding=2)
    whole = whole_repo_per_kilotoken(report)
    if whole:
        sizes = sorted(r["repo_tokens"] for r in report["repos"].values() if r["repo_tokens"])
        size = fmt(sizes[0]) if len(sizes) == 1 else f"{fmt(sizes[0])} to {fmt(sizes[-1])}"
        ax.axhline(
            whole, color="black", linestyle="--",
            label=f"whole repository, unbudgeted (recall 1 in {size} tokens)",
        )  # fmt: skip
        drawn = True
    if drawn:  # a log axis needs a positive value
        ax.set_yscale("log")
    ax.set_xticks(range(len(budgets)), [f"{b / 1000:g}K" if b >= 1000 else str(b) for b in budgets])
    ax.set_xlabel("budget (tokens)")
    ax.set_ylabel("region recall per 1K tokens sent\n(mean over repositories)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    fig.suptitle(_title(report, "region recall per 1K tokens sent (higher: less to read)"))
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def _short(value: float | None) -> str:
    """A bar label: two significant digits."""
    return "" if value is None else f"{value:.2g}"


def _budget_axis(ax: Any, budgets: Sequence[int]) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(budgets), [f"{b / 1000:g}K" if b >= 1000 else str(b) for b in budgets])
    ax.set_xlabel("budget (tokens)")
    ax.grid(alpha=0.3)


def _title(report: Report, what: str) -> str:
    repos = report["repos"]
    tasks = sum(r["tasks"] for r in repos.values())
    names = ", ".join(repos) if len(repos) <= 3 else f"{len(repos)} repositories"
    return f"{what}: {names}, {tasks} tasks"
