"""The endpoints of the HTTP API as calls, and what they answer, as dataclasses.

One function per endpoint builds its :class:`~ctxsvc.client.core.Call`: the
request, how to read the answer (:func:`decode` into the frozen dataclasses of
``ctxsvc.models``, or the few shapes only the API has, defined here) and
whether it is replay-safe. The clients send them, sync or async.
"""

from __future__ import annotations

import dataclasses
import types
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Union, get_args, get_origin, get_type_hints
from urllib.parse import quote

import httpx

from ctxsvc.client.core import Call, make_error
from ctxsvc.errors import IndexBusy
from ctxsvc.models import (
    ContextPack,
    FileLines,
    Impact,
    IndexSummary,
    Links,
    RepoInfo,
    RepoStatus,
    SearchResult,
    SymbolUses,
    WorkspaceEvent,
)
from ctxsvc.records import Checkpoint, Resume, Session

# -- what only the API answers -----------------------------------------------------


@dataclass(frozen=True)
class Job:
    """An indexing job: state, progress per stage, events, then its summary or error.

    Job records live in the server's memory: after a restart ``GET /v1/jobs``
    answers ``NotFound`` (the index the job built is durable).
    """

    id: str
    kind: str  # "index" or "refresh"
    repo: str
    root: str
    state: str  # "queued", "running", "done" or "failed"
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    progress: dict[str, dict[str, int | None]] = field(default_factory=dict)
    events: tuple[dict[str, Any], ...] = ()
    result: IndexSummary | None = None
    error: dict[str, Any] | None = None


@dataclass(frozen=True)
class Readiness:
    """``GET /readyz``: whether the store answers, the model loaded, what is degraded."""

    ready: bool
    model: dict[str, Any]
    store: dict[str, Any]
    repos: int
    degraded: tuple[str, ...] = ()


# -- JSON to dataclasses ---------------------------------------------------------------


def decode(tp: Any, data: Any) -> Any:
    """``data`` (parsed JSON) as ``tp``: dataclasses, tuples, lists, dicts, optionals.

    Keys a dataclass does not know are ignored, so that what a newer server
    adds does not break an older client; a missing required key is a TypeError.
    """
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(data, dict):
            raise TypeError(f"{tp.__name__}: expected an object, got {type(data).__name__}")
        hints = _hints(tp)
        known = [f.name for f in dataclasses.fields(tp) if f.name in data]
        return tp(**{name: decode(hints[name], data[name]) for name in known})
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        if data is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]  # only "X | None" occurs
        return decode(inner, data)
    if origin in (tuple, list):
        if not isinstance(data, list):
            raise TypeError(f"expected a list, got {type(data).__name__}")
        return origin(decode(args[0], item) for item in data)
    if origin is dict:
        if not isinstance(data, dict):
            raise TypeError(f"expected an object, got {type(data).__name__}")
        return {key: decode(args[1], value) for key, value in data.items()}
    if tp is float and isinstance(data, int) and not isinstance(data, bool):
        return float(data)
    return data


@cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


# -- the endpoints ---------------------------------------------------------------------


def _as(tp: Any) -> Callable[[httpx.Response], Any]:
    return lambda response: decode(tp, response.json())


