"""The inspector's views of indexes and jobs: what an index holds and left out, the
query playground (what an agent receives for a question), the jobs as they run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ctxsvc.candidates import DETAILS
from ctxsvc.errors import CtxError
from ctxsvc.http.markup import LISTED, bullets, degraded, esc, page, qs, table, when
from ctxsvc.models import ContextPack, FileRecord, RepoStatus


@dataclass(frozen=True)
class Query:
    """The playground's question, as the form sent it."""

    text: str = ""
    budget: int = 2000
    detail: str = "snippets"


def indexes_page(
    statuses: Sequence[RepoStatus | tuple[str, CtxError]], server: Sequence[str], *, logout: bool
) -> str:
    """Every index: freshness, commit, size, vectors, what is degraded (or why its status
    could not be read)."""
    rows = [
        _unreadable_row(*s)
        if isinstance(s, tuple)
        else (
            f'<a href="/ui/repos/{qs(s.name)}">{esc(s.name)}</a>',
            f"<code>{esc(s.root)}</code>",
            f"<code>{esc((s.commit or '')[:12] or 'no git')}</code> {esc(s.branch or '')}",
            when(s.indexed_at),
            f"{s.files:,}",
            f"{s.chunks:,}",
            f"{sum(s.skipped.values()):,}",
            esc(f"{s.vectors} ({s.model})" if s.model else s.vectors),
            _freshness(s),
            esc(len(s.degraded)) if s.degraded else "",
        )
        for s in statuses
    ]
    headers = (
        "Index",
        "Root",
        "Commit",
        "Indexed",
        "Files",
        "Chunks",
        "Skipped",
        "Vectors",
        "Fresh",
        "Degraded",
    )
    listing = (
        table(headers, rows, cls="indexes")
        if rows
        else ('<p class="quiet">No index yet: run <code>ctxsvc index PATH</code>.</p>')
    )
    return page("Indexes", degraded(server) + listing, logout=logout)


def _unreadable_row(name: str, exc: CtxError) -> tuple[str, ...]:
    why = f'<span class="bad">{esc(exc.code)}: {esc(exc.message)}</span>'
    return (f'<a href="/ui/repos/{qs(name)}">{esc(name)}</a>', why, *([""] * 8))


def _freshness(s: RepoStatus) -> str:
    stale = len(s.changed) + len(s.added) + len(s.deleted)
    return (
        '<span class="ok">current</span>'
        if not stale
        else (f'<span class="warn">{stale:,} files changed on disk</span>')
    )


def repo_page(
    status: RepoStatus,
    files: Mapping[str, FileRecord] | None,
    unread: CtxError | None,
    query: Query,
    pack: ContextPack | None,
    failure: CtxError | None,
    *,
    logout: bool,
) -> str:
    """One index: its state and files the index left out, and the query playground."""
    s = status
    facts = table(
        ("", ""),
        [
            ("Root", f"<code>{esc(s.root)}</code>"),
            ("Commit", f"<code>{esc(s.commit or 'no git')}</code> {esc(s.branch or '')}"),
            ("Indexed at", when(s.indexed_at) + f" (version {s.version})"),
            ("Files, chunks, symbols", f"{s.files:,}, {s.chunks:,}, {s.symbols:,}"),
            (
                "Vectors",
                esc(
                    f"{s.vectors} · {s.model or 'no model'} · {s.dimension or '-'} dimensions"
                    + (f" · {s.vectors_share:.0%} of chunks" if s.vectors_share is not None else "")
                ),
            ),
            ("Tokenizer", esc(s.tokenizer)),
            ("Freshness", _freshness(s)),
        ],
        cls="facts",
    )
    parts = [
        degraded(s.degraded),
        facts,
        _playground(s.name, query, pack, failure, None if files is None else _whole(files)),
        _file_lists(files)
        if files is not None
        else (
            f'<div class="error">The index\'s files could not be read: <code>{esc(unread and unread.code)}'
            f"</code>: {esc(unread and unread.message)}</div>"
        ),
        f"<h2>Changed on disk since the index ({len(s.changed) + len(s.added) + len(s.deleted):,})</h2>",
        bullets(
            [f"changed {p}" for p in s.changed]
            + [f"added {p}" for p in s.added]
            + [f"deleted {p}" for p in s.deleted]
        ),
    ]
    if s.snapshots:
        parts.append(
            "<h2>Branches kept</h2>"
            + table(
                ("Branch", "Commit", "Indexed at"),
                (
                    (
                        esc(b.branch or "(detached)"),
                        f"<code>{esc((b.commit or '')[:12])}</code>",
                        when(b.indexed_at),
                    )
                    for b in s.snapshots
                ),
            )
        )
    return page(s.name, "".join(parts), logout=logout)


