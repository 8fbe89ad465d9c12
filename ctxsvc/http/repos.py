"""The repository routes: list, status, register and refresh (as jobs), delete, jobs."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter
from fastapi import Path as PathParam
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from ctxsvc.errors import InvalidPath
from ctxsvc.http.errors import ERRORS, json_response
from ctxsvc.http.jobs import JobRegistry
from ctxsvc.http.observability import annotate
from ctxsvc.http.params import IndexName, JsonRoute
from ctxsvc.http.workers import Workers
from ctxsvc.models import RepoInfo, RepoStatus
from ctxsvc.schemas import JobResponse, RegisterRequest
from ctxsvc.service import ContextService


def repo_routes(
    service: ContextService, jobs: JobRegistry, roots: list[Path], work: Workers
) -> APIRouter:
    r = APIRouter(prefix="/v1", responses=ERRORS, tags=["repos"], route_class=JsonRoute)

    @r.get("/repos", response_model=list[RepoInfo])
    async def repos() -> Response:
        """Every index under this server's data directory (indexed by the CLI or over HTTP)."""
        return await work.run(lambda: json_response(
            [
                asdict(RepoInfo(m.name, m.root, m.commit, m.indexed_at, m.generation, m.vectors,
                                m.model, m.stats))
                for m in service.repos()
            ]
        ))  # fmt: skip

    @r.get("/repos/{name}", response_model=RepoStatus)
    async def status(name: IndexName) -> Response:
        """What is indexed, how fresh it is (files changed on disk), what is degraded."""
        annotate(repo=name)
        return await work.run(lambda: json_response(asdict(service.status(name))))

    @r.post("/repos", status_code=202, response_model=JobResponse)
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
        vectors = body.vectors
        job, _ = jobs.submit(
            "index", name, str(root),
            lambda rep: service.index(root, name, vectors=vectors, reporter=rep),
        )  # fmt: skip
        return _job_response(jobs, job.id, 202)

    @r.post("/repos/{name}/refresh", status_code=202, response_model=JobResponse)
    async def refresh(name: IndexName) -> Response:
        """Re-index a repository (incrementally: only changed files are read) as a job."""
        meta = await work.run(lambda: service.resolve(name))
        annotate(repo=meta.name)
        vectors = meta.vectors != "disabled"
        job, _ = jobs.submit(
            "refresh", meta.name, meta.root,
            lambda rep: service.index(meta.root, meta.name, vectors=vectors, reporter=rep),
        )  # fmt: skip
        return _job_response(jobs, job.id, 202)

    @r.delete("/repos/{name}", status_code=204, response_class=Response)
    async def delete(name: IndexName) -> Response:
        """Delete an index (not the repository); 409 while it is being indexed."""
        annotate(repo=await work.run(lambda: service.drop(name)))
        return Response(status_code=204)

    @r.get("/jobs/{job_id}", response_model=JobResponse)
    async def job(job_id: Annotated[str, PathParam(max_length=64)]) -> Response:
        """An indexing job: state, progress per stage, events, then its summary or error."""
        return _job_response(jobs, job_id, 200)

    return r


def _job_response(jobs: JobRegistry, job_id: str, status: int) -> Response:
    snapshot = jobs.get(job_id)
    if snapshot is None:
        raise HTTPException(404, f"no job {job_id!r} (job records are kept in memory)")
    return json_response(snapshot, status)
