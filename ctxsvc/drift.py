"""Parallel sessions in one workspace: what each changed, and who has not seen it.

Pure functions, no I/O. Three jobs:

- ``describe``: what a posted event is about. An agent writes "renamed
  interface Store to Repository"; the rename pattern, code-like identifiers
  (``snake_case``, ``CamelCase``, ``a.b``, anything in backticks) and names the
  index knows become the event's symbols, and paths become its paths.
- ``index_events``: what a re-index saw by itself: symbols renamed, moved or
  removed, and files renamed or removed, between two versions of an index.
- ``drift``: the warnings an answer for a session must carry: events by other
  sessions (or a re-index) about a path or symbol the answer delivers, holds
  already or the query names, that happened after the session last received
  that path (or, never having received it, after the session started), and
  that it was not warned about before.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from ctxsvc.models import DriftWarning, Symbol, WorkspaceEvent
from ctxsvc.packing import capped_list
from ctxsvc.stores.events import MAX_SUBJECT_CHARS, MAX_SUBJECTS
from ctxsvc.summaries import signature_key
from ctxsvc.tokens import TokenCounter

MAX_WARNINGS = 20
_KIND_WORD = (
    r"(?:interface|class|struct|trait|type|enum|function|func|method|module|package|file|"
    r"variable|var|constant|const|field|attribute|property|endpoint|table|column)"
)
_RENAME = re.compile(
    rf"\b(?:renam\w*|mov(?:ed|e|ing))\s+(?:the\s+)?(?:{_KIND_WORD}\s+)?`?([\w./:-]+)`?"
    r"\s+(?:to|->|→|as|into)\s+`?([\w./:-]+)`?",
    re.I,
)
_REMOVE = re.compile(
    rf"\b(?:remov\w*|delet\w*|drop(?:ped)?)\s+(?:the\s+)?(?:{_KIND_WORD}\s+)?`?([\w./:-]+)`?",
    re.I,
)
_TICKED = re.compile(r"`([^`\s]{1,200})`")
_WORD = re.compile(r"[A-Za-z_][\w.]*[\w]|[A-Za-z_]")
_CODE_LIKE = re.compile(r"^(?:\w*[a-z0-9][A-Z]\w*|\w*_\w+|\w+(?:\.\w+)+)$")
_PATH_LIKE = re.compile(r"^(?:[\w.-]+/)+[\w.-]+$")
# A bare file name is a path only with a common extension ("Server.handle" is a symbol).
_FILE_NAME = re.compile(
    r"^[\w-]+\.(?:py|pyi|js|jsx|mjs|cjs|ts|tsx|go|rs|java|kt|kts|c|h|cc|cpp|hpp|cs|rb|php|sh|"
    r"md|rst|txt|json|toml|ya?ml|cfg|ini|sql|html|css)$"
)


@dataclass(frozen=True)
class Described:
    """What an event's text is about, as ``describe`` reads it."""

    kind: str | None  # "renamed" or "removed" when the text says so
    paths: tuple[str, ...]
    symbols: tuple[str, ...]
    new_path: str | None = None
    new_symbol: str | None = None


def describe(text: str, known_names: Collection[str], known_paths: Collection[str]) -> Described:
    """The paths and symbols ``text`` is about (and a rename's target)."""
    paths: list[str] = []
    symbols: list[str] = []
    kind: str | None = None
    new_path = new_symbol = None

    def add(token: str) -> None:
        token = token.strip("`'\".,;:()")
        if not token:
            return
        target = paths if _is_path(token, known_paths) else symbols
        if token not in target:
            target.append(token)

    if m := _RENAME.search(text):
        kind = "renamed"
        old, new = m.group(1).rstrip(".:"), m.group(2).rstrip(".:")
        add(old)
        if _is_path(new, known_paths):
            new_path = new
        else:
            new_symbol = new
    elif m := _REMOVE.search(text):
        kind = "removed"
        add(m.group(1).rstrip(".:"))
    for token in _TICKED.findall(text):
        add(token)
    for token in _WORD.findall(text):
        last = token.rsplit(".", 1)[-1]
        if _CODE_LIKE.match(token) or token in known_names or last in known_names:
            add(token)
    for token in text.split():
        if _is_path(token.strip("`'\".,;:()"), known_paths):
            add(token)
    return Described(kind, tuple(paths), tuple(symbols), new_path, new_symbol)


