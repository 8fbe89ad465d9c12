"""The HTTP API: ``create_app(service)`` parses, calls the service, renders.

Endpoints live under ``/v1`` (plus ``/healthz``, ``/readyz``, ``/metrics``, and
MCP over streamable HTTP at ``/mcp``, see ``ctxsvc.mcp``);
OpenAPI at ``/openapi.json``, docs at ``/docs``. Every failure is an RFC 9457
``application/problem+json`` body with ``type``, ``title``, ``status``,
``detail``, ``code``, ``retryable``, ``hint`` and ``request_id``; retryable
ones carry ``Retry-After``. The service's calls block, so endpoints are plain
functions, which FastAPI runs in its threadpool.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import Response
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.routing import Match, Route

from ctxsvc.api_jobs import Job, JobRegistry
from ctxsvc.api_models import (
    ERRORS,
    MAX_FILE_LINES,
    MAX_RESULTS,
    PROBLEM_JSON,
    ContextRequest,
    ExpandRequest,
    FileResponse,
    IndexName,
    JobResponse,
    Readiness,
    RegisterRequest,
    RepoSummary,
    SearchRequest,
    SearchResponse,
    SymbolsResponse,
    Text,
    json_response,
)
from ctxsvc.api_sessions import session_routes
from ctxsvc.errors import CtxError, InvalidPath
from ctxsvc.limits import MAX_BUDGET
from ctxsvc.mcp import McpHttp
from ctxsvc.models import (
    ContextPack,
    RepoStatus,
)
from ctxsvc.observability import Metrics, annotate, bind, context, request_id_from, unbind
from ctxsvc.service import ContextService
from indexers.embed import GuardedEmbedder

log = logging.getLogger("ctxsvc.api")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PROBLEM_BASE = "https://ctxsvc.dev/problems/"
MAX_BODY_BYTES = 1024 * 1024
MAX_IN_FLIGHT = 128
PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})
RETRY_AFTER = {"index_busy": 5, "store_error": 1, "overloaded": 1}


def problem(
    status: int,
    code: str,
    detail: str,
    *,
    title: str | None = None,
    retryable: bool = False,
    hint: str = "",
    headers: Mapping[str, str] | None = None,
    errors: list[dict[str, str]] | None = None,
    metrics: Metrics | None = None,
) -> Response:
    """An ``application/problem+json`` response for the current request."""
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + code,
        "title": title or code.replace("_", " ").capitalize(),
        "status": status,
        "detail": detail,
        "code": code,
        "retryable": retryable,
        "hint": hint,
        "request_id": context().get("request_id", ""),
    }
    if errors is not None:
        body["errors"] = errors
    if metrics is not None:
        metrics.errors.labels(code).inc()
    response = json_response(body, status, PROBLEM_JSON)
    response.headers.update(headers or {})
    if retryable:
        response.headers["Retry-After"] = str(RETRY_AFTER.get(code, 1))
    return response


_HTTP_CODES = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}


def _install_error_handlers(app: FastAPI, metrics: Metrics) -> None:
    async def ctx_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, CtxError)
        if exc.http_status >= 500:
            log.error("request failed: %s", exc, extra={"code": exc.code})
        return problem(
            exc.http_status, exc.code, exc.message, retryable=exc.retryable, hint=exc.hint,
            metrics=metrics,
        )  # fmt: skip

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {
                "field": ".".join(str(p) for p in e.get("loc", ())),
                "message": str(e.get("msg", "")),
                "type": str(e.get("type", "")),
            }
            for e in exc.errors()[:20]
        ]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        return problem(
            422, "validation_error", detail or "invalid request", title="Invalid request",
            hint="fix the named fields; /docs describes every request", errors=errors,
            metrics=metrics,
        )  # fmt: skip

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no route {request.method} {request.url.path}"
        return problem(exc.status_code, code, detail, headers=exc.headers, metrics=metrics)

    app.add_exception_handler(CtxError, ctx_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)


# -- the edge: request id, auth, limits, logs, metrics ----------------------------


class _TooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes")


class _Edge:
    """Outermost middleware: everything every request goes through.

    Gives each request an id (echoed in ``X-Request-ID`` and put on every log
    line), checks the bearer token, bounds body size and concurrency, turns
    any unexpected exception into a 500 problem without internals, and writes
    one JSON log line and the latency metric per request.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics,
        token: str | None,
        max_body_bytes: int,
        max_in_flight: int,
        cors: bool,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.expected = token.encode() if token else None
        self.max_body = max_body_bytes
        self.max_in_flight = max_in_flight
        self.cors = cors
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        rid = request_id_from(headers.get("x-request-id"))
        ctx_token = bind(request_id=rid)
        status = [500, 0]  # status, response started

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0], status[1] = message["status"], 1
                MutableHeaders(scope=message)["X-Request-ID"] = rid
            await send(message)

        t0 = time.perf_counter()
        self.in_flight += 1
        self.metrics.in_flight.inc()
        try:
            refusal = self._refuse(scope, headers)
            if refusal is not None:
                await refusal(scope, receive, send_with_id)
            else:
                await self.app(scope, self._bounded(receive), send_with_id)
        except Exception:
            log.exception("unhandled error", extra={"path": scope.get("path")})
            if not status[1]:
                response = problem(
                    500, "internal", "an internal error occurred; it was logged",
                    title="Internal error",
                    hint=f"report the request id {rid} to the server's operator",
                    metrics=self.metrics,
                )  # fmt: skip
                await response(scope, receive, send_with_id)
        finally:
            self.in_flight -= 1
            self.metrics.in_flight.dec()
            self._record(scope, status[0], time.perf_counter() - t0)
            unbind(ctx_token)

    def _refuse(self, scope: Scope, headers: Headers) -> Response | None:
        path = scope.get("path", "")
        preflight = (
            self.cors
            and scope["method"] == "OPTIONS"
            and "access-control-request-method" in headers
        )
        if self.expected is not None and path not in PUBLIC_PATHS and not preflight:
            scheme, _, given = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode("utf-8", "surrogateescape"), self.expected
            ):
                return problem(
                    401, "unauthorized", "a valid bearer token is required",
                    title="Unauthorized", hint="send Authorization: Bearer <CTXSVC_TOKEN>",
                    headers={"WWW-Authenticate": "Bearer"}, metrics=self.metrics,
                )  # fmt: skip
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return problem(
                413, "too_large", f"the request body is larger than {self.max_body} bytes",
                title="Request body too large", metrics=self.metrics,
            )  # fmt: skip
        if self.in_flight > self.max_in_flight and path not in PUBLIC_PATHS:
            return problem(
                503, "overloaded", "the server is handling too many requests",
                title="Overloaded", retryable=True, hint="retry after the given delay",
                metrics=self.metrics,
            )  # fmt: skip
        return None

    def _bounded(self, receive: Receive) -> Receive:
        seen = [0]

        async def bounded() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                seen[0] += len(message.get("body", b""))
                if seen[0] > self.max_body:
                    raise _TooLarge(self.max_body)
            return message

        return bounded

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        route = getattr(scope.get("route"), "path", None) or "unmatched"
        self.metrics.latency.labels(scope["method"], route, str(status)).observe(seconds)
        fields = {
            k: v for k, v in context().items() if k in ("repo", "tokens_used", "job_id", "code")
        }
        log.info(
            "request",
            extra={
                "method": scope["method"],
                "route": route,
                "status": status,
                "ms": round(seconds * 1000, 1),
                **fields,
            },
        )


