"""The one object every adapter drives: index, status, context and expand."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ctxsvc.browsing import Browsing
from ctxsvc.context import (
    DETAILS,
    candidates_of,
    check_patterns,
    expand_blocks,
    filter_hits,
)
from ctxsvc.errors import CtxError, InvalidPath, InvalidRequest, RepoNotFound
from ctxsvc.indexing import Reporter, index_repository
from ctxsvc.limits import MAX_QUERY_CHARS, NAME, check_budget
from ctxsvc.memory import AgentMemory
from ctxsvc.models import (
    ContextPack,
    DeliveredSpan,
    DriftWarning,
    Freshness,
    IndexSummary,
    IndexVersion,
    RepoStatus,
    SessionSummary,
)
from ctxsvc.packing import Block, pack
from ctxsvc.retrieval import RetrievalConfig, retrieve
from ctxsvc.settings import Settings
from ctxsvc.stores.lance import IndexMeta, LanceStore
from ctxsvc.stores.ledger import SessionLedger, validate_session_id
from ctxsvc.stores.locks import FileLock
from ctxsvc.summarizer import Summarizer
from ctxsvc.tokens import TokenCounter
from ctxsvc.view import RepoView
from indexers.discover import discover
from indexers.embed import Embedder

QUERY_CACHE_SIZE = 1024
log = logging.getLogger(__name__)
ADDED_TTL_SECONDS = 2.0  # how stale the list of added files may be (changed files: never)


def repo_name_for(root: Path) -> str:
    """A valid index name derived from a directory name."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", root.name).strip("-.") or "repo"
    return name[:64]


