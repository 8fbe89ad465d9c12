"""The ``async`` client of the ctxsvc HTTP API (asyncio or trio); see ``ctxsvc.client``."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Self, TypeVar

import anyio
import httpx

from ctxsvc.client import calls
from ctxsvc.client.calls import Job, Readiness
from ctxsvc.client.core import BaseClient, Call, Messages, RetryPolicy, Wait
from ctxsvc.models import (
    ContextPack,
    FileLines,
    Impact,
    Links,
    RepoInfo,
    RepoStatus,
    SearchResult,
    SymbolUses,
    WorkspaceEvent,
)
from ctxsvc.records import Checkpoint, Resume, Session

T = TypeVar("T")


class AsyncClient(BaseClient):
    """:class:`Client` for ``async`` code (asyncio or trio): the same methods, awaited.

    Configured as :class:`Client` is: ``base_url`` left out is ``$CTXSVC_URL``, else
    ``http://$CTXSVC_HOST:$CTXSVC_PORT`` (127.0.0.1 and 8765 when unset), ``token`` left
    out is ``$CTXSVC_TOKEN`` when the URL is the environment's too; arguments win, and a malformed URL raises
    :class:`ctxsvc.errors.ConfigError`. ``transport``: an ``httpx`` async transport.
    """

    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, token, timeout, retry, headers)
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=self._headers, timeout=timeout, transport=transport
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _send(self, call: Call[T]) -> T:
        attempts = self._attempts(call)
        while True:
            request = call.request(self._http, attempts.next_timeout())
            try:
                response = await self._http.send(request)
            except httpx.RequestError as exc:
                outcome: T | Wait = attempts.failed(exc)
            else:
                outcome = attempts.answered(response)
            if not isinstance(outcome, Wait):
                return outcome
            await anyio.sleep(outcome.seconds)

    # -- context --------------------------------------------------------------

    async def context(
        self,
        repo: str | None,
        query: str,
        *,
        budget_tokens: int = 8000,
        detail: str = "snippets",
        session_id: str | None = None,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        refresh: bool = False,
        diff: str | None = None,
        branch: str | None = None,
        repos: Sequence[str] | None = None,
    ) -> ContextPack:
        """The code most relevant to ``query``, packed within ``budget_tokens``; with
        ``diff`` (a base: HEAD, a branch, a commit), for the working tree's change; with
        ``branch``, from the version the index kept of a branch the working tree left;
        with ``repos``, over those indexes too (``repo`` may then be None)."""
        return await self._send(
            calls.context(
                repo,
                query,
                budget_tokens,
                detail,
                session_id,
                include,
                exclude,
                refresh,
                diff,
                branch,
                repos,
            )
        )

    async def expand(
        self,
        repo: str,
        *,
        symbol: str | None = None,
        path: str | None = None,
        start_line: int | None = None,
        end_line: int | None = None,
        budget_tokens: int = 4000,
        callers: bool = False,
        callees: bool = False,
        session_id: str | None = None,
        branch: str | None = None,
    ) -> ContextPack:
        """One symbol or line range, optionally with its callers and callees; ``branch``
        as for :meth:`context`."""
        call = calls.expand(
            repo,
            symbol,
            path,
            start_line,
            end_line,
            budget_tokens,
            callers,
            callees,
            session_id,
            branch,
        )
        return await self._send(call)

    async def search(
        self,
        repo: str | None,
        query: str,
        *,
        limit: int = 20,
        branch: str | None = None,
        repos: Sequence[str] | None = None,
    ) -> SearchResult:
        """Ranked files and symbols with their scores; nothing is packed (``branch`` and
        ``repos`` as for :meth:`context`)."""
        return await self._send(calls.search(repo, query, limit, branch, repos))

    async def repo_map(self, repo: str, *, budget_tokens: int = 2000) -> ContextPack:
        """Files by PageRank over the code graph, with their central symbols."""
        return await self._send(calls.repo_map(repo, budget_tokens))

    async def symbol_uses(self, repo: str, name: str, *, limit: int = 100) -> SymbolUses:
        """Definitions with this (qualified) name, and references to it."""
        return await self._send(calls.symbol_uses(repo, name, limit))

    async def impact(self, repo: str, name: str, *, depth: int = 2, limit: int = 100) -> Impact:
        """Who depends on a symbol, grouped by depth, each link resolved or by name."""
        return await self._send(calls.impact(repo, name, depth, limit))

    async def references(self, repo: str, name: str, *, limit: int = 100) -> Links:
        """The uses of a symbol, resolved ones first, each with how it was resolved."""
        return await self._send(calls.references(repo, name, limit))

    async def definition(
        self, repo: str, name: str, *, path: str | None = None, line: int | None = None
    ) -> Links:
        """What ``name`` used at ``path:line`` means (go to definition); every definition
        of the name without a place."""
        return await self._send(calls.definition(repo, name, path, line))

    async def file_lines(
        self, repo: str, path: str, *, start: int | None = None, end: int | None = None
    ) -> FileLines:
        """Lines ``start..end`` of an indexed file, from the index."""
        return await self._send(calls.file_lines(repo, path, start, end))

    # -- repositories and jobs ---------------------------------------------------

    async def repos(self) -> list[RepoInfo]:
        """Every index the server serves."""
        return await self._send(calls.repos())

    async def status(self, repo: str) -> RepoStatus:
        """What is indexed under ``repo``, how fresh it is, what is degraded."""
        return await self._send(calls.status(repo))

    async def index(self, path: str, *, name: str | None = None, vectors: bool = True) -> Job:
        """Register the repository at ``path`` (on the server) and index it as a job."""
        return await self._send(calls.index(path, name, vectors))

    async def refresh(self, repo: str) -> Job:
        """Re-index ``repo`` incrementally, as a job."""
        return await self._send(calls.refresh(repo))

    async def drop(self, repo: str) -> None:
        """Delete the index of ``repo`` (not the repository)."""
        await self._send(calls.drop(repo))

    async def job(self, job: Job | str) -> Job:
        """An indexing job as it is now."""
        return await self._send(calls.job(calls.job_id_of(job)))

    async def wait_job(self, job: Job | str, *, timeout: float = 600.0, poll: float = 0.5) -> Job:
        """The job once done; raises its error if it failed, ``IndexBusy`` after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            current = await self.job(job)
            if calls.job_outcome(current) is not None:
                return current
            if time.monotonic() >= deadline:
                raise calls.job_still_running(current, timeout)
            await anyio.sleep(min(poll, max(0.0, deadline - time.monotonic())))

    # -- sessions and checkpoints -----------------------------------------------

    async def start_session(
        self, repo: str, task: str, *, agent: str | None = None, workspace: str | None = None
    ) -> Session:
        """A new agent session on ``repo`` (not retried once it may have arrived)."""
        return await self._send(calls.start_session(repo, task, agent, workspace))

    async def write_checkpoint(
        self,
        session_id: str,
        messages: Messages = (),
        *,
        goal: str | None = None,
        constraints: Sequence[str] | None = None,
        done: Sequence[str] | None = None,
        decisions: Sequence[str] | None = None,
        open_tasks: Sequence[str] | None = None,
        next_step: str | None = None,
        notes: Sequence[str] | None = None,
        budget_tokens: int = 300,
        idempotency_key: str | None = None,
    ) -> Checkpoint:
        """Summarize ``messages`` into the session's next checkpoint (one per call)."""
        fields = {
            "goal": goal, "constraints": constraints, "done": done, "decisions": decisions,
            "open_tasks": open_tasks,
            "next_step": next_step, "notes": notes,
        }  # fmt: skip
        return await self._send(
            calls.write_checkpoint(session_id, messages, fields, budget_tokens, idempotency_key)
        )

    async def checkpoints(self, session_id: str, *, transcript: bool = False) -> list[Checkpoint]:
        """Every checkpoint of the session, by number (transcripts only if asked)."""
        return await self._send(calls.checkpoints(session_id, transcript))

    async def checkpoint(self, session_id: str, number: int | None = None) -> Checkpoint:
        """Checkpoint ``number`` of the session, or its latest."""
        return await self._send(calls.checkpoint(session_id, number))

    async def resume(
        self, session_id: str, *, budget_tokens: int = 2000, refresh: bool = True
    ) -> Resume:
        """What to read after a context reset: summary, code changes since, context.

        With ``refresh``, files changed on disk are re-indexed first.
        """
        return await self._send(calls.resume(session_id, budget_tokens, refresh))

    async def record_event(
        self,
        workspace: str,
        text: str,
        *,
        kind: str | None = None,
        session_id: str | None = None,
        paths: Sequence[str] = (),
        symbols: Sequence[str] = (),
        idempotency_key: str | None = None,
    ) -> WorkspaceEvent:
        """Log a decision or change for the other sessions of ``workspace`` (once per call)."""
        fields = {
            "kind": kind,
            "session_id": session_id,
            "paths": list(paths),
            "symbols": list(symbols),
        }
        return await self._send(calls.record_event(workspace, text, fields, idempotency_key))

    async def workspace_events(
        self, workspace: str, *, after: int = 0, limit: int = 200
    ) -> list[WorkspaceEvent]:
        """The workspace's log after event ``after``, oldest first."""
        return await self._send(calls.workspace_events(workspace, after, limit))

    # -- the server ---------------------------------------------------------------

    async def health(self) -> bool:
        """Whether the process answers (``/healthz``); one try."""
        return await self._send(calls.health())

    async def ready(self) -> Readiness:
        """Whether the server can answer, and what is degraded (``/readyz``); one try."""
        return await self._send(calls.ready())

    async def metrics(self) -> str:
        """Prometheus metrics, as text."""
        return await self._send(calls.metrics())