def _is_path(token: str, known_paths: Collection[str]) -> bool:
    token = token.strip("`'\".,;:()")
    if token in known_paths:
        return True
    return bool(_PATH_LIKE.match(token) or _FILE_NAME.match(token)) and "://" not in token


def index_events(
    old_files: Mapping[str, str],
    old_symbols: Sequence[Symbol],
    new_files: Mapping[str, str],
    new_symbols: Sequence[Symbol],
) -> list[Described]:
    """Renamed, moved and removed symbols and files between two versions of an index.

    ``*_files`` map indexed paths to content hashes. Only files whose hash
    changed or that disappeared are compared. A symbol gone from its file is
    renamed when a symbol that did not exist before has its signature (bar the
    name) in the same file, moved when one of the same name appeared elsewhere,
    else removed; the members of a renamed or removed class are not reported
    again.
    """
    touched = {p for p, sha in old_files.items() if new_files.get(p) != sha}
    if not touched:
        return []
    out: list[Described] = []
    by_sha: dict[str, list[str]] = {}
    for p, sha in new_files.items():
        if p not in old_files:
            by_sha.setdefault(sha, []).append(p)
    for p in sorted(touched - new_files.keys()):
        moved = sorted(by_sha.get(old_files[p], ()))
        if moved:
            out.append(Described("renamed", (p,), (), new_path=moved[0]))
        else:
            out.append(Described("removed", (p,), ()))
    old_keys = {(s.path, s.qualname) for s in old_symbols}
    new_keys = {(s.path, s.qualname) for s in new_symbols}
    added = [s for s in new_symbols if (s.path, s.qualname) not in old_keys]
    gone = sorted(
        (s for s in old_symbols if s.path in touched and (s.path, s.qualname) not in new_keys),
        key=lambda s: (s.path, s.qualname.count("."), s.qualname),
    )
    reported: set[tuple[str, str]] = set()
    moved_files = {d.paths[0] for d in out if d.new_path}
    for s in gone:
        if s.path in moved_files or _parent_reported(s, reported):
            continue
        reported.add((s.path, s.qualname))
        key = signature_key(s.signature, s.name)
        same_sig = [
            a for a in added if a.path == s.path and signature_key(a.signature, a.name) == key
        ]
        same_name = [a for a in added if a.name == s.name and a.path != s.path]
        if same_sig and s.signature:
            t = same_sig[0]
            out.append(Described("renamed", (s.path,), (s.qualname,), None, t.qualname))
        elif same_name:
            t = same_name[0]
            out.append(Described("renamed", (s.path,), (s.qualname,), t.path, t.qualname))
        elif s.path in new_files:
            out.append(Described("removed", (s.path,), (s.qualname,)))
    return out


def _parent_reported(s: Symbol, reported: set[tuple[str, str]]) -> bool:
    parts = s.qualname.split(".")
    return any((s.path, ".".join(parts[:i])) in reported for i in range(1, len(parts)))


def index_event_text(d: Described) -> str:
    """The line a re-index event carries."""
    what = f"{d.symbols[0]} in {d.paths[0]}" if d.symbols else d.paths[0]
    if d.kind == "renamed":
        to = d.new_symbol or d.new_path or "?"
        if d.new_symbol and d.new_path:
            to = f"{d.new_symbol} in {d.new_path}"
        return f"re-index: {what} was renamed or moved to {to}"
    return f"re-index: {what} was removed"


@dataclass(frozen=True)
class Seen:
    """What one session knows, for ``drift``."""

    session_id: str
    started_at: str
    last_received: Mapping[str, str]  # path -> when the session last received it
    edited: Collection[str]  # paths the session itself edited (its checkpoints, its events)
    warned: Collection[int]  # events it was already warned about


