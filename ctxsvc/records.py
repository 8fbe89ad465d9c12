"""What agent memory keeps: sessions, checkpoints and their summaries, resume answers.

Frozen dataclasses like those of ``ctxsvc.models``, which they build on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ctxsvc.models import ContextPack, DriftWarning, WorkspaceEvent


@dataclass(frozen=True)
class SessionSummary:
    """What one session received from one repository."""

    session_id: str
    repo: str
    spans: int
    tokens: int
    first_delivered: str  # ISO-8601, UTC
    last_delivered: str


@dataclass(frozen=True)
class Delivery:
    """One span a session received, as the ledger keeps it: a span sent again keeps one
    row, at the time it was last sent."""

    repo: str
    path: str
    start_line: int
    end_line: int
    tokens: int
    delivered_at: str  # ISO-8601, UTC


@dataclass(frozen=True)
class Session:
    """An agent's working session on one repository, the owner of checkpoints."""

    id: str
    repo: str
    task: str
    agent: str | None
    workspace: str | None
    created_at: str  # ISO-8601, UTC


@dataclass(frozen=True)
class Anchor:
    """A file (and optionally a symbol in it) an agent touched, as indexed then.

    ``sha256`` is the file's content hash in the index at checkpoint time ("" when
    the path was not indexed, e.g. a file the agent created). ``signature`` is the
    symbol's header then, which lets a resume recognise it under a new name;
    ``body_sha256`` the hash of its lines then (``span_hash``), which tells a
    modified symbol from the untouched ones of a modified file. ``read`` is False for
    a file the session only saw named (in the conversation, a traceback), never opened
    nor edited: resume still looks at it, a summary does not list it as read.
    """

    path: str
    symbol: str | None = None
    sha256: str = ""
    edited: bool = False
    signature: str = ""
    body_sha256: str = ""
    read: bool = True


@dataclass(frozen=True)
class Summary:
    """A structured checkpoint summary; ``rendered`` is what an agent reads.

    In ``Checkpoint.summary`` the lists hold only what fits the token budget and
    ``dropped`` counts the rest per section; in ``Checkpoint.state`` they hold
    everything extracted so far (``rendered`` empty), carried to the next checkpoint.
    """

    goal: str
    done: tuple[str, ...] = ()
    decisions: tuple[str, ...] = ()
    files: tuple[Anchor, ...] = ()
    open_tasks: tuple[str, ...] = ()
    next_step: str = ""
    errors: tuple[str, ...] = ()
    facts: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    dropped: dict[str, int] = field(default_factory=dict)
    rendered: str = ""
    tokens: int = 0  # of ``rendered``
    budget_tokens: int = 0
    summarizer: str = "offline"  # or "llm:<model>"
    summarizer_note: str = ""  # why the offline summarizer answered instead of the LLM one
    # The user's requirements and prohibitions ("must", "don't", "keep ..."), in the order
    # stated, carried into every later checkpoint.
    constraints: tuple[str, ...] = ()
    # The session's task came wrapped by an agent harness (``<pr_description>``, ``ISSUE:``):
    # its later user messages are the harness's, not the user's requirements.
    harness: bool = False
    # Where a lone `cd` left a shell that keeps its directory ("" is the repository's top).
    cwd: str = ""


@dataclass(frozen=True)
class Checkpoint:
    """One immutable, numbered checkpoint of a session (1, 2, ...)."""

    session_id: str
    number: int
    created_at: str
    summary: Summary
    state: Summary
    transcript: tuple[dict[str, object], ...]  # the chat messages as received
    transcript_tokens: int
    idempotency_key: str | None = None


@dataclass(frozen=True)
class AnchorChange:
    """What happened to an anchored file or symbol since the checkpoint.

    ``change`` is "modified" (a file, or a symbol whose lines changed),
    "deleted", "renamed" (same content or symbol under another path or name:
    ``new_path``/``new_symbol``) or "symbol_deleted".
    """

    path: str
    symbol: str | None
    change: str
    new_path: str | None = None
    new_symbol: str | None = None


@dataclass(frozen=True)
class Resume:
    """What an agent reads after a context reset: summary, changes, fresh context.

    ``refreshed`` names the files re-indexed first because they had changed on
    disk since the last index (``changes`` and ``context`` are then of the code
    on disk).
    """

    session: Session
    checkpoint: Checkpoint
    changes: tuple[AnchorChange, ...]
    context: ContextPack | None
    rendered: str
    tokens_used: int
    budget_tokens: int
    degraded: tuple[str, ...] = ()
    warnings: tuple[DriftWarning, ...] = ()
    workspace_events: tuple[WorkspaceEvent, ...] = ()  # by other sessions since the checkpoint
    refreshed: tuple[str, ...] = ()
