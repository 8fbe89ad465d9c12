"""Parallel sessions of a workspace: the shared log, and drift warnings in answers.

A mixin of ``ContextService`` (through ``AgentMemory``): it owns the state
file's stores (ledger, checkpoints, workspace log), logs what a re-index saw
renamed or removed, records the events agents post, and packs a workspace
session's answers with the warnings ``ctxsvc.workspace.drift`` finds. It reads
the index through the service's ``resolve`` and ``view``, and packs through
its ``_pack`` and ``_record``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from ctxsvc.checkpoints import IndexFacts
from ctxsvc.core import ServiceCore
from ctxsvc.errors import InvalidRequest, RepoNotFound
from ctxsvc.limits import NAME
from ctxsvc.models import (
    ContextPack,
    DeliveredSpan,
    Freshness,
    Symbol,
    WorkspaceEvent,
)
from ctxsvc.packing import Block
from ctxsvc.stores.checkpoints import CheckpointStore
from ctxsvc.stores.events import MAX_SUBJECT_CHARS, MAX_SUBJECTS, MAX_TEXT, EventLog
from ctxsvc.stores.ledger import SessionLedger
from ctxsvc.view import RepoView
from ctxsvc.workspace import (
    Seen,
    describe,
    drift,
    index_event_text,
    index_events,
    render_warnings,
)


class Workspaces(ServiceCore):
    """The state file's stores, the workspace log, and drift-aware packing."""

    def _ledger(self) -> SessionLedger:
        if self.ledger is None:
            raise InvalidRequest("sessions are not enabled in this service")
        return self.ledger

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
                    source="index", kind=d.kind or "changed", text=index_event_text(d)[:MAX_TEXT],
                    created_at="", paths=subjects(d.paths), symbols=subjects(d.symbols),
                    new_path=d.new_path, new_symbol=d.new_symbol,
                )
            )  # fmt: skip

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
            session = self._checkpoint_store().session(session_id)
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
        if not NAME.match(workspace):
            raise InvalidRequest(f"invalid workspace {workspace!r}")
        if after < 0 or not 1 <= limit <= 1000:
            raise InvalidRequest("after must be >= 0 and limit 1 to 1000")
        repos = {s.repo for s in self._checkpoint_store().in_workspace(workspace)}
        return self._event_log().events(workspace, repos, after=after, limit=limit)

    def _pack_with_drift(
        self,
        watch: tuple[Seen, list[WorkspaceEvent]],
        view: RepoView,
        query: str,
        cands: tuple[list[Block], list[DeliveredSpan]],
        budget_tokens: int,
        *,
        detail: str,
        fresh: Freshness,
        degraded: list[str],
        session_id: str,
    ) -> ContextPack:
        """The pack for a workspace session: drift warnings first, all within the budget."""
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
        self._event_log().mark_warned(session_id, (w.event.seq for w in warnings))
        return result

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
        events = log.events(session.workspace, repos, since=start, limit=100_000)
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


def _hashes(view: RepoView) -> dict[str, str]:
    return {p: r.sha256 for p, r in view.files.items() if r.status == "indexed"}


def _unique(items: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(i for i in items if i))


def subjects(items: Sequence[str]) -> tuple[str, ...]:
    """``items`` within the log's bounds, so that an odd path never fails a write."""
    return tuple(i for i in items if 0 < len(i) <= MAX_SUBJECT_CHARS)[:MAX_SUBJECTS]
