"""``ContextService``: the one object the CLI, the HTTP API, the MCP server and the
benchmarks drive, a thin facade over five parts.

- the catalog (``ctxsvc.catalog``): resolve, index, views, freshness, status, drop;
- the query side (``ctxsvc.queries``): context, expand, search, map, symbols, file lines;
- agent memory (``ctxsvc.memory``): sessions, checkpoints, resume;
- the workspace log (``ctxsvc.workspaces``): events, and drift for the other two;
- the job runner (``ctxsvc.jobs``): index jobs a server runs in the background.

Build it with :func:`ctxsvc.compose.build_service`. Each method here is one
delegation; the parts hold the logic, and the method's documentation.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar, final

from ctxsvc.catalog import Catalog
from ctxsvc.indexers.embed import Embedder
from ctxsvc.jobs import JobRunner
from ctxsvc.memory import Memory
from ctxsvc.models import Stored
from ctxsvc.queries import Queries
from ctxsvc.settings import Settings
from ctxsvc.stores.lance import LanceStore
from ctxsvc.tokens import TokenCounter
from ctxsvc.workspaces import WorkspaceLog


@final  # its methods are the parts' own, bound here: a subclass could not override them
class ContextService:
    """Indexes repositories, answers context queries, keeps agent memory.

    Safe to share between threads.
    """

    def __init__(
        self,
        catalog: Catalog,
        queries: Queries,
        memory: Memory,
        workspaces: WorkspaceLog,
        jobs: JobRunner,
    ) -> None:
        self.catalog = catalog
        self.queries = queries
        self.memory = memory
        self.workspaces = workspaces
        self.jobs = jobs
        # catalog
        self.index = catalog.index
        self.index_target = catalog.index_target
        self.repos = catalog.repos
        self.names = catalog.names
        self.resolve = catalog.resolve
        self.view = catalog.view
        self.status = catalog.status
        self.damaged = catalog.damaged
        # queries
        self.context = queries.context
        self.expand = queries.expand
        self.search = queries.search
        self.repo_map = queries.repo_map
        self.symbol_uses = queries.symbol_uses
        self.impact = queries.impact
        self.references = queries.references
        self.definition = queries.definition
        self.file_lines = queries.file_lines
        # memory
        self.start_session = memory.start_session
        self.session = memory.session
        self.sessions = memory.sessions
        self.recent_sessions = memory.recent_sessions
        self.deliveries = memory.deliveries
        self.forget = memory.forget
        self.store_checkpoint = memory.store_checkpoint
        self.write_checkpoint = _first(
            memory.store_checkpoint,
            "write_checkpoint",
            "The checkpoint that store_checkpoint stores.",
        )
        self.checkpoint = memory.checkpoint
        self.checkpoints = memory.checkpoints
        self.resume = memory.resume
        # workspace log
        self.record_event = workspaces.record_event
        self.workspace_events = workspaces.events
        # jobs
        self.submit_job = jobs.submit
        self.job = jobs.get
        self.recent_jobs = jobs.recent
        self.start_jobs = jobs.start
        self.stop_jobs = jobs.shutdown
        self.drop = jobs.drop  # the index, and its queued jobs

    @property
    def settings(self) -> Settings:
        return self.catalog.settings

    @property
    def store(self) -> LanceStore:
        return self.catalog.store

    @property
    def tokens(self) -> TokenCounter:
        return self.catalog.tokens

    @property
    def embedder(self) -> Embedder | None:
        """The model that embeds chunks and queries; None when none loaded."""
        return self.queries.vectors.embedder

    @property
    def embedder_error(self) -> str | None:
        """Why no model is loaded, when loading one failed."""
        return self.queries.vectors.embedder_error


P = ParamSpec("P")
T = TypeVar("T")


def _first(call: Callable[P, Stored[T]], name: str, doc: str) -> Callable[P, T]:
    """``call`` answering only the record it stored, as ``name``."""

    @functools.wraps(call)
    def first(*args: P.args, **kwargs: P.kwargs) -> T:
        return call(*args, **kwargs).record

    first.__name__ = first.__qualname__ = name
    first.__doc__ = doc
    return first
