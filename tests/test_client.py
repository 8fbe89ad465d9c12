"""The Python client: the retry rule at the transport seam, then a real ``ctxsvc serve``."""

from __future__ import annotations

import contextlib
import inspect
import logging
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import SAMPLE, cli_env, git, run_cli, write_tree

from ctxsvc.client import (
    AsyncClient,
    Client,
    FileLines,
    FileScore,
    Job,
    Readiness,
    RepoInfo,
    RetryPolicy,
    SearchResult,
    SymbolScore,
    SymbolUses,
)
from ctxsvc.client.core import retry_after
from ctxsvc.errors import (
    ConfigError,
    CtxError,
    IndexBusy,
    InvalidRequest,
    ModelMismatch,
    NotFound,
    Overloaded,
    RepoNotFound,
    StoreCorrupt,
    Unauthorized,
    Unreachable,
    UserError,
)
from ctxsvc.models import (
    ContextItem,
    ContextPack,
    IndexSummary,
    IndexVersion,
    RepoStatus,
    Symbol,
    WorkspaceEvent,
)
from ctxsvc.records import Checkpoint, Resume, Session, Summary

FAST = RetryPolicy(attempts=5, timeout=30, backoff=0.01, max_backoff=0.05)
SESSION = Session("s-1", "demo", "atomic store", None, None, "2026-01-01T00:00:00+00:00")
CHECKPOINT = Checkpoint(
    session_id="s-1",
    number=1,
    created_at="2026-01-01T00:00:00+00:00",
    summary=Summary(goal="atomic put", decisions=("os.replace because atomic",), dropped={"x": 1}),
    state=Summary(goal="atomic put"),
    transcript=({"role": "user", "content": "hi"},),
    transcript_tokens=3,
    idempotency_key="k",
)
MESSAGES = [
    {"role": "user", "content": "Make Store.put in app/store.py write its JSON file atomically."},
    {
        "role": "assistant",
        "content": "Decided to write a temp file and use os.replace because it is atomic. "
        "Edited app/store.py: Store.put.",
    },
]


def problem(
    status: int, code: str, retryable: bool = False, retry_after: str | None = None
) -> httpx.Response:
    body = {
        "type": f"https://ctxsvc.dev/problems/{code}", "title": code, "status": status,
        "detail": f"the server says {code}", "code": code, "retryable": retryable,
        "hint": "do this next", "request_id": "rid-1",
    }  # fmt: skip
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return httpx.Response(
        status, json=body, headers={**headers, "Content-Type": "application/problem+json"}
    )


Answer = httpx.Response | Exception


def scripted(*answers: Answer) -> tuple[list[httpx.Request], Callable[[httpx.Request], Any]]:
    """A transport handler giving each request the next answer (an exception is raised)."""
    seen: list[httpx.Request] = []
    queue = list(answers)

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = queue.pop(0)
        if isinstance(answer, httpx.RequestError):
            raise type(answer)(str(answer), request=request)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return seen, handle


def client_for(*answers: Answer, retry: RetryPolicy = FAST) -> tuple[Client, list[httpx.Request]]:
    seen, handle = scripted(*answers)
    return Client("http://t", retry=retry, transport=httpx.MockTransport(handle)), seen


# -- the policy ---------------------------------------------------------------------


def test_waits_back_off_exponentially_with_full_jitter_above_retry_after() -> None:
    policy = RetryPolicy(backoff=0.5, max_backoff=4.0)
    rng = random.Random(7)
    for retry, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 4.0), (60, 4.0)]:
        waits = [policy.wait(retry, None, rng) for _ in range(300)]
        assert 0 <= min(waits) < 0.1 * ceiling and 0.9 * ceiling < max(waits) <= ceiling
        floored = [policy.wait(retry, 3.0, rng) for _ in range(50)]
        assert all(3.0 <= w <= 3.0 + ceiling for w in floored)
    for bad in [{"attempts": 0}, {"timeout": 0}, {"backoff": -1}, {"backoff": 2, "max_backoff": 1}]:
        with pytest.raises(ConfigError):
            RetryPolicy(**bad)


