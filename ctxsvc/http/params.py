"""What the routes share: path parameters, the idempotency header and its replay answer."""

from __future__ import annotations

from typing import Annotated

from fastapi import Header
from fastapi import Path as PathParam
from fastapi.responses import Response

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
