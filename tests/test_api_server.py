"""The HTTP API as deployed: a real ``ctxsvc serve`` process, and a schemathesis run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from conftest import cli_env, free_port, run_cli, start_server, stop_server
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from ctxsvc.http import create_app
from ctxsvc.service import ContextService

pytestmark = pytest.mark.slow


@pytest.fixture
def server(repo: Path, tmp_path: Path) -> Iterator[tuple[str, Path, dict[str, str]]]:
    env = cli_env(tmp_path / "home", CTXSVC_ALLOWED_ROOTS=str(tmp_path))
    done = run_cli(env, "index", str(repo), "--no-vectors", "--json")
    assert done.returncode == 0, done.stderr
    port = free_port()
    proc = start_server(env, port, tmp_path / "server.log")
    try:
        yield f"http://127.0.0.1:{port}", tmp_path / "server.log", env
    finally:
        stop_server(proc)


def test_serve_answers_and_picks_up_cli_updates(
    server: tuple[str, Path, dict[str, str]], repo: Path
) -> None:
    base, log_path, env = server
    ready = httpx.get(f"{base}/readyz").json()
    assert ready["ready"] and ready["repos"] == 1
    body = {"repo": "demo", "query": "Store.put writes JSON", "budget_tokens": 300}
    r = httpx.post(f"{base}/v1/context", json=body, headers={"x-request-id": "srv-1"}, timeout=30)
    assert r.status_code == 200 and r.headers["x-request-id"] == "srv-1"
    pack = r.json()
    assert pack["items"][0]["path"] == "app/store.py" and pack["tokens_used"] <= 300

    # The CLI re-indexes while the server runs: the next request sees the new generation.
    (repo / "app" / "cache.py").write_text("def evict_everything():\n    return None\n")
    done = run_cli(env, "index", str(repo), "--no-vectors", "--json")
    assert done.returncode == 0, done.stderr
    found = httpx.get(f"{base}/v1/repos/demo/symbols", params={"name": "evict_everything"})
    assert found.json()["definitions"], found.text
    assert httpx.get(f"{base}/v1/repos/demo").json()["version"] == 2

    problem = httpx.get(f"{base}/v1/repos/nope")
    assert (
        problem.status_code == 404 and problem.headers["content-type"] == "application/problem+json"
    )
    logged = log_path.read_text()
    assert '"request_id": "srv-1"' in logged and '"route": "/v1/context"' in logged


def test_serve_refuses_a_public_address_without_a_token(tmp_path: Path) -> None:
    done = run_cli(cli_env(tmp_path / "home"), "serve", "--host", "0.0.0.0", "--port", "1")
    assert done.returncode == 2
    assert "without a token" in done.stderr and "CTXSVC_TOKEN" in done.stderr


# -- schemathesis: generated requests against the OpenAPI schema -----------------------


# No 5xx, and every status, content type, header and body as the schema says. (Whether
# a schema-valid request is accepted is not checked: a symbol that does not exist is
# schema-valid and still a 422 from the library.)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture
def api_schema(service: ContextService, repo: Path, tmp_path: Path) -> schemathesis.BaseSchema:
    service.index(repo)
    (tmp_path / "allowed").mkdir()
    # schemathesis' ASGI client calls the app by the name "testserver": let it in.
    app = create_app(service, allowed_roots=[tmp_path / "allowed"], allowed_hosts=["testserver"])
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def test_openapi_conformance(api_schema: schemathesis.BaseSchema) -> None:
    """No 5xx, and every response (errors included) valid against the published schema.

    Every operation gets a bounded number of generated requests, derandomized so
    that each run sends the same ones (schemathesis' lazy pytest loader does not
    run under this pytest, so the operations are driven through hypothesis).
    """
    failures: list[str] = []
    for result in api_schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=30,
            derandomize=True,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(checks=CHECKS)

        try:
            check()
        except Exception as exc:  # collect every operation's failure, then report them all
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)


def test_stateful_workflows(api_schema: schemathesis.BaseSchema) -> None:
    """Chains of calls linked by their answers (a session's id into its checkpoints,
    a job's id into its status, ...), as schemathesis infers them: no 5xx, and every
    response as the schema says. Bounded and derandomized, like the test above."""
    machine = api_schema.as_state_machine()
    seen: list[tuple[str, int]] = []

    class Checked(machine):  # type: ignore[valid-type,misc]
        def before_call(self, case: schemathesis.Case) -> None:
            # Random names never hit the one index; start sessions on it, and keep it. The
            # task too is one a session takes (the conformance test above sends bad ones):
            # these chains are about what follows from a session.
            label = case.operation.label
            if label == "POST /v1/sessions" and isinstance(case.body, dict):
                case.body["repo"] = "demo"
                case.body["task"] = "follow the chain"
            if label == "DELETE /v1/repos/{name}":
                case.path_parameters = {**(case.path_parameters or {}), "name": "not-demo"}

        def validate_response(
            self, response: Any, case: schemathesis.Case, *args: Any, **kwargs: Any
        ) -> None:
            seen.append((case.operation.label, response.status_code))
            case.validate_response(response, checks=CHECKS)

    # Derandomized, the chains explored shift with any change in what the API answers;
    # 50 of them reach a linked session call whichever way (40 did not, always).
    Checked.run(
        settings=settings(
            max_examples=50,
            stateful_step_count=6,
            derandomize=True,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
    )
    # The chains did run, and reached linked operations with ids taken from answers.
    assert len(seen) >= 40
    linked = {label for label, status in seen if "{session_id}" in label and status < 400}
    assert linked, sorted(set(seen))
