"""The MCP tools: their arguments, descriptions, calls into the service and renderings.

Each tool takes the HTTP API's argument names, described for a model to read,
calls :class:`ContextService` once and returns an :class:`Answer`: text for the
model (code under ``## path`` headings, in fences) and the HTTP API's data
without what the text already carries (:attr:`Tool.omit`: the code is sent
once). ``ctxsvc.mcp.server`` serves them; nothing here knows about transports.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from pydantic import BaseModel, Field, create_model

from ctxsvc.errors import InvalidRequest
from ctxsvc.models import (
    ContextPack,
    Impact,
    IndexSummary,
    IndexVersion,
    Links,
    RepoStatus,
    SearchResult,
    place,
)
from ctxsvc.records import Checkpoint, Resume, Session
from ctxsvc.schemas import (
    REPO_DOC,
    CheckpointCall,
    ContextRequest,
    DecisionRequest,
    DefinitionRequest,
    ExpandRequest,
    ImpactRequest,
    MapRequest,
    ReferencesRequest,
    RepoRef,
    RepoRequest,
    Request,
    ResumeRequest,
    SearchRequest,
    SessionRequest,
)
from ctxsvc.service import ContextService

INSTRUCTIONS = """\
ctxsvc answers "which code do I need for this task?" from an index of the repository, \
within a token budget you choose, instead of reading whole files. Start with get_context \
(or repo_map in an unfamiliar repository); read more with expand on the candidates it lists \
as left out. After editing files, call refresh. For long tasks, start_session once and pass \
its id as session_id everywhere: code already sent is not repeated, and write_checkpoint, \
record_decision and resume_session keep your working memory across context resets."""

# -- arguments: the HTTP API's request models ------------------------------------------


def _repo_optional(model: type[Request]) -> type[Request]:
    """``model`` with ``repo`` optional: a server with a default repository fills it in.

    A tool's function is typed with ``model`` itself (the variant is its
    subclass): only ``repo`` may then be None, and ``ToolContext.repo`` takes that.
    """
    field: Any = (RepoRef | None, Field(None, description=REPO_DOC))
    return create_model(model.__name__, __base__=model, repo=field)


ContextArgs = _repo_optional(ContextRequest)
SearchArgs = _repo_optional(SearchRequest)
ExpandArgs = _repo_optional(ExpandRequest)
MapArgs = _repo_optional(MapRequest)
ImpactArgs = _repo_optional(ImpactRequest)
ReferencesArgs = _repo_optional(ReferencesRequest)
DefinitionArgs = _repo_optional(DefinitionRequest)
RepoArgs = _repo_optional(RepoRequest)
StartSessionArgs = _repo_optional(SessionRequest)


# -- results -----------------------------------------------------------------------


class StatusResult(BaseModel):
    repos: list[RepoStatus]


@dataclass(frozen=True)
class Answer:
    """What a tool returns: text blocks for the model and the structured result."""

    texts: list[str]
    data: Any


@dataclass(frozen=True)
class ToolContext:
    service: ContextService
    default_repo: str | None

    def repos(self, repo: str | None, repos: list[str] | None) -> str | None:
        """The ``repo`` of a call that may name several (``repos``): as given when it names
        some (the default is not added to them), else this server's default."""
        return repo if repos else self.repo(repo)

    def repo(self, repo: str | None) -> str:
        if repo is not None:
            return repo
        if self.default_repo is None:
            raise InvalidRequest(
                "repo is required: this server has no default repository",
                hint="pass repo (index_status lists the indexes), or start `ctxsvc mcp --repo NAME`",
            )
        return self.default_repo


# -- tools ---------------------------------------------------------------------------


def _get_context(ctx: ToolContext, a: ContextRequest) -> Answer:
    pack = ctx.service.context(
        ctx.repos(a.repo, a.repos), a.query, a.budget_tokens, detail=a.detail, session_id=a.session_id,
        include=a.include, exclude=a.exclude, refresh=a.refresh, diff=a.diff, branch=a.branch,
        repos=a.repos,
    )  # fmt: skip
    return Answer(render_pack(pack), pack)


