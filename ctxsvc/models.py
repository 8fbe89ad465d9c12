"""The plain vocabulary every stage passes: frozen dataclasses, stdlib only.

Lines are 1-based and inclusive everywhere. Paths are repository-relative,
POSIX-style strings.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field
from typing import Any, Generic, NamedTuple, TypeVar


class SkipReason(enum.StrEnum):
    """Why a discovered file was not indexed."""

    BINARY = "binary"
    TOO_LARGE = "too_large"
    MINIFIED = "minified"
    GENERATED = "generated"
    ASSET = "asset"
    UNREADABLE = "unreadable"
    SYMLINK_OUTSIDE = "symlink_outside_root"
    SYMLINK_LOOP = "symlink_loop"
    NOT_A_FILE = "not_a_regular_file"
    EMPTY = "empty"


@dataclass(frozen=True)
class SourceFile:
    """A file found by discovery, before its content is read."""

    path: str
    size: int
    mtime_ns: int
    language: str | None  # a tree-sitter language name, or None for plain text


@dataclass(frozen=True)
class SkippedFile:
    path: str
    reason: SkipReason
    detail: str = ""


@dataclass(frozen=True)
class FileText:
    """The decoded content of a file that passed the content checks."""

    text: str
    sha256: str  # of the raw bytes
    lossy: bool = False  # not valid UTF-8: decoded with replacement characters


@dataclass(frozen=True)
class Span:
    """A node of a file's outline: what chunking needs of the syntax tree.

    Top-level statements of a file are spans; a definition's span has the
    statements (or members) of its body as children, so a large definition
    can be split at statement boundaries.
    """

    start_line: int
    end_line: int
    symbol: str | None = None  # qualified name when this span is a definition
    children: tuple[Span, ...] = ()


@dataclass(frozen=True)
class Symbol:
    """A definition: function, method, class, struct, interface, trait, enum,
    type alias or module constant."""

    name: str
    qualname: str  # dotted path of enclosing definitions, e.g. "Client.send"
    kind: str
    path: str
    start_line: int
    end_line: int
    # The header up to the body on one line, for tables and map lines: whitespace
    # runs joined, comments dropped, a body opener (":", "{") left off, and a long
    # one cut at a token boundary with " …". Never quoted as the file's text.
    signature: str
    docstring: str = ""
    parent: str | None = None  # qualname of the enclosing definition
    # The definition's own header lines, from its keyword or name (decorators,
    # attributes and doc comments before it are start_line..head_start-1) to the
    # line its body begins on. 0: unknown, take start_line..start_line.
    head_start: int = 0
    head_end: int = 0

    @property
    def id(self) -> str:
        """The stable id of the definition: ``path::qualname``."""
        return f"{self.path}::{self.qualname}"


@dataclass(frozen=True)
class Reference:
    """An identifier used or called at a line."""

    name: str
    path: str
    line: int
    kind: str = "use"  # "call" or "use"
    scope: str | None = None  # qualname of the enclosing definition


@dataclass(frozen=True)
class Import:
    path: str
    line: int
    module: str  # what is imported from, as written ("os.path", "./utils", "fmt")
    names: tuple[str, ...] = ()  # the names bound, when the syntax lists them


@dataclass(frozen=True)
class ParsedFile:
    """What the parser learned of one file."""

    path: str
    language: str | None
    symbols: tuple[Symbol, ...] = ()
    references: tuple[Reference, ...] = ()
    imports: tuple[Import, ...] = ()
    outline: tuple[Span, ...] = ()
    syntax_errors: int = 0  # count of ERROR/MISSING nodes; the partial tree is used


def embed_text(header: str, text: str) -> str:
    """What the embedder reads of a chunk: its scope headers, then its code."""
    return f"{header}\n{text}" if header else text


@dataclass(frozen=True)
class Chunk:
    """An AST-aligned piece of a file, the unit of retrieval and embedding."""

    id: str  # stable: sha256 of path, span and content
    path: str
    language: str | None
    start_line: int
    end_line: int
    header: str  # enclosing scopes' signatures, one per line ("" at top level)
    text: str  # the file's lines start_line..end_line, verbatim
    symbols: tuple[str, ...] = ()  # qualnames defined in the chunk
    tokens: int = 0  # tokens of header + text
    content_hash: str = ""  # sha256 of embed_text: the key of the vector cache

    @property
    def embed_text(self) -> str:
        """What the embedder sees: scope headers, then the code.

        The path is left out on purpose: a renamed file keeps its content
        hashes and so reuses its vectors. Paths reach full-text search.
        """
        return embed_text(self.header, self.text)


@dataclass(frozen=True)
class StageTiming:
    stage: str
    seconds: float
    items: int = 0


@dataclass(frozen=True)
class IndexSummary:
    """What one ``index`` run did."""

    repo: str
    root: str
    commit: str | None
    files_seen: int
    files_indexed: int  # parsed in this run (new or changed)
    files_unchanged: int
    files_deleted: int
    skipped: dict[str, int]  # reason -> count
    files_with_syntax_errors: int
    symbols: int  # totals in the index after the run
    references: int
    chunks: int
    tokens: int
    chunks_embedded: int  # embedded in this run
    chunks_reused: int  # vectors taken from the content-hash cache
    vectors: str  # "complete", "partial" (filling in), "missing" or "disabled"
    model: str | None
    timings: tuple[StageTiming, ...] = ()
    warnings: tuple[str, ...] = field(default_factory=tuple)
    version: int = 0
    vectors_missing: int = 0  # chunks without a vector when the run ended
    branch: str | None = None  # the branch indexed; None when detached or outside git


@dataclass(frozen=True)
class RepoStatus:
    """What is indexed under a name, how fresh it is, and what is degraded."""

    name: str
    root: str
    commit: str | None
    indexed_at: str
    files: int
    chunks: int
    symbols: int
    model: str | None
    dimension: int | None
    tokenizer: str
    vectors: str  # "complete", "partial" (filling in), "missing" or "disabled"
    changed: tuple[str, ...] = ()  # files changed on disk since indexing
    added: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()
    degraded: tuple[str, ...] = ()
    skipped: dict[str, int] = field(default_factory=dict)
    version: int = 0
    vectors_share: float | None = None  # of chunks with a vector; None without vectors
    branch: str | None = None  # the branch indexed; None when detached or outside git
    # The versions of other branches kept for agents still on them, most recently left first.
    snapshots: tuple[BranchSnapshot, ...] = ()
    watch: WatchStatus | None = None  # set by a server that watches the index (serve --watch)


@dataclass(frozen=True)
class BranchSnapshot:
    """An index version kept when the working tree moved to another branch (or commit):
    a query naming its branch (its commit, when it was detached) is answered from it."""

    branch: str | None  # None: a detached HEAD, known by its commit
    commit: str | None
    indexed_at: str
    generation: int


@dataclass(frozen=True)
class WatchStatus:
    """How a ``ctxsvc serve --watch`` keeps an index current: its state and last runs.

    ``state``: "watching", "root_missing" (the root is gone: nothing is watched
    until it is back) or "failed" (the watch itself broke; it is started again).
    Times are ISO 8601 UTC; ``last_run_*`` is the last watch-triggered index run
    that committed, ``last_error*`` the last one that failed.
    """

    state: str
    since: str
    runs: int = 0
    last_run_at: str | None = None
    last_run_seconds: float | None = None
    last_run_changed: tuple[str, ...] = ()  # its first few changed paths
    last_error: str | None = None
    last_error_at: str | None = None


@dataclass(frozen=True)
class FileRecord:
    """The stored state of one discovered file: indexed, or skipped with a reason."""

    path: str
    sha256: str
    size: int
    mtime_ns: int
    language: str | None
    status: str  # "indexed" or "skipped"
    reason: str = ""  # a SkipReason value when skipped
    detail: str = ""
    syntax_errors: int = 0
    lossy: bool = False  # decoded with replacement characters
    chunks: int = 0
    tokens: int = 0


@dataclass(frozen=True)
class Hit:
    """A retrieved chunk with its fused score and the signals that found it."""

    chunk: Chunk
    score: float
    why: tuple[str, ...] = ()  # e.g. ("fts#1", "vector#4")


@dataclass(frozen=True)
class ContextItem:
    """One piece of a context pack; ``text`` is what the agent reads of it."""

    path: str
    start_line: int
    end_line: int
    symbol: str | None
    kind: str  # "snippet", "file", "skeleton" or "map"
    score: float
    tokens: int  # of the rendered block (its share of ``ContextPack.rendered``)
    text: str
    why: tuple[str, ...] = ()
    # span_hash of the file lines the item delivers within start_line..end_line (its
    # runs there joined by "\n"; the scope headers above them left out): snippet, file
    content_hash: str = ""
    # The runs of file lines quoted verbatim in ``text``, in order: scope header
    # lines (before start_line) and the body; and the holes marked in place.
    lines: tuple[tuple[int, int], ...] = ()
    gaps: tuple[tuple[int, int], ...] = ()
    repo: str = ""  # the index it comes from (an answer may span several)


@dataclass(frozen=True)
class Omitted:
    """What a pack left out and how to fetch it: a candidate that did not fit the
    budget (reason "budget"), or a hole marked inside a delivered item ("gap")."""

    path: str
    start_line: int
    end_line: int
    symbol: str | None
    tokens: int
    score: float
    reason: str = "budget"
    repo: str = ""  # the index to expand it in


@dataclass(frozen=True)
class Freshness:
    """Files changed, added or deleted on disk since an index, and what that degrades."""

    changed: tuple[str, ...]
    added: tuple[str, ...]
    deleted: tuple[str, ...]
    degraded: tuple[str, ...] = ()
    head_moved: bool = False  # HEAD is on another branch or commit than the index says

    @property
    def all(self) -> tuple[str, ...]:
        return tuple(sorted(self.changed + self.added + self.deleted))

    @property
    def stale(self) -> bool:
        """Whether a refresh has anything to do: files changed, or HEAD moved."""
        return bool(self.changed or self.added or self.deleted) or self.head_moved


def place(branch: str | None, commit: str | None) -> str:
    """Where an index version is, in words: 'branch main, commit 1a2b3c4d5e6f',
    'detached, commit 1a2b3c4d5e6f', or 'no commit' (outside git)."""
    at = f"commit {commit[:12]}" if commit else "no commit"
    return f"branch {branch}, {at}" if branch else f"detached, {at}" if commit else at


@dataclass(frozen=True)
class IndexVersion:
    commit: str | None
    indexed_at: str
    generation: int
    changed_since: tuple[str, ...] = ()  # files changed on disk since indexing
    branch: str | None = None  # the branch indexed; None when detached or outside git


@dataclass(frozen=True)
class ContextPack:
    """What an agent receives: items within the budget, and what was left out."""

    repo: str
    query: str
    items: tuple[ContextItem, ...]
    tokens_used: int  # of ``rendered``, counted exactly
    budget_tokens: int
    encoding: str
    rendered: str
    detail: str = "snippets"
    omitted: tuple[Omitted, ...] = ()
    index: IndexVersion | None = None
    degraded: tuple[str, ...] = ()
    session_id: str | None = None
    already_sent: tuple[DeliveredSpan, ...] = ()  # held by the session, not repeated
    # workspace changes the session had not seen, as delivered in ``rendered`` (in full)
    warnings: tuple[DriftWarning, ...] = ()
    # Every index the answer spans, in the request's order, and each one's version
    # (over several: ``repo`` joins their names with ",", and ``index`` is None).
    repos: tuple[str, ...] = ()
    indexes: dict[str, IndexVersion] = field(default_factory=dict)


@dataclass(frozen=True)
class DeliveredSpan:
    """Lines ``start_line..end_line`` of ``path`` as sent to a session.

    ``content_hash`` is the sha256 (hex) of the exact text of those lines as
    delivered (see ``ctxsvc.sessions.span_hash``), so a later change to the
    file can be detected.
    """

    path: str
    start_line: int
    end_line: int
    content_hash: str
    tokens: int
    repo: str = ""  # in a pack: the index it was sent from (the ledger keys spans by it)


def span_hash(text: str) -> str:
    """The sha256 (hex) of the exact text of a span's lines, as delivered.

    The text is the lines joined by ``\\n`` without a trailing newline, the
    form of ``Chunk.text``; the same form must be hashed on both sides.
    """
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


# -- workspaces: what parallel sessions changed ----------------------------------------


@dataclass(frozen=True)
class WorkspaceEvent:
    """One entry of a workspace's shared log (numbered 1, 2, ... per file, in order).

    ``source`` says who wrote it: "agent" (posted by a session), "checkpoint"
    (a session's checkpoint edited a file or took a decision) or "index" (a
    re-index saw a symbol or file renamed or removed; ``workspace`` is then
    None: it concerns every workspace working on ``repo``). ``kind`` is one of
    ``EVENT_KINDS``. ``symbols`` and ``paths`` are what the event is about,
    as sent or extracted from ``text``; ``new_symbol``/``new_path`` name a
    rename's target.
    """

    seq: int
    workspace: str | None
    repo: str | None
    session_id: str | None
    agent: str | None
    source: str
    kind: str
    text: str
    created_at: str
    paths: tuple[str, ...] = ()
    symbols: tuple[str, ...] = ()
    new_path: str | None = None
    new_symbol: str | None = None


EVENT_KINDS = ("decision", "renamed", "removed", "changed", "note")


@dataclass(frozen=True)
class DriftWarning:
    """A change by another session (or seen by a re-index) that this answer touches.

    ``subject`` is the path or symbol of the answer (or the query) it concerns;
    ``message`` is the line an agent reads.
    """

    event: WorkspaceEvent
    subject: str
    message: str


# -- browsing results (the HTTP API answers these; the client reads them) ----------


@dataclass(frozen=True)
class FileScore:
    path: str
    score: float
    repo: str = ""


@dataclass(frozen=True)
class SymbolScore:
    symbol: Symbol
    score: float
    id: str = ""  # the symbol's id (``path::qualname``), given to expand; set from ``symbol``
    repo: str = ""

    def __post_init__(self) -> None:
        if not self.id:
            object.__setattr__(self, "id", self.symbol.id)


@dataclass(frozen=True)
class SearchResult:
    """Ranked files and symbols with their scores, best first, without code."""

    repo: str
    query: str
    files: tuple[FileScore, ...]
    symbols: tuple[SymbolScore, ...]
    degraded: tuple[str, ...] = ()
    index: IndexVersion | None = None
    repos: tuple[str, ...] = ()  # every index searched, in the request's order
    indexes: dict[str, IndexVersion] = field(default_factory=dict)  # each one's version


@dataclass(frozen=True)
class SymbolUses:
    """Definitions of a name and references to them (the first of each, and how many).

    A lookup lists every definition the name can mean (``ids`` are theirs, in
    order); the references are those that resolve to one of them through
    receivers and imports, first (``resolved_references`` of them in all), then
    those that match by name only and could mean one of them. A reference
    that resolves to another definition is not listed.
    """

    repo: str
    name: str
    definitions: tuple[Symbol, ...]
    references: tuple[Reference, ...]
    total_definitions: int
    total_references: int
    ids: tuple[str, ...] = ()
    resolved_references: int = 0


@dataclass(frozen=True)
class FileLines:
    """Lines of an indexed file, as indexed."""

    repo: str
    path: str
    start_line: int
    end_line: int
    total_lines: int
    tokens: int
    content_hash: str
    text: str


@dataclass(frozen=True)
class RepoInfo:
    """One index: what it is and what it holds."""

    name: str
    root: str
    commit: str | None
    indexed_at: str
    generation: int
    vectors: str
    model: str | None
    stats: dict[str, Any] = field(default_factory=dict)


T = TypeVar("T")


class Stored(NamedTuple, Generic[T]):
    """What an idempotent write returns: the record, and whether it is new (False: a replay)."""

    record: T
    new: bool


@dataclass(frozen=True)
class Dependent:
    """A definition (or a file's top level) that uses one a level nearer the symbol."""

    depth: int
    id: str  # ``path::qualname``, or the path for a use at a file's top level
    path: str
    line: int  # of the reference
    kind: str  # "call" or "use"
    via: str  # the id of what it uses
    resolution: str  # "resolved", or "name" (matched by name only: a guess)
    test: bool


@dataclass(frozen=True)
class Impact:
    """Who depends on ``symbol``, grouped by depth (``levels[0]`` is depth 1)."""

    repo: str
    symbol: str
    ids: tuple[str, ...]  # the definitions it names
    depth: int
    levels: tuple[tuple[Dependent, ...], ...]
    totals: tuple[int, ...]  # dependents at each depth (more than listed when capped)
    commit: str | None = None


@dataclass(frozen=True)
class Link:
    """A definition or a use, and how it was found."""

    id: str  # the definition's ``path::qualname`` (a use: the definition it sits in, or the path)
    path: str
    line: int  # a definition's first line; a use's line
    kind: str  # a definition's kind; a use's "call" or "use"
    resolution: str  # "resolved", or "name" (matched by name only: a guess)
    signature: str = ""  # a definition's header
    end_line: int = 0  # a definition's last line


@dataclass(frozen=True)
class Links:
    """The definitions a name means (at a place, when given), or the uses of a symbol."""

    repo: str
    name: str
    at: str | None
    links: tuple[Link, ...]
    total: int
    commit: str | None = None
