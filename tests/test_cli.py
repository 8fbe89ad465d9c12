"""The ``ctxsvc`` command end to end, in real subprocesses, with the real bundled model."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import cli_env, git, run_cli

from ctxsvc.cli.render import render
from ctxsvc.models import ContextPack


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


# Byte-exact output: the pack's text reaches stdout untouched (rich expanded
# tabs, and its count of tokens described other text).
GO = (
    b"package server\n\n// Run serves.\nfunc Run(port int) error {\n\tif port == 0 {\n"
    b"\t\treturn nil \t\n\t}\n\t\n\treturn serve(port)\n}\n"
)
CRLF = b'def handle(path):\r\n    """Answer one request."""  \r\n\r\n    return path\r\n'


@pytest.mark.parametrize("markdown", [True, False])
def test_render_writes_the_pack_text_byte_for_byte(
    capfdbinary: pytest.CaptureFixture[bytes], markdown: bool
) -> None:
    text = "## server.go\n\n```go\n" + GO.decode() + "```\n\n```python\n" + CRLF.decode() + "```"
    pack = ContextPack("r", "q", (), 10, 100, "cl100k_base", text)
    render(argparse.Namespace(json=False, markdown=markdown), pack, 1.0)
    out, err = capfdbinary.readouterr()
    assert out == text.encode() + b"\n"
    assert (b"snippets" in err) is not markdown  # the summary goes to stderr, plain only


def cli_bytes(home: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """``python -m ctxsvc ARGS`` with stdout as bytes (no newline translation)."""
    return subprocess.run(
        [sys.executable, "-m", "ctxsvc", *args],
        env=cli_env(home),
        capture_output=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def exact_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An index of the two files, made once: the tests only read it."""
    tmp_path = tmp_path_factory.mktemp("exact")
    root = tmp_path / "exact"
    root.mkdir()
    (root / "server.go").write_bytes(GO)
    (root / "crlf.py").write_bytes(CRLF)
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "init")
    home = tmp_path / "home"
    r = cli_bytes(home, "index", str(root), "--no-vectors", "--json")
    assert r.returncode == 0, r.stderr.decode()
    return home


@pytest.mark.parametrize(
    ("path", "data"), [("server.go", GO), ("crlf.py", CRLF)], ids=["go", "crlf"]
)
def test_expand_prints_the_files_lines_exactly(exact_home: Path, path: str, data: bytes) -> None:
    lines = data.count(b"\n")
    args = ["expand", "exact", "--path", path, "--lines", f"1-{lines}"]
    js = cli_bytes(exact_home, *args, "--json")
    rendered = json.loads(js.stdout)["rendered"].encode()
    assert data in rendered
    for fmt in (["--markdown"], []):
        r = cli_bytes(exact_home, *args, *fmt)
        assert r.returncode == 0, r.stderr.decode()
        # Every line as on disk: tabs, trailing spaces and "\r" kept; nothing added.
        assert r.stdout == rendered + (b"" if rendered.endswith(b"\n") else b"\n")


@pytest.mark.parametrize("fmt", [["--markdown"], []], ids=["markdown", "plain"])
def test_query_prints_the_files_lines_exactly(exact_home: Path, fmt: list[str]) -> None:
    r = cli_bytes(
        exact_home, "query", "exact", "how does Run serve a port and handle a path",
        "--budget", "2000", *fmt,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr.decode()
    assert GO in r.stdout and CRLF in r.stdout


@pytest.mark.slow
def test_index_no_wait_answers_at_once_and_a_process_behind_fills_the_vectors(
    repo: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    env = cli_env(home)
    r = run_cli(env, "index", str(repo), "--no-wait", "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["vectors"] == "partial" and summary["chunks_embedded"] == 0
    assert any("vectors fill in behind: process" in w for w in summary["warnings"])
    q = run_cli(env, "query", str(repo), "how does the server handle a request", "--json",
                "--no-server")  # fmt: skip
    assert q.returncode == 0 and json.loads(q.stdout)["items"], q.stderr
    deadline = time.monotonic() + 300
    while True:  # the detached `ctxsvc index` loads the model and embeds everything
        status = json.loads(run_cli(env, "status", "demo", "--json", "--no-server").stdout)[0]
        if status["vectors"] == "complete":
            break
        assert time.monotonic() < deadline, (home / "logs" / "fill-demo.log").read_text()
        time.sleep(1)
    assert status["vectors_share"] == 1.0 and not status["degraded"]