def _impact(ctx: ToolContext, a: ImpactRequest) -> Answer:
    found = ctx.service.impact(ctx.repo(a.repo), a.symbol, a.depth, a.limit)
    lines = [f"Dependents of {a.symbol} ({', '.join(found.ids)}) in {found.repo}, by depth:"]
    for depth, (level, total) in enumerate(zip(found.levels, found.totals, strict=True), 1):
        lines.append(
            f"depth {depth}: {total}" + (f" (first {len(level)})" if total > len(level) else "")
        )
        lines += [
            f"- {d.id} ({d.path}:{d.line}) {d.kind}s {d.via}"
            + ("" if d.resolution == "resolved" else " (by name: a guess)")
            + (" [test]" if d.test else "")
            for d in level
        ]
    if not any(found.levels):
        lines.append("- (nothing in the index uses it)")
    return Answer(["\n".join(lines)], found)


def _search_code(ctx: ToolContext, a: SearchRequest) -> Answer:
    result = ctx.service.search(
        ctx.repos(a.repo, a.repos), a.query, a.limit, branch=a.branch, repos=a.repos
    )
    several = len(result.repos) > 1  # then each line names its index, for expand's repo
    where_all = (
        ", ".join(f"{n}{_at(result.indexes.get(n))}" for n in result.repos)
        if several
        else f"{result.repo}{_at(result.index)}"
    )
    lines = [f"Files for {a.query!r} in {where_all}, best first:"]

    def where(repo: str) -> str:
        return f"{repo}: " if several else ""

    lines += [f"- {where(f.repo)}{f.path} (score {f.score:.3f})" for f in result.files] or [
        "- (none)"
    ]
    lines.append("\nSymbols:")
    lines += [
        f"- {s.symbol.kind} {where(s.repo)}{s.symbol.id} (lines {s.symbol.start_line}-"
        f"{s.symbol.end_line}): {s.symbol.signature} (score {s.score:.3f})"
        for s in result.symbols
    ] or ["- (none)"]
    lines += [f"Degraded: {d}" for d in result.degraded]
    return Answer(["\n".join(lines)], result)


def _expand(ctx: ToolContext, a: ExpandRequest) -> Answer:
    if (a.symbol is None) == (a.path is None):
        raise InvalidRequest(
            "give either symbol or path",
            hint="symbol='Store.get', or path with start_line/end_line",
        )
    pack = ctx.service.expand(
        ctx.repo(a.repo), symbol=a.symbol, path=a.path, start_line=a.start_line,
        end_line=a.end_line, budget_tokens=a.budget_tokens, callers=a.callers,
        callees=a.callees, session_id=a.session_id, branch=a.branch,
    )  # fmt: skip
    return Answer(render_pack(pack), pack)


def _links(found: Links, what: str) -> list[str]:
    at = f" at {found.at}" if found.at else ""
    lines = [f"{what} {found.name}{at} in {found.repo} ({found.total}):"]
    for x in found.links:
        place = f"{x.path}:{x.line}" + (f"-{x.end_line}" if x.end_line else "")
        mark = "" if x.resolution == "resolved" else " (by name: a guess)"
        lines.append(f"- {x.id} ({place}) {x.kind}{mark}")
    if not found.links:
        lines.append("- (none)")
    return ["\n".join(lines)]


def _references(ctx: ToolContext, a: ReferencesRequest) -> Answer:
    found = ctx.service.references(ctx.repo(a.repo), a.symbol, a.limit)
    return Answer(_links(found, "Uses of"), found)


def _definition(ctx: ToolContext, a: DefinitionRequest) -> Answer:
    found = ctx.service.definition(ctx.repo(a.repo), a.symbol, a.path, a.line)
    return Answer(_links(found, "Definitions of"), found)


