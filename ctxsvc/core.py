"""What the parts of ``ContextService`` need of each other, declared once.

``ContextService`` (``ctxsvc.service``) is one object built from mixins, one
concept each: browsing an index (``ctxsvc.browsing``), the workspace log
(``ctxsvc.coordination``), sessions and checkpoints (``ctxsvc.memory``). They
reach the index and the packer through the methods declared here, which the
service implements.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from ctxsvc.models import ContextPack, DeliveredSpan, DriftWarning, Freshness
from ctxsvc.packing import Block
from ctxsvc.retrieval import RetrievalConfig
from ctxsvc.settings import Settings
from ctxsvc.stores.lance import IndexMeta, LanceStore
from ctxsvc.stores.ledger import SessionLedger
from ctxsvc.tokens import TokenCounter
from ctxsvc.view import RepoView


class ServiceCore(ABC):
    """The state and the core operations every part of the service shares."""

    settings: Settings
    store: LanceStore
    tokens: TokenCounter
    ledger: SessionLedger | None
    retrieval: RetrievalConfig
    _lock: threading.Lock

    @abstractmethod
    def resolve(self, name_or_path: str) -> IndexMeta:
        """The index named ``name_or_path``, or the one whose root is that directory."""

    @abstractmethod
    def view(self, meta: IndexMeta) -> RepoView:
        """The loaded index ``meta``."""

    @abstractmethod
    def _pack(
        self,
        view: RepoView,
        query: str,
        cands: tuple[list[Block], list[DeliveredSpan]],
        budget_tokens: int,
        *,
        detail: str,
        fresh: Freshness,
        degraded: list[str],
        session_id: str | None,
        preface: str = "",
        warnings: Sequence[DriftWarning] = (),
    ) -> ContextPack:
        """Pack ``cands`` within the budget (and record it for ``session_id``)."""

    @abstractmethod
    def _record(self, result: ContextPack, repo: str) -> ContextPack:
        """Record in the ledger what ``result`` delivers to its session."""

    @abstractmethod
    def context(
        self,
        name_or_path: str,
        query: str,
        budget_tokens: int,
        *,
        detail: str = "snippets",
        session_id: str | None = None,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        refresh: bool = False,
    ) -> ContextPack:
        """The code most relevant to ``query``, within ``budget_tokens``."""

    @abstractmethod
    def _current(self, name_or_path: str, refresh: bool) -> tuple[IndexMeta, Freshness, list[str]]:
        """The index, how fresh it is, and what is degraded (re-indexed first if ``refresh``)."""

    @abstractmethod
    def _query_vector(
        self, meta: IndexMeta, query: str
    ) -> tuple[npt.NDArray[np.float32] | None, list[str]]:
        """The query's vector for ``meta``, or None and why not."""