def test_retry_after_is_seconds_or_an_http_date() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert retry_after("5") == 5.0 and retry_after(" 0 ") == 0.0
    assert retry_after(format_datetime(now + timedelta(seconds=9), usegmt=True), now) == 9.0
    assert retry_after(format_datetime(now - timedelta(seconds=9), usegmt=True), now) == 0.0
    assert retry_after(None) is None and retry_after("soon") is None and retry_after("-3") is None


# -- the retry rule, at the transport seam --------------------------------------------


def test_503_and_429_are_retried_after_retry_after(caplog: pytest.LogCaptureFixture) -> None:
    found = {"repo": "demo", "query": "q", "files": [{"path": "a.py", "score": 1}], "symbols": []}
    client, seen = client_for(
        problem(503, "overloaded", retryable=True, retry_after="1"),
        httpx.Response(429, text="slow down", headers={"Retry-After": "0"}),
        httpx.Response(200, json=found),
    )
    with caplog.at_level(logging.INFO, logger="ctxsvc.client"):
        result = client.search("demo", "q")
    assert result == SearchResult("demo", "q", (FileScore("a.py", 1.0),), ())
    assert len(seen) == 3 and len({r.headers["x-request-id"] for r in seen}) == 1
    waits = [r.wait for r in caplog.records if hasattr(r, "wait")]
    assert len(waits) == 2 and waits[0] >= 1.0 and waits[1] < 1.0


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (404, "repo_not_found", RepoNotFound),
        (422, "validation_error", InvalidRequest),
        (409, "model_mismatch", ModelMismatch),
        (500, "store_corrupt", StoreCorrupt),
        (405, "method_not_allowed", UserError),
        (404, "not_found", NotFound),
        (418, "teapot", UserError),
        (401, "unauthorized", Unauthorized),
        (500, "internal", CtxError),
    ],
)
def test_a_non_retryable_problem_raises_at_once_as_its_class(
    status: int, code: str, cls: type[CtxError]
) -> None:
    client, seen = client_for(problem(status, code))
    with pytest.raises(cls) as caught:
        client.status("demo")
    error = caught.value
    assert type(error) is cls
    assert (error.code, error.http_status, error.retryable) == (code, status, False)
    assert error.message == f"the server says {code}" and error.hint == "do this next"
    assert error.request_id == "rid-1" and error.problem is not None and len(seen) == 1


def test_a_budget_of_attempts_and_of_time() -> None:
    three = RetryPolicy(attempts=3, backoff=0.01, max_backoff=0.05)
    client, seen = client_for(*[problem(503, "overloaded", retryable=True)] * 3, retry=three)
    with pytest.raises(Overloaded) as caught:
        client.repos()
    assert len(seen) == 3 and "gave up after 3 tries" in str(caught.value.__notes__)

    # A Retry-After beyond the time budget: no wait is started, the error comes now.
    slow = RetryPolicy(attempts=5, timeout=2)
    client, seen = client_for(problem(409, "index_busy", True, "30"), retry=slow)
    t0 = time.monotonic()
    with pytest.raises(IndexBusy):
        client.refresh("demo")
    assert len(seen) == 1 and time.monotonic() - t0 < 2


@pytest.mark.parametrize(
    ("call", "failure", "retried"),
    [
        # Never sent: always retried, even a call that must not be done twice.
        ("session", httpx.ConnectError("refused"), True),
        ("session", httpx.ConnectTimeout("slow"), True),
        # Perhaps received: only replay-safe calls are sent again.
        ("session", httpx.RemoteProtocolError("disconnected"), False),
        ("session", httpx.ReadTimeout("slow"), False),
        ("session", httpx.Response(502, text="bad gateway"), False),
        ("context+session", httpx.ReadError("reset"), False),
        ("context", httpx.ReadError("reset"), True),
        ("context", httpx.Response(504, text="gateway timeout"), True),
        ("checkpoint", httpx.RemoteProtocolError("disconnected"), True),
        ("checkpoint", httpx.WriteError("broken pipe"), True),
    ],
)
def test_what_may_be_sent_again(call: str, failure: Answer, retried: bool) -> None:
    pack = ContextPack("demo", "q", (), 0, 100, "cl100k_base", "")
    answers = {
        "session": (lambda c: c.start_session("demo", "t"), httpx.Response(201, json=asdict(SESSION))),
        "context": (lambda c: c.context("demo", "q"), httpx.Response(200, json=asdict(pack))),
        "context+session": (
            lambda c: c.context("demo", "q", session_id="s-1"),
            httpx.Response(200, json=asdict(pack)),
        ),
        "checkpoint": (
            lambda c: c.write_checkpoint("s-1", MESSAGES, goal="g"),
            httpx.Response(201, json=asdict(CHECKPOINT)),
        ),
    }  # fmt: skip
    run, ok = answers[call]
    client, seen = client_for(failure, ok)
    if retried:
        assert run(client) is not None and len(seen) == 2
        assert seen[0].headers["x-request-id"] == seen[1].headers["x-request-id"]
        assert seen[0].content == seen[1].content
        if call == "checkpoint":
            assert seen[0].headers["idempotency-key"] == seen[1].headers["idempotency-key"]
    else:
        with pytest.raises(CtxError) as caught:
            run(client)
        assert len(seen) == 1 and not caught.value.retryable
        assert "may have reached the server" in caught.value.hint


