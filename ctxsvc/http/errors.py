"""The error edge of the HTTP API: every failure as an RFC 9457 problem.

A body of type ``application/problem+json`` with ``type``, ``title``,
``status``, ``detail``, ``code``, ``retryable``, ``hint`` and ``request_id``,
and the error's own extension members (an ambiguous symbol's ``candidates``);
retryable ones carry ``Retry-After``. A :class:`CtxError` keeps its code and
its word on retrying; a request that fails validation names its fields.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from ctxsvc.errors import CtxError
from ctxsvc.http.observability import Metrics, context
from ctxsvc.schemas import Problem

log = logging.getLogger("ctxsvc.api")

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://ctxsvc.dev/problems/"
RETRY_AFTER = {"index_busy": 5, "store_error": 1, "overloaded": 1, "deadline_exceeded": 1}
_HTTP_CODES = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}


def json_response(data: Any, status: int = 200, media_type: str = "application/json") -> Response:
    """``data`` as JSON; a NaN or infinity in it (stored before requests were refused
    them, or through another adapter) goes out as ``null``, which JSON can say."""
    try:
        text = json.dumps(data, ensure_ascii=False, allow_nan=False)
    except ValueError:
        text = json.dumps(_finite(data), ensure_ascii=False, allow_nan=False)
    return Response(text.encode("utf-8"), status_code=status, media_type=media_type)


def _finite(data: Any) -> Any:
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_finite(v) for v in data]
    return data


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
    extensions: Mapping[str, object] | None = None,
    metrics: Metrics | None = None,
) -> Response:
    """An ``application/problem+json`` response for the current request."""
    body: dict[str, Any] = {
        **(extensions or {}),
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


def error_problem(
    exc: CtxError, metrics: Metrics | None = None, *, level: int = logging.ERROR
) -> Response:
    """The problem for one of the service's errors; a 5xx is logged, with its traceback."""
    if exc.http_status >= 500:
        # The operator's line says what broke: the formatter adds type, message and traceback.
        log.log(level, "request failed: %s", exc, extra={"code": exc.code}, exc_info=exc)
    return problem(
        exc.http_status, exc.code, exc.message, retryable=exc.retryable, hint=exc.hint,
        extensions=exc.extensions(), metrics=metrics,
    )  # fmt: skip


def install_error_handlers(app: FastAPI, metrics: Metrics) -> None:
    """Render the service's errors, invalid requests and HTTP errors as problems."""

    async def ctx_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, CtxError)
        return error_problem(exc, metrics)

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {
                "field": ".".join(str(p) for p in e.get("loc", ())),
                "message": _message(e),
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


def _message(error: Mapping[str, Any]) -> str:
    message = str(error.get("msg", ""))
    why = (error.get("ctx") or {}).get("error")
    if error.get("type") == "json_invalid" and why:  # say what is wrong with the JSON
        message += f": {why}"
    return message


def _problem_doc(description: str) -> dict[str, Any]:
    return {
        "model": Problem,
        "description": description,
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


# The problems every route may answer, for the OpenAPI document.
ERRORS: dict[int | str, dict[str, Any]] = {
    400: _problem_doc("Bad input"),
    401: _problem_doc("Missing or wrong bearer token"),
    403: _problem_doc("A Host or Origin this server does not answer to (DNS rebinding)"),
    404: _problem_doc("No such index, file, job or route"),
    405: _problem_doc("Method not allowed"),
    408: _problem_doc("The request body did not arrive in time"),
    409: _problem_doc("Conflict: index busy or built with another model"),
    413: _problem_doc("Request body too large"),
    422: _problem_doc("Invalid request: the offending fields are named"),
    500: _problem_doc("Internal error (logged with the request id)"),
    503: _problem_doc("Overloaded, or the store or an index is unavailable"),
    504: _problem_doc("The request ran past its deadline (its work may still finish)"),
}
