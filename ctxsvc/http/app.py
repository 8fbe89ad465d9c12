"""The HTTP API: ``create_app(service)`` parses, calls the service, renders.

Endpoints live under ``/v1`` (one routes module per resource: ``context``,
``repos``, ``sessions``, ``workspaces``), plus ``/healthz``, ``/readyz`` and
``/metrics``; OpenAPI at ``/openapi.json``, docs at ``/docs``. Other ASGI apps
can be mounted behind the same edge and auth (the CLI mounts the MCP server at
``/mcp``). Every failure is a problem (``ctxsvc.http.errors``). The service's
calls block, so every endpoint hands its work to the app's
:class:`~ctxsvc.http.workers.Workers` and waits for it off the event loop,
under the request's deadline (``ctxsvc.http.edge``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.requests import Request
from starlette.routing import Match, Route

from ctxsvc import __version__
from ctxsvc.errors import CtxError
from ctxsvc.http.apidocs import DESCRIPTION, TAGS, apidocs_routes, operation_id
from ctxsvc.http.context import context_routes
from ctxsvc.http.edge import AUTHORIZED, Edge, Receive, Scope, Send
from ctxsvc.http.errors import ERRORS, install_error_handlers, json_response
from ctxsvc.http.jobs import job_context, job_metrics
from ctxsvc.http.observability import Metrics
from ctxsvc.http.params import AUTHORIZED_ROUTE
from ctxsvc.http.repos import repo_routes
from ctxsvc.http.sessions import session_routes
from ctxsvc.http.ui import mount_ui
from ctxsvc.http.workers import Workers
from ctxsvc.http.workspaces import workspace_routes
from ctxsvc.indexers.embed import GuardedEmbedder
from ctxsvc.models import WatchStatus
from ctxsvc.schemas import Readiness
from ctxsvc.service import ContextService
from ctxsvc.settings import ServedNames

log = logging.getLogger("ctxsvc.api")

MAX_BODY_BYTES = 1024 * 1024
MAX_IN_FLIGHT = 128
REQUEST_TIMEOUT = 120.0  # the defaults of Settings.request_timeout and body_timeout
BODY_TIMEOUT = 10.0


class ReadyOnly(BaseModel):
    """``/readyz`` for a client without the token: ready or not, nothing about the indexes."""

    ready: bool


class Mounted(Protocol):
    """An ASGI app served at ``path`` behind the API's edge, running in the app's lifespan."""

    path: str

    def running(self) -> AbstractAsyncContextManager[None]: ...

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None: ...


class Watched(Protocol):
    """Watches of the indexes, running in the app's lifespan (``ctxsvc.watch.Watching``);
    each index's status says how its watch fares."""

    def running(self) -> AbstractAsyncContextManager[None]: ...

    def status(self, name: str) -> WatchStatus | None: ...