def test_each_checkpoint_write_has_its_own_key_unless_given() -> None:
    client, seen = client_for(*[httpx.Response(201, json=asdict(CHECKPOINT))] * 3)
    client.write_checkpoint("s-1", MESSAGES)
    client.write_checkpoint("s-1", MESSAGES)
    client.write_checkpoint("s-1", MESSAGES, idempotency_key="mine")
    keys = [r.headers["idempotency-key"] for r in seen]
    assert len(set(keys)) == 3 and keys[2] == "mine"


def test_the_token_goes_in_a_bearer_header() -> None:
    seen, handle = scripted(httpx.Response(200, json=[]))
    with Client("http://t/", "s3cret", transport=httpx.MockTransport(handle)) as client:
        assert client.repos() == []
    assert seen[0].headers["authorization"] == "Bearer s3cret"
    assert str(seen[0].url) == "http://t/v1/repos"


def test_a_delete_whose_answer_was_lost_is_done_when_the_retry_finds_nothing() -> None:
    client, seen = client_for(httpx.ReadError("reset"), problem(404, "repo_not_found"))
    assert client.drop("demo") is None and len(seen) == 2
    client, seen = client_for(problem(404, "repo_not_found"))
    with pytest.raises(RepoNotFound):
        client.drop("demo")


def test_answers_decode_to_the_models_and_bad_answers_say_so() -> None:
    client, _ = client_for(httpx.Response(200, json=asdict(CHECKPOINT)))
    assert client.checkpoint("s-1") == CHECKPOINT  # JSON lists back to tuples, nested
    client, _ = client_for(httpx.Response(200, text="<html>not json</html>"))
    with pytest.raises(CtxError) as caught:
        client.checkpoint("s-1")
    assert caught.value.code == "bad_response"
    client, _ = client_for(httpx.Response(200, json={"session_id": "s-1"}))
    with pytest.raises(CtxError, match="does not match this client"):
        client.checkpoint("s-1")


def test_transport_failures_that_no_retry_helps() -> None:
    client, seen = client_for(httpx.UnsupportedProtocol("no such scheme"))
    with pytest.raises(ConfigError):
        client.repos()
    client, seen = client_for(httpx.DecodingError("bad gzip"))
    with pytest.raises(CtxError) as caught:
        client.repos()
    assert caught.value.code == "bad_response" and len(seen) == 1


def test_probes_are_not_retried() -> None:
    client, seen = client_for(httpx.ConnectError("refused"))
    with pytest.raises(Unreachable):
        client.health()
    assert len(seen) == 1
    down = {"ready": False, "model": {}, "store": {"reachable": False}, "repos": 0}
    client, seen = client_for(httpx.Response(503, json={**down, "degraded": ["store: gone"]}))
    assert client.ready() == Readiness(False, {}, {"reachable": False}, 0, ("store: gone",))


