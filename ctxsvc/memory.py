"""Agent memory: sessions, checkpoints and resume.

What an agent did and decided, stored durably in the state database,
summarized within a budget, and checked against the code on resume: the
anchored files and symbols against the index as it is now (refreshed from disk
first), with what the other sessions of its workspace did since (from a
:class:`DriftSource`) and fresh context for the files it worked on (from a
:class:`ContextSource`).
"""

from __future__ import annotations

import glob
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass, replace
from typing import Protocol

from ctxsvc.catalog import Catalog
from ctxsvc.checkpoints import extract
from ctxsvc.drift import DriftSource, drift, subjects
from ctxsvc.errors import (
    IndexBusy,
    InvalidRequest,
    ModelMismatch,
    NotFound,
    RepoNotFound,
    StoreCorrupt,
    SummarizerFailed,
)
from ctxsvc.limits import (
    MAX_LINE,
    MAX_PATTERNS,
    MAX_QUERY_CHARS,
    NAME,
    check_budget,
    validate_session_id,
)
from ctxsvc.models import ContextPack, DriftWarning, Stored, Symbol, WorkspaceEvent, span_hash
from ctxsvc.records import (
    Anchor,
    Checkpoint,
    Delivery,
    Resume,
    Session,
    SessionSummary,
    Summary,
)
from ctxsvc.stores.events import MAX_TEXT
from ctxsvc.stores.sqlite import check_idempotency_key, check_storable
from ctxsvc.stores.state import StateStore
from ctxsvc.summaries import (
    MIN_BUDGET,
    anchor_changes,
    fit,
    fit_lines,
    render_changes,
    resume_query,
)
from ctxsvc.summarizer import Summarizer
from ctxsvc.tokens import TokenCounter
from ctxsvc.transcripts import check_messages, text_of
from ctxsvc.view import RepoView

MAX_LOGGED = 20  # workspace events shown on resume
log = logging.getLogger("ctxsvc.memory")


class ContextSource(Protocol):
    """The query side, as agent memory uses it on resume."""

    def context(
        self, name_or_path: str, query: str, budget_tokens: int, *, include: list[str] | None
    ) -> ContextPack: ...


