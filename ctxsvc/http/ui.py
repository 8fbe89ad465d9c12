"""The inspector: ``/ui``, pages a person reads in a browser, over the same service.

What an index holds and left out, what an agent receives for a question (the
playground), each session's timeline and checkpoints, the workspace logs and
the index jobs as they run. Every page only reads: the playground asks without
a session and the resume preview without a refresh, so nothing an agent relies
on changes. With a token set, ``/ui/login`` takes it once and sets a cookie
that the edge accepts on these pages' reads (``ctxsvc.http.edge``). Pages are
rendered by ``ctxsvc.http.pages``; the stylesheet and script come from the
package (``ctxsvc/data/ui``).
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated
from urllib.parse import parse_qs, urlsplit, urlunsplit

from fastapi import APIRouter, FastAPI, Query
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.requests import Request
from starlette.staticfiles import StaticFiles

from ctxsvc.candidates import DETAILS
from ctxsvc.errors import CtxError
from ctxsvc.http import markup, pages, timeline
from ctxsvc.http.edge import UI_LOGIN_SECONDS, server_port, ui_cookie, ui_cookie_name
from ctxsvc.http.params import IndexName, SessionPath, WorkspacePath
from ctxsvc.http.workers import Workers
from ctxsvc.limits import MAX_BUDGET, MAX_QUERY_CHARS
from ctxsvc.models import RepoStatus
from ctxsvc.records import Resume
from ctxsvc.service import ContextService

ASSETS = Path(__file__).resolve().parent.parent / "data" / "ui"
# Scripts and styles only from this server; no frame may hold the pages.
POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
JOBS_SHOWN = 50
EVENTS_SHOWN = 200  # of a workspace's log per page, then a link to the next
MAX_SEQ = 2**63 - 1


def _html(text: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        text, status, headers={"Content-Security-Policy": POLICY, "X-Frame-Options": "DENY",
                               "Cache-Control": "no-store"},
    )  # fmt: skip


def ui_routes(
    service: ContextService, work: Workers, token: str | None, readiness: Callable[[], list[str]]
) -> APIRouter:
    """The inspector's routes. ``readiness``: what the server reports degraded (the model,
    the store), shown over the indexes."""
    r = APIRouter(prefix="/ui", include_in_schema=False)
    logout = token is not None

    async def render(build: Callable[[], str]) -> HTMLResponse:
        def built() -> tuple[str, int]:
            try:
                return build(), 200
            except CtxError as exc:  # the page says what failed, as the API would
                return markup.error_page(exc), exc.http_status

        text, status = await work.run(built)
        return _html(text, status)

    @r.get("")
    async def indexes() -> HTMLResponse:
        def build() -> str:
            listed: list[RepoStatus | tuple[str, CtxError]] = []
            for meta in service.repos():
                try:  # the cached walk: a list of many indexes walks none of them
                    listed.append(service.status(meta.name, full=False))
                except CtxError as exc:  # dropped meanwhile, a store error: in its row
                    listed.append((meta.name, exc))
            return pages.indexes_page(listed, readiness(), logout=logout)

        return await render(build)

    @r.get("/repos/{name}")
    async def repo(
        name: IndexName,
        q: Annotated[str, Query(max_length=MAX_QUERY_CHARS)] = "",
        budget: Annotated[int, Query(ge=0, le=MAX_BUDGET)] = 2000,
        detail: Annotated[str, Query(pattern=f"^({'|'.join(DETAILS)})$")] = "snippets",
    ) -> HTMLResponse:
        query = pages.Query(q, budget, detail)

        def build() -> str:
            status = service.status(name)
            files, unread = None, None
            try:
                files = service.view(service.resolve(status.name)).files
            except CtxError as exc:  # damaged or outdated: the status says so, and the page too
                unread = exc
            pack, failure = None, None
            if q.strip():
                try:  # no session: the playground records nothing an agent holds
                    pack = service.context(status.name, q, budget, detail=detail)
                except CtxError as exc:
                    failure = exc
            return pages.repo_page(status, files, unread, query, pack, failure, logout=logout)

        return await render(build)

    @r.get("/sessions")
    async def sessions() -> HTMLResponse:
        def build() -> str:
            received: dict[str, tuple[int, int]] = {}
            for s in service.sessions():  # one row per (session, repository)
                spans, tokens = received.get(s.session_id, (0, 0))
                received[s.session_id] = (spans + s.spans, tokens + s.tokens)
            return timeline.sessions_page(service.recent_sessions(), received, logout=logout)

        return await render(build)

    @r.get("/sessions/{session_id}")
    async def session(
        session_id: SessionPath,
        resume: bool = False,
        budget: Annotated[int, Query(ge=0, le=MAX_BUDGET)] = 2000,
    ) -> HTMLResponse:
        def build() -> str:
            found = service.session(session_id)
            checkpoints = service.checkpoints(session_id)
            resumed: Resume | CtxError | None = None
            if resume:
                try:  # without a refresh: the preview re-indexes nothing
                    resumed = service.resume(session_id, budget, refresh=False)
                except CtxError as exc:
                    resumed = exc
            return timeline.session_page(
                found, service.deliveries(session_id), checkpoints, resumed, budget, logout=logout
            )

        return await render(build)

    @r.get("/workspaces/{name}")
    async def workspace(
        name: WorkspacePath, after: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0
    ) -> HTMLResponse:
        return await render(lambda: timeline.workspace_page(
            name, service.workspace_events(name, after=after, limit=EVENTS_SHOWN), after,
            EVENTS_SHOWN, logout=logout,
        ))  # fmt: skip

    @r.get("/jobs")
    async def jobs() -> HTMLResponse:
        return await render(lambda: pages.jobs_page(service.recent_jobs(JOBS_SHOWN), logout=logout))

    @r.get("/jobs.json")
    async def jobs_json() -> JSONResponse:
        """The jobs table as HTML, and whether one is still going (the script polls this)."""

        def build() -> dict[str, object]:
            listed = service.recent_jobs(JOBS_SHOWN)
            going = any(j["state"] in ("queued", "running") for j in listed)
            return {"html": pages.jobs_table(listed), "active": going}

        return JSONResponse(await work.run(build), headers={"Cache-Control": "no-store"})

    @r.get("/login")
    async def login_form(next: str = "/ui") -> Response:
        if token is None:
            return RedirectResponse(_safe(next), 303)
        return _html(markup.login_page(_safe(next)))

    @r.post("/login")
    async def login(request: Request) -> Response:
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        given, to = form.get("token", [""])[0], _safe(form.get("next", ["/ui"])[0])
        if token is None:
            return RedirectResponse(to, 303)
        if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"),
                                   token.encode("utf-8", "surrogateescape")):  # fmt: skip
            return _html(markup.login_page(to, failed=True), 401)
        port = server_port(request.scope)
        out = RedirectResponse(to, 303)
        out.set_cookie(
            ui_cookie_name(port), ui_cookie(token, port, int(time.time())),
            max_age=UI_LOGIN_SECONDS, httponly=True, samesite="strict", path="/",
            secure=request.url.scheme == "https",
        )  # fmt: skip
        return out

    @r.get("/logout")
    async def logout_route(request: Request) -> Response:
        out = RedirectResponse("/ui/login" if token else "/ui", 303)
        out.delete_cookie(ui_cookie_name(server_port(request.scope)), path="/")
        return out

    return r


def mount_ui(
    app: FastAPI,
    service: ContextService,
    work: Workers,
    token: str | None,
    readiness: Callable[[], list[str]],
) -> None:
    """The inspector's pages and their assets on ``app``."""
    app.include_router(ui_routes(service, work, token, readiness))
    app.mount("/ui/static", StaticFiles(directory=ASSETS), name="ui-static")


def _safe(target: str) -> str:
    """Where to go after logging in: a page of the inspector (with its query), never another
    site."""
    parts = urlsplit(target)
    path = parts.path
    inside = path == "/ui" or (path.startswith("/ui/") and "//" not in path and "\\" not in path)
    if parts.scheme or parts.netloc or not inside:
        return "/ui"
    return urlunsplit(("", "", path, parts.query, ""))
