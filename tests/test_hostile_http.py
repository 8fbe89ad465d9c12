"""Hostile HTTP against a real ``ctxsvc serve`` with a token: every request gets the
right 4xx problem+json, and the server stays healthy throughout."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import cli_env, free_port, run_cli, start_server, stop_server

pytestmark = pytest.mark.slow
TOKEN = "t0ps3cret-token-for-tests"
AUTH = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def base(repo: Path, tmp_path: Path) -> Iterator[str]:
    env = cli_env(tmp_path / "home", CTXSVC_TOKEN=TOKEN, CTXSVC_ALLOWED_ROOTS=str(tmp_path))
    assert run_cli(env, "index", str(repo), "--no-vectors").returncode == 0
    port = free_port()
    proc = start_server(env, port, tmp_path / "server.log")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_server(proc)


CTX = {"repo": "demo", "query": "Store put", "budget_tokens": 500}
CASES: list[tuple[str, str, str, dict[str, Any], int]] = [
    # (label, method, path, request kwargs, status)
    ("no token", "POST", "/v1/context", {"json": CTX, "headers": {}}, 401),
    ("wrong token", "POST", "/v1/context", {"json": CTX, "headers": {"authorization": "Bearer x"}}, 401),
    ("basic auth", "GET", "/v1/repos", {"headers": {"authorization": "Basic dXNlcjpwYXNz"}}, 401),
    ("traversal ..", "GET", "/v1/repos/demo/files/../../etc/passwd", {}, 404),
    ("traversal encoded", "GET", "/v1/repos/demo/files/%2e%2e%2f%2e%2e%2fetc%2fpasswd", {}, 400),
    ("traversal absolute", "GET", "/v1/repos/demo/files//etc/passwd", {}, 400),
    ("traversal backslash", "GET", "/v1/repos/demo/files/..%5c..%5cetc%5cpasswd", {}, 400),
    ("nul byte", "GET", "/v1/repos/demo/files/app%00.py", {}, 400),
    ("register outside roots", "POST", "/v1/repos", {"json": {"path": "/etc"}}, 400),
    ("register traversal", "POST", "/v1/repos", {"json": {"path": "/tmp/../etc"}}, 400),
    ("oversized body", "POST", "/v1/context", {"content": b'{"q": "' + b"x" * (2 << 20) + b'"}'}, 413),
    ("malformed json", "POST", "/v1/context", {"content": b"{not json"}, 422),
    ("wrong types", "POST", "/v1/context", {"json": {**CTX, "budget_tokens": "lots"}}, 422),
    ("negative budget", "POST", "/v1/context", {"json": {**CTX, "budget_tokens": -5}}, 422),
    ("huge budget", "POST", "/v1/context", {"json": {**CTX, "budget_tokens": 10**12}}, 422),
    ("blank query", "POST", "/v1/context", {"json": {**CTX, "query": "   "}}, 422),
    ("unknown field", "POST", "/v1/context", {"json": {**CTX, "evil": True}}, 422),
    ("json array", "POST", "/v1/context", {"json": [CTX]}, 422),
    ("unknown repo", "POST", "/v1/context", {"json": {**CTX, "repo": "nope"}}, 404),
    ("unknown session", "GET", "/v1/sessions/s-nope/resume", {}, 404),
    ("bad session id", "GET", "/v1/sessions/..%2f..%2fx/resume", {}, 404),
    ("unknown route", "GET", "/v1/../../etc/passwd", {}, 404),
    ("wrong method", "DELETE", "/v1/context", {}, 405),
    ("huge symbol", "POST", "/v1/expand", {"json": {"repo": "demo", "symbol": "x" * 100_000}}, 422),
    ("events after 2**63", "GET", f"/v1/workspaces/ws/events?after={2**63}", {}, 422),
    ("events after -1", "GET", "/v1/workspaces/ws/events?after=-1", {}, 422),
    ("events limit 2**63", "GET", f"/v1/workspaces/ws/events?limit={2**63}", {}, 422),
    ("map budget 2**63", "GET", f"/v1/repos/demo/map?budget_tokens={2**63}", {}, 422),
    ("map budget NaN", "GET", "/v1/repos/demo/map?budget_tokens=NaN", {}, 422),
    ("symbols limit 2**63", "GET", f"/v1/repos/demo/symbols?name=Store&limit={2**63}", {}, 422),
    ("file start 2**63", "GET", f"/v1/repos/demo/files/app/store.py?start={2**63}", {}, 422),
    ("file end -1", "GET", "/v1/repos/demo/files/app/store.py?end=-1", {}, 422),
    ("checkpoint 2**63", "GET", f"/v1/sessions/s-1/checkpoints/{2**63}", {}, 422),
    ("resume budget -1", "GET", "/v1/sessions/s-1/resume?budget_tokens=-1", {}, 422),
    ("budget 2**63", "POST", "/v1/context", {"json": {**CTX, "budget_tokens": 2**63}}, 422),
    ("budget NaN", "POST", "/v1/context", {"content": b'{"repo": "demo", "query": "q", "budget_tokens": NaN}'}, 422),
    ("budget 1e308", "POST", "/v1/context", {"content": b'{"repo": "demo", "query": "q", "budget_tokens": 1e308}'}, 422),
    ("search limit -1", "POST", "/v1/search", {"json": {"repo": "demo", "query": "q", "limit": -1}}, 422),
    ("expand line 2**63", "POST", "/v1/expand", {"json": {"repo": "demo", "path": "a.py", "start_line": 2**63}}, 422),
    ("checkpoint budget 2**63", "POST", "/v1/sessions/s-1/checkpoints", {"json": {"budget_tokens": 2**63}}, 422),
    ("NaN in a transcript", "POST", "/v1/sessions/s-1/checkpoints", {"content": b'{"messages": [{"role": "user", "content": NaN}]}'}, 422),
    ("1e999 in a transcript", "POST", "/v1/sessions/s-1/checkpoints", {"content": b'{"messages": [{"role": "user", "n": 1e999}]}'}, 422),
    ("50k-deep json", "POST", "/v1/sessions/s-1/checkpoints", {"content": b'{"messages": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"}, 422),
    ("foreign host", "GET", "/v1/repos", {"headers": {**AUTH, "host": "evil.example"}}, 403),
    ("foreign host, health", "GET", "/healthz", {"headers": {"host": "evil.example:8765"}}, 403),
    ("foreign origin", "POST", "/v1/context", {"json": CTX, "headers": {**AUTH, "origin": "https://evil.example"}}, 403),
    ("rebinding register", "POST", "/v1/repos",
     {"json": {"path": "/tmp"}, "headers": {**AUTH, "host": "evil.example:8765", "origin": "http://evil.example:8765"}}, 403),
    ("foreign host, mcp", "POST", "/mcp",
     {"json": {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, "headers": {**AUTH, "host": "evil.example", "accept": "application/json, text/event-stream"}}, 403),
    ("bad idempotency key", "POST", "/v1/workspaces/ws/events",
     {"json": {"text": "x"}, "headers": {**AUTH, "Idempotency-Key": "k" * 300}}, 422),
]  # fmt: skip


def test_hostile_requests_get_problems_and_the_server_stays_healthy(base: str) -> None:
    failures = []
    with httpx.Client(base_url=base, timeout=30) as c:
        for label, method, path, kwargs, status in CASES:
            headers = kwargs.pop("headers", AUTH)
            if "content" in kwargs:
                headers = {**headers, "content-type": "application/json"}
            r = c.request(method, path, headers=headers, **kwargs)
            ok = r.status_code == status and r.headers["content-type"].startswith(
                "application/problem+json"
            )
            if ok:
                problem = r.json()
                ok = problem["status"] == status and problem["retryable"] is False
                ok = ok and "Traceback" not in r.text and "root:x:0:0" not in r.text
            if not ok:
                failures.append(f"{label}: {r.status_code} {r.text[:200]}")
            assert c.get("/healthz").status_code == 200, label
        # Still serving real work after all of it.
        assert c.post("/v1/context", json=CTX, headers=AUTH).json()["items"]
    assert not failures, "\n".join(failures)


def test_two_index_runs_at_once_are_serialized_or_refused(tmp_path: Path, repo: Path) -> None:
    env = cli_env(tmp_path / "home")
    cmd = [sys.executable, "-m", "ctxsvc", "index", str(repo), "--no-vectors", "--json"]
    runs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]  # fmt: skip
    outcomes = [(p.wait(timeout=300), p.stderr.read() if p.stderr else "") for p in runs]
    codes = sorted(code for code, _ in outcomes)
    assert codes[0] == 0 and set(codes) <= {0, 75}, outcomes  # done, or refused: busy
    for code, err in outcomes:
        if code == 75:
            said = " ".join(err.split())
            assert "locked by another ctxsvc process" in said and "retry" in said, said
    status = run_cli(env, "status", "demo", "--json")
    assert status.returncode == 0
    again = run_cli(env, "index", str(repo), "--no-vectors", "--json")
    assert '"files_indexed": 0' in again.stdout  # one consistent index, nothing left to do
