"""The edge of the HTTP API: what every request goes through before a route.

A request id (echoed in ``X-Request-ID`` and put on every log line), the
``Host`` and ``Origin`` check against DNS rebinding, the bearer token, the
body (read whole, bounded in size and in time, before a route sees it), a
bound on concurrency, the request's deadline, a 500 problem without internals
for any unexpected exception, one JSON log line and the latency metric per
request.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import quote

import anyio
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import cookie_parser
from starlette.responses import RedirectResponse, Response

from ctxsvc.errors import CtxError, DeadlineExceeded, Overloaded, SlowRequest
from ctxsvc.http.errors import error_problem, problem
from ctxsvc.http.observability import Metrics, bind, context, request_id_from, unbind
from ctxsvc.settings import ServedNames

log = logging.getLogger("ctxsvc.api")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PROBES = frozenset({"/healthz", "/readyz"})  # answered whatever the load, without the token
PUBLIC_PATHS = PROBES | {"/ui/login"}
# What a browser opens (the inspector, the API docs): the inspector's cookie stands for the
# token there, on reads only, so that no cookie can make a browser write anything.
BROWSER_PATHS = ("/ui/", "/docs", "/redoc", "/openapi.json", "/static/")
UI_LOGIN_SECONDS = 7 * 24 * 3600  # how long a login lasts
PUBLIC_ASSETS = "/ui/static/"  # the inspector's stylesheet and script (the login page uses them)
AUTHORIZED = "ctxsvc.authorized"  # scope key: the request carried the token (or none is set)
READERS_PER_SLOT = 4  # bodies that may be arriving at once, per request slot


class Edge:
    """Outermost middleware: everything every request goes through.

    A request is admitted (counted against ``max_in_flight``) once its whole
    body has arrived, so that clients trickling bodies hold no slot a working
    request needs; they get ``body_timeout`` seconds for the whole body, then
    408. An admitted request gets ``request_timeout`` seconds from its arrival
    (0: no limit), then 504, and the work it was waiting for is abandoned (see
    :mod:`ctxsvc.http.workers`).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics,
        token: str | None,
        names: ServedNames,
        max_body_bytes: int,
        max_in_flight: int,
        cors: bool,
        request_timeout: float = 0.0,
        body_timeout: float = 0.0,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.expected = token.encode() if token else None
        self.token = token
        self.names = names
        self.max_body = max_body_bytes
        self.max_in_flight = max_in_flight
        self.cors = cors
        self.request_timeout = request_timeout
        self.body_timeout = body_timeout
        self.in_flight = 0  # admitted requests
        self.reading = 0  # requests whose body is arriving

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
                out = MutableHeaders(scope=message)
                out["X-Request-ID"] = rid
                # Which process answered: one of several (serve --workers N), in the log too.
                out["X-Ctxsvc-Worker"] = str(os.getpid())
            await send(message)

        t0 = time.perf_counter()
        try:
            await self._handle(scope, headers, receive, send_with_id, status)
        except anyio.get_cancelled_exc_class():
            # The server is stopping and its grace period is over: say where the work was,
            # and answer (rather than leave uvicorn to send a bare 500) before letting go.
            stack = context().get("abandoned_stack")
            if stack:
                log.warning("request cancelled; its work was abandoned", extra={"stack": stack})
            if not status[1]:
                stopping = Overloaded(
                    "the server is stopping; the request was cancelled",
                    hint="retry: the server may be restarting, or another one may answer",
                )
                with anyio.CancelScope(shield=True):
                    await self._refusal(stopping)(scope, receive, send_with_id)
            raise
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
            self._record(scope, status[0], time.perf_counter() - t0)
            unbind(ctx_token)

    async def _handle(
        self, scope: Scope, headers: Headers, receive: Receive, send: Send, status: list[int]
    ) -> None:
        arrived = anyio.current_time()
        refusal = self._refuse(scope, headers)
        body = b""
        # A request that declares no body (a GET, a probe) takes no reader slot: bodies
        # trickling in must not starve /healthz. ASGI ends its receive at once then.
        bodyless = headers.get("content-length") in (None, "0") and (
            "transfer-encoding" not in headers
        )
        if refusal is None and not bodyless:
            got = await self._read_body(receive)
            if got is None:  # the client went away
                status[0] = 499
                return
            body, refusal = got
        if refusal is None and self._full(scope):
            refusal = self._refusal(
                Overloaded(
                    "the server is handling too many requests", hint="retry after the given delay"
                )
            )
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        self.in_flight += 1
        self.metrics.in_flight.inc()
        try:
            deadline = arrived + self.request_timeout if self.request_timeout else math.inf
            with anyio.CancelScope(deadline=deadline) as timer:
                await self.app(scope, _replay(body, receive), send)
            if timer.cancelled_caught:
                await self._deadline_passed(scope, receive, send, bool(status[1]))
        finally:
            self.in_flight -= 1
            self.metrics.in_flight.dec()

    def _refuse(self, scope: Scope, headers: Headers) -> Response | None:
        """What to answer before the body is read: a foreign name, no token, too large."""
        forbidden = self.names.refusal(headers.get("host"), headers.get("origin"))
        if forbidden is not None:
            return self._refusal(forbidden)
        path = scope.get("path", "")
        preflight = (
            self.cors
            and scope["method"] == "OPTIONS"
            and "access-control-request-method" in headers
        )
        authorized = (
            self.expected is None or self._token_ok(headers) or self._cookie_ok(scope, headers)
        )
        scope[AUTHORIZED] = authorized
        public = path in PUBLIC_PATHS or path.startswith(PUBLIC_ASSETS)
        if not authorized and not public and not preflight:
            page = path == "/ui" or (path.startswith("/ui/") and not path.endswith(".json"))
            if scope["method"] == "GET" and page:
                # A page of the inspector: to the form that takes the token once, then back.
                query = scope.get("query_string", b"").decode("latin-1")
                back = path + (f"?{query}" if query else "")
                return RedirectResponse(f"/ui/login?next={quote(back, safe='/')}", 303)
            return problem(
                401, "unauthorized", "a valid bearer token is required",
                title="Unauthorized", hint="send Authorization: Bearer <CTXSVC_TOKEN>",
                headers={"WWW-Authenticate": "Bearer"}, metrics=self.metrics,
            )  # fmt: skip
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return self._too_large()
        return None

    def _full(self, scope: Scope) -> bool:
        return self.in_flight >= self.max_in_flight and scope.get("path", "") not in PROBES

    def _token_ok(self, headers: Headers) -> bool:
        assert self.expected is not None
        scheme, _, given = headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode("utf-8", "surrogateescape"), self.expected
        )

    def _cookie_ok(self, scope: Scope, headers: Headers) -> bool:
        assert self.token is not None
        path = scope.get("path", "")
        if scope["method"] not in ("GET", "HEAD") or not (
            path == "/ui" or path.startswith(BROWSER_PATHS)
        ):
            return False
        port = server_port(scope)
        given = cookie_parser(headers.get("cookie", "")).get(ui_cookie_name(port), "")
        issued, _, _ = given.partition(".")
        if not issued.isdigit() or not -60 <= time.time() - int(issued) <= UI_LOGIN_SECONDS:
            return False
        expected = ui_cookie(self.token, port, int(issued))
        return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode())

    async def _read_body(self, receive: Receive) -> tuple[bytes, Response | None] | None:
        """The whole body, or the refusal to send instead; None if the client went away."""
        if self.reading >= self.max_in_flight * READERS_PER_SLOT:
            refusal = Overloaded("too many request bodies are arriving at once", hint="retry")
            return b"", self._refusal(refusal)
        self.reading += 1
        chunks: list[bytes] = []
        size = 0
        try:
            with anyio.move_on_after(self.body_timeout or None) as timer:
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return None
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_body:
                        return b"", self._too_large()
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        finally:
            self.reading -= 1
        if timer.cancelled_caught:
            slow = SlowRequest(
                f"the request body did not arrive within {self.body_timeout:g} seconds "
                f"({size} bytes came)",
                hint="send the whole body promptly; the server's CTXSVC_BODY_TIMEOUT sets the limit",
            )
            return b"", self._refusal(slow)
        return b"".join(chunks), None

    async def _deadline_passed(
        self, scope: Scope, receive: Receive, send: Send, started: bool
    ) -> None:
        error = DeadlineExceeded(
            f"the request did not finish within {self.request_timeout:g} seconds; "
            "its work was abandoned and may still complete",
            hint="retry later, or ask for less (a smaller budget, no refresh); the server's "
            "CTXSVC_REQUEST_TIMEOUT sets the limit",
        )
        # One line for the operator: what ran past its deadline, and where it was stuck.
        stack = context().get("abandoned_stack") or "(no work was running in a thread)\n"
        log.error(
            "deadline exceeded",
            extra={
                "path": scope.get("path"),
                "error_type": type(error).__qualname__,
                "error": error.message,
                "traceback": stack,
            },
        )
        if not started:
            await problem(
                error.http_status, error.code, error.message, retryable=True, hint=error.hint,
                metrics=self.metrics,
            )(scope, receive, send)  # fmt: skip

    def _refusal(self, error: CtxError) -> Response:
        # Overloaded is the server protecting itself, not a fault: a warning, not an error.
        return error_problem(error, self.metrics, level=logging.WARNING)

    def _too_large(self) -> Response:
        return problem(
            413, "too_large", f"the request body is larger than {self.max_body} bytes",
            title="Request body too large", metrics=self.metrics,
        )  # fmt: skip

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


def server_port(scope: Scope) -> int | None:
    """The port the request came in on (None: unknown, e.g. a Unix socket)."""
    server = scope.get("server")
    return int(server[1]) if server and server[1] is not None else None


def ui_cookie_name(port: int | None) -> str:
    """The inspector's cookie of the server on ``port``: browsers share cookies between the
    ports of a host, so each server keeps its own."""
    return f"ctxsvc_ui_{port}" if port else "ctxsvc_ui"


def ui_cookie(token: str, port: int | None, issued: int) -> str:
    """The inspector's cookie for a login at ``issued`` (Unix seconds) on ``port``:
    ``issued.mac``, the mac keyed by the token, so that the cookie never carries the token
    itself, a new token ends every login, and a cookie replayed to another port or after
    ``UI_LOGIN_SECONDS`` opens nothing."""
    key = token.encode("utf-8", "surrogateescape")
    mac = hmac.new(key, f"ctxsvc inspector|{port}|{issued}".encode(), hashlib.sha256)
    return f"{issued}.{mac.hexdigest()}"


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the body read already, then waits as the real one does."""
    given = [False]

    async def replay() -> Message:
        if not given[0]:
            given[0] = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