def _file_lists(files: Mapping[str, FileRecord]) -> str:
    """The files the index skipped (with why), parsed with syntax errors, or decoded lossily."""
    skipped = sorted((r for r in files.values() if r.status == "skipped"), key=lambda r: r.path)
    broken = sorted((r for r in files.values() if r.syntax_errors), key=lambda r: r.path)
    lossy = sorted(r.path for r in files.values() if r.lossy)
    none = '<p class="quiet">none</p>'
    rows = ((f"<code>{esc(r.path)}</code>", esc(r.reason), esc(r.detail)) for r in skipped[:LISTED])
    errors = ((f"<code>{esc(r.path)}</code>", str(r.syntax_errors)) for r in broken[:LISTED])
    more = len(skipped) - LISTED
    return "".join((
        f"<h2>Skipped files ({len(skipped):,})</h2>",
        table(("Path", "Reason", "Detail"), rows, cls="skipped") if skipped else none,
        f'<p class="quiet">and {more:,} more</p>' if more > 0 else "",
        f"<h2>Files with syntax errors ({len(broken):,})</h2>",
        '<p class="quiet">Indexed from the partial tree tree-sitter recovered.</p>' if broken else "",
        table(("Path", "Error nodes"), errors, cls="broken") if broken else none,
        f"<h2>Files decoded with replacement characters ({len(lossy):,})</h2>",
        bullets(lossy),
    ))  # fmt: skip


def _whole(files: Mapping[str, FileRecord]) -> int:
    """The tokens of every indexed file: what injecting the whole repository costs."""
    return sum(r.tokens for r in files.values() if r.status == "indexed")


def _playground(
    name: str, query: Query, pack: ContextPack | None, failure: CtxError | None, whole: int | None
) -> str:
    details = "".join(
        f'<option value="{d}"{" selected" if d == query.detail else ""}>{d}</option>'
        for d in DETAILS
    )
    form = (
        f'<h2>Query playground</h2><form method="get" action="/ui/repos/{qs(name)}" '
        'class="playground"><textarea name="q" rows="2" required '
        f'placeholder="a question or a task, as an agent would ask">{esc(query.text)}</textarea>'
        f'<label>Budget <input type="number" name="budget" min="0" value="{query.budget}"></label>'
        f'<label>Detail <select name="detail">{details}</select></label>'
        "<button>Ask</button></form>"
        '<p class="quiet">Answered as <code>POST /v1/context</code> answers, without a session: '
        "nothing is recorded.</p>"
    )
    if failure is not None:
        return (
            form
            + f'<div class="error"><code>{esc(failure.code)}</code>: {esc(failure.message)}'
            + (f"<p>{esc(failure.hint)}</p>" if failure.hint else "")
            + "</div>"
        )
    return form + (pack_section(pack, whole) if pack is not None else "")


