"""The ``ctxsvc`` command end to end, in real subprocesses, with the real bundled model."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import cli_env, run_cli


def ctxsvc(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(cli_env(home), *args)


@pytest.mark.slow
def test_index_query_status_with_the_bundled_model(repo: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    r = ctxsvc(home, "index", str(repo), "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["vectors"] == "complete"
    assert summary["model"].startswith("all-MiniLM-L6-v2@")
    assert summary["files_indexed"] == 4 and summary["skipped"] == {"binary": 1}
    assert summary["chunks_embedded"] > 0

    r = ctxsvc(
        home, "query", "demo", "how does the server answer a request", "--budget", "300", "--json"
    )
    assert r.returncode == 0, r.stderr
    pack = json.loads(r.stdout)
    assert pack["degraded"] == [] and pack["encoding"] == "cl100k_base"
    assert 0 < pack["tokens_used"] <= 300
    assert pack["items"][0]["path"] == "app/server.py"
    assert any("vector" in w for item in pack["items"] for w in item["why"])

    (repo / "app" / "store.py").write_text("X = 2\n")
    r = ctxsvc(home, "status", str(repo), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[0]["changed"] == ["app/store.py"]

    r = ctxsvc(home, "index", str(repo))  # human output: a summary table
    assert r.returncode == 0 and "1 parsed" in r.stdout


@pytest.mark.slow
def test_unloadable_model_degrades_loudly_then_fills_in(repo: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    r = ctxsvc(home, "index", str(repo), "--model", str(tmp_path / "no-such-model"), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["vectors"] == "missing"
    assert "could not be loaded" in " ".join(r.stderr.split())  # the console wraps lines
    r = ctxsvc(home, "status", "demo", "--json")
    assert json.loads(r.stdout)[0]["degraded"]
    r = ctxsvc(home, "index", str(repo), "--json")
    assert json.loads(r.stdout)["vectors"] == "complete"


@pytest.mark.parametrize(
    ("args", "code", "text"),
    [
        (["query", "nope", "anything"], 3, "no index named or rooted at 'nope'"),
        (["index", "/nonexistent/dir"], 2, "does not exist"),
        (["index", ".", "--name", "bad name!"], 2, "invalid index name"),
    ],
)
def test_errors_are_one_clear_line_and_an_exit_code(
    tmp_path: Path, args: list[str], code: int, text: str
) -> None:
    r = (
        ctxsvc(tmp_path / "home", *args, "--no-vectors")
        if args[0] == "index"
        else ctxsvc(tmp_path / "home", *args)
    )
    assert r.returncode == code
    assert text in r.stderr and "Traceback" not in r.stderr
