"""The HTTP edge in-process: Host and Origin (DNS rebinding), the request deadline, the
body-read deadline, what /readyz tells whom, bounded numbers, and the 5xx log line."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from test_api import assert_problem

from ctxsvc.cli.render import JsonLogFormatter
from ctxsvc.errors import ConfigError, InvalidRequest, StoreError
from ctxsvc.http import create_app
from ctxsvc.http.observability import RequestContextFilter
from ctxsvc.mcp.server import McpHttp
from ctxsvc.service import ContextService
from ctxsvc.settings import ServedNames, Settings

pytestmark = pytest.mark.anyio
TOKEN = "s3cret-token"
CTX = {"repo": "demo", "query": "Store put", "budget_tokens": 300}
PING = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
MCP_ACCEPT = {"Accept": "application/json, text/event-stream"}


@asynccontextmanager
async def client(app: Any, lifespan: bool = False) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
        if lifespan:  # runs the MCP session manager, as uvicorn would
            async with app.router.lifespan_context(app):
                yield c
        else:
            yield c


# -- Host and Origin --------------------------------------------------------------------


ROUTES: list[tuple[str, str, Any]] = [
    ("GET", "/v1/repos", None),
    ("GET", "/v1/repos/demo/files/app/store.py", None),
    ("POST", "/v1/context", CTX),
    ("POST", "/v1/sessions", {"repo": "demo", "task": "t"}),
    ("POST", "/v1/workspaces/ws/events", {"text": "renamed Store to Repository"}),
    ("GET", "/healthz", None),
    ("GET", "/readyz", None),
    ("GET", "/metrics", None),
    ("GET", "/docs", None),
    ("GET", "/openapi.json", None),
    ("POST", "/mcp", PING),
]


@pytest.mark.parametrize(
    "headers",
    [
        {"host": "evil.example"},
        {"host": "evil.example:8765", "origin": "http://evil.example:8765"},
        {"origin": "https://evil.example"},
        {"origin": "null"},
        {"host": "127.0.0.1.evil.example"},
    ],
)
async def test_foreign_host_or_origin_is_refused_on_every_route(
    indexed: ContextService, headers: dict[str, str]
) -> None:
    app = create_app(indexed, mounts=[McpHttp(indexed)])
    named = headers.get("host", headers.get("origin"))
    async with client(app, lifespan=True) as c:
        for method, path, body in ROUTES:
            r = await c.request(method, path, json=body, headers={**MCP_ACCEPT, **headers})
            problem = assert_problem(r, 403, "forbidden")
            assert repr(named) in problem["detail"] and "CTXSVC_ALLOWED_HOSTS" in problem["hint"]
            assert "demo" not in r.text, path  # nothing of the index went out


async def test_the_rebinding_attack_registers_nothing(
    indexed: ContextService, repo: Path, tmp_path: Path
) -> None:
    """The issue's attack: a page whose name resolves to 127.0.0.1 registers a repository."""
    other = tmp_path / "victim"
    other.mkdir()
    (other / "secret.py").write_text("API_KEY = 'hunter2'\n")
    targets: list[object] = []
    real = indexed.index_target

    def index_target(*args: Any) -> Any:  # a spy at the seam: did the route run at all?
        targets.append(args)
        return real(*args)

    indexed.index_target = index_target  # type: ignore[method-assign]
    app = create_app(indexed, allowed_roots=[tmp_path])
    attack = {"host": "evil.example:8765", "origin": "http://evil.example:8765"}
    async with client(app) as c:
        r = await c.post("/v1/repos", json={"path": str(other)}, headers=attack)
        assert_problem(r, 403, "forbidden")
        r = await c.get("/v1/repos/victim/files/secret.py", headers=attack)
        assert_problem(r, 403, "forbidden")
        assert [m["name"] for m in (await c.get("/v1/repos")).json()] == ["demo"]
    assert targets == [] and [m.name for m in indexed.repos()] == ["demo"]


@pytest.mark.parametrize(
    "headers",
    [
        {"host": "localhost"},
        {"host": "localhost:8765", "origin": "http://localhost:6274"},
        {"host": "127.0.0.1:1", "origin": "https://127.0.0.1"},
        {"host": "[::1]:8765", "origin": "http://[::1]:3000"},
        {"host": "LOCALHOST."},
    ],
)
async def test_loopback_names_are_served(indexed: ContextService, headers: dict[str, str]) -> None:
    app = create_app(indexed, mounts=[McpHttp(indexed)])
    async with client(app, lifespan=True) as c:
        assert (await c.get("/v1/repos", headers=headers)).status_code == 200
        assert (await c.post("/v1/context", json=CTX, headers=headers)).status_code == 200
        r = await c.post("/mcp", json=PING, headers={**MCP_ACCEPT, **headers})
        assert r.status_code == 200, r.text