def pack_section(pack: ContextPack, whole: int | None) -> str:
    """What an agent receives for the question: its blocks and signals, what was left out,
    and the saving against the whole repository (``whole`` tokens; None: unknown)."""
    if whole is None:
        saving = ""
    elif pack.tokens_used and whole >= pack.tokens_used:
        saving = (
            f" · {whole / pack.tokens_used:,.1f}&times; fewer tokens than the whole repository "
            f"({whole:,} tokens in its indexed files)"
        )
    else:  # a small repository: its files cost less than the answer's framing
        saving = f" · the whole repository is smaller ({whole:,} tokens in its indexed files)"
    summary = (
        f'<p class="answer-summary"><strong>{pack.tokens_used:,}</strong> of '
        f"{pack.budget_tokens:,} tokens ({esc(pack.encoding)}), {len(pack.items)} blocks, "
        f"{len(pack.omitted)} left out{saving}</p>"
    )
    blocks = "".join(
        '<section class="block">'
        f"<header><code>{esc(i.path)}:{i.start_line}-{i.end_line}</code> {esc(i.symbol or '')}"
        f' <span class="kind">{esc(i.kind)}</span> <span class="tokens">{i.tokens:,} tokens</span>'
        f' <span class="score">score {i.score:.3f}</span> '
        + "".join(f'<span class="why">{esc(w)}</span>' for w in i.why)
        + f"</header><pre>{esc(i.text)}</pre></section>"
        for i in pack.items
    )
    omitted = (
        table(
            ("Path", "Lines", "Symbol", "Tokens", "Score", "Reason"),
            (
                (
                    f"<code>{esc(o.path)}</code>",
                    f"{o.start_line}-{o.end_line}",
                    esc(o.symbol or ""),
                    f"{o.tokens:,}",
                    f"{o.score:.3f}",
                    esc(o.reason),
                )
                for o in pack.omitted
            ),
            cls="omitted",
        )
        if pack.omitted
        else '<p class="quiet">nothing</p>'
    )
    rendered = (
        "<details><summary>The exact text the agent receives</summary>"
        f'<pre class="rendered">{esc(pack.rendered)}</pre></details>'
    )
    return (
        f'<div class="answer">{summary}{degraded(pack.degraded)}{rendered}<h3>Blocks</h3>{blocks}'
        f"<h3>Left out ({len(pack.omitted)})</h3>{omitted}</div>"
    )


def jobs_page(jobs: Sequence[Mapping[str, Any]], *, logout: bool) -> str:
    """The jobs submitted last; the script refreshes the table while one is queued or running."""
    body = (
        '<p class="quiet">Refreshed every second while a job is queued or running.</p>'
        f'<div id="jobs" data-source="/ui/jobs.json">{jobs_table(jobs)}</div>'
    )
    return page("Jobs", body, logout=logout)


def jobs_table(jobs: Sequence[Mapping[str, Any]]) -> str:
    rows = [
        (
            f"<code>{esc(j['id'][:12])}</code>",
            esc(j["kind"]),
            f'<a href="/ui/repos/{qs(j["repo"])}">{esc(j["repo"])}</a>',
            f'<span class="state {esc(j["state"])}">{esc(j["state"])}</span>',
            _progress(j.get("progress") or {}),
            when(j.get("created_at")),
            when(j.get("finished_at")),
            esc(_error_message(j.get("error"))),
        )
        for j in jobs
    ]
    headers = ("Job", "Kind", "Index", "State", "Progress", "Queued", "Finished", "Error")
    return table(headers, rows, cls="jobs") if rows else '<p class="quiet">No job yet.</p>'


def _error_message(error: object) -> str:
    if not isinstance(error, Mapping):
        return ""
    inner = error.get("error")
    return str(inner.get("message", "") if isinstance(inner, Mapping) else error.get("message", ""))


def _progress(progress: Mapping[str, Mapping[str, int | None]]) -> str:
    parts = []
    for stage, p in progress.items():
        done, total = p.get("done") or 0, p.get("total")
        bar = f'<progress value="{done}" max="{total}"></progress>' if total else ""
        parts.append(f"<div>{esc(stage)} {done:,}{f'/{total:,}' if total else ''} {bar}</div>")
    return "".join(parts)