@dataclass(frozen=True)
class Watch:
    """What a session saw, and the workspace events since it started (or since a checkpoint)."""

    seen: Seen
    events: list[WorkspaceEvent]


class DriftSource(Protocol):
    """Where drift comes from: the workspace log, as the query side and agent memory use it."""

    def watch(self, session_id: str, repo: str, since: str | None = None) -> Watch | None:
        """What ``session_id`` saw of ``repo`` and the events since; None outside a workspace."""

    def mark_warned(self, session_id: str, seqs: Iterable[int]) -> None:
        """Remember that the session was warned of these events."""


def subjects(items: Sequence[str]) -> tuple[str, ...]:
    """``items`` within the log's bounds, so that an odd path never fails a write."""
    return tuple(i for i in items if 0 < len(i) <= MAX_SUBJECT_CHARS)[:MAX_SUBJECTS]


def drift(
    seen: Seen,
    events: Iterable[WorkspaceEvent],
    paths: Collection[str],
    text: str,
    *,
    delivered: Collection[str] = (),
    indexed_at: str = "",
) -> list[DriftWarning]:
    """Warnings for an answer about ``paths`` and ``text`` (its snippets, the query).

    ``delivered`` are the paths the answer sends now, from an index built at
    ``indexed_at``: a file the session never received before, indexed after an
    event, holds its change already; one it received before the event is stale
    in its memory whatever it gets now.
    """
    events = list(events)
    words = set(_WORD.findall(text))
    words |= {w.rsplit(".", 1)[-1] for w in words if "." in w}
    told = {
        (e.kind, s, e.new_symbol or e.new_path)
        for e in events
        if e.source != "index" and e.session_id != seen.session_id
        for s in e.symbols + e.paths
    }
    out: list[DriftWarning] = []
    for e in events:
        if e.session_id == seen.session_id or e.seq in seen.warned:
            continue
        if e.source == "index":
            if any(p in seen.edited for p in e.paths):
                continue  # most likely the session's own edit
            if any((e.kind, s, e.new_symbol or e.new_path) in told for s in e.symbols + e.paths):
                continue  # a session said so already: one warning is enough
        subject = _subject(e, paths, words)
        if subject is None:
            continue
        times = [seen.started_at, *(seen.last_received.get(p, "") for p in e.paths)]
        # Code the session gets for the first time, from an index built after the
        # change, holds it: nothing it saw before is stale.
        if indexed_at and any(p in delivered and p not in seen.last_received for p in e.paths):
            times.append(indexed_at)
        if _time(e.created_at) > max(_time(t) for t in times):
            out.append(DriftWarning(e, subject, _message(e)))
    return out[:MAX_WARNINGS]


def _time(iso: str) -> datetime:
    return datetime.fromisoformat(iso) if iso else datetime.min.replace(tzinfo=UTC)


def _subject(e: WorkspaceEvent, paths: Collection[str], words: Collection[str]) -> str | None:
    for s in e.symbols:
        if s in words or s.rsplit(".", 1)[-1] in words:
            return s
    for p in (*e.paths, e.new_path):
        if p is not None and (p in paths or p in words):
            return p
    return None


def _message(e: WorkspaceEvent) -> str:
    if e.source == "index":
        who = "a re-index"
    else:
        who = f"session {e.session_id}" if e.session_id else "an agent"
        if e.agent:
            who += f" ({e.agent})"
    return f"{who} at {e.created_at[:19]}Z: {e.text}"


def render_warnings(
    warnings: Sequence[DriftWarning], counter: TokenCounter, cap: int
) -> tuple[str, tuple[DriftWarning, ...]]:
    """The warnings as a block an agent reads first, within ``cap`` tokens, and those
    it gives in full: the rest are only counted ("… and N more"), so they are not
    given yet (empty text and none when not even that fits)."""
    text, kept = capped_list(
        "## Changed by other sessions since you last saw it\n",
        [f"- [{w.subject}] {w.message}\n" for w in warnings],
        counter, cap, " (GET the workspace events)",
    )  # fmt: skip
    return text, tuple(warnings[:kept])
