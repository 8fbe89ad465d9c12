"""What the routes share: path parameters, the idempotency header and its replay answer,
and the route class that reads request bodies as strict JSON."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Header
from fastapi import Path as PathParam
from fastapi.requests import Request
from fastapi.responses import Response
from fastapi.routing import APIRoute

from ctxsvc.http.errors import json_response
from ctxsvc.limits import NAME_PATTERN, SESSION_PATTERN

IndexName = Annotated[str, PathParam(pattern=NAME_PATTERN, description="index name")]
SessionPath = Annotated[str, PathParam(pattern=SESSION_PATTERN, description="session id")]
WorkspacePath = Annotated[str, PathParam(pattern=NAME_PATTERN, description="workspace name")]
IdempotencyHeader = Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)]


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
