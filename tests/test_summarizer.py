"""The optional LLM summarizer, against a real local OpenAI-compatible HTTP endpoint."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import cli_env, run_cli
from test_checkpoints import MESSAGES

from ctxsvc.compose import build_service
from ctxsvc.service import ContextService
from ctxsvc.settings import Settings
from ctxsvc.summarizer import ChatSummarizer

GOOD = {
    "goal": "Make Store.put in app/store.py atomic",
    "done": ["read app/store.py", "made Store.put write a temp file then os.replace"],
    "decisions": ["os.replace over in-place writes, because a crash mid-write corrupts the JSON"],
    "open_tasks": ["remove the tmp file when the write fails"],
    "next_step": "run pytest -q tests/test_store.py",
    "errors": ["tests/test_store.py::test_put failed: tmp file left"],
    "facts": ["server port 8080"],
    "notes": [],
}


class Endpoint:
    """/v1/chat/completions answering ``reply`` (a dict, a raw string, or a status code)."""

    def __init__(self) -> None:
        self.reply: Any = {"choices": [{"message": {"content": json.dumps(GOOD)}}]}
        self.delay = 0.0
        self.requests: list[dict[str, Any]] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                endpoint.requests.append(
                    {
                        "path": self.path,
                        "auth": self.headers.get("Authorization"),
                        "body": json.loads(self.rfile.read(length)),
                    }
                )
                time.sleep(endpoint.delay)
                reply = endpoint.reply
                if isinstance(reply, int):
                    self.send_response(reply)
                    self.end_headers()
                    return
                data = reply if isinstance(reply, str) else json.dumps(reply)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(data.encode())

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    e = Endpoint()
    yield e
    e.server.shutdown()


def with_llm(service: ContextService, url: str, timeout: float = 5.0) -> ContextService:
    return build_service(
        service.settings, store=service.store, tokens=service.tokens, embedder=service.embedder,
        summarizer=ChatSummarizer(url, "test-model", "sk-test", timeout),
    )  # fmt: skip


def test_llm_summary_replaces_prose_keeps_anchors_and_budget(
    service: ContextService, repo: Path, endpoint: Endpoint
) -> None:
    service.index(repo)
    llm = with_llm(service, endpoint.url)
    s = llm.start_session("demo", "atomic store writes")
    cp = llm.write_checkpoint(s.id, MESSAGES, idempotency_key="k1", budget_tokens=300)
    assert cp.summary.summarizer == "llm:test-model" and cp.summary.summarizer_note == ""
    assert "os.replace over in-place writes" in cp.summary.rendered
    assert cp.summary.tokens <= 300
    # The files are the offline anchors, with their content hashes.
    assert any(a.path == "app/store.py" and a.edited and a.sha256 for a in cp.summary.files)
    # The carried state stays the offline, deterministic one.
    assert cp.state.summarizer == "offline"
    sent = endpoint.requests[0]
    assert sent["path"] == "/v1/chat/completions" and sent["auth"] == "Bearer sk-test"
    assert sent["body"]["model"] == "test-model" and "app/store.py" in json.dumps(sent["body"])
    # A retry with the same key is answered from the store, without asking the model again.
    again = llm.write_checkpoint(s.id, MESSAGES, idempotency_key="k1", budget_tokens=300)
    assert again == cp and len(endpoint.requests) == 1


@pytest.mark.parametrize(
    ("reply", "delay", "why"),
    [
        ("not json at all", 0.0, "not JSON"),
        ({"choices": [{"message": {"content": "Sure! Here is a summary."}}]}, 0.0, "than JSON"),
        ({"choices": [{"message": {"content": '{"decisions": "one"}'}}]}, 0.0, "list of strings"),
        ({"choices": [{"message": {"content": '{"mood": "ok"}'}}]}, 0.0, "none of the sections"),
        (500, 0.0, "HTTP 500"),
        ({"choices": []}, 2.0, "unreachable"),  # slower than the timeout
    ],
)
def test_llm_failure_falls_back_to_offline_and_says_so(
    service: ContextService, repo: Path, endpoint: Endpoint, reply: Any, delay: float, why: str
) -> None:
    service.index(repo)
    endpoint.reply, endpoint.delay = reply, delay
    llm = with_llm(service, endpoint.url, timeout=0.5)
    s = llm.start_session("demo", "atomic store writes")
    cp = llm.write_checkpoint(s.id, MESSAGES, budget_tokens=300)
    offline = service.write_checkpoint(
        service.start_session("demo", "atomic store writes").id, MESSAGES, budget_tokens=300
    )
    assert cp.summary.summarizer == "offline"
    assert why in cp.summary.summarizer_note
    assert cp.summary.rendered == offline.summary.rendered
    assert cp.number == 1  # written, not lost


def test_unreachable_endpoint_falls_back(service: ContextService, repo: Path) -> None:
    service.index(repo)
    llm = with_llm(service, "http://127.0.0.1:9/v1", timeout=1.0)
    s = llm.start_session("demo", "atomic store writes")
    cp = llm.write_checkpoint(s.id, MESSAGES)
    assert cp.summary.summarizer == "offline" and "unreachable" in cp.summary.summarizer_note


@pytest.mark.slow
def test_cli_reads_summarizer_settings(tmp_path: Path, repo: Path, endpoint: Endpoint) -> None:
    env = cli_env(
        tmp_path / "home", CTXSVC_SUMMARIZER_URL=endpoint.url, CTXSVC_SUMMARIZER_MODEL="m1"
    )
    assert run_cli(env, "index", str(repo), "--no-vectors").returncode == 0
    sid = run_cli(env, "session", "start", "demo", "--task", "t").stdout.strip()
    msgs = tmp_path / "m.json"
    msgs.write_text(json.dumps(MESSAGES))
    done = run_cli(env, "checkpoint", "write", sid, "--messages", str(msgs), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["summary"]["summarizer"] == "llm:m1"
    assert endpoint.requests[0]["body"]["model"] == "m1"


def test_settings_default_to_offline_and_hide_the_key() -> None:
    assert Settings.from_env({}).summarizer_url == ""
    assert "sk-secret" not in repr(Settings.from_env({"CTXSVC_SUMMARIZER_API_KEY": "sk-secret"}))