async def test_allowed_hosts_let_a_name_in(indexed: ContextService) -> None:
    app = create_app(
        indexed, allowed_hosts=["ctx.example.com"], cors_origins=["https://app.example"]
    )
    async with client(app) as c:
        for headers in (
            {"host": "ctx.example.com:8765"},
            {"host": "ctx.example.com", "origin": "https://ctx.example.com"},
            {"host": "localhost", "origin": "https://app.example"},  # a CORS origin
        ):
            assert (await c.get("/v1/repos", headers=headers)).status_code == 200, headers
        for headers in ({"host": "other.example"}, {"origin": "https://sub.ctx.example.com"}):
            assert_problem(await c.get("/v1/repos", headers=headers), 403, "forbidden")
    app = create_app(indexed, allowed_hosts=["*"])  # anything: the guard is off
    async with client(app) as c:
        headers = {"host": "evil.example", "origin": "http://evil.example"}
        assert (await c.get("/v1/repos", headers=headers)).status_code == 200


async def test_mcp_alone_makes_the_same_check(indexed: ContextService) -> None:
    """McpHttp served without the API's edge refuses what the edge refuses."""
    mcp = McpHttp(indexed, allowed_hosts=["ctx.example.com"])
    async with mcp.running(), client(mcp) as c:
        for headers in ({"host": "evil.example"}, {"origin": "https://evil.example"}):
            r = await c.post("/", json=PING, headers={**MCP_ACCEPT, **headers})
            assert r.status_code == 403 and r.json()["code"] == "forbidden"
            assert "CTXSVC_ALLOWED_HOSTS" in r.json()["hint"]
        r = await c.post("/", json=PING, headers={**MCP_ACCEPT, "host": "ctx.example.com"})
        assert r.status_code == 200, r.text


def test_served_names_parse_hosts_and_origins() -> None:
    names = ServedNames.of(["Ctx.Example.com", "[::2]", "10.0.0.5"], ["https://App.example/"])
    ok = ["localhost", "127.0.0.1:80", "[::1]", "ctx.example.com:1", "[::2]:9", "10.0.0.5"]
    assert all(names.host_ok(h) for h in ok)
    bad = ["evil.example", "localhost:x", "::1", "a@localhost", "localhost/x", "", "[::1]x"]
    assert not any(names.host_ok(h) for h in bad)
    assert names.host_ok(None)  # HTTP/1.0 without Host: no browser sent it
    assert names.origin_ok("https://app.example") and names.origin_ok("http://10.0.0.5:3000")
    for origin in (
        "null",
        "file://",
        "http://localhost/x",
        "ftp://localhost",
        "http://u@localhost",
    ):
        assert not names.origin_ok(origin), origin


def test_settings_read_allowed_hosts_and_timeouts(tmp_path: Path) -> None:
    s = Settings.from_env(
        {"CTXSVC_ALLOWED_HOSTS": "Ctx.Example, [::1],10.0.0.5", "CTXSVC_REQUEST_TIMEOUT": "0"},
        home=tmp_path,
    )
    assert s.allowed_hosts == ["ctx.example", "::1", "10.0.0.5"] and s.request_timeout == 0
    assert (s.body_timeout, s.shutdown_timeout) == (10.0, 10)
    assert Settings.from_env({}, home=tmp_path).allowed_hosts == []
    for env in (
        {"CTXSVC_ALLOWED_HOSTS": "http://ctx.example"},
        {"CTXSVC_ALLOWED_HOSTS": "ctx.example:8765"},
        {"CTXSVC_REQUEST_TIMEOUT": "-1"},
        {"CTXSVC_BODY_TIMEOUT": "nan"},
    ):
        with pytest.raises(ConfigError) as caught:
            Settings.from_env(env, home=tmp_path)
        assert next(iter(env)) in str(caught.value), caught.value


# -- the request deadline ---------------------------------------------------------------


class Gate:
    """A service call that blocks until released: the seam for a request that runs long."""

    def __init__(self, real: Callable[..., Any]) -> None:
        self.real = real
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.entered.set()
        self.release.wait(60)  # bounded, so that a broken test cannot hang the suite
        return self.real(*args, **kwargs)