def _repo_map(ctx: ToolContext, a: MapRequest) -> Answer:
    pack = ctx.service.repo_map(ctx.repo(a.repo), a.budget_tokens)
    return Answer(render_pack(pack), pack)


def _index_status(ctx: ToolContext, a: RepoRequest) -> Answer:
    repo = a.repo or ctx.default_repo
    names = [repo] if repo else ctx.service.names()
    statuses = [ctx.service.status(n) for n in names]
    text = "\n\n".join(render_status(s) for s in statuses) or (
        "Nothing is indexed yet: run `ctxsvc index PATH` in a shell."
    )
    return Answer([text], StatusResult(repos=statuses))


def _refresh(ctx: ToolContext, a: RepoRequest) -> Answer:
    meta = ctx.service.resolve(ctx.repo(a.repo))
    # The answer comes at the commit; the chunks still without a vector fill in behind.
    s = ctx.service.index(meta.root, meta.name, vectors=meta.vectors != "disabled", wait=False)
    vectors = (
        f"vectors partial: {s.vectors_missing} chunks still to embed"
        + (", filling in behind" if ctx.service.catalog.fill_behind else "")
        if s.vectors == "partial"
        else f"vectors {s.vectors}"
    )
    text = (
        f"Re-indexed {s.repo} ({s.root}), generation {s.version}: {s.files_indexed} files parsed, "
        f"{s.files_unchanged} unchanged, {s.files_deleted} deleted; {s.chunks} chunks, "
        f"{s.symbols} symbols; {vectors}."
    )
    return Answer([text, *(f"Warning: {w}" for w in s.warnings)], s)


def _start_session(ctx: ToolContext, a: SessionRequest) -> Answer:
    session = ctx.service.start_session(ctx.repo(a.repo), a.task, a.agent, a.workspace)
    text = (
        f"Started session {session.id} on {session.repo}. Pass session_id={session.id!r} to "
        "get_context and expand (code already sent is not repeated), and to write_checkpoint, "
        "record_decision and resume_session."
    )
    return Answer([text], session)


def _write_checkpoint(ctx: ToolContext, a: CheckpointCall) -> Answer:
    cp = ctx.service.write_checkpoint(
        a.session_id, a.messages, a.fields(), a.idempotency_key, a.budget_tokens
    )
    return Answer(render_checkpoint(cp), _without_transcript(cp))


def _resume_session(ctx: ToolContext, a: ResumeRequest) -> Answer:
    result = ctx.service.resume(a.session_id, a.budget_tokens, refresh=a.refresh)
    notes = [f"Degraded: {d}" for d in result.degraded]
    notes += [f"Changed by another session: [{w.subject}] {w.message}" for w in result.warnings]
    texts = [result.rendered, *(["\n".join(notes)] if notes else [])]
    return Answer(texts, replace(result, checkpoint=_without_transcript(result.checkpoint)))


def _record_decision(ctx: ToolContext, a: DecisionRequest) -> Answer:
    text = f"{a.decision} (reason: {a.reason})" if a.reason else a.decision
    cp = ctx.service.write_checkpoint(
        a.session_id, None, {"decisions": [text]}, a.idempotency_key, 300
    )
    texts = render_checkpoint(cp)
    texts[0] = f"Recorded in checkpoint {cp.number}: {text}\n\n{texts[0]}"
    return Answer(texts, _without_transcript(cp))


@dataclass(frozen=True)
class Tool:
    """One tool: its arguments, its result type, and the hints clients read.

    ``omit`` (pydantic's ``exclude`` form) names the fields of ``output`` that
    the text blocks already carry: they are left out of ``structuredContent``
    and of the declared output schema, so a client that forwards both pays
    for the code once. ``read_only``: the tool changes nothing a user owns
    (refreshing the index or a session's ledger of what it received keeps
    ctxsvc's own derived state, not the repository's); ``idempotent``: a
    repeated call with the same arguments changes nothing more and answers the
    same (not so for a pack or resume with a session: the second call refers to
    what the first sent).
    """

    name: str
    title: str
    description: str
    args: type[Request]
    output: Any  # a type pydantic can describe and dump
    run: Callable[[ToolContext, Any], Answer]
    read_only: bool = False
    idempotent: bool = False
    omit: Mapping[str, Any] | None = None


