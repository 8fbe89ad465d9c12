"""The HTTP routes of agent memory: sessions, checkpoints, resume, workspace logs."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Header, Query
from fastapi import Path as PathParam
from fastapi.responses import Response

from ctxsvc.api_models import (
    NAME_PATTERN,
    CheckpointRequest,
    EventRequest,
    SessionPath,
    SessionRequest,
    json_response,
)
from ctxsvc.limits import MAX_BUDGET
from ctxsvc.models import Checkpoint, Resume, Session, WorkspaceEvent
from ctxsvc.observability import annotate
from ctxsvc.service import ContextService

WorkspacePath = Annotated[str, PathParam(pattern=NAME_PATTERN, description="workspace name")]


def session_routes(r: APIRouter, service: ContextService) -> None:
    """Sessions and checkpoints: write (idempotent), read back, resume; workspace logs."""

    @r.post("/sessions", status_code=201, response_model=Session, tags=["checkpoints"])
    def start_session(body: SessionRequest) -> Response:
        """Start an agent session on an indexed repository."""
        session = service.start_session(body.repo, body.task, body.agent, body.workspace)
        annotate(repo=session.repo)
        return json_response(asdict(session), 201)

    @r.post(
        "/sessions/{session_id}/checkpoints",
        status_code=201,
        response_model=Checkpoint,
        tags=["checkpoints"],
    )
    def write_checkpoint(
        session_id: SessionPath,
        body: CheckpointRequest,
        idempotency_key: Annotated[
            str | None, Header(alias="Idempotency-Key", max_length=255)
        ] = None,
    ) -> Response:
        """Summarize the transcript since the last checkpoint and store a new, immutable one.

        A retry with the same ``Idempotency-Key`` returns the checkpoint stored
        the first time (with ``Idempotent-Replayed: true``) and writes nothing.
        """
        fields = body.model_dump(exclude={"messages", "budget_tokens"}, exclude_none=True)
        cp, new = service.store_checkpoint(
            session_id, body.messages, fields, idempotency_key, body.budget_tokens
        )
        response = json_response(asdict(cp), 201)
        if not new:
            response.headers["Idempotent-Replayed"] = "true"
        return response

    @r.get(
        "/sessions/{session_id}/checkpoints",
        response_model=list[Checkpoint],
        tags=["checkpoints"],
    )
    def list_checkpoints(
        session_id: SessionPath, transcript: bool = Query(False, description="include transcripts")
    ) -> Response:
        """Every checkpoint of the session, by number (transcripts left out unless asked)."""
        out = []
        for cp in service.checkpoints(session_id):
            data = asdict(cp)
            if not transcript:
                data["transcript"] = []
            out.append(data)
        return json_response(out)

    @r.get(
        "/sessions/{session_id}/checkpoints/latest",
        response_model=Checkpoint,
        tags=["checkpoints"],
    )
    def latest_checkpoint(session_id: SessionPath) -> Response:
        """The latest checkpoint: summary, state and stored transcript."""
        return json_response(asdict(service.checkpoint(session_id)))

    @r.get(
        "/sessions/{session_id}/checkpoints/{number}",
        response_model=Checkpoint,
        tags=["checkpoints"],
    )
    def get_checkpoint(
        session_id: SessionPath, number: Annotated[int, PathParam(ge=1, le=10_000_000)]
    ) -> Response:
        """Checkpoint ``number``: summary, state and stored transcript."""
        return json_response(asdict(service.checkpoint(session_id, number)))

    @r.get("/sessions/{session_id}/resume", response_model=Resume, tags=["checkpoints"])
    def resume(
        session_id: SessionPath,
        budget_tokens: Annotated[int, Query(ge=1, le=MAX_BUDGET)] = 2000,
    ) -> Response:
        """What to read after a context reset: summary, code changes since, fresh context."""
        result = service.resume(session_id, budget_tokens)
        annotate(repo=result.session.repo, tokens_used=result.tokens_used)
        return json_response(asdict(result))

    @r.post(
        "/workspaces/{workspace}/events",
        status_code=201,
        response_model=WorkspaceEvent,
        tags=["workspaces"],
    )
    def post_event(
        workspace: WorkspacePath,
        body: EventRequest,
        idempotency_key: Annotated[
            str | None, Header(alias="Idempotency-Key", max_length=255)
        ] = None,
    ) -> Response:
        """Record a decision or change in the log the workspace's sessions share.

        Sessions of the workspace then get a warning in their context and
        resume answers when these touch what the event is about. A retry with
        the same ``Idempotency-Key`` returns the event stored the first time
        (with ``Idempotent-Replayed: true``).
        """
        event, new = service.record_event(
            workspace, body.text, kind=body.kind, session_id=body.session_id, agent=body.agent,
            paths=body.paths, symbols=body.symbols, new_path=body.new_path,
            new_symbol=body.new_symbol, idempotency_key=idempotency_key,
        )  # fmt: skip
        response = json_response(asdict(event), 201)
        if not new:
            response.headers["Idempotent-Replayed"] = "true"
        return response

    @r.get(
        "/workspaces/{workspace}/events",
        response_model=list[WorkspaceEvent],
        tags=["workspaces"],
    )
    def list_events(
        workspace: WorkspacePath,
        after: Annotated[int, Query(ge=0, description="only events after this seq")] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    ) -> Response:
        """The workspace's log in order: its sessions' events and what re-indexing saw."""
        return json_response(
            [asdict(e) for e in service.workspace_events(workspace, after=after, limit=limit)]
        )
