"""The one object every adapter drives: index, status, context and expand."""

from __future__ import annotations

import fnmatch
import glob
import json
import os
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ctxsvc.checkpoints import (
    MIN_BUDGET,
    IndexFacts,
    anchor_changes,
    check_messages,
    extract,
    fit,
    fit_lines,
    render_changes,
    resume_query,
    text_of,
)
from ctxsvc.context import DETAILS, candidates, expand_blocks, find_symbols, ranked_files
from ctxsvc.errors import CtxError, InvalidPath, InvalidRequest, NotFound, RepoNotFound
from ctxsvc.graph import personalized_pagerank
from ctxsvc.indexing import Reporter, index_repository
from ctxsvc.models import (
    Checkpoint,
    ContextItem,
    ContextPack,
    DeliveredSpan,
    DriftWarning,
    Hit,
    IndexSummary,
    IndexVersion,
    Reference,
    RepoStatus,
    Resume,
    Session,
    SessionSummary,
    Summary,
    Symbol,
    WorkspaceEvent,
    span_hash,
)
from ctxsvc.packing import Block, pack
from ctxsvc.retrieval import RetrievalConfig, retrieve
from ctxsvc.sessions import split_already_sent
from ctxsvc.settings import Settings
from ctxsvc.stores.checkpoints import CheckpointStore
from ctxsvc.stores.events import MAX_TEXT, EventLog
from ctxsvc.stores.lance import IndexMeta, LanceStore
from ctxsvc.stores.ledger import SessionLedger, validate_session_id
from ctxsvc.stores.locks import FileLock
from ctxsvc.tokens import TokenCounter
from ctxsvc.view import RepoView
from ctxsvc.workspace import Seen, describe, drift, index_event_text, index_events, render_warnings
from indexers.discover import discover
from indexers.embed import Embedder

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_BUDGET = 200_000
MAX_QUERY_CHARS = 8_000
MAX_PATTERNS = 64
QUERY_CACHE_SIZE = 1024
MAX_LOGGED = 20  # workspace events shown on resume
ADDED_TTL_SECONDS = 2.0  # how stale the list of added files may be (changed files: never)


