"""The edge of the HTTP API: what every request goes through before a route.

A request id (echoed in ``X-Request-ID`` and put on every log line), the
bearer token, bounds on body size and concurrency, a 500 problem without
internals for any unexpected exception, one JSON log line and the latency
metric per request.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.responses import Response

from ctxsvc.http.errors import problem
from ctxsvc.http.observability import Metrics, bind, context, request_id_from, unbind

log = logging.getLogger("ctxsvc.api")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})


class _TooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes")


class Edge:
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
