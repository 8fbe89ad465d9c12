"""The routes of the workspace log that parallel sessions share."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from ctxsvc.http.errors import ERRORS, json_response
from ctxsvc.http.params import (
    AUTHORIZED_ROUTE,
    IdempotencyHeader,
    JsonRoute,
    WorkspacePath,
    replayable,
)
from ctxsvc.http.workers import Workers
from ctxsvc.limits import MAX_EVENTS
from ctxsvc.models import WorkspaceEvent
from ctxsvc.schemas import EventRequest
from ctxsvc.service import ContextService


def workspace_routes(service: ContextService, work: Workers) -> APIRouter:
    r = APIRouter(
        prefix="/v1", responses=ERRORS, tags=["workspaces"], route_class=JsonRoute,
        dependencies=AUTHORIZED_ROUTE,
    )  # fmt: skip

    @r.post(
        "/workspaces/{workspace}/events", status_code=201, response_model=WorkspaceEvent,
        operation_id="recordEvent", summary="Record a workspace event",
    )  # fmt: skip
    async def post_event(
        workspace: WorkspacePath,
        body: EventRequest,
        idempotency_key: IdempotencyHeader = None,
    ) -> Response:
        """Record a decision or change in the log the workspace's sessions share.

        Sessions of the workspace then get a warning in their context and
        resume answers when these touch what the event is about. A retry with
        the same ``Idempotency-Key`` returns the event stored the first time
        (with ``Idempotent-Replayed: true``).
        """
        event, new = await work.run(lambda: service.record_event(
            workspace, body.text, kind=body.kind, session_id=body.session_id, agent=body.agent,
            paths=body.paths, symbols=body.symbols, new_path=body.new_path,
            new_symbol=body.new_symbol, idempotency_key=idempotency_key,
        ))  # fmt: skip
        return replayable(asdict(event), new)

    @r.get(
        "/workspaces/{workspace}/events", response_model=list[WorkspaceEvent],
        operation_id="listEvents", summary="List a workspace's events",
    )  # fmt: skip
    async def list_events(
        workspace: WorkspacePath,
        after: Annotated[
            int,
            Query(
                ge=0,
                le=2**63 - 1,
                description="Only the events after this one (its seq; 0: from the start).",
                examples=[0],
            ),
        ] = 0,
        limit: Annotated[
            int,
            Query(ge=1, le=MAX_EVENTS, description="Most events to list.", examples=[200]),
        ] = 200,
    ) -> Response:
        """The workspace's log in order: its sessions' events and what re-indexing saw."""
        return await work.run(
            lambda: json_response(
                [asdict(e) for e in service.workspace_events(workspace, after=after, limit=limit)]
            )
        )

    return r
