"""Checkpoint states: what a session's transcript says, extracted; pure functions, no I/O.

The offline summarizer is rule-based and extractive. It reads OpenAI-style chat
messages (roles system/user/assistant/tool, ``tool_calls`` with a function name
and JSON arguments, tool results) and explicit fields, and extracts:

- the goal (explicit, else the previous checkpoint's, else the session task; as it reads,
  without an issue form's checklists, comments and pasted logs: ``requirements.gist``), and the
  user's constraints: sentences of user messages that require or forbid ("must",
  "don't", "keep the ...", "without changing ..."), only a harness's task tag's
  (``<pr_description>``) when there is one, carried into every later checkpoint;
- files touched: paths in tool-call arguments (``path``, ``file``, ...), files
  of unified diffs (``+++ b/...``, also in the output of ``git diff``), files a
  shell command writes (``sed -i``, ``ed``, redirections, ``tee``, Python
  ``open(..., "w")``: see :mod:`ctxsvc.shell_edits`; a new file removed again is
  dropped), traceback frames, and paths named in the conversation that the
  index holds; each anchored to the file's content hash in the index now, and
  to the symbols of that file named in the edit or enclosing the lines it
  addresses; a file only named (prose, a traceback) is kept with ``read=False``;
- decisions (sentences with "decided", "chose", "instead of", "I'll ... because",
  ...; not questions), steps done, open tasks ("TODO", "Still to do: ...", "I still
  need to ...", the items under a "Still to do:" line) and the next step ("Next I'll
  ...", "Then we need to ...", else what the last message says it will do: "Let me
  ...", else "continue: " what its last two turns set out to do and did); edited files of
  the index rank before files the session made;
- errors: tool results with a traceback, a non-zero exit (``<returncode>1`` too),
  "FAILED", "error:", a script's own verdict ("Issue reproduced: ..."), each with the
  lines that say why (``failures.failure``);
  an error whose command later ran clean is kept as fixed, at low priority;
- key facts: commands run, ports, versions, environment variable names.

Everything extracted is kept in a checkpoint's *state* and carried into the
next checkpoint; the *summary* is the state cut to a token budget, dropping
the lowest-priority items first and saying how many of each kind it dropped
(:mod:`ctxsvc.summaries`). Reading the messages themselves (tool calls,
commands, diffs, failures) is :mod:`ctxsvc.transcripts`.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ctxsvc.errors import InvalidRequest
from ctxsvc.failures import failure
from ctxsvc.models import Symbol
from ctxsvc.records import Anchor, Summary
from ctxsvc.requirements import gist, requirements, task_text
from ctxsvc.shell_edits import effects
from ctxsvc.transcripts import (
    call_paths,
    call_text,
    clip,
    command_of,
    diff_files,
    is_edit,
    is_view,
    sentences,
    text_of,
    tool_calls,
    without_code,
)

FIELDS = ("goal", "constraints", "done", "decisions", "open_tasks", "next_step", "notes")
MAX_STATE_ITEMS = 200  # per list: older items go first
GOAL_CHARS = 300
CONTINUE = "continue: "  # a next step that goes on with what the agent was doing

# A choice, not every explanation: a bare "because" mostly explains what code does.
_DECISION = re.compile(
    r"\b(decided|decide to|we'll go with|going with|chose|choose to|opted|instead of|"
    r"will use|prefer)\b|\b(?:I|we)(?:'ll| will)\b.*\bbecause\b",
    re.I,
)
_DONE = re.compile(
    r"^(?:I(?:'ve| have)?\s+)?(done|fixed|added|implemented|updated|refactored|renamed|removed|"
    r"created|wrote|moved|replaced|extracted)\b",
    re.I,
)
_TASK = re.compile(
    r"^\s*(?:[-*]\s*)?(?:\[ \]\s*|(?:TODO|FIXME|Remaining|Still need(?:s)? to|Left to do)\b[:\s-]*)(.+)",
    re.I,
)
_NEXT = re.compile(r"^\s*(?:[-*]\s*)?(?:next(?: step)?\s*[:,-]|next,? i(?:'ll| will))\s*(.+)", re.I)
# Said in a sentence anywhere in an agent's prose: "Next I'll add ...", "Then we need to ...".
_WILL = r"(?:i|we)(?:'ll| will| need to| am going to|'m going to| have to)"
_NEXT_SENTENCE = re.compile(
    rf"^(?:next(?: step)?\s*[:-]\s*|(?:next|then|after that|afterwards),?\s+{_WILL}\s+|"
    rf"my next step (?:is|will be) (?:to )?|the next step (?:is|will be) (?:to )?)(.+)",
    re.I,
)
# What remains, in a sentence: "Still to do: ...", "I still need to ...".
_TASK_SENTENCE = re.compile(
    r"^(?:(?:still|left) to do|to-?do|remaining(?: work| tasks?)?|what remains(?: is)?|"
    r"(?:i|we) still (?:need|have) to|still needs? to|(?:it )?remains to)\s*[:,-]?\s+(.+)",
    re.I,
)
# A line that opens a list of what remains; its items follow it.
_TASKS_HEAD = re.compile(
    r"^\s*(?:(?:still|left) to do|to-?do|remaining(?: work| tasks?)?|open tasks|next steps)\s*:\s*$",
    re.I,
)
_ITEM = re.compile(r"^\s*(?:[-*]|\d+[.)])\s+(?:\[ \]\s*)?(.+)")
# What the agent says it is about to do ("Let me run the tests"): a next step while the
# command of its message has no result yet.
_INTENT = re.compile(
    r"^(?:THOUGHT:\s*)?(?:now,?\s+|so,?\s+|first,?\s+)?(?:let me(?! know)|let's|i'll|i will|i need to|"
    r"i'm going to|i am going to|we need to)\s+(.+)",
    re.I,
)
# A command that only changes directory ("cd src/main", "cd ..", "cd").
_CD = re.compile(r"\s*cd(?:\s+([^\s;&|<>]+))?\s*(?:;\s*)?")
_SUBMIT = re.compile(r"submit", re.I)  # "submit", COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT
_BLOCKED = re.compile(r"\b(blocked|blocker|cannot proceed|stuck on)\b", re.I)
_FRAME = re.compile(r'File "([^"]+)", line \d+, in (\w+)')
_MENTION = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[\w-]+\.[A-Za-z]\w{0,5})(?![\w/-])")
_IDENT = re.compile(r"[A-Za-z_]\w*")
_PORT = re.compile(r"\b(?:port\s*[=:]?\s*|localhost:|127\.0\.0\.1:|0\.0\.0\.0:)(\d{2,5})\b", re.I)
_VERSION = re.compile(r"\b([A-Za-z][\w.-]*?)(?:==|>=| v| version )v?(\d+\.\d+(?:\.\d+)?)\b")
_ENV = re.compile(r"\b([A-Z][A-Z0-9]*_[A-Z0-9_]{2,})=")
_GIT_DIFF = re.compile(r"\bgit\s+(?:-C\s+\S+\s+)?diff\b(?!.*--no-index)")


@dataclass(frozen=True)
class IndexFacts:
    """What the summarizer needs of the index: file hashes and symbols by path."""

    files: Mapping[str, str]  # indexed path -> sha256
    symbols: Mapping[str, Sequence[Symbol]]  # path -> its definitions

    def resolve(self, raw: str) -> str | None:
        """The indexed path ``raw`` names (relative, ``./``-prefixed or absolute)."""
        p = raw.strip().strip("'\"`")
        while p.startswith("./"):
            p = p[2:]
        if p in self.files:
            return p
        if "/" in p or "." in p:
            base = p.rsplit("/", 1)[-1]
            found = [f for f in self._by_base().get(base, ()) if p.endswith("/" + f) or f == p]
            if not found and "/" not in p and len(self._by_base().get(base, ())) == 1:
                found = list(self._by_base()[base])  # a bare, unambiguous file name
            if found:
                return max(found, key=len)
        return None

    def _by_base(self) -> dict[str, list[str]]:
        cached: dict[str, list[str]] | None = self.__dict__.get("_bases")
        if cached is None:
            cached = {}
            for f in self.files:
                cached.setdefault(f.rsplit("/", 1)[-1], []).append(f)
            object.__setattr__(self, "_bases", cached)
        return cached


@dataclass
class _Touch:
    edited: bool = False
    opened: bool = False  # read by a tool call or a command, or edited
    idents: set[str] = field(default_factory=set)
    symbols: set[str] = field(default_factory=set)  # qualnames seen directly (frames)
    lines: set[int] = field(default_factory=set)  # lines an edit addressed


# -- extraction ----------------------------------------------------------------------


def extract(
    messages: Sequence[Mapping[str, Any]],
    fields: Mapping[str, Any] | None,
    index: IndexFacts,
    *,
    task: str,
    previous: Summary | None = None,
) -> Summary:
    """Everything the transcript and fields say, merged into ``previous`` (a state)."""
    fields = _check_fields(fields)
    touched: dict[str, _Touch] = {}
    decisions: list[str] = []
    done: list[str] = []
    tasks: list[str] = []
    nexts: list[tuple[int, str]] = []  # (message position, the step)
    errors: dict[str, bool] = {}  # error line -> still failing
    failing: dict[str, str] = {}  # command -> its error line
    facts: list[str] = []
    calls_by_id: dict[str, str | None] = {}
    viewers: set[str] = set()  # the calls of tools that only show things (an editor's view)
    last_command: str | None = None
    constraints: list[str] = []
    # What an agent said it will do, by message: an intent whose tool calls all have their
    # results was done already, not next.
    pending_intents: list[tuple[int, list[str], str]] = []

    prev = previous or Summary(goal="")
    cwd = prev.cwd  # where a lone `cd` left a shell that keeps it (SWE-agent's, Claude Code's)
    removed: set[str] = set()  # files made in the session, then removed
    pending_cd: dict[str, str] = {}  # a `cd` call's target, until its result comes
    subshells = False  # each command runs in a fresh shell: a `cd` moves nothing

    def find(raw: str) -> str | None:
        """The indexed path ``raw`` names, from the shell's directory first."""
        bare = raw.strip().strip("'\"`")
        if cwd and bare and not bare.startswith(("/", "~")):
            inside = index.resolve(posixpath.join(cwd, bare))
            if inside is not None:
                return inside
        return index.resolve(raw)

    def new(raw: str) -> str | None:
        """Where a path outside the index is, from the top: made where the shell is."""
        raw = raw.strip()
        if raw.startswith("/"):
            return raw
        if cwd and not cwd.startswith("/"):
            raw = posixpath.join(cwd, raw)
        raw = posixpath.normpath(raw)
        return None if raw.startswith("..") or raw == "." else raw

    def touch(
        raw: str,
        *,
        edited: bool,
        text: str = "",
        mention: bool = False,
        opened: bool = True,
        lines: Iterable[int] = (),
    ) -> None:
        path = find(raw)
        if path is None:
            made = new(raw)
            # Paths outside the index count only when edited (new files), never as mentions.
            if mention or not edited or made is None or len(made) > 300:
                return
            if not re.fullmatch(r"[\w./-]+", made):
                return
            path = made
        t = touched.setdefault(path, _Touch())
        t.edited |= edited
        t.opened |= opened or edited
        t.idents.update(_IDENT.findall(text))
        t.lines.update(lines)

    def shell(command: str) -> None:
        for e in effects(command):
            path = find(e.path)
            if e.kind == "remove":
                if path is None:  # a file made in the session and removed again
                    gone = new(e.path) or ""
                    touched.pop(gone, None)
                    removed.add(gone)  # also when an earlier checkpoint holds it
                else:
                    touch(path, edited=True)
            elif e.kind == "create":  # touch: a new file is made, an existing one unchanged
                if path is None and not e.path.startswith("/"):
                    touch(e.path, edited=True)
            elif path is not None or (e.kind == "write" and not e.path.startswith("/")):
                # A write outside the working tree (/tmp/...) is scratch; cp/mv only
                # count for a file the index holds, not for a backup copy.
                touch(path or e.path, edited=True, text=e.text, lines=e.lines)

    answered: set[str] = set()  # the tool calls whose results came
    harness = prev.harness  # a harness's task message was seen, here or before
    first_user = previous is None  # the session's first user message is still to come
    last_calls: list[str] = []
    for position, m in enumerate(messages):
        role, text = m.get("role"), text_of(m).replace("\u2019", "'")
        if role == "tool" or role == "function":
            given = str(m.get("tool_call_id") or "")
            answered.update([given] if given else last_calls)  # no id: the last calls' result
            command = calls_by_id.get(given, last_command)
            # A harness that runs each command in a subshell of its own (<returncode>) keeps
            # no directory; a `cd` moves the shell once it comes back clean.
            subshells |= "<returncode>" in text
            failed = failure(text, command, views=given in viewers)
            target = pending_cd.pop(given, None)
            if target is not None and not subshells and failed is None:
                cwd = _moved(cwd, target)
            for frame_path, func in _FRAME.findall(text):
                path = index.resolve(frame_path)
                if path is not None:  # seen in a traceback: named, not opened
                    touched.setdefault(path, _Touch()).symbols.add(func)
            if command and _GIT_DIFF.search(command):
                for path, changed in diff_files(text).items():
                    touch(path, edited=True, text=changed)
            if failed is not None:
                if command and command in failing:  # the same command again: its newest says it
                    errors.pop(failing[command], None)
                errors[failed] = True
                if command:
                    failing[command] = failed
            elif command and command in failing:
                errors[failing.pop(command)] = False  # the same command now runs clean
            continue
        own_calls = [call_id for call_id, _, _ in tool_calls(m)]
        last_calls = own_calls or last_calls
        for call_id, name, args in tool_calls(m):
            command = command_of(name, args)
            calls_by_id[call_id] = command
            if command is None and is_view(name, args):
                viewers.add(call_id)
            if command is not None:
                last_command = command
                facts.append(f"ran `{clip(command, 80)}`")
                if moved := _CD.fullmatch(command):
                    pending_cd[call_id] = moved.group(1) or ""
            edit, body = is_edit(name, args), call_text(args)
            for raw in call_paths(args):
                touch(raw, edited=edit, text=body)
            for path, changed in diff_files(body + "\n" + (command or "")).items():
                touch(path, edited=True, text=changed)
            if command is not None:
                shell(command)
            for raw in _MENTION.findall(command or ""):
                touch(raw, edited=False, mention=True)
        if role == "system":
            continue
        for path, changed in diff_files(text).items():
            touch(path, edited=True, text=changed)
        prose = without_code(text)
        for raw in _MENTION.findall(prose):  # named, not opened: not a file read
            touch(raw, edited=False, mention=True, opened=False)
        listing = False  # under a "Still to do:" line, its items
        for line in prose.splitlines():
            bare = line.strip().strip("*_").strip()  # "**Still to do:**" too
            if listing:
                if not bare:  # a blank line between the head and its items
                    continue
                if item := _ITEM.match(line):
                    tasks.append(clip(item.group(1), 120))
                    continue
                listing = False
            if _TASKS_HEAD.match(bare):
                listing = True
                continue
            if mt := _TASK.match(line):
                tasks.append(clip(mt.group(1), 120))
            elif mn := _NEXT.match(line):
                nexts.append((position, clip(mn.group(1), 120)))
        # A harness's task message, and its later messages, are not the user's choices: an
        # issue says what goes wrong ("returns int64 instead of int8"), not what was decided.
        told = False
        if role == "user":
            # A harness wraps the session's first message; a tag a person pastes later
            # ("here is the bug: <issue>...") makes no harness of the chat.
            wrapped = first_user and task_text(text) is not None
            first_user = False
            # After a harness's task message, its other messages are the harness talking
            # ("Every response MUST include a tool call"), not the user.
            if wrapped or not harness:
                constraints.extend(requirements(text))
            harness |= wrapped
            told = harness
        intents: list[str] = []
        for s in [] if told else sentences(prose):
            if _DECISION.search(s) and not s.endswith("?"):
                decisions.append(clip(s, 160))
            elif role == "assistant" and _DONE.match(s):
                done.append(clip(s, 100))
            if _BLOCKED.search(s):
                errors[clip(s, 140)] = True
            if role != "assistant":
                continue
            if (ms := _NEXT_SENTENCE.match(s)) and not _TASK_SENTENCE.match(s):
                nexts.append((position, clip(ms.group(1), 160)))
            elif mt := _TASK_SENTENCE.match(s):
                tasks.append(clip(mt.group(1), 120))
            elif mi := _INTENT.match(s):
                intents.append(clip(mi.group(1), 160))
        if role == "assistant" and intents:
            pending_intents.append((position, own_calls, intents[-1]))
        facts.extend(_facts(prose))

    anchors = _anchors(touched, index)
    done_all = [*prev.done, *(fields.get("done") or ()), *done]
    open_all = [*prev.open_tasks, *(fields.get("open_tasks") or ()), *tasks]
    open_all = [t for t in open_all if not _finished(t, done_all)]
    # The newest of the explicit "next" statements and the intents not yet carried out.
    undone = [
        (pos, text) for pos, calls, text in pending_intents if not calls or set(calls) - answered
    ]
    candidates = sorted([*((pos, 0, t) for pos, t in undone), *((pos, 1, t) for pos, t in nexts)])
    said = candidates[-1][2] if candidates else ""
    # Else what the agent set out to do in its last two turns, done but not yet followed up:
    # a resumed agent goes on from there ("continue: look at the `_LocIndexer` class"); not
    # once its last turn calls no tool (it wrapped up), nor after it submitted.
    turns = [i for i, m in enumerate(messages) if m.get("role") == "assistant"][-2:]
    working = bool(turns) and bool(tool_calls(messages[turns[-1]]))
    submitted = any(
        _SUBMIT.search(f"{name} {command_of(name, args) or ''}")
        for i in turns
        for _, name, args in tool_calls(messages[i])
    )
    last = pending_intents[-1] if pending_intents else None
    if not said and working and not submitted and last and last[0] >= turns[0]:
        said = f"{CONTINUE}{last[2].rstrip(':').rstrip()}"
    # A step under way at the last checkpoint is no longer the one once the agent went on.
    carried = "" if turns and prev.next_step.startswith(CONTINUE) else prev.next_step
    next_step = str(fields.get("next_step") or said or carried)
    old_errors = [e for e in prev.errors if e not in errors]
    return Summary(
        # As the task reads: no template comments, checklists or pasted logs.
        goal=gist(str(fields.get("goal") or prev.goal or task), GOAL_CHARS),
        constraints=_first([*prev.constraints, *(fields.get("constraints") or ()), *constraints]),
        done=_recent(done_all),
        decisions=_recent([*prev.decisions, *(fields.get("decisions") or ()), *decisions]),
        files=_merge_anchors([a for a in prev.files if a.sha256 or a.path not in removed], anchors),
        open_tasks=_recent(open_all),
        next_step=clip(next_step, 200),
        errors=_recent(
            [*old_errors, *(e if live else f"{e} (fixed later)" for e, live in errors.items())]
        ),
        facts=_recent([*prev.facts, *facts]),
        notes=_recent([*prev.notes, *(fields.get("notes") or ())]),
        harness=harness,
        cwd=cwd,
    )


