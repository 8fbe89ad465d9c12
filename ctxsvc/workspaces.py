"""The workspace log: what parallel sessions of one codebase decided and changed.

Sessions started in a workspace share one append-only log: the events agents
post, the edits and decisions their checkpoints record (written by agent
memory in the checkpoint's own transaction), and what a re-index saw renamed,
moved or removed (this part listens to the catalog's index runs). It is the
:class:`~ctxsvc.drift.DriftSource` of the query side and of agent memory:
what a session saw, and the events since.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ctxsvc.catalog import Catalog
from ctxsvc.checkpoints import IndexFacts
from ctxsvc.drift import Seen, Watch, describe, index_event_text, index_events, subjects
from ctxsvc.errors import InvalidRequest, StoreError
from ctxsvc.limits import MAX_EVENTS, NAME
from ctxsvc.models import Stored, WorkspaceEvent
from ctxsvc.stores.events import MAX_TEXT
from ctxsvc.stores.state import StateStore
from ctxsvc.view import RepoView

log = logging.getLogger("ctxsvc.workspaces")

WATCHED_EVENTS = 100_000  # events a drift check reads at the most


@dataclass(frozen=True, eq=False)
class WorkspaceLog:
    """Records and reads workspace events; watches the repositories workspaces work on."""

    catalog: Catalog
    state: StateStore

    # -- the catalog's index runs (an IndexListener) ------------------------------------

    def watches(self, repo: str) -> bool:
        """Whether sessions in a workspace work on ``repo``.

        False when the state database cannot be read: an index run must not
        fail on a damaged or locked workspace log (its events are what is lost).
        """
        try:
            return self.state.checkpoints.has_workspaces(repo)
        except StoreError as exc:
            log.warning("index events not logged", extra={"repo": repo, "error": str(exc)})
            return False

    def indexed(self, before: RepoView, after: RepoView) -> None:
        """Log the symbols and files a re-index saw renamed, moved or removed."""
        changes = index_events(
            before.indexed_hashes(), before.symbols, after.indexed_hashes(), after.symbols
        )
        for d in changes:
            event = WorkspaceEvent(
                seq=0, workspace=None, repo=after.meta.name, session_id=None, agent=None,
                source="index", kind=d.kind or "changed", text=index_event_text(d)[:MAX_TEXT],
                created_at="", paths=subjects(d.paths), symbols=subjects(d.symbols),
                new_path=d.new_path, new_symbol=d.new_symbol,
            )  # fmt: skip
            try:
                self.state.events.append(event)
            except StoreError as exc:  # the run stands; only its events are lost
                log.warning(
                    "index events not logged", extra={"repo": after.meta.name, "error": str(exc)}
                )
                return

    # -- events -------------------------------------------------------------------------

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
    ) -> Stored[WorkspaceEvent]:
        """Append a decision or change to the log ``workspace`` shares; (event, is new).

        What the event is about is read from ``text`` too (see
        ``ctxsvc.drift.describe``): "renamed interface Store to Repository"
        names the symbol ``Store``, its new name and the file defining it.
        """
        repo: str | None = None
        if session_id is not None:
            session = self.state.checkpoints.session(session_id)
            if session.workspace != workspace:
                raise InvalidRequest(
                    f"session {session_id} is not in workspace {workspace!r}"
                    f" (its workspace: {session.workspace!r})",
                    hint="post to the session's workspace, or start it with that workspace",
                )
            repo, agent = session.repo, agent or session.agent
        facts = self.catalog.facts(repo) if repo else IndexFacts({}, {})
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
        return self.state.events.append(event, idempotency_key)

    def events(self, workspace: str, *, after: int = 0, limit: int = 200) -> list[WorkspaceEvent]:
        """The log of ``workspace`` after seq ``after``: its sessions' events and re-index ones."""
        if not NAME.match(workspace):
            raise InvalidRequest(f"invalid workspace {workspace!r}")
        if after < 0 or not 1 <= limit <= MAX_EVENTS:
            raise InvalidRequest(f"after must be >= 0 and limit 1 to {MAX_EVENTS}")
        return self.state.events.events(workspace, self._repos(workspace), after=after, limit=limit)

    # -- drift (a DriftSource) ----------------------------------------------------------

    def watch(self, session_id: str, repo: str, since: str | None = None) -> Watch | None:
        """What the session saw and the workspace events after ``since`` (default: its start).

        None when the session is not in a workspace (or works on another repository).
        """
        session = self.state.checkpoints.find(session_id)
        if session is None or session.workspace is None or session.repo != repo:
            return None
        start = since or session.created_at
        events = self.state.events.events(
            session.workspace, self._repos(session.workspace), since=start, limit=WATCHED_EVENTS
        )
        latest = self.state.checkpoints.get(session_id)
        edited = {a.path for a in latest.state.files if a.edited} if latest else set()
        edited |= {p for e in events if e.session_id == session_id for p in e.paths}
        seen = Seen(
            session_id=session_id, started_at=start,
            last_received={} if since else self.state.ledger.last_received(session_id, repo),
            edited=edited, warned=set() if since else self.state.events.warned(session_id),
        )  # fmt: skip
        return Watch(seen, events)

    def mark_warned(self, session_id: str, seqs: Iterable[int]) -> None:
        """Remember that the session was warned of these events."""
        self.state.events.mark_warned(session_id, seqs)

    def _repos(self, workspace: str) -> set[str]:
        return {s.repo for s in self.state.checkpoints.in_workspace(workspace)}


def _unique(items: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(i for i in items if i))
