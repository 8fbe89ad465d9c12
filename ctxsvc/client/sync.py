"""The blocking client of the ctxsvc HTTP API, :class:`Client`; see ``ctxsvc.client``."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Self, TypeVar

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


class Client(BaseClient):
    """A blocking client of a ``ctxsvc serve`` at ``base_url``.

    ``base_url``: the server's base URL. Left out, it is ``$CTXSVC_URL``, else the
    address ``ctxsvc serve`` binds by the same environment: ``http://$CTXSVC_HOST:$CTXSVC_PORT``
    (127.0.0.1 and 8765 when unset; a server on 0.0.0.0 is reached at 127.0.0.1).
    ``token``: the server's ``CTXSVC_TOKEN``, sent as a bearer token. Left out (None),
    ``$CTXSVC_TOKEN`` if set and the URL is the environment's too (never sent to a URL
    given here); ``""`` sends none. Arguments win over the environment,
    which is read once, here (not the server's TOML file: give those values as arguments).
    A malformed URL (or ``CTXSVC_PORT``) raises :class:`ctxsvc.errors.ConfigError`.
    ``timeout``: seconds per try (the policy's ``timeout`` bounds the whole call).
    ``transport``: an ``httpx`` transport, e.g. ``httpx.MockTransport`` in tests.
    Safe to share between threads; close it (or use ``with``) when done.
    """

    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, token, timeout, retry, headers)
        self._http = httpx.Client(
            base_url=self.base_url, headers=self._headers, timeout=timeout, transport=transport
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _send(self, call: Call[T]) -> T:
        attempts = self._attempts(call)
        while True:
            request = call.request(self._http, attempts.next_timeout())
            try:
                response = self._http.send(request)
            except httpx.RequestError as exc:
                outcome: T | Wait = attempts.failed(exc)
            else:
                outcome = attempts.answered(response)
            if not isinstance(outcome, Wait):
                return outcome
            time.sleep(outcome.seconds)

    # -- context --------------------------------------------------------------

    def context(
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
        return self._send(
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

    def expand(
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
        return self._send(call)

    def search(
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
        return self._send(calls.search(repo, query, limit, branch, repos))

    def repo_map(self, repo: str, *, budget_tokens: int = 2000) -> ContextPack:
        """Files by PageRank over the code graph, with their central symbols."""
        return self._send(calls.repo_map(repo, budget_tokens))

    def symbol_uses(self, repo: str, name: str, *, limit: int = 100) -> SymbolUses:
        """Definitions with this (qualified) name, and references to it."""
        return self._send(calls.symbol_uses(repo, name, limit))

    def impact(self, repo: str, name: str, *, depth: int = 2, limit: int = 100) -> Impact:
        """Who depends on a symbol, grouped by depth, each link resolved or by name."""
        return self._send(calls.impact(repo, name, depth, limit))

    def references(self, repo: str, name: str, *, limit: int = 100) -> Links:
        """The uses of a symbol, resolved ones first, each with how it was resolved."""
        return self._send(calls.references(repo, name, limit))

    def definition(
        self, repo: str, name: str, *, path: str | None = None, line: int | None = None
    ) -> Links:
        """What ``name`` used at ``path:line`` means (go to definition); every definition
        of the name without a place."""
        return self._send(calls.definition(repo, name, path, line))

    def file_lines(
        self, repo: str, path: str, *, start: int | None = None, end: int | None = None
    ) -> FileLines:
        """Lines ``start..end`` of an indexed file, from the index."""
        return self._send(calls.file_lines(repo, path, start, end))

    # -- repositories and jobs ---------------------------------------------------

    def repos(self) -> list[RepoInfo]:
        """Every index the server serves."""
        return self._send(calls.repos())

    def status(self, repo: str) -> RepoStatus:
        """What is indexed under ``repo``, how fresh it is, what is degraded."""
        return self._send(calls.status(repo))

    def index(self, path: str, *, name: str | None = None, vectors: bool = True) -> Job:
        """Register the repository at ``path`` (on the server) and index it as a job."""
        return self._send(calls.index(path, name, vectors))

    def refresh(self, repo: str) -> Job:
        """Re-index ``repo`` incrementally, as a job."""
        return self._send(calls.refresh(repo))

    def drop(self, repo: str) -> None:
        """Delete the index of ``repo`` (not the repository)."""
        self._send(calls.drop(repo))

    def job(self, job: Job | str) -> Job:
        """An indexing job as it is now."""
        return self._send(calls.job(calls.job_id_of(job)))

    def wait_job(self, job: Job | str, *, timeout: float = 600.0, poll: float = 0.5) -> Job:
        """The job once done; raises its error if it failed, ``IndexBusy`` after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            current = self.job(job)
            if calls.job_outcome(current) is not None:
                return current
            if time.monotonic() >= deadline:
                raise calls.job_still_running(current, timeout)
            time.sleep(min(poll, max(0.0, deadline - time.monotonic())))

    # -- sessions and checkpoints -----------------------------------------------

    def start_session(
        self, repo: str, task: str, *, agent: str | None = None, workspace: str | None = None
    ) -> Session:
        """A new agent session on ``repo`` (not retried once it may have arrived)."""
        return self._send(calls.start_session(repo, task, agent, workspace))

    def write_checkpoint(
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
        """Summarize ``messages`` into the session's next checkpoint.

        Every attempt carries one ``Idempotency-Key`` (``idempotency_key``, or
        one made for this call), so a retried write stores one checkpoint.
        """
        fields = {
            "goal": goal, "constraints": constraints, "done": done, "decisions": decisions,
            "open_tasks": open_tasks,
            "next_step": next_step, "notes": notes,
        }  # fmt: skip
        return self._send(
            calls.write_checkpoint(session_id, messages, fields, budget_tokens, idempotency_key)
        )

    def checkpoints(self, session_id: str, *, transcript: bool = False) -> list[Checkpoint]:
        """Every checkpoint of the session, by number (transcripts only if asked)."""
        return self._send(calls.checkpoints(session_id, transcript))

    def checkpoint(self, session_id: str, number: int | None = None) -> Checkpoint:
        """Checkpoint ``number`` of the session, or its latest."""
        return self._send(calls.checkpoint(session_id, number))

    def resume(self, session_id: str, *, budget_tokens: int = 2000, refresh: bool = True) -> Resume:
        """What to read after a context reset: summary, code changes since, context.

        With ``refresh``, files changed on disk are re-indexed first.
        """
        return self._send(calls.resume(session_id, budget_tokens, refresh))

    def record_event(
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
        return self._send(calls.record_event(workspace, text, fields, idempotency_key))

    def workspace_events(
        self, workspace: str, *, after: int = 0, limit: int = 200
    ) -> list[WorkspaceEvent]:
        """The workspace's log after event ``after``, oldest first."""
        return self._send(calls.workspace_events(workspace, after, limit))

    # -- the server ---------------------------------------------------------------

    def health(self) -> bool:
        """Whether the process answers (``/healthz``); one try."""
        return self._send(calls.health())

    def ready(self) -> Readiness:
        """Whether the server can answer, and what is degraded (``/readyz``); one try."""
        return self._send(calls.ready())

    def metrics(self) -> str:
        """Prometheus metrics, as text."""
        return self._send(calls.metrics())
