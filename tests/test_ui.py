"""The inspector (``/ui``) in-process: its login, every page, what the pages show, and
that they only read (the browser test, ``test_ui_browser.py``, drives a real Chromium)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from ctxsvc.http import create_app
from ctxsvc.http.edge import UI_COOKIE, ui_cookie
from ctxsvc.service import ContextService

pytestmark = pytest.mark.anyio
TOKEN = "ui-s3cret"
MESSAGES: list[dict[str, object]] = [
    {"role": "user", "content": "Make Store.put write the data atomically."},
    {"role": "assistant", "content": "I edited app/store.py: Store.put now writes a temporary "
                                     "file and renames it. Next I'll add a test."},
]  # fmt: skip


@pytest.fixture
def indexed(service: ContextService, repo: Path) -> ContextService:
    (repo / "blob.bin").write_bytes(b"\x00\x01binary\x00" * 10)
    (repo / "app" / "broken.py").write_text("def ok():\n    return 1\n\ndef broken(:\n    pass\n")
    service.index(repo)
    return service


@pytest.fixture
async def browser(indexed: ContextService) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app with a token, as a browser is: no Authorization header."""
    app = create_app(indexed, token=TOKEN)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            yield c


async def login(c: httpx.AsyncClient) -> None:
    r = await c.post(
        "/ui/login", content=f"token={TOKEN}&next=/ui",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    assert r.status_code == 303 and r.headers["location"] == "/ui"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and TOKEN not in cookie


async def test_a_page_without_the_cookie_goes_to_the_login_form(
    browser: httpx.AsyncClient,
) -> None:
    r = await browser.get("/ui/repos/demo")
    assert r.status_code == 303 and r.headers["location"] == "/ui/login?next=/ui/repos/demo"
    form = await browser.get("/ui/login")
    assert form.status_code == 200 and 'name="token"' in form.text
    # The stylesheet is public (the login form uses it); the data is not.
    assert (await browser.get("/ui/static/ui.css")).status_code == 200
    assert (await browser.get("/ui/jobs.json")).status_code == 401


async def test_a_wrong_token_is_refused_and_the_right_one_opens_every_page(
    browser: httpx.AsyncClient,
) -> None:
    bad = await browser.post(
        "/ui/login",
        content="token=nope",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert bad.status_code == 401 and "not the server's token" in bad.text
    await login(browser)
    for path in ("/ui", "/ui/repos/demo", "/ui/sessions", "/ui/jobs"):
        r = await browser.get(path)
        assert r.status_code == 200, (path, r.text[:500])
        assert r.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in r.headers["content-security-policy"]
        assert not re.search(r'(src|href)="https?://', r.text), path  # nothing from elsewhere


async def test_the_cookie_opens_reads_of_the_inspector_only(browser: httpx.AsyncClient) -> None:
    browser.cookies.set(UI_COOKIE, ui_cookie(TOKEN))
    assert (await browser.get("/ui")).status_code == 200
    # Not the API, and never a write: a cross-site form could otherwise use it.
    r = await browser.post("/v1/context", json={"repo": "demo", "query": "x", "budget_tokens": 9})
    assert r.status_code == 401
    assert (await browser.get("/v1/repos")).status_code == 401
    browser.cookies.set(UI_COOKIE, ui_cookie("another token"))
    assert (await browser.get("/ui")).status_code == 303


async def test_the_login_goes_back_only_to_a_page_of_the_inspector(
    browser: httpx.AsyncClient,
) -> None:
    for target in ("https://evil.example/", "//evil.example", "/v1/repos", "/ui//evil.example"):
        r = await browser.post(
            "/ui/login", content=httpx.QueryParams(token=TOKEN, next=target).__str__(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )  # fmt: skip
        assert r.headers["location"] == "/ui", target


async def test_the_index_page_lists_skipped_and_broken_files(browser: httpx.AsyncClient) -> None:
    await login(browser)
    listing = (await browser.get("/ui")).text
    assert 'href="/ui/repos/demo"' in listing
    page = (await browser.get("/ui/repos/demo")).text
    skipped = page.split("Skipped files", 1)[1].split("</table>", 1)[0]
    assert "blob.bin" in skipped and "binary" in skipped
    broken = page.split("Files with syntax errors", 1)[1].split("</table>", 1)[0]
    assert "app/broken.py" in broken


async def test_the_playground_shows_what_an_agent_receives_and_records_nothing(
    browser: httpx.AsyncClient, indexed: ContextService
) -> None:
    await login(browser)
    session = indexed.start_session("demo", "make writes atomic")
    r = await browser.get(
        "/ui/repos/demo", params={"q": "Store.put writes the data as JSON", "budget": 300}
    )
    assert r.status_code == 200
    pack = indexed.context("demo", "Store.put writes the data as JSON", 300)
    page = r.text
    assert f"<strong>{pack.tokens_used:,}</strong> of 300 tokens" in page
    assert "app/store.py:" in page and 'class="why"' in page
    assert "the whole repository" in page
    # The exact text, escaped: unescaped, it is the pack's rendering.
    rendered = page.split('<pre class="rendered">', 1)[1].split("</pre>", 1)[0]
    assert _unescape(rendered) == pack.rendered
    assert indexed.deliveries(session.id) == []


async def test_the_playground_reports_a_bad_question_in_the_page(
    browser: httpx.AsyncClient,
) -> None:
    await login(browser)
    r = await browser.get("/ui/repos/demo", params={"q": "x", "budget": 300, "detail": "nope"})
    assert r.status_code == 422  # refused as the API refuses it
    missing = await browser.get("/ui/repos/nosuch")
    assert missing.status_code == 404 and "repo_not_found" in missing.text
    assert "<h1>Error</h1>" in missing.text


async def test_a_session_timeline_shows_what_was_sent_and_its_checkpoints(
    browser: httpx.AsyncClient, indexed: ContextService
) -> None:
    await login(browser)
    session = indexed.start_session("demo", "make Store.put atomic <b>now</b>", workspace="team")
    indexed.context("demo", "Store.put writes the data as JSON", 300, session_id=session.id)
    cp = indexed.write_checkpoint(session.id, MESSAGES)
    other = indexed.start_session("demo", "rename Store", workspace="team")
    indexed.record_event(
        "team", "renamed Store.put to Store.write", session_id=other.id, paths=["app/store.py"]
    )
    listing = (await browser.get("/ui/sessions")).text
    assert session.id in listing and "&lt;b&gt;now&lt;/b&gt;" in listing and "<b>now" not in listing
    page = (await browser.get(f"/ui/sessions/{session.id}")).text
    timeline = page.split("<ol class=timeline>", 1)[1].split("</ol>", 1)[0]
    assert timeline.index("started") < timeline.index("sent") < timeline.index("checkpoint 1")
    assert _unescape(cp.summary.rendered) in _unescape(timeline)
    assert 'href="/ui/workspaces/team"' in page
    resumed = (await browser.get(f"/ui/sessions/{session.id}", params={"resume": 1})).text
    assert "from checkpoint 1" in resumed and "Drift warnings" in resumed
    log = await browser.get("/ui/workspaces/team")
    assert log.status_code == 200 and other.id in log.text and "renamed Store.put" in log.text


async def test_the_jobs_page_follows_a_job(
    browser: httpx.AsyncClient, indexed: ContextService, repo: Path
) -> None:
    await login(browser)
    job, _ = indexed.submit_job("refresh", "demo", str(repo), {"vectors": True})
    for _ in range(200):
        body = (await browser.get("/ui/jobs.json")).json()
        if not body["active"]:
            break
        await _sleep(0.05)
    assert job.id[:12] in body["html"] and "done" in body["html"]
    page = (await browser.get("/ui/jobs")).text
    assert 'data-source="/ui/jobs.json"' in page and job.id[:12] in page


async def test_without_a_token_the_inspector_needs_no_login(indexed: ContextService) -> None:
    app = create_app(indexed)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
        assert (await c.get("/ui")).status_code == 200
        r = await c.get("/ui/login")
        assert r.status_code == 303 and r.headers["location"] == "/ui"
        assert "Log out" not in (await c.get("/ui")).text


def _unescape(text: str) -> str:
    import html

    return html.unescape(text)


async def _sleep(seconds: float) -> None:
    import anyio

    await anyio.sleep(seconds)
