"""The inspector (``/ui``) in-process: its login, every page, what the pages show, and
that they only read (the browser test, ``test_ui_browser.py``, drives a real Chromium)."""

from __future__ import annotations

import html
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

import ctxsvc.http.ui
from ctxsvc.candidates import DETAILS
from ctxsvc.http import create_app
from ctxsvc.http.edge import UI_LOGIN_SECONDS, ui_cookie, ui_cookie_name
from ctxsvc.service import ContextService

pytestmark = pytest.mark.anyio
TOKEN = "ui-s3cret"
PORT = 8765  # the port of the in-process server (its base URL's)
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
        base = f"http://127.0.0.1:{PORT}"
        async with httpx.AsyncClient(transport=transport, base_url=base) as c:
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
    now = int(time.time())
    browser.cookies.set(ui_cookie_name(PORT), ui_cookie(TOKEN, PORT, now))
    assert (await browser.get("/ui")).status_code == 200
    # Not the API, and never a write: a cross-site form could otherwise use it.
    r = await browser.post("/v1/context", json={"repo": "demo", "query": "x", "budget_tokens": 9})
    assert r.status_code == 401
    assert (await browser.get("/v1/repos")).status_code == 401
    browser.cookies.set(ui_cookie_name(PORT), ui_cookie("another token", PORT, now))
    assert (await browser.get("/ui")).status_code == 303


@pytest.mark.parametrize(
    "name, value",
    [
        # a login past its time, even with the right mac
        (ui_cookie_name(PORT), lambda now: ui_cookie(TOKEN, PORT, now - UI_LOGIN_SECONDS - 1)),
        # the cookie of the server on another port of this host, replayed here
        (ui_cookie_name(PORT), lambda now: ui_cookie(TOKEN, 8766, now)),
        (ui_cookie_name(8766), lambda now: ui_cookie(TOKEN, 8766, now)),
        (ui_cookie_name(PORT), lambda now: f"{now}.{'0' * 64}"),
        (ui_cookie_name(PORT), lambda now: TOKEN),
    ],
)
async def test_a_cookie_of_another_time_port_or_token_opens_nothing(
    browser: httpx.AsyncClient, name: str, value: Callable[[int], str]
) -> None:
    browser.cookies.set(name, value(int(time.time())))
    assert (await browser.get("/ui")).status_code == 303
    assert (await browser.get("/openapi.json")).status_code == 401


async def test_the_login_form_brings_back_the_page_asked_for_with_its_query(
    browser: httpx.AsyncClient,
) -> None:
    r = await browser.get("/ui/repos/demo", params={"q": "Store put", "budget": 300})
    back = httpx.URL(r.headers["location"]).params["next"]
    assert back == "/ui/repos/demo?q=Store+put&budget=300"
    r = await browser.post(
        "/ui/login", content=str(httpx.QueryParams(token=TOKEN, next=back)),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    assert r.headers["location"] == back
    assert f"Max-Age={UI_LOGIN_SECONDS}" in r.headers["set-cookie"]


async def test_the_login_goes_back_only_to_a_page_of_the_inspector(
    browser: httpx.AsyncClient,
) -> None:
    for target in ("https://evil.example/", "//evil.example", "/v1/repos", "/ui//evil.example",
                   "/ui/\\evil.example", "http://127.0.0.1/ui", "/uievil"):  # fmt: skip
        r = await browser.post(
            "/ui/login", content=str(httpx.QueryParams(token=TOKEN, next=target)),
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
    indexed.context("demo", "Store.get", 200, session_id=session.id)
    before = (indexed.sessions(), indexed.deliveries(session.id))
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
    assert (indexed.sessions(), indexed.deliveries(session.id)) == before


@pytest.mark.parametrize("detail", DETAILS)
async def test_every_detail_the_playground_offers_answers(
    browser: httpx.AsyncClient, detail: str
) -> None:
    await login(browser)
    r = await browser.get("/ui/repos/demo", params={"q": "Store", "budget": 800, "detail": detail})
    assert r.status_code == 200 and 'class="answer"' in r.text, r.text[-2000:]
    assert f'<option value="{detail}" selected>' in r.text


async def test_names_and_the_question_are_escaped_everywhere(
    browser: httpx.AsyncClient, indexed: ContextService, repo: Path
) -> None:
    attack = "<img src=x onerror=alert(1)>"
    (repo / f"{attack}.bin").write_bytes(b"\x00" * 20)  # listed as skipped, by its name
    (repo / "app" / "evil.py").write_text(f"def evil():\n    return '{attack}'\n")
    indexed.index(repo)
    await login(browser)
    q = f"</textarea><script>alert(1)</script> evil {attack}"
    page = (await browser.get("/ui/repos/demo", params={"q": q, "budget": 800})).text
    assert "app/evil.py" in page  # the code holding it was sent, and shown
    assert attack not in page and "<script>alert" not in page
    assert html.escape(attack) in page


async def test_a_detail_it_does_not_offer_is_refused_and_a_missing_index_is_an_error_page(
    browser: httpx.AsyncClient,
) -> None:
    await login(browser)
    r = await browser.get("/ui/repos/demo", params={"q": "x", "budget": 300, "detail": "nope"})
    assert r.status_code == 422  # refused as the API refuses it
    missing = await browser.get("/ui/repos/nosuch")
    assert missing.status_code == 404 and "repo_not_found" in missing.text
    assert "<h1>Error</h1>" in missing.text


async def test_a_session_timeline_shows_what_was_sent_and_its_checkpoints(
    browser: httpx.AsyncClient, indexed: ContextService, repo: Path
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
    generation = indexed.resolve("demo").generation
    store = repo / "app" / "store.py"
    store.write_text(store.read_text() + "\n# changed on disk\n")
    resumed = (await browser.get(f"/ui/sessions/{session.id}", params={"resume": 1})).text
    assert "from checkpoint 1" in resumed
    # As indexed: nothing re-indexed, and the page says the disk has moved on.
    assert indexed.resolve("demo").generation == generation
    assert "changed on disk since the last index" in resumed
    drift = resumed.split("<h3>Drift warnings</h3>", 1)[1].split("<h3>", 1)[0]
    assert "Store.write" in drift  # the other session's rename, which it touches
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


async def test_a_workspace_log_pages_through_its_events(
    browser: httpx.AsyncClient, indexed: ContextService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ctxsvc.http.ui, "EVENTS_SHOWN", 2)
    session = indexed.start_session("demo", "decide", workspace="team")
    for i in range(3):
        indexed.record_event("team", f"decision number {i}", session_id=session.id)
    await login(browser)
    first = (await browser.get("/ui/workspaces/team")).text
    assert "decision number 1" in first and "decision number 2" not in first
    later = first.split('class="paging">', 1)[1]
    link = html.unescape(later.split('href="', 2)[1].split('"', 1)[0])
    assert link == "/ui/workspaces/team?after=2"
    rest = (await browser.get(link)).text
    assert "decision number 2" in rest and "decision number 0" not in rest
    assert (await browser.get("/ui/workspaces/team", params={"after": 2**64})).status_code == 422


def _unescape(text: str) -> str:
    return html.unescape(text)


async def _sleep(seconds: float) -> None:
    import anyio

    await anyio.sleep(seconds)