def _body(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


def _seg(value: str) -> str:
    return quote(value, safe="")


def context(
    repo: str | None,
    query: str,
    budget_tokens: int,
    detail: str,
    session_id: str | None,
    include: Sequence[str] | None,
    exclude: Sequence[str] | None,
    refresh: bool,
    diff: str | None = None,
    branch: str | None = None,
    repos: Sequence[str] | None = None,
) -> Call[ContextPack]:
    body = _body(
        repo=repo, query=query, budget_tokens=budget_tokens, detail=detail, session_id=session_id,
        include=None if include is None else list(include),
        exclude=None if exclude is None else list(exclude), refresh=refresh, diff=diff,
        branch=branch, repos=list(repos) if repos else None,
    )  # fmt: skip
    # With a session the server records what it sent: a replay would withhold it as sent.
    return Call("POST", "/v1/context", _as(ContextPack), json=body, replay_safe=session_id is None)


def expand(
    repo: str,
    symbol: str | None,
    path: str | None,
    start_line: int | None,
    end_line: int | None,
    budget_tokens: int,
    callers: bool,
    callees: bool,
    session_id: str | None,
    branch: str | None = None,
) -> Call[ContextPack]:
    body = _body(
        repo=repo, symbol=symbol, path=path, start_line=start_line, end_line=end_line,
        budget_tokens=budget_tokens, callers=callers, callees=callees, session_id=session_id,
        branch=branch,
    )  # fmt: skip
    return Call("POST", "/v1/expand", _as(ContextPack), json=body, replay_safe=session_id is None)


def search(
    repo: str | None,
    query: str,
    limit: int,
    branch: str | None = None,
    repos: Sequence[str] | None = None,
) -> Call[SearchResult]:
    body = _body(
        repo=repo, query=query, limit=limit, branch=branch, repos=list(repos) if repos else None
    )
    return Call("POST", "/v1/search", _as(SearchResult), json=body)


def repos() -> Call[list[RepoInfo]]:
    return Call("GET", "/v1/repos", _as(list[RepoInfo]))


def status(name: str) -> Call[RepoStatus]:
    return Call("GET", f"/v1/repos/{_seg(name)}", _as(RepoStatus))


def index(path: str, name: str | None, vectors: bool) -> Call[Job]:
    # Replay-safe: while a job for the repository is queued or running the server
    # returns that job, and a second run after it only re-reads changed files.
    body = _body(path=path, name=name, vectors=vectors)
    return Call("POST", "/v1/repos", _as(Job), json=body)


def refresh(name: str) -> Call[Job]:
    return Call("POST", f"/v1/repos/{_seg(name)}/refresh", _as(Job))


def drop(name: str) -> Call[None]:
    return Call("DELETE", f"/v1/repos/{_seg(name)}", lambda r: None, gone_when_replayed=True)


def job(job_id: str) -> Call[Job]:
    return Call("GET", f"/v1/jobs/{_seg(job_id)}", _as(Job))


def job_id_of(job: Job | str) -> str:
    return job if isinstance(job, str) else job.id


def job_outcome(job: Job) -> Job | None:
    """The job when done, None while queued or running; raises its error when failed."""
    if job.state == "failed":
        error = job.error or {}
        raise make_error(
            str(error.get("code", "internal")),
            f"indexing job {job.id} for {job.repo} failed: {error.get('message', 'no detail')}",
            hint=str(error.get("hint") or ""),
            retryable=error.get("retryable") if isinstance(error.get("retryable"), bool) else None,
        )
    return job if job.state == "done" else None


def job_still_running(job: Job, timeout: float) -> IndexBusy:
    return IndexBusy(
        f"indexing job {job.id} for {job.repo} is still {job.state} after {timeout:g}s",
        hint="the job goes on on the server: wait for it again",
    )


def repo_map(name: str, budget_tokens: int) -> Call[ContextPack]:
    params = {"budget_tokens": budget_tokens}
    return Call("GET", f"/v1/repos/{_seg(name)}/map", _as(ContextPack), params=params)


def symbol_uses(repo: str, name: str, limit: int) -> Call[SymbolUses]:
    params = {"name": name, "limit": limit}
    return Call("GET", f"/v1/repos/{_seg(repo)}/symbols", _as(SymbolUses), params=params)


def impact(repo: str, name: str, depth: int, limit: int) -> Call[Impact]:
    params = {"name": name, "depth": depth, "limit": limit}
    return Call("GET", f"/v1/repos/{_seg(repo)}/impact", _as(Impact), params=params)


def references(repo: str, name: str, limit: int) -> Call[Links]:
    params = {"name": name, "limit": limit}
    return Call("GET", f"/v1/repos/{_seg(repo)}/references", _as(Links), params=params)


def definition(repo: str, name: str, path: str | None, line: int | None) -> Call[Links]:
    params = {"name": name, "path": path, "line": line}
    return Call("GET", f"/v1/repos/{_seg(repo)}/definition", _as(Links), params=params)


def file_lines(repo: str, path: str, start: int | None, end: int | None) -> Call[FileLines]:
    url = f"/v1/repos/{_seg(repo)}/files/{quote(path, safe='/')}"
    return Call("GET", url, _as(FileLines), params={"start": start, "end": end})


def start_session(repo: str, task: str, agent: str | None, workspace: str | None) -> Call[Session]:
    body = _body(repo=repo, task=task, agent=agent, workspace=workspace)
    # Not replay-safe: a replay would start a second session.
    return Call("POST", "/v1/sessions", _as(Session), json=body, replay_safe=False)


def write_checkpoint(
    session_id: str,
    messages: Sequence[Mapping[str, Any]],
    fields: Mapping[str, Any],
    budget_tokens: int,
    idempotency_key: str | None,
) -> Call[Checkpoint]:
    body: dict[str, Any] = {"messages": [dict(m) for m in messages], "budget_tokens": budget_tokens}
    for name, value in fields.items():
        if value is not None:
            body[name] = value if isinstance(value, str) else list(value)
    # The key is made once per logical call and sent with every attempt: a replay
    # returns the checkpoint stored the first time, so a retried write never doubles.
    key = idempotency_key or uuid.uuid4().hex
    return Call(
        "POST",
        f"/v1/sessions/{_seg(session_id)}/checkpoints",
        _as(Checkpoint),
        json=body,
        headers={"Idempotency-Key": key},
    )


def checkpoints(session_id: str, transcript: bool) -> Call[list[Checkpoint]]:
    url = f"/v1/sessions/{_seg(session_id)}/checkpoints"
    return Call("GET", url, _as(list[Checkpoint]), params={"transcript": transcript})


def checkpoint(session_id: str, number: int | None) -> Call[Checkpoint]:
    which = "latest" if number is None else str(int(number))
    url = f"/v1/sessions/{_seg(session_id)}/checkpoints/{which}"
    return Call("GET", url, _as(Checkpoint))


def resume(session_id: str, budget_tokens: int, refresh: bool) -> Call[Resume]:
    url = f"/v1/sessions/{_seg(session_id)}/resume"
    params = {"budget_tokens": budget_tokens, "refresh": refresh}
    return Call("GET", url, _as(Resume), params=params)


def record_event(
    workspace: str, text: str, fields: Mapping[str, Any], key: str | None
) -> Call[WorkspaceEvent]:
    body = _body(text=text, **fields)
    # One key per logical call, as for checkpoints: a replayed event is stored once.
    return Call(
        "POST",
        f"/v1/workspaces/{_seg(workspace)}/events",
        _as(WorkspaceEvent),
        json=body,
        headers={"Idempotency-Key": key or uuid.uuid4().hex},
    )


def workspace_events(workspace: str, after: int, limit: int) -> Call[list[WorkspaceEvent]]:
    url = f"/v1/workspaces/{_seg(workspace)}/events"
    return Call("GET", url, _as(list[WorkspaceEvent]), params={"after": after, "limit": limit})


def health() -> Call[bool]:
    return Call("GET", "/healthz", lambda r: r.json()["status"] == "ok", retry=False)


def ready() -> Call[Readiness]:
    # 503 with a Readiness body is an answer (not ready, and why), not a failure.
    return Call("GET", "/readyz", _as(Readiness), retry=False, ok=frozenset({200, 503}))


def metrics() -> Call[str]:
    return Call("GET", "/metrics", lambda r: r.text)
