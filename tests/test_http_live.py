"""The HTTP edge against real uvicorn processes: bodies trickling in a byte at a time do
not starve other requests, a request stuck in the service gets its 504 while ``/healthz``
answers, and SIGTERM stops a server whatever its requests are doing.

Run as a script, this module is a server whose search blocks forever (the seam for a
request stuck in the service): ``python test_http_live.py HOME PORT REQUEST_TIMEOUT``.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import cli_env, free_port, run_cli, start_server, stop_server

pytestmark = pytest.mark.slow
TRICKLERS = 140  # more than the 128 requests the server handles at once


@pytest.fixture
def served(repo: Path, tmp_path: Path) -> Iterator[str]:
    """A real ``ctxsvc serve`` of the sample repository, with a short body timeout."""
    env = cli_env(tmp_path / "home", CTXSVC_BODY_TIMEOUT="2")
    assert run_cli(env, "index", str(repo), "--no-vectors").returncode == 0
    port = free_port()
    proc = start_server(env, port, tmp_path / "server.log")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        stop_server(proc)


def test_trickling_bodies_do_not_starve_other_requests(served: str) -> None:
    host, port = served.split(":")
    # Long enough that no body is whole before the server gives up on it.
    query = "Store put " + "x" * 400
    body = json.dumps({"repo": "demo", "query": query, "budget_tokens": 200}).encode()
    head = (
        f"POST /v1/context HTTP/1.1\r\nHost: {served}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    socks = []
    for _ in range(TRICKLERS):
        s = socket.create_connection((host, int(port)), timeout=60)
        s.sendall(head + body[:1])
        socks.append(s)
    answers: dict[int, bytes] = {}
    stop = threading.Event()

    def trickle() -> None:  # one more byte on every open socket, until each is answered
        sent = 1
        while not stop.is_set() and sent < len(body) - 1:
            for i, s in enumerate(socks):
                if i not in answers:
                    try:
                        s.sendall(body[sent : sent + 1])
                    except OSError:
                        answers[i] = b""  # closed by the server
            sent += 1
            stop.wait(0.25)

    trickler = threading.Thread(target=trickle, daemon=True)
    trickler.start()
    try:
        with httpx.Client(base_url=f"http://{served}", timeout=30) as c:
            for _ in range(3):  # meanwhile, the API answers
                assert c.get("/healthz").status_code == 200
                assert c.get("/v1/repos").status_code == 200
                r = c.post("/v1/context", json={"repo": "demo", "query": "Store put"})
                assert r.status_code == 200, r.text
        for i, s in enumerate(socks):  # each trickler gets its 408, or the door
            answers[i] = answer(s)
    finally:
        stop.set()
        for s in socks:
            s.close()
    for got in answers.values():
        assert got == b"" or got.startswith(b"HTTP/1.1 408 "), got[:200]
    assert any(got.startswith(b"HTTP/1.1 408 ") for got in answers.values())
    assert b"slow_request" in next(got for got in answers.values() if got)


def answer(sock: socket.socket) -> bytes:
    """What the server sent on ``sock``: a whole response, or b"" if it closed it unanswered."""
    got = b""
    try:
        while b"\r\n\r\n" not in got or len(got.partition(b"\r\n\r\n")[2]) < _length(got):
            chunk = sock.recv(4096)
            if not chunk:
                break
            got += chunk
    except OSError:  # reset by the server
        pass
    return got


def _length(response: bytes) -> int:
    for line in response.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def start_stuck_server(
    tmp_path: Path, request_timeout: float
) -> tuple[subprocess.Popen[bytes], str]:
    """This module as a server whose search blocks forever, once ``/healthz`` answers."""
    port, log = free_port(), tmp_path / "stuck.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, __file__, str(tmp_path / "home"), str(port), str(request_timeout)],
            env=cli_env(tmp_path / "home"),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return proc, base
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.1)


def wait_for(log: Path, text: str) -> None:
    deadline = time.monotonic() + 60
    while text not in log.read_text():
        assert time.monotonic() < deadline, f"{text!r} never logged:\n{log.read_text()}"
        time.sleep(0.05)


def test_a_stuck_request_gets_504_while_health_answers(tmp_path: Path) -> None:
    proc, base = start_stuck_server(tmp_path, request_timeout=1)
    try:
        body = {"repo": "any", "query": "x"}
        r = httpx.post(
            f"{base}/v1/search", json=body, headers={"x-request-id": "stuck-1"}, timeout=60
        )
        assert r.status_code == 504 and r.json()["code"] == "deadline_exceeded", r.text
        assert r.json()["retryable"] is True and r.headers["x-request-id"] == "stuck-1"
        assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200
    finally:
        stop_server(proc)
    lines = [
        json.loads(x) for x in (tmp_path / "stuck.log").read_text().splitlines() if x[:1] == "{"
    ]
    (line,) = [x for x in lines if x["msg"] == "deadline exceeded"]
    assert line["request_id"] == "stuck-1" and line["error_type"] == "DeadlineExceeded"
    assert "in stuck" in line["traceback"]


def test_sigterm_stops_a_server_with_a_request_stuck_in_the_service(tmp_path: Path) -> None:
    proc, base = start_stuck_server(tmp_path, request_timeout=0)  # no deadline at all
    answers: list[object] = []

    def call() -> None:
        try:
            answers.append(
                httpx.post(f"{base}/v1/search", json={"repo": "a", "query": "x"}, timeout=60)
            )
        except httpx.TransportError as exc:
            answers.append(exc)

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    try:
        wait_for(tmp_path / "stuck.log", "entered the stuck call")
        assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200
        proc.send_signal(signal.SIGTERM)
        # uvicorn re-raises the signal once it has shut down. The timeout guards a freeze.
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    caller.join(timeout=60)
    answer = answers[0]
    if isinstance(answer, httpx.Response):  # the edge answered before letting go
        assert answer.status_code == 503 and answer.json()["code"] == "overloaded", answer.text
    logged = (tmp_path / "stuck.log").read_text()
    assert "request cancelled; its work was abandoned" in logged and "in stuck" in logged


def _serve_stuck(home: Path, port: int, request_timeout: float) -> None:
    """A server over a real service whose search never returns (the seam)."""
    import logging

    import uvicorn
    from fakes import HashEmbedder

    from ctxsvc.cli.render import configure_logging
    from ctxsvc.compose import build_service
    from ctxsvc.http import create_app
    from ctxsvc.http.observability import RequestContextFilter
    from ctxsvc.mcp.server import McpHttp
    from ctxsvc.settings import Settings

    configure_logging(True)
    for handler in logging.getLogger().handlers:
        handler.addFilter(RequestContextFilter())
    service = build_service(Settings.from_env({}, home=home), embedder=HashEmbedder())

    def stuck(*args: object, **kwargs: object) -> None:
        logging.getLogger("ctxsvc.test").info("entered the stuck call")
        threading.Event().wait()

    service.search = stuck  # type: ignore[method-assign,assignment]
    app = create_app(service, request_timeout=request_timeout, mounts=[McpHttp(service)])
    uvicorn.run(app, host="127.0.0.1", port=port, log_config=None, timeout_graceful_shutdown=2)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    _serve_stuck(Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]))
