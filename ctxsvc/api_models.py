"""Request and response models of the HTTP API, and the JSON response helper.

The models are the schema of ``/openapi.json``: every bound a request is
checked against is written here, so that the schema says it too.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import Path as PathParam
from fastapi.responses import Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from ctxsvc.limits import MAX_BUDGET, MAX_PATTERNS, MAX_QUERY_CHARS
from ctxsvc.models import IndexSummary, Reference, Symbol

PROBLEM_JSON = "application/problem+json"
MAX_RESULTS = 200
MAX_FILE_LINES = 5000
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


# -- request and response models ----------------------------------------------


def _text(value: str) -> str:
    # JSON may carry lone surrogates, which no later stage can encode: refuse them here.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (no lone surrogates)") from None
    return value


Text = Annotated[str, AfterValidator(_text)]
# "~user" is not expanded on the server (and an unknown user would be an error).
RepoRef = Annotated[
    Text,
    Field(
        min_length=1,
        max_length=4096,
        pattern=r"^[^~]",
        description="an index name, or the root directory of an indexed repository",
    ),
]
# Not blank (a pattern, so that the schema says it too; Python's idea of whitespace).
QueryText = Annotated[Text, Field(min_length=1, max_length=MAX_QUERY_CHARS, pattern=r"^\s*\S")]
Budget = Annotated[int, Field(ge=1, le=MAX_BUDGET)]
Pattern = Annotated[Text, Field(min_length=1, max_length=256)]
Patterns = Annotated[list[Pattern], Field(max_length=MAX_PATTERNS)]
SessionId = Annotated[str, Field(pattern=r"^[A-Za-z0-9._:-]{1,128}$")]
Line = Annotated[int, Field(ge=1, le=10_000_000)]
IndexName = Annotated[str, PathParam(pattern=NAME_PATTERN, description="index name")]
SessionPath = Annotated[
    str, PathParam(pattern=r"^[A-Za-z0-9._:-]{1,128}$", description="session id")
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", regex_engine="python-re")


class ContextRequest(_Body):
    repo: RepoRef
    query: QueryText
    budget_tokens: Budget = 8000
    detail: Literal["snippets", "skeleton", "map", "full"] = "snippets"
    session_id: SessionId | None = None
    include: Patterns | None = None
    exclude: Patterns | None = None
    refresh: bool = Field(False, description="re-index files changed on disk first")


class ExpandRequest(_Body):
    repo: RepoRef
    symbol: Annotated[Text, Field(min_length=1, max_length=512)] | None = None
    path: Annotated[Text, Field(min_length=1, max_length=4096)] | None = None
    start_line: Line | None = None
    end_line: Line | None = None
    budget_tokens: Budget = 4000
    callers: bool = False
    callees: bool = False
    session_id: SessionId | None = None


class SearchRequest(_Body):
    repo: RepoRef
    query: QueryText
    limit: Annotated[int, Field(ge=1, le=MAX_RESULTS)] = 20


class RegisterRequest(_Body):
    path: Annotated[
        Text,
        Field(
            min_length=2,
            max_length=4096,
            pattern=r"^/",
            description="absolute path of the repository root on the server",
        ),
    ]
    name: Annotated[str, Field(pattern=NAME_PATTERN)] | None = None
    vectors: bool = Field(True, description="embed chunks (false: full text and symbols only)")


class SessionRequest(_Body):
    repo: RepoRef
    task: Annotated[Text, Field(min_length=1, max_length=MAX_QUERY_CHARS)]
    agent: Annotated[str, Field(pattern=NAME_PATTERN)] | None = None
    workspace: Annotated[str, Field(pattern=NAME_PATTERN)] | None = None


Item = Annotated[Text, Field(max_length=2000)]


class CheckpointFields(_Body):
    goal: Annotated[Text, Field(max_length=2000)] | None = None
    done: Annotated[list[Item], Field(max_length=200)] | None = None
    decisions: Annotated[list[Item], Field(max_length=200)] | None = None
    open_tasks: Annotated[list[Item], Field(max_length=200)] | None = None
    next_step: Annotated[Text, Field(max_length=2000)] | None = None
    notes: Annotated[list[Item], Field(max_length=200)] | None = None


class CheckpointRequest(CheckpointFields):
    messages: Annotated[
        list[dict[str, Any]],
        Field(
            max_length=20_000, description="OpenAI-style chat messages since the last checkpoint"
        ),
    ] = []
    budget_tokens: Annotated[int, Field(ge=20, le=MAX_BUDGET)] = 300


class EventRequest(_Body):
    text: Annotated[
        Text,
        Field(
            min_length=1,
            max_length=2000,
            description="what was decided or changed, e.g. 'renamed interface Store to Repository'",
        ),
    ]
    kind: Literal["decision", "renamed", "removed", "changed", "note"] | None = Field(
        None, description="read from the text when absent ('renamed ...', 'removed ...')"
    )
    session_id: SessionId | None = Field(None, description="the session it comes from")
    agent: Annotated[str, Field(pattern=NAME_PATTERN)] | None = None
    paths: Annotated[
        list[Annotated[Text, Field(min_length=1, max_length=1000)]], Field(max_length=50)
    ] = []
    symbols: Annotated[
        list[Annotated[Text, Field(min_length=1, max_length=1000)]], Field(max_length=50)
    ] = []
    new_path: Annotated[Text, Field(min_length=1, max_length=1000)] | None = None
    new_symbol: Annotated[Text, Field(min_length=1, max_length=1000)] | None = None


class FieldError(BaseModel):
    field: str
    message: str
    type: str


class Problem(BaseModel):
    """An RFC 9457 problem: what happened, whether a retry helps, what to do next."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    retryable: bool
    hint: str = ""
    request_id: str
    errors: list[FieldError] | None = None