def create_app(
    service: ContextService,
    *,
    token: str | None = None,
    allowed_roots: Sequence[Path] = (),
    cors_origins: Sequence[str] = (),
    allowed_hosts: Sequence[str] = (),
    max_body_bytes: int = MAX_BODY_BYTES,
    max_in_flight: int = MAX_IN_FLIGHT,
    request_timeout: float = REQUEST_TIMEOUT,
    body_timeout: float = BODY_TIMEOUT,
    mounts: Sequence[Mounted] = (),
    watching: Watched | None = None,
) -> FastAPI:
    """The HTTP API over ``service``.

    ``token``: when set, every endpoint but ``/healthz`` and ``/readyz``
    needs ``Authorization: Bearer <token>`` (and ``/readyz`` says only
    whether it is ready without it). ``allowed_roots``: directories under
    which ``POST /v1/repos`` may register repositories (none: no registration
    over HTTP). ``cors_origins``: CORS is off unless given. ``allowed_hosts``:
    names besides loopback ones that requests may carry in ``Host`` and
    ``Origin`` (see :class:`~ctxsvc.settings.ServedNames`).
    ``request_timeout``, ``body_timeout``: seconds (0: no limit) for a
    request's answer and for its body. ``mounts``: apps served at their path,
    behind the same edge. ``watching``: watches that keep the indexes current
    while the app runs (``ctxsvc serve --watch``).
    """
    metrics = Metrics(service.repos)
    workers = Workers(max_in_flight)

    service.jobs.observe(context=job_context, on_done=job_metrics(metrics))
    roots = [Path(r).expanduser().resolve() for r in allowed_roots]

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start_jobs()  # jobs queued before this start (or by another process) run here
        stopping = threading.Event()
        try:
            warm_up(service, stopping)  # in the background: the server answers meanwhile
            async with AsyncExitStack() as stack:
                for mounted in mounts:  # e.g. the MCP endpoint's sessions live in the lifespan
                    await stack.enter_async_context(mounted.running())
                if watching is not None:
                    await stack.enter_async_context(watching.running())
                yield
        finally:
            stopping.set()  # no view loads after the one under way
            # Stops the runs and waits for them (the shutdown timeout), off the event loop.
            await asyncio.to_thread(service.stop_jobs)

    app = FastAPI(
        title="ctxsvc",
        version=__version__,
        summary="Token-budgeted code context for AI coding agents",
        description=DESCRIPTION,
        openapi_tags=TAGS,
        generate_unique_id_function=operation_id,
        docs_url=None,  # served from the package's assets instead: ctxsvc.http.apidocs
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.service, app.state.jobs, app.state.metrics = service, service.jobs, metrics
    app.state.workers = workers
    install_error_handlers(app, metrics)
    if cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )
    app.add_middleware(
        Edge,
        metrics=metrics,
        token=token,
        names=ServedNames.of(allowed_hosts, cors_origins),
        max_body_bytes=max_body_bytes,
        max_in_flight=max_in_flight,
        cors=bool(cors_origins),
        request_timeout=request_timeout,
        body_timeout=body_timeout,
    )
    _health_routes(app, service, metrics, workers)
    apidocs_routes(app)
    for router in (
        context_routes(service, workers),
        repo_routes(service, roots, workers, watching.status if watching else None),
        session_routes(service, workers),
        workspace_routes(service, workers),
    ):
        app.include_router(router)
    mount_ui(app, service, workers, token, lambda: list(_readiness(service).degraded))
    for mounted in mounts:
        app.router.routes.append(_AsgiRoute(mounted.path, mounted, include_in_schema=False))
    return app


