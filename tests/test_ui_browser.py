"""The inspector in a real headless Chromium, against a real ``ctxsvc serve``: the login,
the indexes, a query from the playground, a session's timeline with its checkpoints and
a resume preview, a job followed live by the page's script, and the offline API docs.

Chromium is Debian's (``make test-deps`` installs it), driven by Playwright's Python
driver (its own browser download is not used). Screenshots of each page are kept in
``test-artifacts/ui/`` (``CTXSVC_TEST_ARTIFACTS`` moves them). Without Chromium the test
is skipped, unless ``CTXSVC_REQUIRE_BROWSER=1`` (CI) makes that a failure.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import cli_env, free_port, run_cli, start_server, stop_server

pytestmark = pytest.mark.slow
TOKEN = "browser-s3cret"
ARTIFACTS = Path(os.environ.get("CTXSVC_TEST_ARTIFACTS", "test-artifacts")) / "ui"
MESSAGES = [
    {"role": "user", "content": "Make Store.put write the data atomically. Don't change the API."},
    {"role": "assistant", "content": "I edited app/store.py so Store.put writes a temporary file "
                                     "and renames it. Next I'll add a test."},
]  # fmt: skip


def _chromium() -> str | None:
    given = os.environ.get("CTXSVC_CHROMIUM")
    if given:
        return given
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    return None


def _missing(why: str) -> None:
    if os.environ.get("CTXSVC_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{why}; CTXSVC_REQUIRE_BROWSER=1 (make test-deps installs Chromium)")
    pytest.skip(why)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (it is in the dev extra)")
    binary = _chromium()
    if binary is None:
        _missing("no Chromium binary (apt-get install chromium)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=binary, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A ``ctxsvc serve`` with a token, of the sample repository, with one session that has
    received context and written a checkpoint. Yields the base URL and the session id."""
    from conftest import SAMPLE, make_repo

    tmp = tmp_path_factory.mktemp("ui")
    repo = make_repo(tmp / "demo", SAMPLE)
    env = cli_env(tmp / "home", CTXSVC_TOKEN=TOKEN)
    assert run_cli(env, "index", str(repo), "--no-vectors").returncode == 0
    port = free_port()
    proc = start_server(env, port, tmp / "server.log")
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}) as api:
            session = api.post("/v1/sessions", json={"repo": "demo", "task": "atomic writes"})
            sid = session.json()["id"]
            asked = api.post("/v1/context", json={
                "repo": "demo", "query": "Store.put writes JSON", "budget_tokens": 400,
                "session_id": sid,
            })  # fmt: skip
            assert asked.status_code == 200, asked.text
            cp = api.post(f"/v1/sessions/{sid}/checkpoints", json={"messages": MESSAGES})
            assert cp.status_code == 201, cp.text
        yield base, sid
    finally:
        stop_server(proc)


@pytest.fixture
def page(chromium: Any, served: tuple[str, str]) -> Iterator[Any]:
    context = chromium.new_context(base_url=served[0], viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    problems: list[str] = []
    tab.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    tab.on("pageerror", lambda e: problems.append(str(e)))
    tab.on(
        "response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None
    )
    tab.goto("/ui")
    tab.fill("input[name=token]", TOKEN)
    tab.click("form.login button")
    tab.wait_for_url("**/ui")
    yield tab
    context.close()
    # No script error, no refused asset, no policy violation, but one: ReDoc's bundle links
    # Redocly's logo on its CDN, which the docs' policy blocks (the page holds no other).
    problems = [p for p in problems if "https://cdn.redoc.ly/redoc/logo-mini.svg" not in p]
    assert problems == [], problems


def _shot(tab: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_the_indexes_and_a_query_from_the_playground(page: Any) -> None:
    assert page.locator("table.indexes a", has_text="demo").count() == 1
    _shot(page, "indexes")
    page.click("table.indexes a >> text=demo")
    page.wait_for_selector("form.playground")
    page.fill("textarea[name=q]", "Store.put writes the data as JSON")
    page.fill("input[name=budget]", "500")
    page.click("form.playground button")
    page.wait_for_selector(".answer")
    summary = page.inner_text(".answer-summary")
    assert "of 500 tokens" in summary and "whole repository" in summary
    assert page.locator("section.block").count() >= 1
    assert "app/store.py" in page.inner_text("section.block header >> nth=0")
    assert page.locator("section.block .why").count() >= 1
    _shot(page, "playground")


def test_a_session_timeline_with_its_checkpoint_and_resume(
    page: Any, served: tuple[str, str]
) -> None:
    page.click("nav >> text=Sessions")
    page.click(f"table.sessions a >> text={served[1]}")
    page.wait_for_selector("ol.timeline")
    assert page.locator("ol.timeline li.sent").count() >= 1
    checkpoint = page.locator("ol.timeline li.checkpoint")
    assert checkpoint.count() == 1 and "checkpoint 1" in checkpoint.inner_text()
    page.click("form.resume button")
    page.wait_for_selector(".resumed")
    assert "from checkpoint 1" in page.inner_text(".resumed")
    _shot(page, "session")


def test_the_jobs_page_follows_a_job_as_it_runs(page: Any, served: tuple[str, str]) -> None:
    page.click("nav >> text=Jobs")
    page.wait_for_selector("#jobs[data-active]")  # the script has polled once
    with httpx.Client(base_url=served[0], headers={"Authorization": f"Bearer {TOKEN}"}) as api:
        job = api.post("/v1/repos/demo/refresh").json()
    # No reload: the page's script brings the new job in, then its end.
    row = page.locator("table.jobs tr", has_text=job["id"][:12])
    row.wait_for(timeout=30_000)
    page.locator("table.jobs tr", has_text=job["id"][:12]).locator(".state.done").wait_for(
        timeout=60_000
    )
    _shot(page, "jobs")


def test_the_api_docs_load_offline(page: Any) -> None:
    page.goto("/docs")
    page.wait_for_selector(".swagger-ui .opblock", timeout=30_000)
    assert page.locator(".opblock").count() >= 10
    _shot(page, "swagger")
    page.goto("/redoc")
    page.wait_for_selector("redoc [role=menuitem], .menu-content", timeout=30_000)
    _shot(page, "redoc")
