"""The benchmark on a terminal: rich tables of a report, and a progress display.

Rich reads markup in titles, cells and bar labels: every name or note from the data
(repositories, systems, task ids) goes in as ``Text`` or escaped, so that a ``[tag]`` in
one prints as it is.
"""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.progress import TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from ctxsvc.bench.report import SUMMARY_COLUMNS, Report, fmt, per_repo_rows, summary_rows
from ctxsvc.progress import RichReporter

_INDEX_STAGES = ("parse", "embed")  # the index stages worth a bar of their own


def tables(report: Report) -> list[Table]:
    """The summary (mean) table, per-repository tables when there are several, and costs."""
    repos = report["repos"]
    over = "tasks" if len(repos) == 1 else "tasks, then repositories"
    t = Table(title=Text(f"ctxsvc bench: {', '.join(repos)} (mean over {over})"))
    for col in SUMMARY_COLUMNS:
        t.add_column(col, justify="left" if col == "system" else "right")
    last = None
    for row in summary_rows(report):
        if last is not None and row[0] != last:
            t.add_section()
        last = row[0]
        t.add_row(*map(Text, row), style="bold" if row[0] == "ctxsvc" else None)
    out = [t]
    if len(repos) > 1:
        p = Table(title="per repository: file hit / region recall")
        for col in ("system", "budget", *repos):
            p.add_column(Text(col), justify="left" if col == "system" else "right")
        for row in per_repo_rows(report):
            p.add_row(*map(Text, row))
        out.append(p)
    c = Table(title="what the run cost")
    for col in ("repository", "tasks", "name leaks", "snapshots", "repo tokens", "files parsed",
                "chunks embedded", "index s", "embed p50 ms", "wall s"):  # fmt: skip
        c.add_column(col, justify="left" if col == "repository" else "right")
    for name, r in repos.items():
        c.add_row(
            Text(name), fmt(r["tasks"]), fmt(r["name_leaks"]), fmt(r["snapshots"]),
            fmt(r["repo_tokens"]), fmt(r["files_indexed"]), fmt(r["chunks_embedded"]),
            fmt(r["index_seconds"], 1), fmt(r["query_embed_p50_ms"], 1), fmt(r["seconds"], 1),
        )  # fmt: skip
    out.append(c)
    return out


class RichProgress(RichReporter):
    """A bar for the tasks, with a line saying what runs now, and bars for the
    parse and embed stages of each (incremental) index run while it lasts."""

    def __init__(self, console: Console, *, enabled: bool = True) -> None:
        super().__init__(
            console, enabled=enabled, label="{task.description}", extra=(TimeRemainingColumn(),)
        )

    def start(self, stage: str, total: int | None) -> None:
        if not self._enabled or (stage != "tasks" and (stage not in _INDEX_STAGES or not total)):
            return
        label = "tasks" if stage == "tasks" else f"  {stage}"
        bar = self._bars.get(stage)
        if bar is None:
            self._bars[stage] = self._progress.add_task(label, total=total)
        else:
            self._progress.reset(bar, total=total, visible=True, description=label)

    def finish(self, stage: str) -> None:
        if stage in _INDEX_STAGES and stage in self._bars:
            self._progress.update(self._bars[stage], visible=False)

    def note(self, text: str) -> None:
        if "tasks" in self._bars:
            # Escaped with a space after it: escape doubles a final backslash (see literal()
            # in ctxsvc.cli.render), which at the end of the label would show as two.
            label = escape(f"{text} ")[:-1]
            self._progress.update(self._bars["tasks"], description=f"tasks  {label}")
