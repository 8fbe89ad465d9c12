"""The command line through a running ``ctxsvc serve``: a real uvicorn process, real CLI
processes, the answer the same as this process's own."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import cli_env, free_port, run_cli, start_server, stop_server

from ctxsvc.cli import remote
from ctxsvc.settings import Settings


def served_contexts(base: str) -> float:
    """How many ``POST /v1/context`` and ``/v1/expand`` the server answered (its metrics)."""
    text = httpx.get(f"{base}/metrics", timeout=10).text
    keys = ('route="/v1/context"', 'route="/v1/expand"')
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("ctxsvc_http_request_duration_seconds_count")
        and any(k in line for k in keys)
    )


def indexed_home(tmp: Path, **extra: str) -> tuple[Path, dict[str, str]]:
    """The sample repository indexed (full text) into ``tmp/home``, and the CLI's
    environment for it. No model: a server is ready at once, and the CLI loads none."""
    from conftest import SAMPLE, git, write_tree

    repo = tmp / "demo"
    write_tree(repo, SAMPLE)
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "init")
    env = cli_env(tmp / "home", CTXSVC_MODEL=str(tmp / "no-such-model"), **extra)
    done = run_cli(env, "index", str(repo), "--no-vectors", "--json")
    assert done.returncode == 0, done.stderr
    return repo, env


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, dict[str, str]]]:
    """A ``ctxsvc serve`` of a data directory holding the sample repository."""
    tmp = tmp_path_factory.mktemp("remote")
    repo, env = indexed_home(tmp)
    port = free_port()
    proc = start_server(env, port, tmp / "server.log")
    try:
        yield f"http://127.0.0.1:{port}", repo, env
    finally:
        stop_server(proc)
    assert not (tmp / "home" / "server.json").exists()  # removed as the server stopped


def cli(
    env: dict[str, str], *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ctxsvc", *args], env=env, cwd=cwd, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip


def test_serve_writes_where_it_listens(served: tuple[str, Path, dict[str, str]]) -> None:
    base, _, env = served
    path = Path(env["CTXSVC_HOME"]) / "server.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    record = json.loads(path.read_text())
    assert record["url"] == base and record["home"] == str(Path(env["CTXSVC_HOME"]).resolve())
    assert "token" not in record


QUERY = ["query", "demo", "Store.put writes JSON", "--budget", "300", "--json"]


@pytest.mark.parametrize(
    "args",
    [
        QUERY,
        ["query", "demo", "how does the server answer", "--markdown", "--detail", "skeleton"],
        ["expand", "demo", "--symbol", "Store.put", "--callers", "--json"],
        ["expand", "demo", "--path", "app/server.py", "--lines", "3-9"],
    ],
    ids=["query-json", "query-markdown", "expand-json", "expand-lines"],
)
def test_the_server_answers_as_this_process_would(
    served: tuple[str, Path, dict[str, str]], args: list[str]
) -> None:
    base, _, env = served
    before = served_contexts(base)
    through = cli(env, *args)
    assert through.returncode == 0, through.stderr
    assert served_contexts(base) == before + 1  # the server answered it
    here = cli(env, *args, "--no-server")
    assert here.returncode == 0, here.stderr
    assert served_contexts(base) == before + 1  # and not this one
    assert through.stdout == here.stdout
    if "--json" in args:
        assert json.loads(through.stdout)["repo"] == "demo"


def served_calls(base: str, route: str) -> float:
    """How many requests of ``route`` (a template, e.g. ``/v1/repos/{name}/impact``) the
    server answered."""
    text = httpx.get(f"{base}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("ctxsvc_http_request_duration_seconds_count")
        and f'route="{route}"' in line
    )


@pytest.mark.parametrize(
    ("args", "route"),
    [
        (["impact", "demo", "Store.put", "--json"], "impact"),
        (["impact", "demo", "Store.put", "--depth", "1"], "impact"),
        (["references", "demo", "Store.put"], "references"),
        (["definition", "demo", "Store", "--json"], "definition"),
    ],
    ids=["impact-json", "impact-text", "references", "definition"],
)
def test_graph_commands_go_through_the_server(
    served: tuple[str, Path, dict[str, str]], args: list[str], route: str
) -> None:
    base, _, env = served
    template = f"/v1/repos/{{name}}/{route}"
    before = served_calls(base, template)
    through = cli(env, *args)
    assert through.returncode == 0, through.stderr
    assert served_calls(base, template) == before + 1
    here = cli(env, *args, "--no-server")
    assert here.returncode == 0, here.stderr
    assert served_calls(base, template) == before + 1
    assert through.stdout == here.stdout and "Store" in through.stdout


def test_status_through_the_server(served: tuple[str, Path, dict[str, str]]) -> None:
    _, repo, env = served
    for args in (["status", "--json"], ["status", "demo", "--json"], ["status", "demo"]):
        through, here = cli(env, *args), cli(env, *args, "--no-server")
        assert through.returncode == here.returncode == 0, through.stderr + here.stderr
        assert through.stdout == here.stdout, args
    assert json.loads(cli(env, "status", "--json").stdout)[0]["root"] == str(repo)


def test_a_path_argument_goes_as_an_absolute_path(
    served: tuple[str, Path, dict[str, str]],
) -> None:
    base, repo, env = served
    before = served_contexts(base)
    done = cli(env, "query", "./demo", "Store.put writes JSON", "--json", cwd=repo.parent)
    assert done.returncode == 0, done.stderr
    assert served_contexts(base) == before + 1
    assert json.loads(done.stdout)["items"][0]["path"] == "app/store.py"


@pytest.mark.parametrize(
    ("args", "code", "text"),
    [
        (["query", "nope", "anything"], 3, "no index named or rooted at 'nope'"),
        (["expand", "demo", "--symbol", "no_such_symbol"], 2, "no_such_symbol"),
        (["query", "demo", "anything", "--budget", "99999999"], 2, "budget"),
    ],
)
def test_errors_read_as_this_process_says_them(
    served: tuple[str, Path, dict[str, str]], args: list[str], code: int, text: str
) -> None:
    _, _, env = served
    through, here = cli(env, *args), cli(env, *args, "--no-server")
    assert through.returncode == here.returncode == code, through.stderr
    assert text in through.stderr and "Traceback" not in through.stderr
    assert through.stderr == here.stderr


def test_opting_out_answers_here(served: tuple[str, Path, dict[str, str]]) -> None:
    base, _, env = served
    before = served_contexts(base)
    done = cli({**env, "CTXSVC_USE_SERVER": "0"}, *QUERY)
    assert done.returncode == 0, done.stderr
    done = cli(env, *QUERY[:-1], "--no-vectors", "--json")  # this process, without a model
    assert done.returncode == 0, done.stderr
    # (this index has no vectors, which the note says; test_startup covers one that has)
    assert json.loads(done.stdout)["degraded"] == [
        "vector: this index was built without vectors",
        "ranking: hand-weighted fusion (no query vector)",
    ]
    assert served_contexts(base) == before


def test_the_cli_sends_its_own_token(tmp_path: Path) -> None:
    _, locked = indexed_home(tmp_path, CTXSVC_TOKEN="s3cret")
    port = free_port()
    proc = start_server(locked, port, tmp_path / "server.log")
    base = f"http://127.0.0.1:{port}"
    try:
        before = served_contexts_with(base, "s3cret")
        done = cli(locked, *QUERY)
        assert done.returncode == 0, done.stderr
        assert served_contexts_with(base, "s3cret") == before + 1
        # Without the token the server refuses it (401): this process answers, the same.
        here = cli({k: v for k, v in locked.items() if k != "CTXSVC_TOKEN"}, *QUERY)
        assert here.returncode == 0 and here.stdout == done.stdout, here.stderr
        assert served_contexts_with(base, "s3cret") == before + 1
    finally:
        stop_server(proc)


def served_contexts_with(base: str, token: str) -> float:
    text = httpx.get(
        f"{base}/metrics", headers={"authorization": f"Bearer {token}"}, timeout=10
    ).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("ctxsvc_http_request_duration_seconds_count")
        and 'route="/v1/context"' in line
        and 'status="200"' in line
    )


# -- server.json: written, read, and ignored when stale ----------------------------------


def test_publish_is_private_and_withdraw_removes_only_its_own(tmp_path: Path) -> None:
    home = tmp_path / "home"
    record = remote.publish(home, "http://127.0.0.1:1")
    path = remote.server_file(home)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert remote.read_record(home) == record and record.pid == os.getpid()
    assert [p.name for p in home.iterdir()] == ["server.json"]  # no temporary file left
    other = remote.ServerRecord(
        "http://127.0.0.1:2", record.pid + 1, record.started_at, record.home
    )
    path.write_text(json.dumps(other.__dict__))
    remote.withdraw(home, record)  # another server's file now: kept
    assert remote.read_record(home) == other
    remote.withdraw(home, other)
    assert not path.exists()


@pytest.mark.parametrize("stale", ["dead pid", "nothing listening", "garbage", "other home"])
def test_a_stale_server_file_is_ignored(tmp_path: Path, stale: str) -> None:
    home = tmp_path / "home"
    settings = Settings.from_env({}, home=home)
    url = f"http://127.0.0.1:{free_port()}"
    record = remote.publish(home, url)
    data = dict(record.__dict__)
    if stale == "dead pid":
        child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                               capture_output=True, text=True, check=True)  # fmt: skip
        data["pid"] = int(child.stdout)
    elif stale == "other home":
        data["home"] = str(tmp_path / "elsewhere")
    text = "{not json" if stale == "garbage" else json.dumps(data)
    remote.server_file(home).write_text(text)
    assert remote.connect(settings) is None
    done = run_cli(cli_env(home), "status", "--json")
    assert done.returncode == 0 and json.loads(done.stdout) == [], done.stderr


def test_reference_sends_names_as_they_are_and_paths_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "repo").mkdir()
    monkeypatch.chdir(tmp_path)
    assert remote._reference("demo") == "demo"
    assert remote._reference("./repo") == str((tmp_path / "repo").resolve())
    assert remote._reference("./missing") is None  # this process says it is not found
    assert remote.url_of("0.0.0.0", 8) == "http://127.0.0.1:8"
    assert remote.url_of("::", 8) == "http://[::1]:8"
    assert remote.url_of("localhost", 8) == "http://localhost:8"