class ContextService(AgentMemory, Browsing):
    """Indexes repositories and answers context queries over them.

    The heavy parts come in through the constructor: the store, the token
    counter, the embedder (optional) and the session ledger (optional).
    ``embedder_error`` says why there is no embedder when loading one
    failed: indexing then degrades to full text and symbols, and says so.
    ``query_embedder`` (default: ``embedder``) embeds queries, typically the
    same model under a shorter timeout; a query it cannot embed is answered
    without the vector signal, and the answer says so.
    Safe to share between threads: views load once per index generation.
    """

    def __init__(
        self,
        settings: Settings,
        store: LanceStore,
        tokens: TokenCounter,
        embedder: Embedder | None = None,
        *,
        embedder_error: str | None = None,
        query_embedder: Embedder | None = None,
        ledger: SessionLedger | None = None,
        retrieval: RetrievalConfig | None = None,
        summarizer: Summarizer | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.tokens = tokens
        self.embedder = embedder
        self.query_embedder = query_embedder
        self.embedder_error = embedder_error
        self.ledger = ledger
        self.summarizer = summarizer
        self.retrieval = retrieval or RetrievalConfig()
        self._views: dict[str, RepoView] = {}
        self._added: dict[str, tuple[float, tuple[str, ...]]] = {}
        self._query_vectors: dict[tuple[str, str], npt.NDArray[np.float32]] = {}
        self._lock = threading.Lock()

    # -- indexing -----------------------------------------------------------

    def index(
        self,
        path: str | Path,
        name: str | None = None,
        *,
        vectors: bool = True,
        reembed: bool = False,
        rebuild: bool = False,
        reporter: Reporter | None = None,
    ) -> IndexSummary:
        """Index (or re-index incrementally) the directory at ``path``."""
        root, name = self.index_target(path, name, rebuild=rebuild)
        if rebuild and self.store.meta(name) is not None:
            self.store.drop(name)
        before = self._watched_view(name)
        status = "complete" if vectors and self.embedder else ("missing" if vectors else "disabled")
        summary = index_repository(
            self.store,
            root,
            name,
            self.settings,
            self.tokens,
            self.embedder if vectors else None,
            vectors=status,
            reembed=reembed,
            reporter=reporter,
        )
        self._added.pop(name, None)
        _trim_heap()  # a run's parse trees and chunks are garbage now
        if before is not None:
            self._log_index_changes(before, self.view(self.resolve(name)))
        return summary

    # -- status -------------------------------------------------------------

    def resolve(self, name_or_path: str) -> IndexMeta:
        """The index named ``name_or_path``, or the one whose root is that directory."""
        meta = self.store.meta(name_or_path) if NAME.match(name_or_path) else None
        if meta is not None:
            return meta
        candidate = _expand(name_or_path)
        if candidate is not None and candidate.is_dir():
            root = str(candidate.resolve())
            for m in self.store.list_meta():
                if m.root == root:
                    return m
        raise RepoNotFound(
            f"no index named or rooted at {name_or_path!r}",
            hint="run `ctxsvc index PATH` first; `ctxsvc status` lists what is indexed",
        )

    def freshness(self, meta: IndexMeta, *, full: bool = False) -> Freshness:
        """Files changed, added or deleted on disk since ``meta`` was indexed.

        Changed and deleted files are found by a stat of every indexed file, on
        every call; added files need a discovery walk, which is cached for
        ``ADDED_TTL_SECONDS`` unless ``full``.
        """
        root = Path(meta.root)
        if not root.is_dir():
            return Freshness((), (), (), (f"root {meta.root} no longer exists",))
        files = self.view(meta).files
        changed: list[str] = []
        deleted: list[str] = []
        base = str(root) + os.sep
        for path, rec in files.items():
            try:
                st = os.stat(base + path)  # not pathlib: this runs on every query
            except OSError:
                if rec.status == "indexed":
                    deleted.append(path)
                continue
            if rec.status == "indexed" and (st.st_size, st.st_mtime_ns) != (rec.size, rec.mtime_ns):
                changed.append(path)
        cached = self._added.get(meta.name)
        if full or cached is None or time.monotonic() - cached[0] > ADDED_TTL_SECONDS:
            try:
                found = discover(root, max_file_bytes=self.settings.max_file_bytes)
            except Exception as exc:  # freshness is advice: a failed walk degrades, never fails
                log.warning("looking for added files failed", exc_info=True)
                why = f"freshness: added files unknown ({type(exc).__name__}: {exc})"
                return Freshness(tuple(sorted(changed)), (), tuple(sorted(deleted)), (why,))
            known = set(files)
            added = tuple(f.path for f in found.files if f.path not in known)
            self._added[meta.name] = (time.monotonic(), added)
        else:
            added = cached[1]
        return Freshness(tuple(sorted(changed)), added, tuple(sorted(deleted)))

    def status(self, name_or_path: str) -> RepoStatus:
        """What is indexed, how fresh it is, and what is degraded."""
        meta = self.resolve(name_or_path)
        fresh = self.freshness(meta, full=True)
        degraded = list(fresh.degraded)
        if meta.vectors != "complete":
            degraded.append(f"vectors {meta.vectors}: vector search is off or partial")
        stats = meta.stats
        return RepoStatus(
            name=meta.name,
            root=meta.root,
            commit=meta.commit,
            indexed_at=meta.indexed_at,
            files=int(stats.get("files", 0)),
            chunks=int(stats.get("chunks", 0)),
            symbols=int(stats.get("symbols", 0)),
            model=meta.model,
            dimension=meta.dimension,
            tokenizer=meta.tokenizer,
            vectors=meta.vectors,
            changed=fresh.changed,
            added=fresh.added,
            deleted=fresh.deleted,
            degraded=tuple(degraded),
            skipped=dict(stats.get("skipped", {})),
            version=meta.generation,
        )

    def repos(self) -> list[IndexMeta]:
        return self.store.list_meta()

    def view(self, meta: IndexMeta) -> RepoView:
        """The in-memory view of ``meta``'s generation, loaded once."""
        with self._lock:
            cached = self._views.get(meta.name)
            if cached is not None and cached.meta.versions == meta.versions:
                return cached
            view = RepoView.load(self.store.reader(meta.name))
            self._views[meta.name] = view
        if cached is not None:
            del cached
            _trim_heap()  # the previous generation is garbage now
        return view

    # -- context ------------------------------------------------------------

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
        """The code most relevant to ``query``, within ``budget_tokens``.

        With ``session_id``, what the session already holds (unchanged) is
        referred to rather than sent again, and what is sent is recorded.
        With ``refresh``, files changed on disk are re-indexed first.
        """
        if not query.strip():
            raise InvalidRequest("the query is empty", hint="describe the task in words")
        if len(query) > MAX_QUERY_CHARS:
            raise InvalidRequest(f"the query is longer than {MAX_QUERY_CHARS} characters")
        check_budget(budget_tokens)
        if detail not in DETAILS:
            raise InvalidRequest(
                f"unknown detail {detail!r}", hint=f"use one of {', '.join(DETAILS)}"
            )
        check_patterns(include, exclude)
        meta, fresh, degraded = self._current(name_or_path, refresh)
        view = self.view(meta)
        qvec, why_not = self._query_vector(meta, query)
        degraded.extend(why_not)
        config = self.retrieval if qvec is not None else replace(self.retrieval, vector=False)
        # Enough candidates to fill the budget with chunks of the target size, twice over.
        limit = max(60, 2 * budget_tokens // self.settings.chunk_target_tokens)
        hits = retrieve(view, query, qvec, config, limit=limit)
        hits = filter_hits(hits, include, exclude)
        cands = candidates_of(
            view, hits, detail, session_id, self.ledger, budget_tokens, config.spread
        )
        watch = self._drift_watch(session_id, meta.name) if session_id else None
        if watch is None or session_id is None:
            return self._pack(
                view, query, cands, budget_tokens,
                detail=detail, fresh=fresh, degraded=degraded, session_id=session_id,
            )  # fmt: skip
        return self._pack_with_drift(
            watch, view, query, cands, budget_tokens,
            detail=detail, fresh=fresh, degraded=degraded, session_id=session_id,
        )  # fmt: skip

    def expand(
        self,
        name_or_path: str,
        *,
        symbol: str | None = None,
        path: str | None = None,
        start_line: int | None = None,
        end_line: int | None = None,
        budget_tokens: int = 4000,
        callers: bool = False,
        callees: bool = False,
        session_id: str | None = None,
    ) -> ContextPack:
        """One symbol or line range, optionally with its callees and callers, within a budget."""
        check_budget(budget_tokens)
        meta, fresh, degraded = self._current(name_or_path, refresh=False)
        view = self.view(meta)
        blocks = expand_blocks(
            view, symbol=symbol, path=path, start_line=start_line, end_line=end_line,
            callers=callers, callees=callees,
        )  # fmt: skip
        query = symbol or f"{path}:{start_line or 1}-{end_line or ''}"
        return self._pack(
            view, query, (blocks, []), budget_tokens, detail="snippets", fresh=fresh,
            degraded=degraded, session_id=session_id,
        )  # fmt: skip

    # -- sessions -----------------------------------------------------------

    def sessions(self, repo: str | None = None) -> list[SessionSummary]:
        return self._ledger().sessions(repo)

    def forget(self, session_id: str, repo: str | None = None) -> int:
        """Forget what a session received: the next answers send everything again."""
        return self._ledger().forget(validate_session_id(session_id), repo)

    # -- internals ----------------------------------------------------------

    def _current(self, name_or_path: str, refresh: bool) -> tuple[IndexMeta, Freshness, list[str]]:
        meta = self.resolve(name_or_path)
        fresh = self.freshness(meta)
        if refresh and fresh.all:
            self.index(meta.root, meta.name, vectors=meta.vectors != "disabled")
            meta = self.resolve(meta.name)
            fresh = self.freshness(meta, full=True)
        return meta, fresh, list(fresh.degraded)

    def _query_vector(
        self, meta: IndexMeta, query: str
    ) -> tuple[npt.NDArray[np.float32] | None, list[str]]:
        if not self.retrieval.vector:
            return None, []
        if meta.vectors == "disabled" or not meta.model:
            return None, ["vector: this index was built without vectors"]
        if self.embedder is None:
            return None, [
                f"vector: no embedding model loaded ({self.embedder_error or 'none configured'})"
            ]
        if meta.model != self.embedder.name:
            return None, [
                f"vector: the index holds {meta.model} vectors, the service runs {self.embedder.name}"
            ]
        notes = (
            []
            if meta.vectors == "complete"
            else [f"vector: only some chunks have vectors ({meta.vectors})"]
        )
        try:
            return self._embed_query(self.query_embedder or self.embedder, query), notes
        except Exception as exc:  # a failing or stalled model degrades the answer, never fails it
            return None, [f"vector: the query could not be embedded ({type(exc).__name__}: {exc})"]

    def _embed_query(self, embedder: Embedder, query: str) -> npt.NDArray[np.float32]:
        # Agents repeat queries (other budgets, other detail levels): embed once.
        key = (embedder.name, query)
        with self._lock:
            cached = self._query_vectors.get(key)
        if cached is None:
            cached = np.asarray(embedder.embed([query])[0], dtype=np.float32)
            with self._lock:
                self._query_vectors[key] = cached
                while len(self._query_vectors) > QUERY_CACHE_SIZE:
                    self._query_vectors.pop(next(iter(self._query_vectors)))
        return cached

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
        blocks, already = cands
        version = IndexVersion(
            commit=view.meta.commit,
            indexed_at=view.meta.indexed_at,
            generation=view.meta.generation,
            changed_since=fresh.all,
        )
        result = pack(
            view.meta.name, query, blocks, budget_tokens, self.tokens, detail=detail, index=version,
            degraded=degraded, session_id=session_id, already_sent=already, preface=preface,
            warnings=warnings,
        )  # fmt: skip
        return self._record(result, view.meta.name)

    def _record(self, result: ContextPack, repo: str) -> ContextPack:
        """Record in the ledger what ``result`` delivers to its session, if any."""
        if result.session_id is None or self.ledger is None:
            return result
        spans = [
            DeliveredSpan(i.path, i.start_line, i.end_line, i.content_hash, i.tokens)
            for i in result.items
            if i.content_hash
        ]
        try:
            self.ledger.record(result.session_id, repo, spans)
        except CtxError as exc:  # the answer is still good; say it was not recorded
            result = replace(result, degraded=(*result.degraded, f"session: not recorded ({exc})"))
        return result

    # -- serving (used by the HTTP API) ----------------------------------------

    def index_target(
        self, path: str | Path, name: str | None = None, *, rebuild: bool = False
    ) -> tuple[Path, str]:
        """The root and index name that :meth:`index` would use, checked without indexing.

        Raises what ``index`` raises for a bad path or name, so that an adapter
        can refuse a request before it starts a background run.
        """
        root = _directory(path)
        name = name or repo_name_for(root)
        if not NAME.match(name):
            raise InvalidRequest(
                f"invalid index name {name!r}",
                hint="use letters, digits, '.', '_' or '-', 64 characters at most",
            )
        existing = self.store.meta(name)
        if existing is not None and Path(existing.root) != root and not rebuild:
            raise InvalidRequest(
                f"the name {name!r} already indexes {existing.root}",
                hint="choose another name, or rebuild (--rebuild) to re-point it",
            )
        return root, name

    def drop(self, name_or_path: str) -> str:
        """Delete an index and forget its cached view; returns its name.

        Fails with :class:`IndexBusy` while a run holds the repository's lock,
        so an index is never deleted under a running indexer.
        """

        meta = self.resolve(name_or_path)
        with FileLock(self.settings.locks_path / f"{meta.name}.lock", f"index {meta.name!r}"):
            self.store.drop(meta.name)
        with self._lock:
            self._views.pop(meta.name, None)
        self._added.pop(meta.name, None)
        return meta.name


def _trim_heap() -> None:
    """Hand freed heap pages back to the OS (glibc's malloc_trim); nothing elsewhere.

    Without it a long-running server keeps the high-water mark of every
    re-index and view load, and its RSS climbs in steps.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _directory(path: str | Path) -> Path:
    p = _expand(path)
    if p is None:
        raise InvalidPath(f"{path} names an unknown user's home directory")
    if not p.exists():
        raise InvalidPath(f"{p} does not exist")
    if not p.is_dir():
        raise InvalidPath(f"{p} is not a directory", hint="give the repository's root directory")
    return p.resolve()


def _expand(path: str | Path) -> Path | None:
    """``path`` with ``~`` expanded; None when it names an unknown user (``~nobody``)."""
    try:
        return Path(path).expanduser()
    except RuntimeError:
        return None