# The code of a pack is its rendered text (and each item's share of it): the first text block.
PACK_CODE: Mapping[str, Any] = {"rendered": True, "items": {"__all__": {"text": True}}}
# A checkpoint's summary text; its state's is always empty (the schemas share one Summary).
CHECKPOINT_TEXT: Mapping[str, Any] = {"summary": {"rendered": True}, "state": {"rendered": True}}
RESUME_TEXT: Mapping[str, Any] = {
    "rendered": True, "context": PACK_CODE, "checkpoint": CHECKPOINT_TEXT,
}  # fmt: skip


_PACK_TEXT = (
    " Returns two text blocks: the code, under '## path' headings with 'lines A-B (symbol):' "
    "titles and code fences, never over budget_tokens; then what did not fit (path:lines and "
    "symbol: expand them next), files changed on disk since indexing and degraded signals. "
    "The structured result has the same spans, symbols, tokens and left-out list, without the "
    "code again."
)

TOOLS: tuple[Tool, ...] = (
    Tool(
        "get_context", "Code for a task",
        "Find the code relevant to a task in an indexed repository, ranked (full text, "
        "embeddings, symbol names and the code graph) and packed within a token budget. Use it "
        "first for any question about how the code works or where to change it." + _PACK_TEXT
        + " With session_id, code the session already received unchanged is listed, not resent."
        " With diff (a base: 'HEAD', a branch, a commit), the context is for your working "
        "tree's change against it: the diff first, then the definitions it changed, their "
        "callers, callees, tests and co-changed files, ranked with what the query finds.",
        ContextArgs, ContextPack, _get_context, read_only=True, omit=PACK_CODE,
    ),
    Tool(
        "search_code", "Where things are",
        "Rank files and symbols (kind, id 'path::Qualified.name' for expand, lines, signature) "
        "for a query, with scores, without returning code. Cheaper than get_context when you "
        "only need to know where something lives; then read it with expand.",
        SearchArgs, SearchResult, _search_code, read_only=True, idempotent=True,
    ),
    Tool(
        "expand", "Read a symbol or lines",
        "Return the whole code of one definition (symbol: its id 'path::Qualified.name' from "
        "search_code, or a unique qualified name; an ambiguous name fails with the candidates' "
        "ids) or of a line range of a file (path, start_line, end_line; without lines: the "
        "whole file), optionally with the definitions it calls (callees) and the code that uses "
        "it (callers), each marked '(resolved)' through receivers and imports or '(name match)', "
        "within budget_tokens. Give symbol or path, not both. Use it on what get_context left "
        "out." + _PACK_TEXT,
        ExpandArgs, ContextPack, _expand, read_only=True, omit=PACK_CODE,
    ),
    Tool(
        "impact", "Who depends on a symbol",
        "List the definitions that use a symbol (id 'path::Qualified.name', qualified name or "
        "name), then those that use them, to depth levels (1-5), each with the file and line of "
        "the use and whether the link was resolved through receivers and imports or matched by "
        "name only (a guess). Use it before changing a definition to see what else must change.",
        ImpactArgs, Impact, _impact, read_only=True, idempotent=True,
    ),
    Tool(
        "references", "Where a symbol is used",
        "List the uses of a symbol (id 'path::Qualified.name', qualified name or name): each "
        "with its file and line, the definition it sits in, call or use, and whether it was "
        "resolved through receivers and imports or matched by name only (a guess). Resolved "
        "uses come first.",
        ReferencesArgs, Links, _references, read_only=True, idempotent=True,
    ),
    Tool(
        "definition", "Go to definition",
        "What a name means where it is used: give the name (symbol) and the path and line of "
        "the use; "
        "the answer lists the definitions it resolves to (through the receiver, the file's "
        "imports and the scopes around it), with their lines and headers. Without path and "
        "line, or when the index holds no use of the name there: every definition of the "
        "name, marked as matched by name.",
        DefinitionArgs, Links, _definition, read_only=True, idempotent=True,
    ),
    Tool(
        "repo_map", "Map of the repository",
        "A query-free overview of a repository: its most central files (PageRank over "
        "definitions, references and imports), each with its most referenced symbols, within "
        "budget_tokens. Use it to orient yourself in an unfamiliar repository.",
        MapArgs, ContextPack, _repo_map, read_only=True, idempotent=True, omit=PACK_CODE,
    ),
    Tool(
        "index_status", "What is indexed",
        "What is indexed: name, root directory, commit and time, files, chunks and symbols, "
        "embedding model, files changed, added or deleted on disk since indexing (refresh picks "
        "them up), files skipped and why, and degraded parts. Without repo (and no default "
        "repository) it lists every index.",
        RepoArgs, StatusResult, _index_status, read_only=True, idempotent=True,
    ),
    Tool(
        "refresh", "Re-index changed files",
        "Re-index a repository incrementally and wait until it is done: only files changed, "
        "added or deleted on disk since the last index are read. Call it after editing files so "
        "that get_context and expand see the new code. Fails with index_busy (retryable) while "
        "another process indexes the repository. Does not register new repositories.",
        RepoArgs, IndexSummary, _refresh, read_only=True, idempotent=True,
    ),
    Tool(
        "start_session", "Start a session",
        "Start a session for a task on a repository and return its id ('s-...'). Pass the id as "
        "session_id to get_context and expand (code already sent is not repeated) and to "
        "write_checkpoint, record_decision and resume_session (working memory kept on disk, "
        "shared with the HTTP API and CLI).",
        StartSessionArgs, Session, _start_session,
    ),
    Tool(
        "write_checkpoint", "Save progress",
        "Save your progress in a new numbered checkpoint of the session: the conversation since "
        "the last checkpoint (messages) and/or explicit fields are summarized (goal, steps done, "
        "decisions, files touched, open tasks, next step, errors), everything of earlier "
        "checkpoints is carried forward, and the summary fits budget_tokens. Returns the "
        "summary. Call it before your context fills up; after a reset, call resume_session.",
        CheckpointCall, Checkpoint, _write_checkpoint, omit=CHECKPOINT_TEXT,
    ),
    Tool(
        "resume_session", "Resume after a reset",
        "After a context reset or in a new conversation: the session's latest checkpoint "
        "summary, what changed since in the files and symbols it names (modified, renamed, "
        "deleted), and fresh code from those files, within budget_tokens. Files changed on disk "
        "are re-indexed first (refresh=false: compare with the index as is).",
        ResumeRequest, Resume, _resume_session, read_only=True, omit=RESUME_TEXT,
    ),
    Tool(
        "record_decision", "Record a decision",
        "Record one decision and its reason in the session's state so that it survives context "
        "resets: writes a new checkpoint that carries the previous state forward and adds "
        "'decision (reason: ...)' to its Decisions list (no transcript needed). It is kept in "
        "every later checkpoint's state, in their summaries as their budget allows (the newest "
        "first), and in resume_session, which fits the summary again from the state; when the "
        "session was started in a "
        "workspace, it is also logged there as a decision that parallel sessions see. Use it for "
        "choices that must not be undone or silently revisited (an interface, a library, an "
        "approach rejected and why).",
        DecisionRequest, Checkpoint, _record_decision, omit=CHECKPOINT_TEXT,
    ),
)  # fmt: skip