@pytest.mark.anyio
async def test_the_async_client_follows_the_same_rules() -> None:
    seen, handle = scripted(
        problem(503, "store_error", retryable=True, retry_after="0"),
        httpx.RemoteProtocolError("disconnected"),
        httpx.Response(201, json=asdict(CHECKPOINT)),
        httpx.ReadError("reset"),
    )
    async with AsyncClient("http://t", retry=FAST, transport=httpx.MockTransport(handle)) as c:
        assert await c.write_checkpoint("s-1", MESSAGES) == CHECKPOINT
        assert len({r.headers["idempotency-key"] for r in seen}) == 1 and len(seen) == 3
        with pytest.raises(Unreachable):
            await c.start_session("demo", "t")
    assert len(seen) == 4


def test_the_two_clients_have_the_same_methods() -> None:
    def methods(cls: type) -> dict[str, inspect.Signature]:
        return {
            name: inspect.signature(fn)
            for name, fn in vars(cls).items()
            if inspect.isfunction(fn)
            and not name.startswith("_")
            and name not in ("close", "aclose")
        }

    sync, async_ = methods(Client), methods(AsyncClient)
    assert sync.keys() == async_.keys() and len(sync) == 26
    for name, sig in sync.items():
        assert sig == async_[name], name
        assert inspect.iscoroutinefunction(getattr(AsyncClient, name)), name


def test_importing_the_client_loads_no_server_dependency() -> None:
    heavy = ["fastapi", "uvicorn", "lancedb", "pyarrow", "tiktoken", "torch", "numpy"]
    code = f"import sys, ctxsvc.client; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run(
        [sys.executable, "-c", code], env=cli_env(Path("/nonexistent")), capture_output=True,
        text=True, check=True,
    )  # fmt: skip
    assert out.stdout.strip() == "[]"