@pytest.fixture
def gate(indexed: ContextService) -> Gate:
    g = Gate(indexed.search)
    indexed.search = g  # type: ignore[method-assign]
    return g


async def eventually(check: Callable[[], bool], what: str) -> None:
    """Wait for ``check()`` (bounded: a guard against a freeze, not a timing)."""
    deadline = time.monotonic() + 30
    while not check():
        assert time.monotonic() < deadline, what
        await anyio.sleep(0.02)


def json_lines(caplog: pytest.LogCaptureFixture, message: str) -> list[dict[str, Any]]:
    """The JSON lines the server would write for records whose message starts with ``message``."""
    fmt = JsonLogFormatter()
    return [json.loads(fmt.format(r)) for r in caplog.records if r.getMessage().startswith(message)]


async def test_the_deadline_answers_504_and_abandons_the_work(
    indexed: ContextService, gate: Gate, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.handler.addFilter(RequestContextFilter())
    caplog.set_level(logging.INFO)
    app = create_app(indexed, request_timeout=2)  # the gate blocks for 60 s anyway
    body = {"repo": "demo", "query": "Store put"}
    async with client(app) as c:
        r = await c.post("/v1/search", json=body, headers={"x-request-id": "slow-1"})
        problem = assert_problem(r, 504, "deadline_exceeded")
        assert problem["retryable"] is True and r.headers["retry-after"] == "1"
        assert problem["request_id"] == "slow-1" and "2 seconds" in problem["detail"]
        # The operator's line: what ran past its deadline and where it was stuck, with the id.
        (line,) = json_lines(caplog, "deadline exceeded")
        assert line["request_id"] == "slow-1" and line["error_type"] == "DeadlineExceeded"
        assert line["level"] == "error" and "self.release.wait(60)" in line["traceback"]
        assert app.state.workers.abandoned == 1
        gate.release.set()
        await eventually(lambda: app.state.workers.busy == 0, "the abandoned call never ended")
        await eventually(lambda: bool(json_lines(caplog, "abandoned work finished")), "no log")
        (done,) = json_lines(caplog, "abandoned work finished")
        assert done["request_id"] == "slow-1" and done["outcome"] == "ok"
        assert app.state.workers.abandoned == 0
        assert (await c.post("/v1/search", json=body)).status_code == 200


async def test_the_deadline_holds_for_mcp_calls_too(indexed: ContextService, gate: Gate) -> None:
    app = create_app(indexed, request_timeout=0.3, mounts=[McpHttp(indexed)])
    args = {"repo": "demo", "query": "Store"}
    call = {**PING, "method": "tools/call", "params": {"name": "search_code", "arguments": args}}
    async with client(app, lifespan=True) as c:
        r = await c.post("/mcp", json=call, headers=MCP_ACCEPT)
        assert_problem(r, 504, "deadline_exceeded")
        assert (await c.get("/healthz")).status_code == 200
        gate.release.set()


async def test_health_and_other_requests_answer_while_one_runs_long(
    indexed: ContextService, gate: Gate
) -> None:
    app = create_app(indexed, request_timeout=0)  # no deadline
    answers: list[httpx.Response] = []
    async with client(app) as c, anyio.create_task_group() as tg:

        async def slow() -> None:
            answers.append(await c.post("/v1/search", json={"repo": "demo", "query": "Store"}))

        tg.start_soon(slow)
        assert await anyio.to_thread.run_sync(gate.entered.wait, 30)
        assert (await c.get("/healthz")).json() == {"status": "ok"}
        assert (await c.get("/readyz")).status_code == 200
        assert (await c.post("/v1/context", json=CTX)).status_code == 200
        assert answers == []  # still running
        gate.release.set()
    assert answers[0].status_code == 200


async def test_abandoned_work_cannot_pile_up_threads(indexed: ContextService, gate: Gate) -> None:
    app = create_app(indexed, request_timeout=0.2, max_in_flight=2)
    body = {"repo": "demo", "query": "Store"}
    async with client(app) as c:
        for _ in range(2):
            assert_problem(await c.post("/v1/search", json=body), 504, "deadline_exceeded")
        # Both threads still run: a third call is refused at once, not queued behind them.
        problem = assert_problem(await c.post("/v1/context", json=CTX), 503, "overloaded")
        assert problem["retryable"] is True and "past their request's deadline" in problem["detail"]
        assert (await c.get("/healthz")).status_code == 200
        gate.release.set()
        await eventually(lambda: app.state.workers.busy == 0, "the abandoned calls never ended")
        assert (await c.post("/v1/context", json=CTX)).status_code == 200


# -- the body-read deadline -------------------------------------------------------------


async def test_a_trickling_body_gets_408_and_holds_no_slot(indexed: ContextService) -> None:
    app = create_app(indexed, body_timeout=0.3, max_in_flight=1)
    arriving, never = anyio.Event(), anyio.Event()

    async def trickle() -> AsyncIterator[bytes]:
        arriving.set()
        yield b'{"repo": "demo", '
        await never.wait()
        yield b'"query": "x"}'

    answers: list[httpx.Response] = []
    async with client(app) as c, anyio.create_task_group() as tg:

        async def slow() -> None:
            answers.append(await c.post("/v1/context", content=trickle()))

        tg.start_soon(slow)
        await arriving.wait()
        # The one request slot is free for work while that body trickles in.
        assert (await c.post("/v1/context", json=CTX)).status_code == 200
    problem = assert_problem(answers[0], 408, "slow_request")
    assert problem["retryable"] is True and "CTXSVC_BODY_TIMEOUT" in problem["hint"]
    never.set()


async def test_bodies_trickling_past_the_reader_cap_leave_bodyless_requests_served(
    indexed: ContextService,
) -> None:
    app = create_app(indexed, body_timeout=30, max_in_flight=1)  # 4 readers at most
    never = anyio.Event()
    started = [0]

    async def trickle() -> AsyncIterator[bytes]:
        started[0] += 1
        yield b'{"repo": "demo", '
        await never.wait()
        yield b'"query": "x"}'

    async with client(app) as c, anyio.create_task_group() as tg:

        async def slow() -> None:
            await c.post("/v1/context", content=trickle())

        for _ in range(6):
            tg.start_soon(slow)
        while started[0] < 4:
            await anyio.sleep(0.01)
        assert (await c.get("/healthz")).status_code == 200
        assert (await c.get("/v1/repos")).status_code == 200
        never.set()
        tg.cancel_scope.cancel()


# -- /readyz ----------------------------------------------------------------------------


def damage(service: ContextService) -> None:
    # The seam the catalog fills when it finds an index damaged (tests/test_damaged_index.py).
    what = "table chunks (version 3) is damaged: a data file is missing"
    setattr(service, "damaged", lambda: {"demo": what})  # noqa: B010


async def test_readyz_says_only_ready_without_the_token(indexed: ContextService) -> None:
    damage(indexed)
    app = create_app(indexed, token=TOKEN)
    async with client(app) as c:
        r = await c.get("/readyz")
        assert r.status_code == 200 and r.json() == {"ready": True}
        r = await c.get("/readyz", headers={"authorization": "Bearer wrong"})
        assert r.json() == {"ready": True}
        full = (await c.get("/readyz", headers={"authorization": f"Bearer {TOKEN}"})).json()
    assert full["ready"] and full["repos"] == 1 and full["store"]["reachable"]
    assert (
        "demo: table chunks (version 3) is damaged: a data file is missing; "
        "run `ctxsvc index --rebuild demo`" in full["degraded"]
    )


async def test_readyz_names_every_damaged_index_when_no_token_is_set(
    indexed: ContextService,
) -> None:
    app = create_app(indexed)
    async with client(app) as c:
        assert (await c.get("/readyz")).json()["degraded"] == []
        damage(indexed)
        ready = (await c.get("/readyz")).json()
    assert ready["ready"] and any(d.startswith("demo: table chunks") for d in ready["degraded"])


# -- bounded numbers --------------------------------------------------------------------

BIG = 2**63
NUMBERS: list[tuple[str, str, bytes | None]] = [
    ("POST", "/v1/context", b'{"repo":"demo","query":"q","budget_tokens":NaN}'),
    ("POST", "/v1/context", b'{"repo":"demo","query":"q","budget_tokens":Infinity}'),
    ("POST", "/v1/context", b'{"repo":"demo","query":"q","budget_tokens":1e308}'),
    ("POST", "/v1/context", b'{"repo":"demo","query":"q","budget_tokens":%d}' % BIG),
    ("POST", "/v1/context", b'{"repo":"demo","query":"q","budget_tokens":1%s}' % (b"0" * 5000)),
    ("POST", "/v1/search", b'{"repo":"demo","query":"q","limit":-1}'),
    ("POST", "/v1/search", b'{"repo":"demo","query":"q","limit":%d}' % BIG),
    ("POST", "/v1/expand", b'{"repo":"demo","path":"a.py","start_line":%d}' % BIG),
    ("POST", "/v1/expand", b'{"repo":"demo","path":"a.py","start_line":1,"end_line":-1}'),
    ("POST", "/v1/sessions/SID/checkpoints", b'{"budget_tokens":%d}' % BIG),
    ("POST", "/v1/sessions/SID/checkpoints", b'{"messages":[{"role":"user","content":NaN}]}'),
    ("POST", "/v1/sessions/SID/checkpoints", b'{"messages":[{"role":"user","n":-Infinity}]}'),
    ("POST", "/v1/sessions/SID/checkpoints", b'{"messages":[{"role":"user","n":1e999}]}'),
    ("POST", "/v1/sessions/SID/checkpoints", b'{"messages":%s}' % (b"[" * 50_000 + b"]" * 50_000)),
    ("POST", "/v1/workspaces/ws/events", b'{"text":"x","paths":[NaN]}'),
    ("GET", f"/v1/repos/demo/map?budget_tokens={BIG}", None),
    ("GET", "/v1/repos/demo/map?budget_tokens=NaN", None),
    ("GET", "/v1/repos/demo/map?budget_tokens=1e308", None),
    ("GET", f"/v1/repos/demo/symbols?name=Store&limit={BIG}", None),
    ("GET", "/v1/repos/demo/symbols?name=Store&limit=-1", None),
    ("GET", f"/v1/repos/demo/files/app/store.py?start={BIG}", None),
    ("GET", f"/v1/repos/demo/files/app/store.py?end={BIG}", None),
    ("GET", "/v1/repos/demo/files/app/store.py?start=-1", None),
    ("GET", f"/v1/sessions/SID/checkpoints/{BIG}", None),
    ("GET", "/v1/sessions/SID/checkpoints/-1", None),
    ("GET", "/v1/sessions/SID/checkpoints/NaN", None),
    ("GET", f"/v1/sessions/SID/resume?budget_tokens={BIG}", None),
    ("GET", "/v1/sessions/SID/resume?budget_tokens=-1", None),
    ("GET", f"/v1/workspaces/ws/events?after={BIG}", None),
    ("GET", "/v1/workspaces/ws/events?after=-1", None),
    ("GET", "/v1/workspaces/ws/events?after=1e3", None),
    ("GET", f"/v1/workspaces/ws/events?limit={BIG}", None),
]


async def test_numbers_out_of_bounds_are_422(indexed: ContextService) -> None:
    app = create_app(indexed)
    failures = []
    async with client(app) as c:
        sid = (await c.post("/v1/sessions", json={"repo": "demo", "task": "t"})).json()["id"]
        for method, path, content in NUMBERS:
            headers = {"content-type": "application/json"} if content else {}
            r = await c.request(method, path.replace("SID", sid), content=content, headers=headers)
            if r.status_code != 422 or r.json()["code"] != "validation_error":
                failures.append(f"{method} {path} {(content or b'')[:60]!r}: {r.text[:200]}")
        # Nothing out of bounds was stored on the way (a NaN stored would fail every read).
        assert (await c.get(f"/v1/sessions/{sid}/checkpoints")).json() == []
    assert not failures, "\n".join(failures)


async def test_a_nan_is_refused_by_every_adapter_not_only_http(indexed: ContextService) -> None:
    session = indexed.start_session("demo", "t", None, None)
    said = [{"role": "user", "content": "hi", "n": float("nan"), "m": [float("inf")]}]
    with pytest.raises(InvalidRequest, match="JSON cannot hold"):
        indexed.store_checkpoint(session.id, said, {}, None, 300)  # as the MCP tool calls it
    app = create_app(indexed)
    async with client(app) as c:
        r = await c.get(f"/v1/sessions/{session.id}/checkpoints/latest")
    assert r.status_code == 404, r.text  # nothing was stored


# -- the 5xx log line -------------------------------------------------------------------


async def test_a_5xx_from_the_service_logs_its_type_message_traceback_and_id(
    indexed: ContextService, caplog: pytest.LogCaptureFixture
) -> None:
    def repos() -> Any:
        raise StoreError("lance error: Not found: chunks.lance/data/x.lance")

    indexed.repos = repos  # type: ignore[method-assign]
    caplog.handler.addFilter(RequestContextFilter())
    app = create_app(indexed)
    async with client(app) as c:
        r = await c.get("/v1/repos", headers={"x-request-id": "store-1"})
    assert_problem(r, 503, "store_error")
    (line,) = json_lines(caplog, "request failed: lance error")
    assert line["request_id"] == "store-1" and line["error_type"] == "StoreError"
    assert line["error"].startswith("lance error") and "in repos" in line["traceback"]