# -- rendering -----------------------------------------------------------------------


def render_pack(pack: ContextPack) -> list[str]:
    """The pack's text (within its budget) and a second block: what to read next, what is stale."""
    code = pack.rendered or f"No code in {pack.repo} matched within {pack.budget_tokens} tokens."
    several = len(pack.repos) > 1  # the headings say "## repo: path"; so does what follows
    generation = (
        ", ".join(f"{r} {v.generation}" for r, v in pack.indexes.items())
        if several
        else f"{pack.index.generation if pack.index else '?'}{_at(pack.index)}"
    )
    notes = [
        f"{pack.repo}: {len(pack.items)} blocks, {pack.tokens_used}/{pack.budget_tokens} tokens "
        f"({pack.encoding}), detail {pack.detail}, index generation {generation}."
    ]
    left = [o for o in pack.omitted if o.reason == "budget"]
    holes = [o for o in pack.omitted if o.reason == "gap"]
    if left:
        notes.append("Left out for the budget (read with expand, path and lines or symbol):")
        notes += [
            f"- {f'{o.repo}: ' if several else ''}{o.path}:{o.start_line}-{o.end_line}"
            f"{f' {o.symbol}' if o.symbol else ''} ({o.tokens} tokens)"
            for o in left[:10]
        ]
    if holes:
        notes.append(f"{len(holes)} holes marked in the blocks (each says what to expand).")
    versions = pack.indexes or ({pack.repo: pack.index} if pack.index else {})
    changed = [f"{r}: {p}" if several else p for r, v in versions.items() for p in v.changed_since]
    if changed:
        shown = ", ".join(changed[:10]) + (
            f" and {len(changed) - 10} more" if len(changed) > 10 else ""
        )
        notes.append(f"Changed on disk since indexing (call refresh to see them): {shown}.")
    notes += [f"Degraded: {d}" for d in pack.degraded]
    if pack.warnings:  # given in full above, within the budget: not again
        notes.append(f"{len(pack.warnings)} changes by other sessions are listed first above")
    return [code, "\n".join(notes)]


