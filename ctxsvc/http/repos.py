"""The repository routes: list, status, register and refresh (as jobs), delete, jobs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter
from fastapi import Path as PathParam
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from ctxsvc.errors import InvalidPath
from ctxsvc.http.errors import ERRORS, json_response
from ctxsvc.http.observability import annotate, context
from ctxsvc.http.params import AUTHORIZED_ROUTE, IndexName, JsonRoute
from ctxsvc.http.workers import Workers
from ctxsvc.models import RepoInfo, RepoStatus, WatchStatus
from ctxsvc.schemas import JobResponse, RegisterRequest
from ctxsvc.service import ContextService


def repo_routes(
    service: ContextService,
    roots: list[Path],
    work: Workers,
    watch: Callable[[str], WatchStatus | None] | None = None,
) -> APIRouter:
    r = APIRouter(
        prefix="/v1", responses=ERRORS, tags=["repos"], route_class=JsonRoute,
        dependencies=AUTHORIZED_ROUTE,
    )  # fmt: skip

    @r.get(
        "/repos", response_model=list[RepoInfo], operation_id="listRepos",
        summary="List the indexes",
    )  # fmt: skip
    async def repos() -> Response:
        """Every index under this server's data directory (indexed by the CLI or over HTTP)."""
        return await work.run(lambda: json_response(
            [
                asdict(RepoInfo(m.name, m.root, m.commit, m.indexed_at, m.generation, m.vectors,
                                m.model, m.stats))
                for m in service.repos()
            ]
        ))  # fmt: skip

    @r.get(
        "/repos/{name}", response_model=RepoStatus, operation_id="getRepo",
        summary="Get an index's status",
    )  # fmt: skip
    async def status(name: IndexName) -> Response:
        """What is indexed, how fresh it is (files changed on disk), what is degraded;
        and, on a server that watches it (``serve --watch``), how its watch fares."""
        annotate(repo=name)
        return await work.run(lambda: json_response(asdict(_status(name))))

    def _status(name: str) -> RepoStatus:
        found = service.status(name)
        return found if watch is None else replace(found, watch=watch(found.name))

    @r.post(
        "/repos", status_code=202, response_model=JobResponse, operation_id="registerRepo",
        summary="Register and index a repository",
    )  # fmt: skip
    async def register(body: RegisterRequest) -> Response:
        """Register a repository under an allowed root and index it as a background job."""
        return await work.run(lambda: _register(body))

    def _register(body: RegisterRequest) -> Response:
        root, name = service.index_target(body.path, body.name)
        if not any(root.is_relative_to(a) for a in roots):
            raise InvalidPath(
                f"{body.path} is not under an allowed root",
                hint="the server's CTXSVC_ALLOWED_ROOTS lists where repositories may be registered",
            )
        annotate(repo=name)
        job, _ = service.submit_job(
            "index", name, str(root), {"vectors": body.vectors}, context().get("request_id")
        )
        return _job_response(service, job.id, 202)

    @r.post(
        "/repos/{name}/refresh", status_code=202, response_model=JobResponse,
        operation_id="refreshRepo", summary="Re-index a repository",
    )  # fmt: skip
    async def refresh(name: IndexName) -> Response:
        """Re-index a repository (incrementally: only changed files are read) as a job."""
        meta = await work.run(lambda: service.resolve(name))
        annotate(repo=meta.name)
        vectors = meta.vectors != "disabled"
        job, _ = await work.run(lambda: service.submit_job(
            "refresh", meta.name, meta.root, {"vectors": vectors}, context().get("request_id")
        ))  # fmt: skip
        return await work.run(lambda: _job_response(service, job.id, 202))

    @r.delete(
        "/repos/{name}", status_code=204, response_class=Response, operation_id="deleteRepo",
        summary="Delete an index",
    )  # fmt: skip
    async def delete(name: IndexName) -> Response:
        """Delete an index (not the repository) and its queued jobs; 409 while it is being
        indexed."""
        annotate(repo=await work.run(lambda: service.drop(name)))
        return Response(status_code=204)

    @r.get(
        "/jobs/{job_id}", response_model=JobResponse, operation_id="getJob",
        summary="Get an indexing job",
    )  # fmt: skip
    async def job(
        job_id: Annotated[
            str,
            PathParam(
                max_length=64,
                description="The job's id, as POST /v1/repos or its refresh answered it.",
                examples=["4f6d2a0c9b8e4c1a8f3e2d1c0b9a8f7e"],
            ),
        ],
    ) -> Response:
        """An indexing job: state, progress per stage, events, then its summary or error."""
        return await work.run(lambda: _job_response(service, job_id, 200))

    return r


def _job_response(service: ContextService, job_id: str, status: int) -> Response:
    snapshot = service.job(job_id)
    if snapshot is None:
        raise HTTPException(404, f"no job {job_id!r} (finished jobs are kept, the newest 1,000)")
    return json_response(snapshot, status)
