"""The HTTP API in-process (httpx ASGITransport): every endpoint, every error path."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import git

import ctxsvc.catalog
from ctxsvc.cli.render import JsonLogFormatter
from ctxsvc.compose import build_service
from ctxsvc.http import create_app
from ctxsvc.http.observability import RequestContextFilter
from ctxsvc.service import ContextService

pytestmark = pytest.mark.anyio
TOKEN = "s3cret-token"


@pytest.fixture
def indexed(service: ContextService, repo: Path) -> ContextService:
    (repo / "etc_passwd").symlink_to("/etc/passwd")
    service.index(repo)
    return service


def assert_problem(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = r.json()
    assert body["type"] == f"https://ctxsvc.dev/problems/{code}"
    assert body["status"] == status and body["code"] == code and body["title"] and body["detail"]
    assert isinstance(body["retryable"], bool) and "hint" in body
    assert body["request_id"] == r.headers["x-request-id"]
    assert "Traceback" not in r.text
    return body


# -- happy paths ----------------------------------------------------------------


async def test_context_returns_the_pack(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/context",
        json={"repo": "demo", "query": "Store.put writes the data as JSON", "budget_tokens": 300},
    )
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    pack = r.json()
    assert pack["repo"] == "demo" and 0 < pack["tokens_used"] <= 300
    assert pack["items"][0]["path"] == "app/store.py"
    assert {"path", "start_line", "end_line", "text", "tokens"} <= set(pack["items"][0])
    assert pack["index"]["generation"] == 1 and pack["index"]["commit"]
    assert isinstance(pack["omitted"], list)


async def test_context_options_and_sessions(client: httpx.AsyncClient) -> None:
    body = {
        "repo": "demo",
        "query": "server handles a request",
        "budget_tokens": 2000,
        "detail": "map",
        "include": ["app/*"],
        "session_id": "s-1",
    }
    first = (await client.post("/v1/context", json=body)).json()
    assert first["detail"] == "map" and all(i["path"].startswith("app/") for i in first["items"])
    again = (await client.post("/v1/context", json={**body, "detail": "snippets"})).json()
    assert again["session_id"] == "s-1"


async def test_expand_symbol_and_lines(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/expand", json={"repo": "demo", "symbol": "Store.put", "callers": True}
    )
    assert r.status_code == 200 and r.json()["items"][0]["symbol"] == "Store.put"
    r = await client.post(
        "/v1/expand",
        json={"repo": "demo", "path": "app/server.py", "start_line": 9, "end_line": 12},
    )
    item = r.json()["items"][0]
    assert (item["start_line"], item["end_line"]) == (9, 12)


async def test_search_ranks_files_and_symbols(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/search", json={"repo": "demo", "query": "Store put JSON", "limit": 3}
    )
    body = r.json()
    assert r.status_code == 200 and len(body["files"]) <= 3 and len(body["symbols"]) <= 3
    assert body["files"][0]["path"] == "app/store.py"
    scores = [f["score"] for f in body["files"]]
    assert scores == sorted(scores, reverse=True)
    assert body["symbols"][0]["symbol"]["path"] == "app/store.py"


async def test_repos_list_and_status(client: httpx.AsyncClient) -> None:
    repos = (await client.get("/v1/repos")).json()
    assert [r["name"] for r in repos] == ["demo"] and repos[0]["stats"]["chunks"] > 0
    status = (await client.get("/v1/repos/demo")).json()
    assert status["name"] == "demo" and status["vectors"] == "complete" and status["changed"] == []


async def test_map_ranks_files_without_a_query(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/repos/demo/map", params={"budget_tokens": 500})
    pack = r.json()
    assert r.status_code == 200 and pack["detail"] == "map" and pack["tokens_used"] <= 500
    paths = [i["path"] for i in pack["items"]]
    # The store is used by the server: it is the most referenced file.
    assert paths[0] == "app/store.py" and "app/server.py" in paths


async def test_symbols_definitions_and_references(client: httpx.AsyncClient) -> None:
    body = (await client.get("/v1/repos/demo/symbols", params={"name": "Store"})).json()
    assert [d["qualname"] for d in body["definitions"]] == ["Store"]
    assert any(r["path"] == "app/server.py" for r in body["references"])
    assert body["total_references"] == len(body["references"])
    empty = (await client.get("/v1/repos/demo/symbols", params={"name": "Nope"})).json()
    assert empty["definitions"] == [] and empty["references"] == []


async def test_files_serves_indexed_lines(client: httpx.AsyncClient, repo: Path) -> None:
    r = await client.get("/v1/repos/demo/files/app/store.py", params={"start": 5, "end": 7})
    body = r.json()
    lines = (repo / "app/store.py").read_text().split("\n")
    assert r.status_code == 200 and body["text"] == "\n".join(lines[4:7])
    assert (body["start_line"], body["end_line"], body["total_lines"]) == (5, 7, 16)
    whole = (await client.get("/v1/repos/demo/files/app/store.py")).json()
    assert whole["start_line"] == 1 and whole["end_line"] == 16


async def test_health_ready_and_metrics(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = (await client.get("/readyz")).json()
    assert ready["ready"] and ready["model"]["loaded"] and ready["store"]["reachable"]
    await client.post("/v1/context", json={"repo": "demo", "query": "store", "budget_tokens": 50})
    await client.get("/v1/repos/nope")
    text = (await client.get("/metrics")).text
    for name in (
        "ctxsvc_http_request_duration_seconds_bucket",
        "ctxsvc_http_requests_in_flight",
        "ctxsvc_http_errors_total",
        "ctxsvc_index_size",
        "ctxsvc_job_duration_seconds",
        "ctxsvc_embedded_chunks_total",
    ):
        assert name in text
    assert 'route="/v1/context"' in text and 'code="repo_not_found"' in text
    assert 'ctxsvc_index_size{kind="chunks",repo="demo"}' in text


async def test_openapi_and_docs(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert "/v1/context" in spec["paths"] and "Problem" in spec["components"]["schemas"]
    assert (await client.get("/docs")).status_code == 200


async def test_readyz_names_a_missing_model(
    service: ContextService, repo: Path, tmp_path: Path
) -> None:
    service = build_service(service.settings, vectors=False, embedder_error="no such model")
    service.index(repo, vectors=False)
    app = create_app(service)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://localhost"
    ) as c:
        ready = (await c.get("/readyz")).json()
    assert ready["ready"] and not ready["model"]["loaded"]
    assert any("no such model" in d for d in ready["degraded"])
    assert any("vectors disabled" in d for d in ready["degraded"])


@pytest.mark.parametrize("warm", [4, 0])
async def test_a_starting_server_loads_the_latest_views_unless_told_not_to(
    service: ContextService, repo: Path, monkeypatch: pytest.MonkeyPatch, warm: int
) -> None:
    """Each server process loads its views at start, so its first answer does not."""
    settings = service.settings.model_copy(update={"warm_indexes": warm})
    service = build_service(settings, embedder=service.embedder, tokens=service.tokens)
    service.index(repo)
    loads: list[str] = []
    real = ctxsvc.catalog.RepoView.load
    monkeypatch.setattr(
        ctxsvc.catalog.RepoView,
        "load",
        lambda reader: loads.append(reader.meta.name) or real(reader),
    )
    app = create_app(service)
    async with app.router.lifespan_context(app):
        deadline = time.monotonic() + (30 if warm else 1)  # without warm-up: a second to show
        while not loads and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert loads == (["demo"] if warm else [])
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://localhost"
        ) as c:
            body = {"repo": "demo", "query": "store", "budget_tokens": 200}
            assert (await c.post("/v1/context", json=body)).status_code == 200
        assert loads == ["demo"]  # loaded once: at start, or by the first answer


# -- jobs -------------------------------------------------------------------------


async def poll(client: httpx.AsyncClient, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = (await client.get(f"/v1/jobs/{job_id}")).json()
        if job["state"] in ("done", "failed"):
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")


async def test_job_lifecycle_register_poll_query_refresh_delete(
    client: httpx.AsyncClient, repo: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    shutil.copytree(repo, other, symlinks=True)
    r = await client.post("/v1/repos", json={"path": str(other), "name": "other"})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["state"] in ("queued", "running", "done") and job["repo"] == "other"
    job = await poll(client, job["id"])
    assert job["state"] == "done" and job["error"] is None, job
    assert job["result"]["chunks"] > 0 and job["result"]["repo"] == "other"
    assert {"discover", "parse"} <= set(job["progress"]) and job["events"]
    assert job["progress"]["parse"]["done"] == job["progress"]["parse"]["total"]

    ctx = await client.post(
        "/v1/context", json={"repo": "other", "query": "Store put", "budget_tokens": 200}
    )
    assert ctx.status_code == 200 and ctx.json()["items"]

    (other / "app" / "extra.py").write_text("def brand_new_function():\n    return 42\n")
    r = await client.post("/v1/repos/other/refresh")
    assert r.status_code == 202
    job = await poll(client, r.json()["id"])
    assert (
        job["state"] == "done" and job["kind"] == "refresh" and job["result"]["files_indexed"] == 1
    )
    found = (
        await client.get("/v1/repos/other/symbols", params={"name": "brand_new_function"})
    ).json()
    assert found["definitions"]

    assert (await client.delete("/v1/repos/other")).status_code == 204
    assert_problem(await client.get("/v1/repos/other"), 404, "repo_not_found")
    assert [m["name"] for m in (await client.get("/v1/repos")).json()] == ["demo"]
    assert "ctxsvc_job_duration_seconds_count" in (await client.get("/metrics")).text


async def test_register_refuses_paths_outside_allowed_roots(
    indexed: ContextService, tmp_path: Path
) -> None:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "escape").symlink_to(tmp_path / "demo")
    app = create_app(indexed, allowed_roots=[allowed])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://localhost"
    ) as c:
        for path in (str(tmp_path / "demo"), str(allowed / "escape"), str(allowed / ".." / "demo")):
            assert_problem(await c.post("/v1/repos", json={"path": path}), 400, "invalid_path")
        assert_problem(
            await c.post("/v1/repos", json={"path": str(allowed / "missing")}), 400, "invalid_path"
        )
    # No allowed roots: nothing can be registered over HTTP.
    app = create_app(indexed)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://localhost"
    ) as c:
        assert_problem(await c.post("/v1/repos", json={"path": str(allowed)}), 400, "invalid_path")


async def test_failed_job_records_the_error(client: httpx.AsyncClient, tmp_path: Path) -> None:
    # A name that already indexes another root fails before the job starts.
    (tmp_path / "twin").mkdir()
    r = await client.post("/v1/repos", json={"path": str(tmp_path / "twin"), "name": "demo"})
    assert_problem(r, 422, "invalid_request")
    assert_problem(await client.get("/v1/jobs/nope"), 404, "not_found")
    assert_problem(await client.post("/v1/repos/nope/refresh"), 404, "repo_not_found")
    assert_problem(await client.delete("/v1/repos/nope"), 404, "repo_not_found")


async def test_delete_while_indexing_is_busy(
    client: httpx.AsyncClient, indexed: ContextService
) -> None:
    from ctxsvc.stores.locks import FileLock

    with FileLock(indexed.settings.locks_path / "demo.lock", "index 'demo'"):
        r = await client.delete("/v1/repos/demo")
    body = assert_problem(r, 409, "index_busy")
    assert body["retryable"] is True and r.headers["retry-after"] == "5"
    assert (await client.get("/v1/repos/demo")).status_code == 200


# -- errors -----------------------------------------------------------------------


async def test_unknown_repo_is_404(client: httpx.AsyncClient) -> None:
    for r in (
        await client.post("/v1/context", json={"repo": "nope", "query": "x", "budget_tokens": 10}),
        await client.post("/v1/search", json={"repo": "nope", "query": "x"}),
        await client.post("/v1/expand", json={"repo": "nope", "symbol": "x"}),
        await client.get("/v1/repos/nope"),
        await client.get("/v1/repos/nope/map"),
        await client.get("/v1/repos/nope/symbols", params={"name": "x"}),
        await client.get("/v1/repos/nope/files/a.py"),
    ):
        body = assert_problem(r, 404, "repo_not_found")
        assert body["retryable"] is False and body["hint"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"repo": "demo", "query": "q", "budget_tokens": -1}, "body.budget_tokens"),
        ({"repo": "demo", "query": "q", "budget_tokens": 200_001}, "body.budget_tokens"),
        ({"repo": "demo", "query": "q" * 8001}, "body.query"),
        ({"repo": "demo", "query": ""}, "body.query"),
        ({"repo": "demo"}, "body.query"),
        ({"repo": "demo", "query": "q", "detail": "everything"}, "body.detail"),
        ({"repo": "demo", "query": "q", "include": ["*"] * 65}, "body.include"),
        ({"repo": "demo", "query": "q", "session_id": "bad id!"}, "body.session_id"),
        ({"repo": "demo", "query": "q", "budget": 10}, "body.budget"),
        ({"repo": "demo", "query": "\ud800"}, "body.query"),
    ],
)
async def test_bad_fields_are_422_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    content = json.dumps(body).encode()  # ensure_ascii keeps a lone surrogate as an escape
    r = await client.post(
        "/v1/context", content=content, headers={"content-type": "application/json"}
    )
    problem = assert_problem(r, 422, "validation_error")
    assert field in problem["detail"]
    assert any(e["field"].startswith(field) for e in problem["errors"])


async def test_other_422s(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/search", json={"repo": "demo", "query": "q", "limit": 201})
    assert "body.limit" in assert_problem(r, 422, "validation_error")["detail"]
    r = await client.get("/v1/repos/demo/map", params={"budget_tokens": -1})
    assert "query.budget_tokens" in assert_problem(r, 422, "validation_error")["detail"]
    r = await client.get("/v1/repos/demo/symbols")
    assert "query.name" in assert_problem(r, 422, "validation_error")["detail"]
    r = await client.post(
        "/v1/context", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_problem(r, 422, "validation_error")
    # Semantic errors of the library come back as problems too.
    r = await client.post("/v1/expand", json={"repo": "demo"})
    assert_problem(r, 422, "invalid_request")
    r = await client.post("/v1/context", json={"repo": "demo", "query": " \t\n"})
    assert "body.query" in assert_problem(r, 422, "validation_error")["detail"]
    r = await client.get("/v1/repos/demo/files/app/store.py", params={"start": 99})
    assert_problem(r, 422, "invalid_request")


async def test_unknown_route_and_wrong_method(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/v2/context"), 404, "not_found")
    r = await client.get("/v1/context")
    assert_problem(r, 405, "method_not_allowed")
    assert "POST" in r.headers["allow"]


async def test_oversized_body_is_413(indexed: ContextService) -> None:
    app = create_app(indexed, max_body_bytes=1024)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://localhost"
    ) as c:
        big = {"repo": "demo", "query": "q", "include": ["x" * 200] * 10}
        assert_problem(await c.post("/v1/context", json=big), 413, "too_large")

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
            yield b'{"repo": "demo", "query": "'
            for _ in range(20):
                yield b"q" * 100
            yield b'"}'

        assert_problem(await c.post("/v1/context", content=chunks()), 413, "too_large")
    # The default limit is 1 MiB.
    app = create_app(indexed)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://localhost"
    ) as c:
        r = await c.post("/v1/context", content=b" " * (1024 * 1024 + 1))
        assert_problem(r, 413, "too_large")


@pytest.mark.parametrize(
    "raw",
    [
        "../x",
        "app/../../etc/passwd",
        "%2e%2e/x",
        "%2E%2E/%2E%2E/etc/passwd",
        "/etc/passwd",
        "a%2fb",
        "app%2Fstore.py",
        "app%5cstore.py",
        "a%00b",
        "app//store.py",
    ],
)
async def test_files_rejects_traversal(client: httpx.AsyncClient, raw: str) -> None:
    r = await client.get(f"/v1/repos/demo/files/{raw}")
    assert 400 <= r.status_code < 500
    assert r.headers["content-type"] == "application/problem+json"
    assert "root:" not in r.text


@pytest.mark.parametrize(
    "path", ["../x", "app/../../etc/passwd", "./app/store.py", "a\x00b", "a\\b", "/etc/passwd"]
)
async def test_files_rejects_raw_paths_that_clients_would_normalise(
    indexed: ContextService, path: str
) -> None:
    """The app itself refuses dot segments, NUL and backslashes, whatever the client sends."""
    app = create_app(indexed)
    sent: list[dict[str, Any]] = []
    url = f"/v1/repos/demo/files/{path}"
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": url, "raw_path": url.encode(), "query_string": b"",
        "root_path": "", "headers": [(b"host", b"localhost")], "client": ("127.0.0.1", 1),
        "server": ("t", 80),
    }  # fmt: skip

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = sent[0]
    assert start["status"] == 400, sent
    body = json.loads(b"".join(m.get("body", b"") for m in sent[1:]))
    assert body["code"] == "invalid_path"


async def test_files_never_reads_outside_the_index(client: httpx.AsyncClient) -> None:
    # A symlink to /etc/passwd is skipped at indexing, so it does not exist for the API.
    r = await client.get("/v1/repos/demo/files/etc_passwd")
    assert_problem(r, 404, "not_found")
    assert_problem(await client.get("/v1/repos/demo/files/logo.png"), 404, "not_found")
    assert_problem(await client.get("/v1/repos/demo/files/app/missing.py"), 404, "not_found")


# -- auth, request ids, logs ------------------------------------------------------------


async def test_token_is_required_except_for_health(indexed: ContextService) -> None:
    app = create_app(indexed, token=TOKEN)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://localhost"
    ) as c:
        assert (await c.get("/healthz")).status_code == 200
        assert (await c.get("/readyz")).status_code == 200
        body = {"repo": "demo", "query": "store", "budget_tokens": 100}
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": TOKEN}):
            for r in (
                await c.post("/v1/context", json=body, headers=headers),
                await c.get("/v1/repos", headers=headers),
                await c.get("/metrics", headers=headers),
                await c.get("/openapi.json", headers=headers),
                await c.get("/v1/nothing", headers=headers),
            ):
                assert_problem(r, 401, "unauthorized")
                assert r.headers["www-authenticate"] == "Bearer"
        ok = await c.post("/v1/context", json=body, headers={"authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200
        ok = await c.get("/v1/repos", headers={"authorization": f"bearer {TOKEN}"})
        assert ok.status_code == 200


async def test_request_id_is_echoed_or_generated(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/repos", headers={"x-request-id": "agent-7.req_1"})
    assert r.headers["x-request-id"] == "agent-7.req_1"
    r = await client.get("/v1/repos/nope", headers={"x-request-id": "bad id\twith spaces"})
    rid = r.headers["x-request-id"]
    assert rid != "bad id\twith spaces" and len(rid) == 32 and r.json()["request_id"] == rid
    r = await client.get("/healthz", headers={"x-request-id": "x" * 129})
    assert len(r.headers["x-request-id"]) == 32


async def test_one_log_line_per_request_with_its_id(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.handler.addFilter(RequestContextFilter())
    caplog.set_level(logging.INFO)
    await client.post(
        "/v1/context",
        json={"repo": "demo", "query": "store", "budget_tokens": 100},
        headers={"x-request-id": "req-42"},
    )
    lines = [r for r in caplog.records if r.name == "ctxsvc.api" and r.getMessage() == "request"]
    assert len(lines) == 1
    line: Any = lines[0]
    assert (line.method, line.route, line.status) == ("POST", "/v1/context", 200)
    assert line.repo == "demo" and line.tokens_used > 0 and line.ms >= 0
    assert line.request_id == "req-42"
    # Lines logged below the adapter (here: the view load) carry the id too.
    ours = [r for r in caplog.records if r.name.startswith("ctxsvc.")]
    assert any(r.name == "ctxsvc.view" for r in ours)
    assert all(getattr(r, "request_id", None) == "req-42" for r in ours)


async def test_internal_errors_are_500_problems_without_internals(
    indexed: ContextService, caplog: pytest.LogCaptureFixture
) -> None:
    def repos() -> Any:
        raise RuntimeError("secret internals /etc/shadow")

    broken = build_service(
        indexed.settings, store=indexed.store, tokens=indexed.tokens, vectors=False
    )
    broken.repos = repos  # type: ignore[method-assign]
    app = create_app(broken)
    caplog.handler.addFilter(RequestContextFilter())
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://localhost"
    ) as c:
        r = await c.get("/v1/repos", headers={"x-request-id": "boom-1"})
    body = assert_problem(r, 500, "internal")
    assert "secret" not in r.text and body["request_id"] == "boom-1"
    logged = [rec for rec in caplog.records if rec.levelno == logging.ERROR]
    assert logged and getattr(logged[0], "request_id", None) == "boom-1" and logged[0].exc_info
    # The operator's JSON line says what broke: type, message and traceback, with the id.
    line = json.loads(JsonLogFormatter().format(logged[0]))
    assert line["request_id"] == "boom-1" and line["error_type"] == "RuntimeError"
    assert line["error"] == "secret internals /etc/shadow" and "in repos" in line["traceback"]


async def test_cors_is_off_unless_configured(indexed: ContextService) -> None:
    headers = {"origin": "https://app.example", "access-control-request-method": "POST"}
    app = create_app(indexed)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://localhost"
    ) as c:
        r = await c.options("/v1/context", headers=headers)
        assert "access-control-allow-origin" not in r.headers
    app = create_app(indexed, token=TOKEN, cors_origins=["https://app.example"])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://localhost"
    ) as c:
        r = await c.options("/v1/context", headers=headers)
        assert r.headers["access-control-allow-origin"] == "https://app.example"


async def test_queries_answer_while_another_repository_indexes(
    client: httpx.AsyncClient, repo: Path, tmp_path: Path
) -> None:
    other = tmp_path / "big"
    for i in range(40):
        p = other / f"m{i}.py"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("".join(f"def f{i}_{j}(x):\n    return x + {j}\n\n" for j in range(30)))
    git(other, "init", "-q")
    job = (await client.post("/v1/repos", json={"path": str(other)})).json()
    body = {"repo": "demo", "query": "Store put", "budget_tokens": 200}
    answers = await asyncio.gather(*(client.post("/v1/context", json=body) for _ in range(8)))
    assert all(a.status_code == 200 for a in answers)
    assert (await poll(client, job["id"]))["state"] == "done"
