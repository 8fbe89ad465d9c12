"""The MCP server through the SDK's own client: ``ctxsvc mcp`` over stdio, and ``/mcp`` over HTTP.

One conversation (:func:`converse`) lists the tools and calls each one on the
fixture repository; it runs against a real ``ctxsvc mcp`` subprocess, against
the app in-process (httpx2's ASGI transport, with the app's lifespan running)
and, once, against a real ``ctxsvc serve``.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import jsonschema
import mcp_types as types
import pytest
from conftest import cli_env, run_cli
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from ctxsvc.http import create_app
from ctxsvc.mcp.server import McpHttp
from ctxsvc.mcp.tools import TOOLS
from ctxsvc.service import ContextService
from ctxsvc.stores.locks import FileLock

pytestmark = pytest.mark.anyio
TOKEN = "mcp-s3cret"
NAMES = {
    "get_context", "search_code", "expand", "repo_map", "index_status", "refresh",
    "start_session", "write_checkpoint", "resume_session", "record_decision", "impact",
    "references", "definition",
}  # fmt: skip
READ_ONLY = {
    "get_context",
    "search_code",
    "expand",
    "repo_map",
    "index_status",
    "resume_session",
    "refresh",
    "impact",
    "references",
    "definition",
}
# A pack or resume with a session answers differently the second time (it refers to the first).
IDEMPOTENT = {
    "search_code",
    "repo_map",
    "index_status",
    "refresh",
    "impact",
    "references",
    "definition",
}


def text(result: types.CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))


async def call(session: ClientSession, name: str, **arguments: Any) -> types.CallToolResult:
    result = await session.call_tool(name, arguments)
    assert isinstance(result, types.CallToolResult)
    return result


async def ok(session: ClientSession, name: str, **arguments: Any) -> types.CallToolResult:
    result = await call(session, name, **arguments)
    assert not result.is_error, text(result)
    assert isinstance(result.structured_content, dict)
    return result


def error(result: types.CallToolResult, code: str, *, retryable: bool) -> str:
    assert result.is_error
    message = text(result)
    assert message.startswith(f"error {code} (retryable: {'yes' if retryable else 'no'}")
    assert result.meta is not None
    data = result.meta["ctxsvc/error"]
    assert data["code"] == code and data["retryable"] is retryable
    return message


async def converse(session: ClientSession, repo: Path, home: Path, *, default_repo: bool) -> None:
    """List the tools and call each one, checking the answers."""
    listed = (await session.list_tools()).tools
    assert {t.name for t in listed} == NAMES
    for tool in listed:
        assert tool.description and len(tool.description) > 80, tool.name
        props = tool.input_schema["properties"]
        assert props and all(p.get("description") for p in props.values()), tool.name
        assert tool.output_schema and tool.output_schema["type"] == "object"
        jsonschema.Draft202012Validator.check_schema(tool.input_schema)
    schemas = {t.name: t.output_schema for t in listed}
    for tool in listed:  # reads are marked read-only; writes are not, and destroy nothing
        hints = tool.annotations
        assert hints is not None and hints.read_only_hint is (tool.name in READ_ONLY), tool.name
        assert hints.destructive_hint is False and hints.open_world_hint is False, tool.name
        assert hints.idempotent_hint is (tool.name in IDEMPOTENT), tool.name
    # The code travels in the text blocks only: the declared structured results hold no copy.
    for name in ("get_context", "expand", "repo_map", "resume_session"):
        assert "rendered" not in schemas[name]["properties"], name
    assert "text" not in schemas["get_context"]["$defs"]["ContextItem"]["properties"]
    assert "rendered" not in schemas["resume_session"]["$defs"]["ContextPack"]["properties"]
    assert "rendered" not in schemas["write_checkpoint"]["$defs"]["Summary"]["properties"]
    on = {} if default_repo else {"repo": "demo"}
    required = {t.name: t.input_schema.get("required", []) for t in listed}
    assert ("repo" in required["get_context"]) is not default_repo

    r = await ok(session, "get_context", query="Store.put writes JSON", budget_tokens=300, **on)
    pack = r.structured_content
    assert pack["items"][0]["path"] == "app/store.py" and 0 < pack["tokens_used"] <= 300
    code, notes = (c.text for c in r.content if isinstance(c, types.TextContent))
    assert code.startswith("## app/store.py") and "```python" in code
    assert f"{pack['tokens_used']}/300 tokens" in notes
    jsonschema.validate(pack, schemas["get_context"])
    # The code once: in the first text block; the structured part carries spans and ids.
    assert r.model_dump_json().count("json.dump(self.data, f)") == 1
    assert "rendered" not in pack and all("text" not in i for i in pack["items"])
    assert all({"path", "start_line", "end_line", "tokens"} <= set(i) for i in pack["items"])
    assert all(len(json.dumps(i)) < 600 for i in [*pack["items"], *pack["omitted"]])

    r = await ok(session, "get_context", query="how a request is handled", detail="map", **on)
    assert r.structured_content["detail"] == "map" and "app/server.py" in text(r)

    r = await ok(session, "search_code", query="Server handle request", limit=5, **on)
    found = r.structured_content
    assert found["files"][0]["path"] == "app/server.py"
    assert any(s["symbol"]["qualname"] == "Server.handle" for s in found["symbols"])
    assert "method app/server.py::Server.handle (lines " in text(r)

    r = await ok(session, "expand", symbol="Store.put", **on)
    item = r.structured_content["items"][0]
    assert (item["path"], item["symbol"]) == ("app/store.py", "Store.put") and "text" not in item
    assert "json.dump(self.data, f)" in text(r) and "lines 13-16 (Store.put)" in text(r)
    assert r.model_dump_json().count("json.dump(self.data, f)") == 1
    r = await ok(session, "expand", path="app/server.py", start_line=9, end_line=10, **on)
    assert "class Server:" in text(r)

    r = await ok(session, "repo_map", budget_tokens=500, **on)
    assert "app/store.py" in text(r) and r.structured_content["detail"] == "map"

    r = await ok(session, "index_status", **on)
    (status,) = r.structured_content["repos"]
    assert status["name"] == "demo" and status["skipped"] == {"binary": 1}
    assert "freshness: up to date" in text(r)

    # An edit on disk: reported as stale, then picked up by refresh.
    with (repo / "app" / "server.py").open("a") as f:
        f.write("\n\ndef evict_everything() -> None:\n    return None\n")
    r = await ok(session, "get_context", query="evict everything from the cache", **on)
    assert r.structured_content["index"]["changed_since"] == ["app/server.py"]
    assert "Changed on disk since indexing (call refresh" in text(r)
    with FileLock(home / "locks" / "demo.lock", "index 'demo'"):
        busy = await call(session, "refresh", **on)
    assert "is locked by another ctxsvc process" in error(busy, "index_busy", retryable=True)
    r = await ok(session, "refresh", **on)
    assert r.structured_content["files_indexed"] == 1 and "1 files parsed" in text(r)
    r = await ok(session, "expand", symbol="evict_everything", **on)
    assert r.structured_content["items"][0]["path"] == "app/server.py"
    # The change at hand: the diff first, then the code it changed.
    r = await ok(session, "get_context", query="evict", diff="HEAD", budget_tokens=1500, **on)
    assert text(r).startswith("## Your changes against HEAD")
    assert "+def evict_everything() -> None:" in text(r)
    assert r.structured_content["items"][0]["path"] == "app/server.py"
    bad = await call(session, "get_context", query="evict", diff="--output=x", **on)
    assert "is not a commit" in error(bad, "invalid_request", retryable=False)
    r = await ok(session, "impact", symbol="Store.put", depth=2, **on)
    assert r.structured_content["ids"] == ["app/store.py::Store.put"]
    assert text(r).startswith("Dependents of Store.put")
    r = await ok(session, "references", symbol="Store.put", **on)
    assert text(r).startswith("Uses of Store.put")
    r = await ok(session, "definition", symbol="Store", **on)
    assert "app/store.py::Store" in [x["id"] for x in r.structured_content["links"]]

    # A session: context is not sent twice; checkpoints and decisions survive a reset.
    r = await ok(
        session, "start_session", task="make the store thread-safe", workspace="team", **on
    )
    sid = r.structured_content["id"]
    assert sid.startswith("s-") and sid in text(r)
    first = await ok(session, "get_context", query="Store.put", session_id=sid, **on)
    again = await ok(session, "get_context", query="Store.put", session_id=sid, **on)
    sent = {i["path"] for i in first.structured_content["items"]}
    assert "app/store.py" in sent
    assert {s["path"] for s in again.structured_content["already_sent"]} >= {"app/store.py"}
    messages = [
        {"role": "user", "content": "Make Store.put safe to call from two threads."},
        {"role": "assistant", "content": "I edited app/store.py to take a lock in put."},
    ]
    checkpoint = {
        "session_id": sid, "messages": messages, "next_step": "add a test for concurrent puts",
        "idempotency_key": "cp-1",
    }  # fmt: skip
    r = await ok(session, "write_checkpoint", **checkpoint)
    cp = r.structured_content
    assert cp["number"] == 1 and cp["transcript"] == []
    assert "add a test for concurrent puts" in text(r)
    jsonschema.validate(cp, schemas["write_checkpoint"])
    replay = await ok(session, "write_checkpoint", **checkpoint)  # a retry writes nothing
    assert replay.structured_content["number"] == 1
    r = await ok(
        session, "record_decision", session_id=sid, decision="use threading.Lock in Store",
        reason="asyncio is not used anywhere in the app",
    )  # fmt: skip
    assert r.structured_content["number"] == 2
    decisions = r.structured_content["state"]["decisions"]
    assert "use threading.Lock in Store (reason: asyncio is not used anywhere in the app)" in (
        decisions
    )
    r = await ok(session, "resume_session", session_id=sid, budget_tokens=800)
    resumed = text(r)
    assert "use threading.Lock in Store" in resumed and "concurrent puts" in resumed
    assert r.structured_content["checkpoint"]["number"] == 2
    jsonschema.validate(r.structured_content, schemas["resume_session"])
    assert "rendered" not in r.structured_content
    assert "rendered" not in r.structured_content["checkpoint"]["summary"]
    line = "json.dump(self.data, f)"  # fresh code, in the text only
    assert r.model_dump_json().count(line) == 1 == resumed.count(line)

    # Errors: what happened, and whether retrying can help.
    bad = await call(session, "get_context", repo="nope", query="anything")
    assert "no index named or rooted at 'nope'" in error(bad, "repo_not_found", retryable=False)
    bad = await call(session, "get_context", budget_tokens=-1, **on)
    message = error(bad, "validation_error", retryable=False)
    assert "query: Field required" in message and "budget_tokens" in message
    bad = await call(session, "expand", **on)
    error(bad, "invalid_request", retryable=False)
    bad = await call(session, "resume_session", session_id="s-missing")
    error(bad, "not_found", retryable=False)
    if not default_repo:
        bad = await call(session, "expand", symbol="Store.put")
        assert "no default repository" in error(bad, "invalid_request", retryable=False)


# -- stdio: a real `ctxsvc mcp` process ------------------------------------------------


def index_no_vectors(repo: Path, home: Path) -> dict[str, str]:
    env = cli_env(home)
    done = run_cli(env, "index", str(repo), "--no-vectors", "--json")
    assert done.returncode == 0, done.stderr
    return env


@pytest.mark.slow
async def test_stdio_server_answers_every_tool(repo: Path, tmp_path: Path) -> None:
    env = index_no_vectors(repo, tmp_path / "home")
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "ctxsvc", "mcp", "--repo", str(repo)], env=env
    )
    with (tmp_path / "stderr.log").open("w+") as errlog:
        async with (
            stdio_client(params, errlog=errlog) as (read, write),
            ClientSession(read, write) as session,
        ):
            init = await session.initialize()
            assert init.server_info.name == "ctxsvc"
            assert init.instructions and "Default repository: demo" in init.instructions
            await converse(session, repo, tmp_path / "home", default_repo=True)


def test_stdio_server_refuses_an_unknown_default_repo(tmp_path: Path) -> None:
    done = run_cli(cli_env(tmp_path / "home"), "mcp", "--repo", "nope", timeout=120)
    assert done.returncode == 3 and done.stdout == ""
    assert "no index named or rooted at 'nope'" in done.stderr and "Traceback" not in done.stderr


@asynccontextmanager
async def mcp_over(client: httpx2.AsyncClient, url: str) -> AsyncIterator[ClientSession]:
    async with (
        streamable_http_client(url, http_client=client) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


@pytest.fixture
async def app_client(
    service: ContextService, repo: Path, tmp_path: Path
) -> AsyncIterator[httpx2.AsyncClient]:
    service.index(repo)
    app = create_app(service, token=TOKEN, allowed_roots=[tmp_path], mounts=[McpHttp(service)])
    transport = httpx2.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),  # runs the MCP session manager, as uvicorn would
        httpx2.AsyncClient(transport=transport, base_url="http://localhost") as client,
    ):
        yield client


async def test_http_mcp_answers_every_tool(
    app_client: httpx2.AsyncClient, service: ContextService, repo: Path, tmp_path: Path
) -> None:
    app_client.headers["Authorization"] = f"Bearer {TOKEN}"
    async with mcp_over(app_client, "http://localhost/mcp") as session:
        await converse(session, repo, tmp_path / "home", default_repo=False)
    # The recorded decision reached the workspace log that parallel sessions read.
    logged = [(e.kind, e.text) for e in service.workspace_events("team")]
    assert (
        "decision",
        "use threading.Lock in Store (reason: asyncio is not used anywhere in the app)",
    ) in logged


async def test_http_mcp_needs_the_token_and_a_local_origin(app_client: httpx2.AsyncClient) -> None:
    ping = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    accept = {"Accept": "application/json, text/event-stream"}
    r = await app_client.post("/mcp", json=ping, headers=accept)
    assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "unauthorized" and r.headers["www-authenticate"] == "Bearer"
    with pytest.raises(BaseExceptionGroup) as refused:  # the SDK client gives up at once
        async with mcp_over(app_client, "http://localhost/mcp"):
            pass
    assert refused.value.subgroup(MCPError) is not None

    auth = {**accept, "Authorization": f"Bearer {TOKEN}"}
    r = await app_client.post("/mcp", json=ping, headers={**auth, "Origin": "https://evil.example"})
    assert r.status_code == 403 and r.json()["code"] == "forbidden"
    r = await app_client.post(
        "/mcp", json=ping, headers={**auth, "Origin": "http://localhost:6274"}
    )
    assert r.status_code == 200, r.text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def server(repo: Path, tmp_path: Path) -> Iterator[str]:
    env = {**index_no_vectors(repo, tmp_path / "home"), "CTXSVC_TOKEN": TOKEN}
    port = free_port()
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ctxsvc", "serve", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            try:
                if httpx2.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.2)
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.mark.slow
async def test_serve_answers_mcp_with_the_token(server: str, tmp_path: Path) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=60) as client,
        mcp_over(client, f"{server}/mcp") as session,
    ):
        assert {t.name for t in (await session.list_tools()).tools} == NAMES
        r = await ok(session, "expand", repo="demo", symbol="Server.handle")
        assert "value = self.store.get(path)" in text(r)
    lines = (tmp_path / "server.log").read_text().splitlines()
    logged = [json.loads(line) for line in lines if line.startswith("{")]
    assert any(e.get("route") == "/mcp" and e.get("status") == 200 for e in logged)


def test_every_tool_is_documented_in_the_readme() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert all(f"`{t.name}`" in readme for t in TOOLS)