class _AsgiRoute(Route):
    """A route to an ASGI app that names itself in the scope, as FastAPI's routes do,
    so that the request log and metrics carry its path rather than "unmatched"."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        return match, ({**child, "route": self} if match != Match.NONE else child)


def _health_routes(app: FastAPI, service: ContextService, metrics: Metrics, work: Workers) -> None:
    @app.get("/healthz", tags=["health"], operation_id="health", summary="Check the process is up")
    async def healthz() -> dict[str, str]:
        """The process is up (answered on the event loop, whatever the other requests do)."""
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["health"],
        response_model=Readiness | ReadyOnly,
        responses={503: {"model": Readiness | ReadyOnly}},
        operation_id="readiness",
        summary="Check the server is ready",
        # The token is optional here: without it, the answer says only whether it is ready.
        openapi_extra={"security": [{}, {"bearer": []}]},
    )
    async def readyz(request: Request) -> Response:
        """Ready when the store answers and the model has loaded (or failed to: then
        degraded, full text only); names what is degraded (a damaged index too).
        Without the token (when one is set): only whether it is ready."""
        body = await work.run(lambda: _readiness(service))
        status = 200 if body.ready else 503
        if not request.scope.get(AUTHORIZED, False):
            return json_response(ReadyOnly(ready=body.ready).model_dump(), status)
        return json_response(body.model_dump(), status)

    @app.get(
        "/metrics",
        tags=["health"],
        response_class=Response,
        responses=ERRORS,
        dependencies=AUTHORIZED_ROUTE,
        operation_id="metrics",
        summary="Get Prometheus metrics",
    )
    async def prometheus() -> Response:
        """Prometheus metrics (text exposition format)."""
        data, content_type = await work.run(metrics.render)
        return Response(data, media_type=content_type)


def warm_up(service: ContextService, stopping: threading.Event | None = None) -> None:
    """Start loading, in background threads, what the first answers need: the
    embedding model (when it loads lazily), the token encoding, and the views of the
    ``warm_indexes`` indexes committed most recently (each server process holds its own:
    without this, the first answer of every worker on every index waits for its load),
    until ``stopping`` is set."""
    start = getattr(service.embedder, "start", None)
    if callable(start):
        start()
    warm = getattr(service.tokens, "warm", None)
    if callable(warm):
        threading.Thread(target=_quietly, args=(warm,), name="tokens-warm", daemon=True).start()
    if service.settings.warm_indexes:
        threading.Thread(
            target=_warm_views, args=(service, stopping or threading.Event()), name="views-warm",
            daemon=True,
        ).start()  # fmt: skip


def _warm_views(service: ContextService, stopping: threading.Event) -> None:
    try:
        metas = sorted(service.repos(), key=lambda m: m.indexed_at, reverse=True)
    except CtxError as exc:  # the first request meets it again, and reports it
        log.warning("views not warmed: %s", exc.message)
        return
    for meta in metas[: service.settings.warm_indexes]:
        if stopping.is_set():
            return
        t0 = time.perf_counter()
        try:
            service.view(meta)
        except CtxError as exc:  # a damaged index: the requests that need it say so
            log.warning("view of %s not warmed: %s", meta.name, exc.message)
            continue
        except Exception:  # a bug: logged; the requests that load it meet it again
            log.exception("view of %s not warmed", meta.name)
            continue
        seconds = round(time.perf_counter() - t0, 2)
        log.info("view loaded", extra={"repo": meta.name, "seconds": seconds})


def _quietly(call: Callable[[], object]) -> None:
    # A failure here is met again, and reported, by the first request that counts tokens.
    with contextlib.suppress(Exception):
        call()


def _readiness(service: ContextService) -> Readiness:
    degraded: list[str] = []
    embedder, error = service.embedder, service.embedder_error
    # A lazily loaded model says whether it has loaded, and why it failed; others are loaded.
    loaded = embedder is not None and bool(getattr(embedder, "loaded", True))
    failed = getattr(embedder, "error", None) if embedder is not None else None
    error = error or (failed if isinstance(failed, str) else None)
    loading = embedder is not None and not loaded and error is None
    model: dict[str, Any] = {
        "loaded": loaded,
        "name": embedder.name if embedder else None,
        "error": error,
        "loading": loading,
    }
    if loading:
        degraded.append(
            "model: the embedding model is loading; until it has, queries use full text, "
            "symbols and the graph"
        )
    elif embedder is None:
        degraded.append(
            f"model: not loaded ({error or 'none configured'}); "
            "queries use full text, symbols and the graph"
        )
    elif not loaded:
        degraded.append(f"model unavailable: {error}; queries use full text, symbols and the graph")
    elif isinstance(embedder, GuardedEmbedder) and (why := embedder.paused()):
        model["paused"] = why
        degraded.append(f"model: {why}; queries use full text, symbols and the graph")
    try:
        metas = service.repos()
        store: dict[str, Any] = {"reachable": True}
        damaged = service.damaged()
    except CtxError as exc:
        metas, damaged, store = [], {}, {"reachable": False, "error": exc.message}
        degraded.append(f"store: {exc.message}")
    degraded.extend(f"{m.name}: vectors {m.vectors}" for m in metas if m.vectors != "complete")
    degraded.extend(
        f"{name}: {what}"
        + ("" if "--rebuild" in what else f"; run `ctxsvc index --rebuild {name}`")
        for name, what in sorted(damaged.items())
    )
    return Readiness(
        ready=store["reachable"] and not loading, model=model, store=store, repos=len(metas),
        degraded=degraded,
    )  # fmt: skip