# -- the app ------------------------------------------------------------------


def create_app(
    service: ContextService,
    *,
    token: str | None = None,
    allowed_roots: Sequence[Path] = (),
    cors_origins: Sequence[str] = (),
    max_body_bytes: int = MAX_BODY_BYTES,
    max_in_flight: int = MAX_IN_FLIGHT,
    job_workers: int = 2,
) -> FastAPI:
    """The HTTP API over ``service``.

    ``token``: when set, every endpoint but ``/healthz`` and ``/readyz``
    needs ``Authorization: Bearer <token>``. ``allowed_roots``: directories
    under which ``POST /v1/repos`` may register repositories (none: no
    registration over HTTP). ``cors_origins``: CORS is off unless given.
    """
    metrics = Metrics(service.repos)

    def job_done(job: Job, seconds: float) -> None:
        metrics.jobs.labels(job.kind, job.state).observe(seconds)
        if job.result:
            metrics.embedded.inc(job.result.get("chunks_embedded", 0))
            for t in job.result.get("timings", ()):
                if t.get("stage") == "embed":
                    metrics.embed_seconds.inc(t.get("seconds", 0.0))

    jobs = JobRegistry(workers=job_workers, on_done=job_done)
    roots = [Path(r).expanduser().resolve() for r in allowed_roots]
    mcp = McpHttp(service, allowed_origins=cors_origins)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with mcp.running():  # the MCP endpoint's sessions live in the app's lifespan
            yield
        jobs.shutdown()

    app = FastAPI(
        title="ctxsvc",
        version="1",
        summary="Token-budgeted code context for AI coding agents",
        lifespan=lifespan,
    )
    app.state.service, app.state.jobs, app.state.metrics = service, jobs, metrics
    _install_error_handlers(app, metrics)
    if cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )
    app.add_middleware(
        _Edge,
        metrics=metrics,
        token=token,
        max_body_bytes=max_body_bytes,
        max_in_flight=max_in_flight,
        cors=bool(cors_origins),
    )
    _health_routes(app, service, metrics)
    app.include_router(_v1(service, jobs, roots))
    app.router.routes.append(_AsgiRoute("/mcp", mcp, include_in_schema=False))  # same auth
    return app


