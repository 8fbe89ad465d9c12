"""Hints and names print as they are: rich markup does not eat a ``[bench]``."""

from __future__ import annotations

import importlib
import io
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from rich.text import Text

from ctxsvc.bench.terminal import RichProgress, tables
from ctxsvc.cli import main
from ctxsvc.cli.render import literal, print_pack
from ctxsvc.errors import ConfigError
from ctxsvc.models import ContextPack, DriftWarning, WorkspaceEvent

HINT = "pip install 'ctxsvc[bench]'"


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """An in-process ``ctxsvc`` with its own data directory; the root logger put back."""
    for name in [k for k in os.environ if k.startswith("CTXSVC_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("CTXSVC_HOME", str(tmp_path / "home"))
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_the_bench_hint_prints_literally(
    cli: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` fails
    assert main(["bench", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "error (bad_config): the plots need matplotlib, which is not installed" in err
    assert f"  hint: {HINT}\n" in err


def test_a_pack_prints_degraded_notes_and_warnings_literally(
    capsys: pytest.CaptureFixture[str],
) -> None:
    event = WorkspaceEvent(1, "w", "r", "s", None, "agent", "decision", "x", "2026-01-01T00:00:00Z")
    pack = ContextPack(
        "r", "q", (), 10, 100, "cl100k_base", "text",
        degraded=(f"index needs a rebuild; {HINT}",),
        warnings=(DriftWarning(event, "pkg/[id]/page.tsx", "renamed [bold]x[/bold]"),),
    )  # fmt: skip
    print_pack(pack, 1.0)
    err = capsys.readouterr().err
    assert f"degraded: index needs a rebuild; {HINT}" in err
    assert "changed by another session: [pkg/[id]/page.tsx] renamed [bold]x[/bold]" in err


def report_named(repo: str, system: str) -> dict[str, Any]:
    cell = {"file_hit": 0.5, "region_recall": 0.25, "tokens": 900.0, "savings": 0.9,
            "overruns": 0, "p50_ms": 3.0, "p95_ms": 4.0}  # fmt: skip
    cost = {"tasks": 1, "name_leaks": 0, "snapshots": 1, "repo_tokens": 5000, "files_indexed": 3,
            "chunks_embedded": 4, "index_seconds": 1.0, "query_embed_p50_ms": 2.0,
            "seconds": 3.0}  # fmt: skip
    return {
        "config": {"budgets": [1000], "systems": [system], "repo": repo},
        "repos": {repo: cost, "other": cost},
        "mean": {system: {"1000": cell}},
        "per_repo": {system: {"1000": {repo: cell, "other": cell}}},
    }


def test_bench_tables_print_names_literally() -> None:
    console = Console(record=True, width=300, color_system=None)
    for table in tables(report_named("lib[bench]", "bm25[dim]")):
        console.print(table)
    text = console.export_text()
    assert "ctxsvc bench: lib[bench], other" in text
    assert "bm25[dim]" in text and text.count("lib[bench]") >= 3  # title, column, cost row


def test_a_progress_note_is_shown_literally() -> None:
    progress = RichProgress(Console(file=io.StringIO()), enabled=True)
    with progress:
        progress.start("tasks", 2)
        progress.note("lib[bench] @ 1a2b: task-[1]")
        task = progress._progress.tasks[0]
        assert Text.from_markup(task.description).plain == "tasks  lib[bench] @ 1a2b: task-[1]"


@pytest.mark.parametrize(
    "hint",
    [HINT, "pip install 'ctxsvc[postgres]', or unset CTXSVC_STATE_URL for SQLite",
     "pip install 'ctxsvc[ray]', or embed with the local executor", "[bold]not markup[/bold] \\"],
)  # fmt: skip
def test_every_cli_error_prints_its_hint_literally(
    cli: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], hint: str
) -> None:
    cli_main = importlib.import_module("ctxsvc.cli.main")  # the module, not ctxsvc.cli's main

    def refuse(*_: object) -> int:
        raise ConfigError("an extra is missing [x]", hint=hint)

    monkeypatch.setattr(cli_main, "_run", refuse)
    assert main(["status"]) == 2
    err = capsys.readouterr().err
    assert "error (bad_config): an extra is missing [x]\n" in err
    assert f"  hint: {hint}\n" in err


@pytest.mark.parametrize(
    "text", ["ctxsvc[bench]", "C:\\dir\\", "[x]\\", "a\\[bold]b", "two\\\\", "[/]", "plain"]
)
def test_literal_markup_renders_back_to_the_text(text: str) -> None:
    assert Text.from_markup(literal(text)).plain == text
    assert Text.from_markup(f"[bold]hint[/]: {literal(text)}").plain == f"hint: {text}"