# -- a real server ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Server:
    """``ctxsvc serve`` in a subprocess, which a test may stop and start again on its port."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log, self.port = env, log, free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("a") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ctxsvc", "serve", "--port", str(self.port)],
                env=self.env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def wait_ready(self, seconds: float = 240) -> None:
        deadline = time.monotonic() + seconds
        while True:
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()
            try:
                if httpx.get(f"{self.base}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.2)

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("client")
    root = tmp / "demo"
    write_tree(root, SAMPLE)
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "init")
    env = cli_env(tmp / "home", CTXSVC_ALLOWED_ROOTS=str(tmp))
    done = run_cli(env, "index", str(root), "--no-vectors", "--json")
    assert done.returncode == 0, done.stderr
    srv = Server(env, tmp / "server.log")
    srv.start()
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def errors_counted(metrics: str, code: str) -> float:
    found = re.search(rf'^ctxsvc_http_errors_total{{code="{code}"}} (\S+)$', metrics, re.M)
    return float(found.group(1)) if found else 0.0


@pytest.mark.slow
def test_every_method_returns_typed_results(server: Server) -> None:
    root = Path(server.env["CTXSVC_ALLOWED_ROOTS"]) / "demo"
    with Client(server.base, retry=FAST) as ctx:
        assert ctx.health() is True
        ready = ctx.ready()
        assert isinstance(ready, Readiness) and ready.ready and ready.repos >= 1

        job = ctx.index(str(root), name="demo2", vectors=False)
        assert isinstance(job, Job) and job.repo == "demo2" and job.kind == "index"
        job = ctx.wait_job(job, timeout=120)
        assert job.state == "done" and isinstance(job.result, IndexSummary)
        assert job.result.files_indexed == 4 and job.events and ctx.job(job.id) == job
        assert {r.name for r in ctx.repos()} >= {"demo", "demo2"}
        assert all(isinstance(r, RepoInfo) for r in ctx.repos())
        assert ctx.wait_job(ctx.refresh("demo2"), timeout=120).result is not None

        status = ctx.status("demo")
        assert isinstance(status, RepoStatus) and status.files == 4 and status.vectors == "disabled"
        pack = ctx.context("demo", "Store.put writes JSON", budget_tokens=300)
        assert isinstance(pack, ContextPack) and isinstance(pack.index, IndexVersion)
        assert isinstance(pack.items[0], ContextItem) and pack.items[0].path == "app/store.py"
        assert pack.tokens_used <= 300 and isinstance(pack.items, tuple)
        expanded = ctx.expand("demo", symbol="Store.get", callers=True)
        assert expanded.items and expanded.items[0].symbol == "Store.get"
        lines = ctx.expand("demo", path="app/store.py", start_line=1, end_line=3)
        assert lines.items[0].start_line == 1
        found = ctx.search("demo", "store", limit=5)
        assert isinstance(found, SearchResult) and isinstance(found.symbols[0], SymbolScore)
        assert isinstance(found.symbols[0].symbol, Symbol) and found.files
        assert ctx.repo_map("demo", budget_tokens=400).items
        uses = ctx.symbol_uses("demo", "Store")
        assert isinstance(uses, SymbolUses) and uses.definitions[0].qualname == "Store"
        text = ctx.file_lines("demo", "app/store.py", start=1, end=2)
        assert isinstance(text, FileLines) and text.text.startswith('"""A tiny key-value store')

        session = ctx.start_session("demo", "make Store.put atomic", agent="tester")
        assert isinstance(session, Session) and session.agent == "tester"
        first = ctx.write_checkpoint(session.id, MESSAGES, goal="atomic put", next_step="test")
        assert isinstance(first, Checkpoint) and isinstance(first.summary, Summary)
        assert first.number == 1 and first.summary.goal == "atomic put" and first.idempotency_key
        key = first.idempotency_key
        again = ctx.write_checkpoint(
            session.id, MESSAGES, goal="atomic put", next_step="test", idempotency_key=key
        )
        assert again == first  # the same key: the stored checkpoint, nothing written
        with pytest.raises(InvalidRequest, match="was used for another checkpoint"):
            ctx.write_checkpoint(session.id, MESSAGES, idempotency_key=key)
        second = ctx.write_checkpoint(session.id, [], decisions=["keep JSON"])
        assert second.number == 2
        assert [c.number for c in ctx.checkpoints(session.id)] == [1, 2]
        assert ctx.checkpoints(session.id)[0].transcript == ()
        assert ctx.checkpoints(session.id, transcript=True)[0].transcript == tuple(MESSAGES)
        assert ctx.checkpoint(session.id) == second and ctx.checkpoint(session.id, 1) == first
        resumed = ctx.resume(session.id, budget_tokens=600)
        assert isinstance(resumed, Resume) and resumed.checkpoint == second
        assert resumed.session == session and resumed.tokens_used <= 600

        a = ctx.start_session("demo", "read the store", workspace="ws")
        b = ctx.start_session("demo", "rename the store", workspace="ws")
        event = ctx.record_event("ws", "renamed class Store to Repository", session_id=b.id)
        assert isinstance(event, WorkspaceEvent) and event.new_symbol == "Repository"
        replayed = ctx.record_event(
            "ws", "decided to keep JSON", session_id=b.id, kind="decision", idempotency_key="e1"
        )
        assert (
            ctx.record_event(
                "ws", "decided to keep JSON", session_id=b.id, kind="decision", idempotency_key="e1"
            )
            == replayed
        )
        assert [e.seq for e in ctx.workspace_events("ws")] == [event.seq, replayed.seq]
        warned = ctx.context("demo", "Store.put writes JSON", budget_tokens=300, session_id=a.id)
        assert [w.event.seq for w in warned.warnings] == [event.seq]

        ctx.drop("demo2")
        with pytest.raises(RepoNotFound):
            ctx.status("demo2")
        assert "ctxsvc_http_requests_in_flight" in ctx.metrics()


@pytest.mark.slow
def test_a_non_retryable_error_from_the_server_is_raised_once(server: Server) -> None:
    with Client(server.base, retry=FAST) as ctx:
        before = errors_counted(ctx.metrics(), "repo_not_found")
        with pytest.raises(RepoNotFound) as caught:
            ctx.status("nope")
        after = errors_counted(ctx.metrics(), "repo_not_found")
        with pytest.raises(InvalidRequest) as invalid:
            ctx.context("demo", "q", budget_tokens=-1)
    error = caught.value
    assert after == before + 1  # one request reached the server: no retry
    assert error.message == "no index named or rooted at 'nope'" and error.hint
    assert error.http_status == 404 and error.code == "repo_not_found" and not error.retryable
    assert error.request_id and re.fullmatch(r"[0-9a-f]{32}", error.request_id)
    assert invalid.value.code == "validation_error" and invalid.value.problem is not None
    assert invalid.value.problem["errors"][0]["field"] == "body.budget_tokens"