def _moved(cwd: str, target: str) -> str:
    """The directory after ``cd target`` from ``cwd`` ("" is the repository's top)."""
    target = target.strip("'\"")
    if target in ("", "~", "-") or target.startswith("~"):
        return ""
    moved = posixpath.normpath(target if target.startswith("/") else posixpath.join(cwd, target))
    return "" if moved in (".", "") or moved.startswith("..") else moved


def _check_fields(fields: Mapping[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in (fields or {}).items():
        if key not in FIELDS:
            raise InvalidRequest(f"unknown field {key!r}", hint=f"use {', '.join(FIELDS)}")
        if key in ("goal", "next_step"):
            if value is not None and not isinstance(value, str):
                raise InvalidRequest(f"{key} must be a string")
            out[key] = value
        else:
            if isinstance(value, str):
                value = [value]
            if value is not None and not (
                isinstance(value, list) and all(isinstance(v, str) for v in value)
            ):
                raise InvalidRequest(f"{key} must be a list of strings")
            out[key] = [clip(v, 300) for v in value or ()]
    return out


def _facts(text: str) -> list[str]:
    out = [f"port {p}" for p in _PORT.findall(text)]
    out += [f"{name} {version}" for name, version in _VERSION.findall(text)]
    out += [f"env {name}" for name in _ENV.findall(text)]
    return out


def _finished(task: str, done: Iterable[str]) -> bool:
    words = set(re.findall(r"\w{3,}", task.lower()))
    if not words:
        return False
    return any(len(words & set(re.findall(r"\w{3,}", d.lower()))) >= 0.7 * len(words) for d in done)


def _first(items: Iterable[str]) -> tuple[str, ...]:
    """Unique items in the order first stated (a repeat keeps its place), the first
    MAX_STATE_ITEMS: constraints, whose first statements are the task's own."""
    seen: dict[str, str] = {}
    for item in items:
        seen.setdefault(item.casefold(), item)
    return tuple(seen.values())[:MAX_STATE_ITEMS]


def _recent(items: Iterable[str]) -> tuple[str, ...]:
    """Unique items (last occurrence wins the position), at most MAX_STATE_ITEMS, newest last."""
    seen: dict[str, str] = {}
    for item in items:
        key = item.casefold()
        seen.pop(key, None)
        seen[key] = item
    return tuple(seen.values())[-MAX_STATE_ITEMS:]


def _anchors(touched: Mapping[str, _Touch], index: IndexFacts) -> list[Anchor]:
    out: list[Anchor] = []
    for path, t in touched.items():
        sha = index.files.get(path, "")
        out.append(Anchor(path=path, sha256=sha, edited=t.edited, read=t.opened))
        symbols = index.symbols.get(path, ())
        # The innermost definition around each addressed line.
        around = {
            min(inside, key=lambda s: s.end_line - s.start_line).qualname
            for line in t.lines
            if (inside := [s for s in symbols if s.start_line <= line <= s.end_line])
        }
        for s in symbols:
            if s.name in t.idents or s.name in t.symbols or s.qualname in (t.symbols | around):
                out.append(
                    Anchor(
                        path, s.qualname, sha, edited=t.edited, signature=s.signature, read=t.opened
                    )
                )
    return out


def _merge_anchors(old: Sequence[Anchor], new: Sequence[Anchor]) -> tuple[Anchor, ...]:
    """Anchors of both, the newer hash winning; edited once means edited."""
    merged: dict[tuple[str, str | None], Anchor] = {}
    for a in old:
        merged[(a.path, a.symbol)] = a
    for a in new:
        before = merged.pop((a.path, a.symbol), None)
        merged[(a.path, a.symbol)] = replace(
            a,
            edited=a.edited or bool(before and before.edited),
            read=a.read or bool(before and before.read),
        )
    return tuple(merged.values())
