"""The inspector's views of agent memory: sessions, a session's timeline (what it was
sent, request by request, and its checkpoints), a resume preview, a workspace's log."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import groupby

from ctxsvc.errors import CtxError
from ctxsvc.http.markup import bullets, degraded, esc, page, qs, table, when
from ctxsvc.models import WorkspaceEvent
from ctxsvc.records import Checkpoint, Delivery, Resume, Session
from ctxsvc.stores.ledger import DELIVERIES_SHOWN


def sessions_page(
    sessions: Sequence[Session], received: Mapping[str, tuple[int, int]], *, logout: bool
) -> str:
    """The sessions started last; ``received``: (spans, tokens) each was sent, over every
    repository."""
    rows = [
        (
            f'<a href="/ui/sessions/{qs(s.id)}"><code>{esc(s.id)}</code></a>',
            esc(s.repo),
            esc(s.task),
            esc(s.agent or ""),
            f'<a href="/ui/workspaces/{qs(s.workspace)}">{esc(s.workspace)}</a>'
            if s.workspace
            else "",
            when(s.created_at),
            f"{received[s.id][1]:,} tokens in {received[s.id][0]:,} spans"
            if s.id in received
            else "",
        )
        for s in sessions
    ]
    body = (
        table(
            ("Session", "Index", "Task", "Agent", "Workspace", "Started", "Received"),
            rows,
            cls="sessions",
        )
        if rows
        else '<p class="quiet">No session yet.</p>'
    )
    return page("Sessions", body, logout=logout)


def session_page(
    session: Session,
    deliveries: Sequence[Delivery],
    checkpoints: Sequence[Checkpoint],
    resume: Resume | CtxError | None,
    budget: int,
    *,
    logout: bool,
) -> str:
    """A session's timeline: what it was sent, request by request, and its checkpoints."""
    ws = (
        f' · workspace <a href="/ui/workspaces/{qs(session.workspace)}">{esc(session.workspace)}</a>'
        if session.workspace
        else ""
    )
    head = (
        f'<p><code>{esc(session.id)}</code> on <a href="/ui/repos/{qs(session.repo)}">'
        f"{esc(session.repo)}</a>{ws} · agent {esc(session.agent or '-')} · started "
        f"{when(session.created_at)}</p><p class=task>{esc(session.task)}</p>"
    )
    events: list[tuple[str, int, str]] = [(session.created_at, 0, '<li class="start">started</li>')]
    # One transaction records what one answer sent: its spans share their time.
    for at, group in groupby(deliveries, key=lambda d: d.delivered_at):
        spans = list(group)
        items = "".join(
            f"<li><code>{esc(d.path)}:{d.start_line}-{d.end_line}</code> {d.tokens:,} tokens</li>"
            for d in spans
        )
        total = sum(d.tokens for d in spans)
        events.append(
            (
                at,
                1,
                (
                    f'<li class="sent">{when(at)} sent {len(spans)} spans, {total:,} tokens '
                    f"({esc(spans[0].repo)})<details><summary>spans</summary><ul>{items}</ul></details></li>"
                ),
            )
        )
    for cp in checkpoints:
        events.append((cp.created_at, 2, _checkpoint(cp)))
    timeline = "".join(text for _, _, text in sorted(events, key=lambda e: (e[0], e[1])))
    note = '<p class="quiet">A span sent again is shown once, at the time it was last sent.</p>'
    if len(deliveries) >= DELIVERIES_SHOWN:
        note += (
            f'<p class="warn">Only the {DELIVERIES_SHOWN:,} spans sent last are shown; the '
            "earlier ones are left out of the timeline.</p>"
        )
    form = (
        f'<form method="get" action="/ui/sessions/{qs(session.id)}" class="resume">'
        '<input type="hidden" name="resume" value="1">'
        f'<label>Budget <input type="number" name="budget" min="0" value="{budget}"></label>'
        "<button>Preview the resume</button></form>"
        '<p class="quiet">As <code>GET …/resume?refresh=false</code> answers: from the index '
        "as it is, and nothing is recorded.</p>"
    )
    return page(
        f"Session {session.id}",
        (
            f"{head}<h2>Timeline</h2>{note}<ol class=timeline>{timeline}</ol>"
            f"<h2>Resume</h2>{form}{_resume(resume)}"
        ),
        logout=logout,
    )


def _checkpoint(cp: Checkpoint) -> str:
    s = cp.summary
    ratio = f", {cp.transcript_tokens / s.tokens:,.0f}&times; smaller" if s.tokens else ""
    dropped = (
        " · left out: " + ", ".join(f"{k} {v}" for k, v in sorted(s.dropped.items()))
        if s.dropped
        else ""
    )
    return (
        f'<li class="checkpoint">{when(cp.created_at)} <strong>checkpoint '
        f"{cp.number}</strong>: {s.tokens:,} tokens from a {cp.transcript_tokens:,}-token "
        f"transcript{ratio}{esc(dropped)} · {esc(s.summarizer)}"
        f"<pre>{esc(s.rendered)}</pre></li>"
    )


def _resume(resume: Resume | CtxError | None) -> str:
    if resume is None:
        return ""
    if isinstance(resume, CtxError):
        return f'<div class="error"><code>{esc(resume.code)}</code>: {esc(resume.message)}</div>'
    warnings = bullets([w.message for w in resume.warnings], empty="no drift warning")
    changes = bullets(
        [
            f"{c.change}: {c.path}"
            + (f" {c.symbol}" if c.symbol else "")
            + (f" → {c.new_path or ''} {c.new_symbol or ''}" if c.new_path or c.new_symbol else "")
            for c in resume.changes
        ],
        empty="no change to the anchored code",
    )
    return (
        f'<div class="answer resumed"><p><strong>{resume.tokens_used:,}</strong> of '
        f"{resume.budget_tokens:,} tokens, from checkpoint {resume.checkpoint.number}</p>"
        f"{degraded(resume.degraded)}<h3>Drift warnings</h3>{warnings}"
        f"<h3>Changes since the checkpoint</h3>{changes}"
        f'<h3>The text the agent receives</h3><pre class="rendered">{esc(resume.rendered)}</pre></div>'
    )


def workspace_page(
    name: str, events: Sequence[WorkspaceEvent], after: int, limit: int, *, logout: bool
) -> str:
    """A workspace's log after event ``after``, ``limit`` events a page, oldest first."""
    rows = [
        (
            str(e.seq),
            when(e.created_at),
            esc(e.source),
            esc(e.kind),
            f'<a href="/ui/sessions/{qs(e.session_id)}"><code>{esc(e.session_id)}</code></a>'
            if e.session_id
            else "",
            esc(e.agent or ""),
            esc(e.text),
            esc(", ".join(e.paths + e.symbols)),
        )
        for e in events
    ]
    body = (
        table(
            ("#", "At", "Source", "Kind", "Session", "Agent", "Text", "About"), rows, cls="events"
        )
        if rows
        else '<p class="quiet">No event yet.</p>'
    )
    links = []
    if after:
        links.append(f'<a href="/ui/workspaces/{qs(name)}">from the first event</a>')
    if len(events) >= limit:
        links.append(f'<a href="/ui/workspaces/{qs(name)}?after={events[-1].seq}">later events</a>')
    paging = f'<p class="paging">{" · ".join(links)}</p>' if links else ""
    return page(f"Workspace {name}", body + paging, logout=logout)