@dataclass(frozen=True, eq=False)
class Memory:
    """Sessions and their checkpoints in the state database; resume after a reset."""

    catalog: Catalog
    state: StateStore
    tokens: TokenCounter
    context: ContextSource
    _: KW_ONLY
    drift: DriftSource | None = None
    summarizer: Summarizer | None = None

    # -- sessions -------------------------------------------------------------

    def start_session(
        self, repo: str, task: str, agent: str | None = None, workspace: str | None = None
    ) -> Session:
        """A new session on the indexed repository ``repo`` for ``task``."""
        if not task.strip() or len(task) > MAX_QUERY_CHARS:
            raise InvalidRequest(f"the task must be 1 to {MAX_QUERY_CHARS} characters")
        check_storable(task, "the task", column=True)
        for label, value in (("agent", agent), ("workspace", workspace)):
            if value is not None and not NAME.match(value):
                raise InvalidRequest(
                    f"invalid {label} {value!r}", hint="use letters, digits, '.', '_' or '-'"
                )
        meta = self.catalog.resolve(repo)
        return self.state.checkpoints.create_session(meta.name, task, agent, workspace)

    def session(self, session_id: str) -> Session:
        return self.state.checkpoints.session(session_id)

    def sessions(self, repo: str | None = None) -> list[SessionSummary]:
        """What each session received, most recently active first."""
        return self.state.ledger.sessions(repo)

    def recent_sessions(self, limit: int = 100) -> list[Session]:
        """The sessions started last, newest first."""
        return self.state.checkpoints.recent(limit)

    def deliveries(self, session_id: str) -> list[Delivery]:
        """What a session received, span by span, oldest first (``SessionLedger.deliveries``)."""
        self.session(session_id)
        return self.state.ledger.deliveries(session_id)

    def forget(self, session_id: str, repo: str | None = None) -> int:
        """Forget what a session received: the next answers send everything again."""
        return self.state.ledger.forget(validate_session_id(session_id), repo)

    # -- checkpoints ----------------------------------------------------------

    def store_checkpoint(
        self,
        session_id: str,
        messages: list[dict[str, object]] | None = None,
        fields: dict[str, object] | None = None,
        idempotency_key: str | None = None,
        budget_tokens: int = 300,
    ) -> Stored[Checkpoint]:
        """Summarize the transcript since the last checkpoint (and ``fields``) and store it.

        The summary carries everything of the previous checkpoint forward and
        fits ``budget_tokens``. Returns the checkpoint and whether it is new:
        with an ``idempotency_key`` already used in this session, the checkpoint
        written then is returned (new: False) and nothing is written.
        """
        check_idempotency_key(idempotency_key)
        check_budget(budget_tokens)
        if budget_tokens < MIN_BUDGET:
            raise InvalidRequest(f"a summary needs a budget of at least {MIN_BUDGET} tokens")
        msgs = check_messages(messages or [])
        # What HTTP's parser lets through (lone surrogate escapes, deep nesting) and
        # no store can keep: refused here, so that every adapter refuses it alike.
        check_storable(msgs, "messages")
        check_storable(dict(fields or {}), "fields")
        store = self.state.checkpoints
        session = store.session(session_id)
        if not msgs and not fields:
            raise InvalidRequest(
                "nothing to checkpoint",
                hint="send the messages since the last checkpoint, fields, or both",
            )
        index = self.catalog.facts(session.repo)
        previous = store.get(session_id)
        state = extract(
            msgs, fields, index, task=session.task, previous=previous.state if previous else None
        )
        state = replace(state, files=self._with_bodies(session.repo, state.files))
        replayed = store.get_by_key(session_id, idempotency_key) if idempotency_key else None
        summary = fit(state, budget_tokens, self.tokens)
        if self.summarizer is not None and replayed is None:
            try:
                written = self.summarizer.summarize(state, msgs)
                summary = fit(written, budget_tokens, self.tokens)
            except SummarizerFailed as exc:
                log.warning("summarizer failed, offline summary kept", extra={"error": str(exc)})
                summary = replace(summary, summarizer_note=f"offline summary: {exc}")
        texts = [text_of(m) for m in msgs]
        texts += [json.dumps(m.get("tool_calls")) for m in msgs if m.get("tool_calls")]
        events = _checkpoint_events(session, previous.state if previous else None, state)
        return store.add(
            session_id, summary, state, msgs, sum(self.tokens.count_many(texts)),
            idempotency_key, dict(fields or {}), events,
        )  # fmt: skip

    def _with_bodies(self, repo: str, anchors: Sequence[Anchor]) -> tuple[Anchor, ...]:
        """``anchors`` with the hash of each newly anchored symbol's lines, as indexed now."""
        try:
            view = self.catalog.view(self.catalog.resolve(repo))
        except (RepoNotFound, StoreCorrupt):  # not indexed, or awaiting its rebuild
            return tuple(anchors)
        files = view.indexed_hashes()
        by_key = {(s.path, s.qualname): s for s in view.symbols}
        body = _body_hash(view)
        return tuple(
            replace(a, body_sha256=body(s))
            if a.symbol and not a.body_sha256 and a.sha256 and files.get(a.path) == a.sha256
            and (s := by_key.get((a.path, a.symbol))) is not None
            else a
            for a in anchors
        )  # fmt: skip

    def checkpoint(self, session_id: str, number: int | None = None) -> Checkpoint:
        """Checkpoint ``number`` of the session, or its latest."""
        if number is not None and not 1 <= number <= MAX_LINE:
            raise InvalidRequest(f"a checkpoint number is between 1 and {MAX_LINE}, got {number}")
        found = self.state.checkpoints.get(session_id, number)
        if found is None:
            which = f"checkpoint {number}" if number is not None else "checkpoint yet"
            raise NotFound(
                f"session {session_id!r} has no {which}",
                hint="list them with `ctxsvc checkpoint list SESSION`"
                if number is not None
                else "write one with `ctxsvc checkpoint write SESSION`",
            )
        return found

    def checkpoints(self, session_id: str) -> list[Checkpoint]:
        return self.state.checkpoints.list(session_id)

    # -- resume ---------------------------------------------------------------

    def resume(self, session_id: str, budget_tokens: int = 2000, *, refresh: bool = True) -> Resume:
        """The latest summary, what changed in the anchored code since, and fresh context.

        With ``refresh`` (the default), files changed on disk since the last
        index are re-indexed first (``Resume.refreshed`` names them), so the
        changes and the code are those on disk. Without it they are those of
        the index, and the files changed since are named in ``degraded``. The
        fresh context is restricted to anchored files still present, within
        what the budget leaves.
        """
        check_budget(budget_tokens)
        session = self.session(session_id)
        cp = self.checkpoint(session_id)
        busy = ""
        try:
            current = self.catalog.current(session.repo, refresh=refresh)
        except (IndexBusy, ModelMismatch) as exc:  # recovery must answer: from the index as is
            current, busy = self.catalog.current(session.repo), f"refresh skipped: {exc}"
        view, refreshed = current.view, current.refreshed
        files = view.indexed_hashes()
        changes = tuple(anchor_changes(cp.state.files, files, view.symbols, body=_body_hash(view)))
        count = self.tokens.count
        title = f"# Resume: session {session.id} on {session.repo}, checkpoint {cp.number} ({cp.created_at})"
        warnings, logged = self._resume_drift(session, cp)
        changed = render_changes(changes) + _render_refreshed(refreshed) + _render_log(logged)
        summary = cp.summary.rendered
        room = budget_tokens - count(title) - count(changed) - 4
        # A resume's budget is mostly the fresh context's; with room to spare, the summary
        # is fitted again from the full state, so what the checkpoint's budget left out
        # (decisions, symbols, older failures) comes back.
        wider = min(room, max(cp.summary.budget_tokens, room * 3 // 10))
        if count(summary) > room or (cp.summary.dropped and wider > cp.summary.budget_tokens):
            summary = fit(cp.state, max(MIN_BUDGET, min(room, wider)), self.tokens).rendered
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
        degraded = dict.fromkeys(current.degraded)
        if room >= 50:
            pack = self.context.context(
                session.repo, resume_query(cp.state, session.task), room, include=include
            )
            degraded.update(dict.fromkeys(pack.degraded))
        if busy:
            degraded[busy] = None
        if current.fresh.all:
            again = (
                "they changed again" if refresh and not busy else "resume with refresh to see them"
            )
            degraded[
                f"{len(current.fresh.all)} files changed on disk since the last index; changes "
                f"and code are as indexed: {again}"
            ] = None
        rendered = header + (heading + pack.rendered if pack and pack.items else "")
        rendered = fit_lines(rendered, budget_tokens, count)
        return Resume(
            session=session, checkpoint=cp, changes=changes, context=pack, rendered=rendered,
            tokens_used=count(rendered), budget_tokens=budget_tokens, degraded=tuple(degraded),
            warnings=tuple(warnings), workspace_events=tuple(logged), refreshed=refreshed,
        )  # fmt: skip

    def _resume_drift(
        self, session: Session, cp: Checkpoint
    ) -> tuple[list[DriftWarning], list[WorkspaceEvent]]:
        """Warnings on the checkpoint's anchors, and what other sessions logged since it.

        After a reset the agent knows only the checkpoint, so everything after
        it counts as unseen (earlier warnings are not remembered).
        """
        watch = (
            self.drift.watch(session.id, session.repo, since=cp.created_at) if self.drift else None
        )
        if watch is None:
            return [], []
        anchored = {a.path for a in cp.state.files}
        names = " ".join(a.symbol for a in cp.state.files if a.symbol)
        warnings = drift(watch.seen, watch.events, anchored, f"{cp.state.goal}\n{names}")
        flagged = {w.event.seq for w in warnings}
        logged = [
            e for e in watch.events
            if e.session_id != session.id and (e.source != "index" or e.seq in flagged)
        ]  # fmt: skip
        return warnings, logged[-MAX_LOGGED:]


def _body_hash(view: RepoView) -> Callable[[Symbol], str]:
    """The hash of a symbol's lines in ``view`` (what ``Anchor.body_sha256`` keeps)."""

    def body(s: Symbol) -> str:
        return span_hash(view.lines(s.path, s.start_line, s.end_line) or "")

    return body


def _render_refreshed(paths: Sequence[str]) -> str:
    if not paths:
        return ""
    shown = ", ".join(paths[:10]) + (f" and {len(paths) - 10} more" if len(paths) > 10 else "")
    return f"\n(Re-indexed first, changed on disk: {shown}.)"


def _render_log(events: Sequence[WorkspaceEvent]) -> str:
    if not events:
        return ""
    lines = ["\n\n## Workspace log since the checkpoint (other sessions)"]
    for e in events:
        who = "re-index" if e.source == "index" else (e.agent or e.session_id or "agent")
        lines.append(f"- #{e.seq} {e.kind} by {who} at {e.created_at[:19]}Z: {e.text}")
    return "\n".join(lines)


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
            created_at="", paths=subjects(paths), symbols=subjects(symbols),
        )  # fmt: skip

    out = [
        event("changed", f"edited {p}" + (f" ({', '.join(syms[:8])})" if syms else ""), [p], syms)
        for p, syms in sorted(edited.items())
    ]
    out += [event("decision", d, [], []) for d in state.decisions if d not in old]
    return out
