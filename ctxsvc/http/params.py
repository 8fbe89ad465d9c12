"""What the routes share: path parameters, the idempotency header and its replay answer,
the bearer token as the OpenAPI document declares it, and the route class that reads
request bodies as strict JSON."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Header, Security
from fastapi import Path as PathParam
from fastapi.requests import Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer

from ctxsvc.http.errors import json_response
from ctxsvc.limits import NAME_PATTERN, SESSION_PATTERN

IndexName = Annotated[
    str,
    PathParam(
        pattern=NAME_PATTERN,
        description="The index's name (GET /v1/repos lists them).",
        examples=["demo"],
    ),
]
SessionPath = Annotated[
    str,
    PathParam(
        pattern=SESSION_PATTERN,
        description="A session's id, as POST /v1/sessions answered it.",
        examples=["s-3f2a9c0b1d4e5f60"],
    ),
]
WorkspacePath = Annotated[
    str,
    PathParam(
        pattern=NAME_PATTERN,
        description="The workspace's name: the sessions started with it share its log.",
        examples=["refund-rework"],
    ),
]
IdempotencyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=255,
        description="Any unique string: a retry with the same key returns what was written "
        "the first time (with Idempotent-Replayed: true) and writes nothing.",
        examples=["9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d"],
    ),
]

# The token, as the OpenAPI document has it (and Swagger UI's Authorize button takes it).
# It declares the scheme and checks nothing: the edge refuses a request without the token
# (ctxsvc.http.edge), before any route runs.
BEARER = HTTPBearer(
    scheme_name="bearer",
    description="The server's token (CTXSVC_TOKEN), when it has one: "
    "Authorization: Bearer <token>.",
    auto_error=False,
)
AUTHORIZED_ROUTE = [Security(BEARER)]  # a router's or route's dependencies


def replayable(data: object, new: bool) -> Response:
    """201 with ``data``; a replay of an idempotent write says so in a header."""
    response = json_response(data, 201)
    if not new:
        response.headers["Idempotent-Replayed"] = "true"
    return response


class JsonRoute(APIRoute):
    """A route whose JSON body is read strictly (:class:`StrictJsonRequest`)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJsonRequest(request.scope, request.receive))

        return strict


class StrictJsonRequest(Request):
    """A request whose body must be JSON as RFC 8259 has it: no ``NaN`` or ``Infinity``
    (Python's parser takes them), no number out of a float's range, no integer of more
    digits than Python parses, no nesting deeper than the parser goes. What got through
    could not be stored or answered as JSON later; here it is a 422 naming the body."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = json.loads(body, parse_constant=_no_constant, parse_float=_finite)
            except json.JSONDecodeError:
                raise
            except ValueError as exc:  # a number out of range, bytes that are not UTF-8
                raise json.JSONDecodeError(str(exc), "", 0) from None
            except RecursionError:
                raise json.JSONDecodeError("nested too deeply", "", 0) from None
        return self._json


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range for a number")
    return value