class _AsgiRoute(Route):
    """A route to an ASGI app that names itself in the scope, as FastAPI's routes do,
    so that the request log and metrics carry its path rather than "unmatched"."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        return match, ({**child, "route": self} if match != Match.NONE else child)


def _health_routes(app: FastAPI, service: ContextService, metrics: Metrics) -> None:
    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get(
        "/readyz", tags=["health"], response_model=Readiness, responses={503: {"model": Readiness}}
    )
    def readyz() -> Response:
        """Ready when the store answers; names what is degraded (no model: full text only)."""
        degraded: list[str] = []
        model = {
            "loaded": service.embedder is not None,
            "name": service.embedder.name if service.embedder else None,
            "error": service.embedder_error,
        }
        if service.embedder is None:
            degraded.append(
                f"model: not loaded ({service.embedder_error or 'none configured'}); "
                "queries use full text, symbols and the graph"
            )
        elif isinstance(service.embedder, GuardedEmbedder) and (why := service.embedder.paused()):
            model["paused"] = why
            degraded.append(f"model: {why}; queries use full text, symbols and the graph")
        try:
            metas = service.repos()
            store: dict[str, Any] = {"reachable": True}
        except CtxError as exc:
            metas, store = [], {"reachable": False, "error": exc.message}
            degraded.append(f"store: {exc.message}")
        degraded.extend(f"{m.name}: vectors {m.vectors}" for m in metas if m.vectors != "complete")
        body = Readiness(
            ready=store["reachable"], model=model, store=store, repos=len(metas), degraded=degraded
        )
        return json_response(body.model_dump(), 200 if body.ready else 503)

    @app.get("/metrics", tags=["health"], response_class=Response, responses=ERRORS)
    def prometheus() -> Response:
        """Prometheus metrics (text exposition format)."""
        data, content_type = metrics.render()
        return Response(data, media_type=content_type)


def _v1(service: ContextService, jobs: JobRegistry, roots: list[Path]) -> APIRouter:
    r = APIRouter(prefix="/v1", responses=ERRORS)

    @r.post("/context", response_model=ContextPack, tags=["context"])
    def context_(body: ContextRequest) -> Response:
        """The code most relevant to a task, packed within a token budget."""
        pack = service.context(
            body.repo, body.query, body.budget_tokens, detail=body.detail,
            session_id=body.session_id, include=body.include, exclude=body.exclude,
            refresh=body.refresh,
        )  # fmt: skip
        annotate(repo=pack.repo, tokens_used=pack.tokens_used)
        return json_response(asdict(pack))

    @r.post("/expand", response_model=ContextPack, tags=["context"])
    def expand(body: ExpandRequest) -> Response:
        """One symbol or line range, optionally with callers and callees, within a budget."""
        pack = service.expand(
            body.repo, symbol=body.symbol, path=body.path, start_line=body.start_line,
            end_line=body.end_line, budget_tokens=body.budget_tokens, callers=body.callers,
            callees=body.callees, session_id=body.session_id,
        )  # fmt: skip
        annotate(repo=pack.repo, tokens_used=pack.tokens_used)
        return json_response(asdict(pack))

    @r.post("/search", response_model=SearchResponse, tags=["context"])
    def search(body: SearchRequest) -> Response:
        """Ranked files and symbols with their scores; nothing is packed."""
        files, symbols, degraded = service.search(body.repo, body.query, body.limit)
        annotate(repo=body.repo)
        return json_response(
            {
                "repo": body.repo,
                "query": body.query,
                "files": [{"path": p, "score": s} for p, s in files],
                "symbols": [{"symbol": asdict(sym), "score": s} for sym, s in symbols],
                "degraded": list(degraded),
            }
        )

    @r.get("/repos", response_model=list[RepoSummary], tags=["repos"])
    def repos() -> Response:
        """Every index under this server's data directory (indexed by the CLI or over HTTP)."""
        return json_response(
            [
                {
                    "name": m.name,
                    "root": m.root,
                    "commit": m.commit,
                    "indexed_at": m.indexed_at,
                    "generation": m.generation,
                    "vectors": m.vectors,
                    "model": m.model,
                    "stats": m.stats,
                }
                for m in service.repos()
            ]
        )

    @r.get("/repos/{name}", response_model=RepoStatus, tags=["repos"])
    def status(name: IndexName) -> Response:
        """What is indexed, how fresh it is (files changed on disk), what is degraded."""
        annotate(repo=name)
        return json_response(asdict(service.status(name)))

    @r.post("/repos", status_code=202, response_model=JobResponse, tags=["repos"])
    def register(body: RegisterRequest) -> Response:
        """Register a repository under an allowed root and index it as a background job."""
        root, name = service.index_target(body.path, body.name)
        if not any(root.is_relative_to(a) for a in roots):
            raise InvalidPath(
                f"{body.path} is not under an allowed root",
                hint="the server's CTXSVC_ALLOWED_ROOTS lists where repositories may be registered",
            )
        annotate(repo=name)
        vectors = body.vectors
        job, _ = jobs.submit(
            "index",
            name,
            str(root),
            lambda rep: service.index(root, name, vectors=vectors, reporter=rep),
        )
        return _job_response(jobs, job.id, 202)

    @r.post("/repos/{name}/refresh", status_code=202, response_model=JobResponse, tags=["repos"])
    def refresh(name: IndexName) -> Response:
        """Re-index a repository (incrementally: only changed files are read) as a job."""
        meta = service.resolve(name)
        annotate(repo=meta.name)
        vectors = meta.vectors != "disabled"
        job, _ = jobs.submit(
            "refresh", meta.name, meta.root,
            lambda rep: service.index(meta.root, meta.name, vectors=vectors, reporter=rep),
        )  # fmt: skip
        return _job_response(jobs, job.id, 202)

    @r.delete("/repos/{name}", status_code=204, response_class=Response, tags=["repos"])
    def delete(name: IndexName) -> Response:
        """Delete an index (not the repository); 409 while it is being indexed."""
        annotate(repo=service.drop(name))
        return Response(status_code=204)

    @r.get("/jobs/{job_id}", response_model=JobResponse, tags=["repos"])
    def job(job_id: Annotated[str, PathParam(max_length=64)]) -> Response:
        """An indexing job: state, progress per stage, events, then its summary or error."""
        return _job_response(jobs, job_id, 200)

    @r.get("/repos/{name}/map", response_model=ContextPack, tags=["context"])
    def repo_map(
        name: IndexName, budget_tokens: Annotated[int, Query(ge=1, le=MAX_BUDGET)] = 2000
    ) -> Response:
        """A map of the repository: files by PageRank over the code graph, with their central symbols."""
        pack = service.repo_map(name, budget_tokens)
        annotate(repo=pack.repo, tokens_used=pack.tokens_used)
        return json_response(asdict(pack))

    @r.get("/repos/{name}/symbols", response_model=SymbolsResponse, tags=["context"])
    def symbols(
        name: IndexName,
        symbol: Annotated[Text, Query(alias="name", min_length=1, max_length=512)],
        limit: Annotated[int, Query(ge=1, le=MAX_RESULTS)] = 100,
    ) -> Response:
        """Definitions with this name or qualified name, and references to it."""
        defs, refs = service.symbol_uses(name, symbol)
        annotate(repo=name)
        return json_response(
            {
                "repo": name,
                "name": symbol,
                "definitions": [asdict(d) for d in defs[:limit]],
                "references": [asdict(x) for x in refs[:limit]],
                "total_definitions": len(defs),
                "total_references": len(refs),
            }
        )

    @r.get("/repos/{name}/files/{path:path}", response_model=FileResponse, tags=["context"])
    def file(
        request: Request,
        name: IndexName,
        path: str,
        start: Annotated[int, Query(ge=1, le=10_000_000)] | None = None,
        end: Annotated[int, Query(ge=1, le=10_000_000)] | None = None,
    ) -> Response:
        """Lines of an indexed file, as indexed: read from the index, never from disk."""
        _check_rel_path(path, request.scope.get("raw_path", b""))
        annotate(repo=name)
        last = (start or 1) + MAX_FILE_LINES - 1  # bounded result size
        found = service.file_lines(name, path, start, min(end or last, last))
        if found is None:
            raise HTTPException(404, f"{path} is not an indexed file of {name}")
        item, total = found
        return json_response(
            {
                "repo": name,
                "path": item.path,
                "start_line": item.start_line,
                "end_line": item.end_line,
                "total_lines": total,
                "tokens": item.tokens,
                "content_hash": item.content_hash,
                "text": item.text,
            }
        )

    session_routes(r, service)
    return r


def _check_rel_path(path: str, raw_path: bytes) -> None:
    """Refuse anything but a plain relative path; the lookup is in the index anyway."""
    tail = raw_path.split(b"/files/", 1)[-1].lower()
    if any(enc in tail for enc in (b"%2f", b"%5c", b"%00", b"%2e")):
        raise InvalidPath("encoded separators or dots are not allowed in a file path")
    parts = path.split("/")
    if (
        not path
        or path.startswith("/")
        or "\\" in path
        or "\x00" in path
        or any(p in ("", ".", "..") for p in parts)
        or any(ord(ch) < 32 for ch in path)
    ):
        raise InvalidPath(
            f"{path!r} is not a relative path inside the repository",
            hint="use the repository-relative POSIX path, as in the index",
        )


def _job_response(jobs: JobRegistry, job_id: str, status: int) -> Response:
    snapshot = jobs.get(job_id)
    if snapshot is None:
        raise HTTPException(404, f"no job {job_id!r} (job records are kept in memory)")
    return json_response(snapshot, status)