@pytest.mark.slow
@pytest.mark.anyio
async def test_the_async_client_against_the_server(server: Server) -> None:
    async with AsyncClient(server.base, retry=FAST) as ctx:
        pack = await ctx.context("demo", "Store.put writes JSON", budget_tokens=300)
        assert pack.items[0].path == "app/store.py"
        session = await ctx.start_session("demo", "async")
        cp = await ctx.write_checkpoint(session.id, MESSAGES, goal="atomic put")
        assert (await ctx.checkpoint(session.id)) == cp
        assert (await ctx.resume(session.id)).checkpoint == cp
        with pytest.raises(RepoNotFound):
            await ctx.status("nope")


class LossyProxy:
    """A TCP proxy in front of the server that can lose one answer: the server acts
    on the request and answers, and the client never hears it."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.base = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.lose_next: Callable[[], None] | None = None  # called instead of forwarding
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            up = socket.create_connection(("127.0.0.1", self.upstream), timeout=5)
        except OSError:  # the server is down: the client's connection closes unanswered
            conn.close()
            return
        up.settimeout(None)
        threading.Thread(target=self._pump, args=(conn, up), daemon=True).start()
        try:
            while data := up.recv(65536):
                lose, self.lose_next = self.lose_next, None
                if lose is not None:
                    lose()
                    break
                conn.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (conn, up):  # shutdown first: it wakes the pump blocked in recv
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass


@pytest.mark.slow
def test_the_client_recovers_when_the_server_restarts_mid_run(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    """The server is killed right after it stored a checkpoint, before the client
    heard back, and restarted on its port; the retried write stores nothing twice."""
    patient = RetryPolicy(attempts=1000, timeout=240, backoff=0.05, max_backoff=0.5)
    proxy = LossyProxy(server.port)
    killed = threading.Event()
    killed_at: list[datetime] = []
    restart = threading.Timer(1.0, server.start)

    def kill_and_restart() -> None:
        # The server has answered, so the checkpoint is stored; the answer is lost.
        killed_at.append(datetime.now(UTC))
        server.stop(signal.SIGKILL)
        killed.set()
        restart.start()

    direct: dict[str, Any] = {}

    def meanwhile() -> None:
        # A direct client sees connection refused: too small a budget gives up, a big one waits.
        killed.wait(120)
        try:
            with Client(server.base, retry=RetryPolicy(attempts=3, timeout=0.5)) as hasty:
                hasty.status("demo")
        except Exception as exc:
            direct["hasty"] = exc
        try:
            with Client(server.base, retry=patient) as ctx:
                direct["status"] = ctx.status("demo")
        except Exception as exc:
            direct["status"] = exc

    waiter = threading.Thread(target=meanwhile)
    waiter.start()
    try:
        with (
            Client(proxy.base, retry=patient) as ctx,
            caplog.at_level(logging.INFO, "ctxsvc.client"),
        ):
            session = ctx.start_session("demo", "survive a restart")
            first = ctx.write_checkpoint(session.id, MESSAGES[:1], goal="atomic put")
            proxy.lose_next = kill_and_restart
            second = ctx.write_checkpoint(session.id, MESSAGES, decisions=["os.replace"])
            assert killed.is_set() and server.proc is not None
            # It was stored before the kill: the retry got the stored one back.
            assert datetime.fromisoformat(second.created_at) < killed_at[0]
            assert second.number == 2 and second.idempotency_key
            assert [c.number for c in ctx.checkpoints(session.id)] == [1, 2]
            assert ctx.checkpoint(session.id, 1) == first
            assert ctx.context("demo", "Store.put writes JSON", budget_tokens=300).items
        retries = [r for r in caplog.records if getattr(r, "code", None) == "unreachable"]
        assert retries, "the checkpoint write was retried"
    finally:
        if not killed.is_set():  # failed before the kill: let the waiter go
            killed.set()
        else:
            restart.join(timeout=30)
        waiter.join(timeout=300)
        proxy.close()
        server.wait_ready()
    assert isinstance(direct.get("hasty"), Unreachable) and direct["hasty"].retryable
    assert isinstance(direct.get("status"), RepoStatus), direct