def repo_name_for(root: Path) -> str:
    """A valid index name derived from a directory name."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", root.name).strip("-.") or "repo"
    return name[:64]


@dataclass(frozen=True)
class Freshness:
    changed: tuple[str, ...]
    added: tuple[str, ...]
    deleted: tuple[str, ...]
    degraded: tuple[str, ...] = ()

    @property
    def all(self) -> tuple[str, ...]:
        return tuple(sorted(self.changed + self.added + self.deleted))


class ContextService:
    """Indexes repositories and answers context queries over them.

    The heavy parts come in through the constructor: the store, the token
    counter, the embedder (optional) and the session ledger (optional).
    ``embedder_error`` says why there is no embedder when loading one
    failed: indexing then degrades to full text and symbols, and says so.
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
        ledger: SessionLedger | None = None,
        retrieval: RetrievalConfig | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.tokens = tokens
        self.embedder = embedder
        self.embedder_error = embedder_error
        self.ledger = ledger
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
        if before is not None:
            self._log_index_changes(before, self.view(self.resolve(name)))
        return summary

    def _watched_view(self, name: str) -> RepoView | None:
        """The current view of ``name`` when sessions in a workspace work on it."""
        meta = self.store.meta(name)
        if meta is None or self.ledger is None:
            return None
        return self.view(meta) if self._checkpoint_store().has_workspaces(name) else None

    def _log_index_changes(self, old: RepoView, new: RepoView) -> None:
        """Log symbols and files a re-index saw renamed, moved or removed."""
        changes = index_events(_hashes(old), old.symbols, _hashes(new), new.symbols)
        log = self._event_log()
        for d in changes:
            log.append(
                WorkspaceEvent(
                    seq=0, workspace=None, repo=new.meta.name, session_id=None, agent=None,
                    source="index", kind=d.kind or "changed", text=index_event_text(d),
                    created_at="", paths=d.paths, symbols=d.symbols, new_path=d.new_path,
                    new_symbol=d.new_symbol,
                )
            )  # fmt: skip

    # -- status -------------------------------------------------------------

    def resolve(self, name_or_path: str) -> IndexMeta:
        """The index named ``name_or_path``, or the one whose root is that directory."""
        meta = self.store.meta(name_or_path) if _NAME.match(name_or_path) else None
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
            found = discover(root, max_file_bytes=self.settings.max_file_bytes)
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
        _check_budget(budget_tokens)
        if detail not in DETAILS:
            raise InvalidRequest(
                f"unknown detail {detail!r}", hint=f"use one of {', '.join(DETAILS)}"
            )
        _check_patterns(include, exclude)
        meta, fresh, degraded = self._current(name_or_path, refresh)
        view = self.view(meta)
        qvec, why_not = self._query_vector(meta, query)
        degraded.extend(why_not)
        config = self.retrieval if qvec is not None else replace(self.retrieval, vector=False)
        # Enough candidates to fill the budget with chunks of the target size, twice over.
        limit = max(60, 2 * budget_tokens // self.settings.chunk_target_tokens)
        hits = retrieve(view, query, qvec, config, limit=limit)
        hits = _filter(hits, include, exclude)
        cands = candidates_of(
            view, hits, detail, session_id, self.ledger, budget_tokens, config.spread
        )
        watch = self._drift_watch(session_id, meta.name) if session_id else None
        if watch is None:
            return self._pack(
                view, query, cands, budget_tokens,
                detail=detail, fresh=fresh, degraded=degraded, session_id=session_id,
            )  # fmt: skip
        # Warnings come first in the text, within the budget: reserve room for
        # those the candidates would raise, then keep those the answer raises.
        seen, events = watch
        blocks, already = cands
        held = [s.path for s in already]
        when = view.meta.indexed_at
        warnings = drift(
            seen, events, {b.path for b in blocks} | set(held),
            "\n".join([query, *(b.lines_text() for b in blocks)]),
            delivered={b.path for b in blocks}, indexed_at=when,
        )  # fmt: skip
        for _ in range(3):
            preface = render_warnings(warnings, self.tokens, budget_tokens // 4)
            result = self._pack(
                view, query, cands, budget_tokens, detail=detail, fresh=fresh,
                degraded=degraded, session_id=None, preface=preface, warnings=warnings,
            )  # fmt: skip
            raised = drift(
                seen, events, {i.path for i in result.items} | set(held),
                "\n".join([query, *(i.text for i in result.items)]),
                delivered={i.path for i in result.items}, indexed_at=when,
            )  # fmt: skip
            if {w.event.seq for w in raised} == {w.event.seq for w in warnings}:
                break
            warnings = raised
        result = self._record(replace(result, session_id=session_id), view.meta.name)
        self._event_log().mark_warned(session_id or "", (w.event.seq for w in warnings))
        return result

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
        _check_budget(budget_tokens)
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

    def _ledger(self) -> SessionLedger:
        if self.ledger is None:
            raise InvalidRequest("sessions are not enabled in this service")
        return self.ledger

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
        return self._embed_query(self.embedder, query), notes

    def _embed_query(self, embedder: Embedder, query: str) -> npt.NDArray[np.float32]:
        # Agents repeat queries (other budgets, other detail levels): embed once.
        key = (embedder.name, query)
        with self._lock:
            cached = self._query_vectors.get(key)
        if cached is None:
            cached = embedder.embed([query])[0]
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
        if not _NAME.match(name):
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

    def search(
        self, name_or_path: str, query: str, limit: int = 20
    ) -> tuple[list[tuple[str, float]], list[tuple[Symbol, float]], tuple[str, ...]]:
        """Ranked files and symbols for ``query``, with scores, without packing.

        Runs the same retrieval as :meth:`context`. A file scores by its two
        best chunks (as for the ``map`` and ``full`` details); a symbol by the
        best chunk that defines it. Returns ``(files, symbols, degraded)``,
        at most ``limit`` of each.
        """

        if not query.strip():
            raise InvalidRequest("the query is empty", hint="describe the task in words")
        if len(query) > MAX_QUERY_CHARS:
            raise InvalidRequest(f"the query is longer than {MAX_QUERY_CHARS} characters")
        if not 1 <= limit <= 200:
            raise InvalidRequest(f"limit must be between 1 and 200, got {limit}")
        meta, _, degraded = self._current(name_or_path, refresh=False)
        view = self.view(meta)
        qvec, why_not = self._query_vector(meta, query)
        degraded.extend(why_not)
        config = self.retrieval if qvec is not None else replace(self.retrieval, vector=False)
        hits = retrieve(view, query, qvec, config, limit=max(60, 3 * limit))
        best: dict[tuple[str, str], float] = {}
        for h in hits:
            for q in h.chunk.symbols:
                key = (h.chunk.path, q)
                best[key] = max(best.get(key, h.score), h.score)
        paths = {p for p, _ in best}
        defs = {(s.path, s.qualname): s for s in view.symbols if s.path in paths}
        symbols = sorted(
            ((defs[k], score) for k, score in best.items() if k in defs), key=lambda x: -x[1]
        )
        return ranked_files(hits)[:limit], symbols[:limit], tuple(degraded)

    def repo_map(self, name_or_path: str, budget_tokens: int = 2000) -> ContextPack:
        """A map of the repository without a query, within ``budget_tokens``.

        Files rank by PageRank over the whole code graph (uniform restart: the
        code most referenced, directly or not, comes first); each line names the
        file's most central symbols. Files outside the graph come last.
        """

        _check_budget(budget_tokens)
        meta, fresh, degraded = self._current(name_or_path, refresh=False)
        view = self.view(meta)
        rank = personalized_pagerank(view.graph, dict.fromkeys(range(len(view.graph)), 1.0))
        hits = [
            Hit(c, float(sum(rank[n] for n in nodes)), ("pagerank",))
            for c, nodes in zip(view.chunks, view.chunk_nodes, strict=True)
        ]
        hits.sort(key=lambda h: -h.score)
        # Map lines are a few dozen tokens: more candidates than this never fit.
        hits = hits[: max(200, budget_tokens // 4)]
        blocks = candidates(view, hits, "map")
        return self._pack(
            view, f"map of {meta.name}", (blocks, []), budget_tokens, detail="map",
            fresh=fresh, degraded=degraded, session_id=None,
        )  # fmt: skip

    def symbol_uses(self, name_or_path: str, name: str) -> tuple[list[Symbol], list[Reference]]:
        """Definitions whose qualified name (or else name) is ``name``, and references to it."""

        if not name.strip() or len(name) > 512:
            raise InvalidRequest("a symbol name of 1 to 512 characters is required")
        view = self.view(self.resolve(name_or_path))
        short = name.rsplit(".", 1)[-1]
        return find_symbols(view, name), list(view.refs_by_name.get(short, []))

    def file_lines(
        self, name_or_path: str, path: str, start: int | None = None, end: int | None = None
    ) -> tuple[ContextItem, int] | None:
        """Lines ``start..end`` of an indexed file, as indexed, and its line count.

        Only the index is read, never the disk, so nothing outside what was
        indexed can be returned. None when ``path`` is not an indexed file.
        """

        view = self.view(self.resolve(name_or_path))
        lines = view.file_lines(path)
        if not lines:
            return None
        total = max(lines)
        first, last = start or 1, min(end or total, total)
        if not 1 <= first <= total or last < first:
            raise InvalidRequest(
                f"invalid line range {start or 1}-{end or total} for {path} ({total} lines)"
            )
        text = "\n".join(lines.get(n, "") for n in range(first, last + 1))
        item = ContextItem(
            path=path, start_line=first, end_line=last,
            symbol=None, kind="file", score=0.0, tokens=self.tokens.count(text), text=text,
            content_hash=span_hash(text),
        )  # fmt: skip
        return item, total

    # -- checkpoints ----------------------------------------------------------

    def start_session(
        self, repo: str, task: str, agent: str | None = None, workspace: str | None = None
    ) -> Session:
        """A new session on the indexed repository ``repo`` for ``task``."""
        if not task.strip() or len(task) > MAX_QUERY_CHARS:
            raise InvalidRequest(f"the task must be 1 to {MAX_QUERY_CHARS} characters")
        for label, value in (("agent", agent), ("workspace", workspace)):
            if value is not None and not _NAME.match(value):
                raise InvalidRequest(
                    f"invalid {label} {value!r}", hint="use letters, digits, '.', '_' or '-'"
                )
        meta = self.resolve(repo)
        return self._checkpoint_store().create_session(meta.name, task, agent, workspace)

    def session(self, session_id: str) -> Session:
        return self._checkpoint_store().session(session_id)

    def write_checkpoint(
        self,
        session_id: str,
        messages: list[dict[str, object]] | None = None,
        fields: dict[str, object] | None = None,
        idempotency_key: str | None = None,
        budget_tokens: int = 300,
    ) -> Checkpoint:
        """Summarize the transcript since the last checkpoint (and ``fields``) and store it.

        The summary carries everything of the previous checkpoint forward and
        fits ``budget_tokens``. With an ``idempotency_key`` already used in this
        session, the checkpoint written then is returned and nothing is written.
        """
        store = self._checkpoint_store()
        session = store.session(session_id)
        _check_budget(budget_tokens)
        if budget_tokens < MIN_BUDGET:
            raise InvalidRequest(f"a summary needs a budget of at least {MIN_BUDGET} tokens")
        msgs = check_messages(messages or [])
        if not msgs and not fields:
            raise InvalidRequest(
                "nothing to checkpoint",
                hint="send the messages since the last checkpoint, fields, or both",
            )
        index = self._index_facts(session.repo)
        previous = store.get(session_id)
        state = extract(
            msgs, fields, index, task=session.task, previous=previous.state if previous else None
        )
        summary = fit(state, budget_tokens, self.tokens)
        texts = [text_of(m) for m in msgs]
        texts += [json.dumps(m.get("tool_calls")) for m in msgs if m.get("tool_calls")]
        events = _checkpoint_events(session, previous.state if previous else None, state)
        checkpoint, _ = store.add(
            session_id, summary, state, msgs, sum(self.tokens.count_many(texts)),
            idempotency_key, dict(fields or {}), events,
        )  # fmt: skip
        return checkpoint

    def checkpoint(self, session_id: str, number: int | None = None) -> Checkpoint:
        """Checkpoint ``number`` of the session, or its latest."""
        found = self._checkpoint_store().get(session_id, number)
        if found is None:
            which = f"checkpoint {number}" if number is not None else "a checkpoint"
            raise NotFound(
                f"session {session_id!r} has no {which}",
                hint="list them with `ctxsvc checkpoint list SESSION`",
            )
        return found

    def checkpoints(self, session_id: str) -> list[Checkpoint]:
        return self._checkpoint_store().list(session_id)

    def resume(self, session_id: str, budget_tokens: int = 2000) -> Resume:
        """The latest summary, what changed in the anchored code since, and fresh context.

        Changes compare the checkpoint's anchors with the index as it is now
        (re-index first to see edits on disk; files changed since the last index
        are named in ``degraded``). The fresh context is restricted to anchored
        files still present, within what the budget leaves.
        """
        _check_budget(budget_tokens)
        session = self.session(session_id)
        cp = self.checkpoint(session_id)
        meta = self.resolve(session.repo)
        view = self.view(meta)
        files = {p: r.sha256 for p, r in view.files.items() if r.status == "indexed"}
        changes = tuple(anchor_changes(cp.state.files, files, view.symbols))
        count = self.tokens.count
        title = f"# Resume: session {session.id} on {session.repo}, checkpoint {cp.number} ({cp.created_at})"
        warnings, logged = self._resume_drift(session, cp)
        changed = render_changes(changes) + _render_log(logged)
        summary = cp.summary.rendered
        room = budget_tokens - count(title) - count(changed) - 4
        if count(summary) > room:
            summary = fit(cp.state, max(MIN_BUDGET, room), self.tokens).rendered
        header = fit_lines(f"{title}\n\n{summary}\n\n{changed}", budget_tokens, count)
        heading = "\n\n## Fresh context\n"
        room = budget_tokens - count(header) - count(heading) - 2
        present = {c.new_path for c in changes if c.new_path}
        present |= {a.path for a in cp.state.files if a.path in files}
        edited_first = sorted(
            present, key=lambda p: not any(a.edited for a in cp.state.files if a.path == p)
        )
        include = [glob.escape(p) for p in edited_first[:MAX_PATTERNS]] or None
        pack = None
        degraded: list[str] = []
        if room >= 50:
            pack = self.context(
                session.repo, resume_query(cp.state, session.task), room, include=include
            )
            degraded.extend(pack.degraded)
            if pack.index and pack.index.changed_since:
                degraded.append(
                    f"{len(pack.index.changed_since)} files changed on disk since the last index;"
                    " changes are reported against the index: run `ctxsvc index` to see them"
                )
        rendered = header + (heading + pack.rendered if pack and pack.items else "")
        rendered = fit_lines(rendered, budget_tokens, count)
        return Resume(
            session=session, checkpoint=cp, changes=changes, context=pack, rendered=rendered,
            tokens_used=count(rendered), budget_tokens=budget_tokens, degraded=tuple(degraded),
            warnings=tuple(warnings), workspace_events=tuple(logged),
        )  # fmt: skip

    def _resume_drift(
        self, session: Session, cp: Checkpoint
    ) -> tuple[list[DriftWarning], list[WorkspaceEvent]]:
        """Warnings on the checkpoint's anchors, and what other sessions logged since it.

        After a reset the agent knows only the checkpoint, so everything after
        it counts as unseen (earlier warnings are not remembered).
        """
        watch = self._drift_watch(session.id, session.repo, since=cp.created_at)
        if watch is None:
            return [], []
        seen, events = watch
        anchored = {a.path for a in cp.state.files}
        names = " ".join(a.symbol for a in cp.state.files if a.symbol)
        warnings = drift(seen, events, anchored, f"{cp.state.goal}\n{names}")
        flagged = {w.event.seq for w in warnings}
        logged = [
            e for e in events
            if e.session_id != session.id and (e.source != "index" or e.seq in flagged)
        ]  # fmt: skip
        return warnings, logged[-MAX_LOGGED:]

    # -- workspaces: parallel sessions ---------------------------------------------

    def record_event(
        self,
        workspace: str,
        text: str,
        *,
        kind: str | None = None,
        session_id: str | None = None,
        agent: str | None = None,
        paths: Sequence[str] = (),
        symbols: Sequence[str] = (),
        new_path: str | None = None,
        new_symbol: str | None = None,
        idempotency_key: str | None = None,
    ) -> tuple[WorkspaceEvent, bool]:
        """Append a decision or change to the log ``workspace`` shares; (event, is new).

        What the event is about is read from ``text`` too (see
        ``ctxsvc.workspace.describe``): "renamed interface Store to Repository"
        names the symbol ``Store``, its new name and the file defining it.
        """
        repo: str | None = None
        if session_id is not None:
            session = self.session(session_id)
            if session.workspace != workspace:
                raise InvalidRequest(
                    f"session {session_id} is not in workspace {workspace!r}"
                    f" (its workspace: {session.workspace!r})",
                    hint="post to the session's workspace, or start it with that workspace",
                )
            repo, agent = session.repo, agent or session.agent
        facts = self._index_facts(repo) if repo else IndexFacts({}, {})
        names = {s.name for syms in facts.symbols.values() for s in syms}
        read = describe(text, names, facts.files.keys())
        symbols = _unique([*symbols, *read.symbols])
        found = [
            p for p, syms in facts.symbols.items()
            if any(s.name in symbols or s.qualname in symbols for s in syms)
        ]  # fmt: skip
        paths = _unique([*paths, *read.paths, *(sorted(found)[:3] if len(found) <= 3 else [])])
        event = WorkspaceEvent(
            seq=0, workspace=workspace, repo=repo, session_id=session_id, agent=agent,
            source="agent", kind=kind or read.kind or ("changed" if symbols or paths else "note"),
            text=text, created_at="", paths=paths, symbols=symbols,
            new_path=new_path or read.new_path, new_symbol=new_symbol or read.new_symbol,
        )  # fmt: skip
        return self._event_log().append(event, idempotency_key)

    def workspace_events(
        self, workspace: str, *, after: int = 0, limit: int = 200
    ) -> list[WorkspaceEvent]:
        """The log of ``workspace`` after seq ``after``: its sessions' events and re-index ones."""
        if not _NAME.match(workspace):
            raise InvalidRequest(f"invalid workspace {workspace!r}")
        if after < 0 or not 1 <= limit <= 1000:
            raise InvalidRequest("after must be >= 0 and limit 1 to 1000")
        repos = {s.repo for s in self._checkpoint_store().in_workspace(workspace)}
        return self._event_log().events(workspace, repos, after=after, limit=limit)

    def _drift_watch(
        self, session_id: str, repo: str, since: str | None = None
    ) -> tuple[Seen, list[WorkspaceEvent]] | None:
        """What the session saw and the workspace events after ``since`` (its start)."""
        if self.ledger is None:
            return None
        session = self._checkpoint_store().find(session_id)
        if session is None or session.workspace is None or session.repo != repo:
            return None
        store, log = self._checkpoint_store(), self._event_log()
        repos = {s.repo for s in store.in_workspace(session.workspace)}
        start = since or session.created_at
        events = [
            e for e in log.events(session.workspace, repos, limit=100_000) if e.created_at > start
        ]
        latest = store.get(session_id)
        edited = {a.path for a in latest.state.files if a.edited} if latest else set()
        edited |= {p for e in events if e.session_id == session_id for p in e.paths}
        seen = Seen(
            session_id=session_id, started_at=start,
            last_received={} if since else self.ledger.last_received(session_id, repo),
            edited=edited, warned=set() if since else log.warned(session_id),
        )  # fmt: skip
        return seen, events

    def _event_log(self) -> EventLog:
        log: EventLog | None = self.__dict__.get("_events")
        if log is None:
            with self._lock:
                log = self.__dict__.get("_events")
                if log is None:
                    log = EventLog(self._ledger().path)
                    self.__dict__["_events"] = log
        return log

    def _checkpoint_store(self) -> CheckpointStore:
        # The checkpoints live in the ledger's SQLite file, opened once per service.
        store: CheckpointStore | None = self.__dict__.get("_checkpoints")
        if store is None:
            with self._lock:
                store = self.__dict__.get("_checkpoints")
                if store is None:
                    store = CheckpointStore(self._ledger().path)
                    self.__dict__["_checkpoints"] = store
        return store

    def _index_facts(self, repo: str) -> IndexFacts:
        """File hashes and symbols of ``repo`` now; empty when it is no longer indexed."""
        try:
            view = self.view(self.resolve(repo))
        except RepoNotFound:
            return IndexFacts({}, {})
        symbols: dict[str, list[Symbol]] = {}
        for sym in view.symbols:
            symbols.setdefault(sym.path, []).append(sym)
        files = {p: r.sha256 for p, r in view.files.items() if r.status == "indexed"}
        return IndexFacts(files, symbols)


def _render_log(events: Sequence[WorkspaceEvent]) -> str:
    if not events:
        return ""
    lines = ["\n\n## Workspace log since the checkpoint (other sessions)"]
    for e in events:
        who = "re-index" if e.source == "index" else (e.agent or e.session_id or "agent")
        lines.append(f"- #{e.seq} {e.kind} by {who} at {e.created_at[:19]}Z: {e.text}")
    return "\n".join(lines)


def _hashes(view: RepoView) -> dict[str, str]:
    return {p: r.sha256 for p, r in view.files.items() if r.status == "indexed"}


def _unique(items: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(i for i in items if i))


def _checkpoint_events(
    session: Session, previous: Summary | None, state: Summary
) -> list[WorkspaceEvent]:
    """The workspace log entries of a checkpoint: files newly edited, new decisions."""
    if session.workspace is None:
        return []
    before = {(a.path, a.sha256) for a in previous.files if a.edited} if previous else set()
    edited: dict[str, list[str]] = {}
    for a in state.files:
        if a.edited and (a.path, a.sha256) not in before:
            edited.setdefault(a.path, [])
            if a.symbol:
                edited[a.path].append(a.symbol)
    old = set(previous.decisions) if previous else set()

    def event(kind: str, text: str, paths: Sequence[str], symbols: Sequence[str]) -> WorkspaceEvent:
        return WorkspaceEvent(
            seq=0, workspace=session.workspace, repo=session.repo, session_id=session.id,
            agent=session.agent, source="checkpoint", kind=kind, text=text[:MAX_TEXT],
            created_at="", paths=tuple(paths)[:50], symbols=tuple(symbols)[:50],
        )  # fmt: skip

    out = [
        event("changed", f"edited {p}" + (f" ({', '.join(syms[:8])})" if syms else ""), [p], syms)
        for p, syms in sorted(edited.items())
    ]
    out += [event("decision", d, [], []) for d in state.decisions if d not in old]
    return out


def candidates_of(
    view: RepoView,
    hits: list[Hit],
    detail: str,
    session_id: str | None,
    ledger: SessionLedger | None,
    budget_tokens: int = 0,
    spread: float = 0.0,
) -> tuple[list[Block], list[DeliveredSpan]]:
    """Packing candidates, minus what the session already holds unchanged."""
    already: list[DeliveredSpan] = []
    if session_id is not None:
        validate_session_id(session_id)
        if ledger is None:
            raise InvalidRequest("sessions are not enabled in this service")
        hits, already = split_already_sent(
            hits, ledger.delivered(session_id, view.meta.name), view.lines
        )
    return candidates(view, hits, detail, budget_tokens=budget_tokens, spread=spread), already


def _check_budget(budget_tokens: int) -> None:
    if not isinstance(budget_tokens, int) or not 1 <= budget_tokens <= MAX_BUDGET:
        raise InvalidRequest(
            f"budget_tokens must be between 1 and {MAX_BUDGET}, got {budget_tokens}"
        )


def _check_patterns(include: Sequence[str] | None, exclude: Sequence[str] | None) -> None:
    for patterns in (include, exclude):
        if patterns is not None and (
            len(patterns) > MAX_PATTERNS or any(len(p) > 256 for p in patterns)
        ):
            raise InvalidRequest(
                f"at most {MAX_PATTERNS} include/exclude patterns of 256 characters"
            )


def _filter(
    hits: list[Hit], include: Sequence[str] | None, exclude: Sequence[str] | None
) -> list[Hit]:
    """Hits whose path matches an include glob (if any) and no exclude glob."""
    if include:
        hits = [h for h in hits if any(fnmatch.fnmatchcase(h.chunk.path, p) for p in include)]
    if exclude:
        hits = [h for h in hits if not any(fnmatch.fnmatchcase(h.chunk.path, p) for p in exclude)]
    return hits


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