class FileScore(BaseModel):
    path: str
    score: float


class SymbolScore(BaseModel):
    symbol: Symbol
    score: float


class SearchResponse(BaseModel):
    repo: str
    query: str
    files: list[FileScore]
    symbols: list[SymbolScore]
    degraded: list[str]


class RepoSummary(BaseModel):
    name: str
    root: str
    commit: str | None
    indexed_at: str
    generation: int
    vectors: str
    model: str | None
    stats: dict[str, Any]


class SymbolsResponse(BaseModel):
    repo: str
    name: str
    definitions: list[Symbol]
    references: list[Reference]
    total_definitions: int
    total_references: int


class FileResponse(BaseModel):
    repo: str
    path: str
    start_line: int
    end_line: int
    total_lines: int
    tokens: int
    content_hash: str
    text: str


class JobResponse(BaseModel):
    id: str
    kind: Literal["index", "refresh"]
    repo: str
    root: str
    state: Literal["queued", "running", "done", "failed"]
    created_at: str
    started_at: str | None
    finished_at: str | None
    progress: dict[str, dict[str, int | None]]
    events: list[dict[str, Any]]
    result: IndexSummary | None
    error: dict[str, Any] | None


class Readiness(BaseModel):
    ready: bool
    model: dict[str, Any]
    store: dict[str, Any]
    repos: int
    degraded: list[str]


def _problem_doc(description: str) -> dict[str, Any]:
    return {
        "model": Problem,
        "description": description,
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


ERRORS: dict[int | str, dict[str, Any]] = {
    400: _problem_doc("Bad input"),
    401: _problem_doc("Missing or wrong bearer token"),
    404: _problem_doc("No such index, file, job or route"),
    405: _problem_doc("Method not allowed"),
    409: _problem_doc("Conflict: index busy or built with another model"),
    413: _problem_doc("Request body too large"),
    422: _problem_doc("Invalid request: the offending fields are named"),
    500: _problem_doc("Internal error (logged with the request id)"),
    503: _problem_doc("Overloaded, or the store is unavailable"),
}


# -- rendering ----------------------------------------------------------------


def json_response(data: Any, status: int = 200, media_type: str = "application/json") -> Response:
    body = json.dumps(data, ensure_ascii=False, allow_nan=False).encode("utf-8")
    return Response(body, status_code=status, media_type=media_type)
