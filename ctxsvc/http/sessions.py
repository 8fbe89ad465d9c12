"""The routes of agent memory: sessions, checkpoints (written idempotently), resume."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi import Path as PathParam
from fastapi.responses import Response

from ctxsvc.http.errors import ERRORS, json_response
from ctxsvc.http.observability import annotate
from ctxsvc.http.params import (
    AUTHORIZED_ROUTE,
    IdempotencyHeader,
    JsonRoute,
    SessionPath,
    replayable,
)
from ctxsvc.http.workers import Workers
from ctxsvc.limits import MAX_BUDGET, MAX_LINE
from ctxsvc.records import Checkpoint, Resume, Session
from ctxsvc.schemas import CheckpointRequest, SessionRequest
from ctxsvc.service import ContextService


def session_routes(service: ContextService, work: Workers) -> APIRouter:
    r = APIRouter(
        prefix="/v1", responses=ERRORS, tags=["checkpoints"], route_class=JsonRoute,
        dependencies=AUTHORIZED_ROUTE,
    )  # fmt: skip

    @r.post(
        "/sessions", status_code=201, response_model=Session, operation_id="startSession",
        summary="Start a session",
    )  # fmt: skip
    async def start_session(body: SessionRequest) -> Response:
        """Start an agent session on an indexed repository."""
        session = await work.run(
            lambda: service.start_session(body.repo, body.task, body.agent, body.workspace)
        )
        annotate(repo=session.repo)
        return json_response(asdict(session), 201)

    @r.post(
        "/sessions/{session_id}/checkpoints", status_code=201, response_model=Checkpoint,
        operation_id="writeCheckpoint", summary="Write a checkpoint",
    )  # fmt: skip
    async def write_checkpoint(
        session_id: SessionPath,
        body: CheckpointRequest,
        idempotency_key: IdempotencyHeader = None,
    ) -> Response:
        """Summarize the transcript since the last checkpoint and store a new, immutable one.

        A retry with the same ``Idempotency-Key`` returns the checkpoint stored
        the first time (with ``Idempotent-Replayed: true``) and writes nothing.
        """
        cp, new = await work.run(
            lambda: service.store_checkpoint(
                session_id, body.messages, body.fields(), idempotency_key, body.budget_tokens
            )
        )
        return replayable(asdict(cp), new)

    @r.get(
        "/sessions/{session_id}/checkpoints", response_model=list[Checkpoint],
        operation_id="listCheckpoints", summary="List a session's checkpoints",
    )  # fmt: skip
    async def list_checkpoints(
        session_id: SessionPath,
        transcript: Annotated[
            bool,
            Query(
                description="Include each checkpoint's stored transcript (false: left out, "
                "as an empty list).",
                examples=[False],
            ),
        ] = False,
    ) -> Response:
        """Every checkpoint of the session, by number (transcripts left out unless asked)."""

        def listed() -> Response:
            out = []
            for cp in service.checkpoints(session_id):
                data = asdict(cp)
                if not transcript:
                    data["transcript"] = []
                out.append(data)
            return json_response(out)

        return await work.run(listed)

    @r.get(
        "/sessions/{session_id}/checkpoints/latest", response_model=Checkpoint,
        operation_id="getLatestCheckpoint", summary="Get the latest checkpoint",
    )  # fmt: skip
    async def latest_checkpoint(session_id: SessionPath) -> Response:
        """The latest checkpoint: summary, state and stored transcript."""
        return await work.run(lambda: json_response(asdict(service.checkpoint(session_id))))

    @r.get(
        "/sessions/{session_id}/checkpoints/{number}", response_model=Checkpoint,
        operation_id="getCheckpoint", summary="Get a checkpoint",
    )  # fmt: skip
    async def get_checkpoint(
        session_id: SessionPath,
        number: Annotated[
            int,
            PathParam(
                ge=1,
                le=MAX_LINE,
                description="The checkpoint's number in the session (from 1).",
                examples=[1],
            ),
        ],
    ) -> Response:
        """Checkpoint ``number``: summary, state and stored transcript."""
        return await work.run(lambda: json_response(asdict(service.checkpoint(session_id, number))))

    @r.get(
        "/sessions/{session_id}/resume", response_model=Resume, operation_id="resumeSession",
        summary="Resume a session after a context reset",
    )  # fmt: skip
    async def resume(
        session_id: SessionPath,
        budget_tokens: Annotated[
            int,
            Query(
                ge=0,
                le=MAX_BUDGET,
                description="Most tokens (cl100k_base) to return: summary, changes and fresh code.",
                examples=[2000],
            ),
        ] = 2000,
        refresh: Annotated[
            bool,
            Query(
                description="Re-index files changed on disk first (false: as indexed).",
                examples=[True],
            ),
        ] = True,
    ) -> Response:
        """What to read after a context reset: summary, code changes since, fresh context."""

        def resumed() -> Response:
            result = service.resume(session_id, budget_tokens, refresh=refresh)
            annotate(repo=result.session.repo, tokens_used=result.tokens_used)
            return json_response(asdict(result))

        return await work.run(resumed)

    return r