def render_status(s: RepoStatus) -> str:
    stale = len(s.changed) + len(s.added) + len(s.deleted)
    fresh = (
        "up to date"
        if not stale
        else f"{len(s.changed)} changed, {len(s.added)} added, {len(s.deleted)} deleted on disk "
        "since indexing (call refresh)"
    )
    skipped = ", ".join(f"{k} {v}" for k, v in sorted(s.skipped.items())) or "none"
    kept = "".join(
        f"kept for another branch: {place(b.branch, b.commit)}, indexed {b.indexed_at}\n"
        for b in s.snapshots
    )
    return (
        f"{s.name}: {s.root}\n"
        f"indexed {s.indexed_at}, {place(s.branch, s.commit)}, generation {s.version}\n"
        f"{kept}"
        f"{s.files} files, {s.chunks} chunks, {s.symbols} symbols; vectors {s.vectors} "
        f"({s.model or 'no model'})\n"
        f"freshness: {fresh}\nskipped: {skipped}\ndegraded: {'; '.join(s.degraded) or 'no'}"
    )


def _at(index: IndexVersion | None) -> str:
    """Where an answer's index version is: ', at branch main, commit 1a2b3c4d5e6f'."""
    return f", at {place(index.branch, index.commit)}" if index else ""


def render_checkpoint(cp: Checkpoint) -> list[str]:
    note = f" ({cp.summary.summarizer_note})" if cp.summary.summarizer_note else ""
    return [
        cp.summary.rendered,
        f"Checkpoint {cp.number} of session {cp.session_id}, {cp.created_at}: "
        f"{cp.summary.tokens}/{cp.summary.budget_tokens} summary tokens{note}.",
    ]


def _without_transcript(cp: Checkpoint) -> Checkpoint:
    # The transcript is what the caller sent; echoing it back would cost its tokens again.
    return replace(cp, transcript=())
