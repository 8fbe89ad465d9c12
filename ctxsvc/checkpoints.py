"""Checkpoint summaries and resume diffs: pure functions, no I/O.

The offline summarizer is rule-based and extractive. It reads OpenAI-style chat
messages (roles system/user/assistant/tool, ``tool_calls`` with a function name
and JSON arguments, tool results) and explicit fields, and extracts:

- the goal (explicit, else the previous checkpoint's, else the session task);
- files touched: paths in tool-call arguments (``path``, ``file``, ...), files
  of unified diffs (``+++ b/...``, also in the output of ``git diff``), files a
  shell command writes (``sed -i``, ``ed``, redirections, ``tee``, Python
  ``open(..., "w")``: see :mod:`ctxsvc.commands`; a new file removed again is
  dropped), traceback frames, and paths named in the conversation that the
  index holds; each anchored to the file's content hash in the index now, and
  to the symbols of that file named in the edit or enclosing the lines it
  addresses;
- decisions (sentences with "decided", "chose", "instead of", "I'll ... because",
  ...; not questions), steps done, open tasks and the next step (TODO / next /
  remaining lines); edited files of the index rank before files the session made;
- errors: tool results with a traceback, a non-zero exit (``<returncode>1`` too),
  "FAILED", "error:";
  an error whose command later ran clean is kept as fixed, at low priority;
- key facts: commands run, ports, versions, environment variable names.

Everything extracted is kept in a checkpoint's *state* and carried into the
next checkpoint; the *summary* is the state cut to a token budget, dropping
the lowest-priority items first and saying how many of each kind it dropped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ctxsvc.commands import effects
from ctxsvc.errors import InvalidRequest
from ctxsvc.models import Anchor, AnchorChange, Summary, Symbol
from ctxsvc.tokens import TokenCounter

ROLES = frozenset({"system", "user", "assistant", "tool", "function", "developer"})
FIELDS = ("goal", "done", "decisions", "open_tasks", "next_step", "notes")
MAX_MESSAGES = 20_000
MAX_STATE_ITEMS = 200  # per list: older items go first
MIN_BUDGET = 20

_PATH_KEYS = (
    "path", "file", "filename", "file_path", "filepath", "target_file", "paths", "files",
)  # fmt: skip
_EDIT_TOOL = re.compile(r"edit|write|patch|replace|create|insert|apply|modify|append|rename|move")
_READ_COMMANDS = {"view", "read", "open", "show", "cat", "list"}
_TEXT_KEYS = ("old_str", "new_str", "content", "patch", "diff", "text", "code", "file_text")
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
_BLOCKED = re.compile(r"\b(blocked|blocker|cannot proceed|stuck on)\b", re.I)
_DIFF_FILE = re.compile(r"^\+\+\+ (?:b/)?(\S+)", re.M)
_FRAME = re.compile(r'File "([^"]+)", line \d+, in (\w+)')
_MENTION = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[\w-]+\.[A-Za-z]\w{0,5})(?![\w/-])")
_IDENT = re.compile(r"[A-Za-z_]\w*")
_EXIT = re.compile(
    r"(?:exit(?:ed)?(?: with)?(?: code| status)?|return ?code|returncode)(?:[\s:=]+|>\s*)([1-9]\d*)",
    re.I,
)  # "exit code 1", "returncode: 2", mini-SWE-agent's "<returncode>1</returncode>"
_FAILURE = re.compile(
    r"Traceback \(most recent call last\)|^FAILED\b|^ERROR\b|\b[1-9]\d* (?:failed|errors?)\b|"
    r"^(?:\w+(?:Error|Exception)|error|fatal)(?::|\b)",
    re.M,
)
_ERROR_LINE = re.compile(
    r"^(?:FAILED .*|E\s+\S.*|\w+(?:Error|Exception)\b.*|error[:\[].*|fatal: .*|.*\b[1-9]\d* failed\b.*)$",
    re.M,
)
_PORT = re.compile(r"\b(?:port\s*[=:]?\s*|localhost:|127\.0\.0\.1:|0\.0\.0\.0:)(\d{2,5})\b", re.I)
_VERSION = re.compile(r"\b([A-Za-z][\w.-]*?)(?:==|>=| v| version )v?(\d+\.\d+(?:\.\d+)?)\b")
_ENV = re.compile(r"\b([A-Z][A-Z0-9]*_[A-Z0-9_]{2,})=")
_CODE_BLOCK = re.compile(r"```.*?```", re.S)
_GIT_DIFF = re.compile(r"\bgit\s+(?:-C\s+\S+\s+)?diff\b(?!.*--no-index)")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")


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
    idents: set[str] = field(default_factory=set)
    symbols: set[str] = field(default_factory=set)  # qualnames seen directly (frames)
    lines: set[int] = field(default_factory=set)  # lines an edit addressed


# -- parsing the transcript ------------------------------------------------------------


def check_messages(messages: object) -> list[dict[str, Any]]:
    """``messages`` if it is a list of chat messages, else ``InvalidRequest``."""
    if not isinstance(messages, list) or len(messages) > MAX_MESSAGES:
        raise InvalidRequest(f"messages must be a list of at most {MAX_MESSAGES} chat messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise InvalidRequest(
                f"message {i} is not a chat message",
                hint=f"each message is an object with a role in {', '.join(sorted(ROLES))}",
            )
    return messages


def text_of(message: Mapping[str, Any]) -> str:
    """The text of a message's content (a string or a list of parts)."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) if isinstance(p, dict) else str(p) for p in content)
    return ""


def _calls(message: Mapping[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(id, function name, arguments) of each tool call of a message."""
    out = []
    calls = message.get("tool_calls") or []
    if message.get("function_call"):
        calls = [*calls, {"function": message["function_call"]}]
    for c in calls if isinstance(calls, list) else []:
        fn = c.get("function", {}) if isinstance(c, dict) else {}
        raw = fn.get("arguments", {}) if isinstance(fn, dict) else {}
        if isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except ValueError:
                raw = {"input": raw}
        args = raw if isinstance(raw, dict) else {"input": raw}
        out.append((str(c.get("id", "")), str(fn.get("name", "")), args))
    return out


def _command(name: str, args: Mapping[str, Any]) -> str | None:
    for key in ("command", "cmd", "script"):
        value = args.get(key)
        if isinstance(value, list):
            value = " ".join(map(str, value))
        if isinstance(value, str) and (key != "command" or value not in _READ_COMMANDS):
            return value.strip()
    if re.search(r"bash|shell|terminal|exec|run", name) and isinstance(args.get("input"), str):
        return str(args["input"]).strip()
    return None


def _diff_files(text: str) -> dict[str, str]:
    """Files of the unified diffs in ``text``, each with its changed lines and hunk headers."""
    out: dict[str, str] = {}
    for block in re.split(r"^(?=--- )", text, flags=re.M):
        m = _DIFF_FILE.search(block)
        if m is None or m.group(1) == "/dev/null":
            continue
        changed = [
            ln
            for ln in block.splitlines()[2:]
            if ln.startswith(("+", "-", "@@")) and ln[:3] != "+++"
        ]
        out[m.group(1)] = out.get(m.group(1), "") + "\n".join(changed)
    return out


def _sentences(text: str) -> list[str]:
    text = _CODE_BLOCK.sub(" ", text)
    return [s.strip(" -*\t") for s in _SENTENCE.split(text) if len(s.strip()) > 3]


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _failure(text: str, command: str | None) -> str | None:
    """One line saying how a tool result failed, or None when it did not."""
    if not (_FAILURE.search(text) or _EXIT.search(text)):
        return None
    lines = [ln.strip() for ln in _ERROR_LINE.findall(text) if ln.strip()]
    # The last error line ends a traceback; a FAILED or exception line says more than counts.
    telling = [ln for ln in lines if not re.search(r"\b\d+ (?:failed|passed)\b", ln)]
    lines = telling or lines
    detail = (
        lines[-1] if lines else (f"exit {m.group(1)}" if (m := _EXIT.search(text)) else "failed")
    )
    return _clip(f"`{_clip(command, 60)}`: {detail}" if command else detail, 160)


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
    nexts: list[str] = []
    errors: dict[str, bool] = {}  # error line -> still failing
    failing: dict[str, str] = {}  # command -> its error line
    facts: list[str] = []
    calls_by_id: dict[str, str | None] = {}
    last_command: str | None = None

    def touch(
        raw: str, *, edited: bool, text: str = "", mention: bool = False, lines: Iterable[int] = ()
    ) -> None:
        path = index.resolve(raw)
        if path is None:
            raw = raw.strip().lstrip("./") if not raw.startswith("/") else raw
            # Paths outside the index count only when edited (new files), never as mentions.
            if mention or not edited or not re.fullmatch(r"[\w./-]+", raw) or len(raw) > 300:
                return
            path = raw
        t = touched.setdefault(path, _Touch())
        t.edited |= edited
        t.idents.update(_IDENT.findall(text))
        t.lines.update(lines)

    def shell(command: str) -> None:
        for e in effects(command):
            path = index.resolve(e.path)
            if e.kind == "remove":
                if path is None:  # a file made in the session and removed again
                    touched.pop(e.path.strip().lstrip("./"), None)
                else:
                    touch(path, edited=True)
            elif path is not None or (e.kind == "write" and not e.path.startswith("/")):
                # A write outside the working tree (/tmp/...) is scratch; cp/mv only
                # count for a file the index holds, not for a backup copy.
                touch(path or e.path, edited=True, text=e.text, lines=e.lines)

    for m in messages:
        role, text = m.get("role"), text_of(m)
        if role == "tool" or role == "function":
            command = calls_by_id.get(str(m.get("tool_call_id", "")), last_command)
            for frame_path, func in _FRAME.findall(text):
                path = index.resolve(frame_path)
                if path is not None:
                    touched.setdefault(path, _Touch()).symbols.add(func)
            if command and _GIT_DIFF.search(command):
                for path, changed in _diff_files(text).items():
                    touch(path, edited=True, text=changed)
            failure = _failure(text, command)
            if failure is not None:
                errors[failure] = True
                if command:
                    failing[command] = failure
            elif command and command in failing:
                errors[failing.pop(command)] = False  # the same command now runs clean
            continue
        for call_id, name, args in _calls(m):
            command = _command(name, args)
            calls_by_id[call_id] = command
            if command is not None:
                last_command = command
                facts.append(f"ran `{_clip(command, 80)}`")
            edit = (
                bool(_EDIT_TOOL.search(name.lower()))
                and str(args.get("command", "")).lower() not in _READ_COMMANDS
            )
            edit = edit or str(args.get("command", "")).lower() in {
                "create",
                "str_replace",
                "insert",
            }
            body = "\n".join(str(args[k]) for k in _TEXT_KEYS if isinstance(args.get(k), str))
            for key in _PATH_KEYS:
                value = args.get(key)
                for raw in value if isinstance(value, list) else [value]:
                    if isinstance(raw, str) and raw:
                        touch(raw, edited=edit, text=body)
            for path, changed in _diff_files(body + "\n" + (command or "")).items():
                touch(path, edited=True, text=changed)
            if command is not None:
                shell(command)
            for raw in _MENTION.findall(command or ""):
                touch(raw, edited=False, mention=True)
        if role == "system":
            continue
        for path, changed in _diff_files(text).items():
            touch(path, edited=True, text=changed)
        for raw in _MENTION.findall(_CODE_BLOCK.sub(" ", text)):
            touch(raw, edited=False, mention=True)
        prose = _CODE_BLOCK.sub(" ", text)
        for line in prose.splitlines():
            if mt := _TASK.match(line):
                tasks.append(_clip(mt.group(1), 120))
            elif mn := _NEXT.match(line):
                nexts.append(_clip(mn.group(1), 120))
        for s in _sentences(prose):
            if _DECISION.search(s) and not s.endswith("?"):
                decisions.append(_clip(s, 160))
            elif role == "assistant" and _DONE.match(s):
                done.append(_clip(s, 100))
            if _BLOCKED.search(s):
                errors[_clip(s, 140)] = True
        facts.extend(_facts(prose))

    anchors = _anchors(touched, index)
    prev = previous or Summary(goal="")
    done_all = [*prev.done, *(fields.get("done") or ()), *done]
    open_all = [*prev.open_tasks, *(fields.get("open_tasks") or ()), *tasks]
    open_all = [t for t in open_all if not _finished(t, done_all)]
    next_step = str(fields.get("next_step") or (nexts[-1] if nexts else "") or prev.next_step)
    old_errors = [e for e in prev.errors if e not in errors]
    return Summary(
        goal=_clip(str(fields.get("goal") or prev.goal or task), 300),
        done=_recent(done_all),
        decisions=_recent([*prev.decisions, *(fields.get("decisions") or ()), *decisions]),
        files=_merge_anchors(prev.files, anchors),
        open_tasks=_recent(open_all),
        next_step=_clip(next_step, 200),
        errors=_recent(
            [*old_errors, *(e if live else f"{e} (fixed later)" for e, live in errors.items())]
        ),
        facts=_recent([*prev.facts, *facts]),
        notes=_recent([*prev.notes, *(fields.get("notes") or ())]),
    )


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
            out[key] = [_clip(v, 300) for v in value or ()]
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
        out.append(Anchor(path=path, sha256=sha, edited=t.edited))
        symbols = index.symbols.get(path, ())
        # The innermost definition around each addressed line.
        around = {
            min(inside, key=lambda s: s.end_line - s.start_line).qualname
            for line in t.lines
            if (inside := [s for s in symbols if s.start_line <= line <= s.end_line])
        }
        for s in symbols:
            if s.name in t.idents or s.name in t.symbols or s.qualname in (t.symbols | around):
                out.append(Anchor(path, s.qualname, sha, edited=t.edited, signature=s.signature))
    return out


def _merge_anchors(old: Sequence[Anchor], new: Sequence[Anchor]) -> tuple[Anchor, ...]:
    """Anchors of both, the newer hash winning; edited once means edited."""
    merged: dict[tuple[str, str | None], Anchor] = {}
    for a in old:
        merged[(a.path, a.symbol)] = a
    for a in new:
        before = merged.pop((a.path, a.symbol), None)
        merged[(a.path, a.symbol)] = replace(a, edited=a.edited or bool(before and before.edited))
    return tuple(merged.values())


# -- fitting a budget ----------------------------------------------------------------


@dataclass(frozen=True)
class _Item:
    priority: int  # lower is kept first
    order: int  # higher is more recent
    section: str
    text: str
    anchor: Anchor | None = None
    tier: int = 0  # within a priority, lower is kept first


# Sections in the order they are rendered, with the priority of their items.
_PRIORITY = {
    "next": 1, "edited": 2, "decisions": 3, "open_tasks": 4, "errors": 5, "edited_symbols": 6,
    "done": 7, "notes": 7, "facts": 9, "read": 10, "read_symbols": 11, "fixed_errors": 12,
}  # fmt: skip
_TITLES = {
    "decisions": "Decisions", "open_tasks": "Open tasks", "errors": "Errors and blockers",
    "done": "Done", "notes": "Notes",
}  # fmt: skip


def _items(state: Summary) -> list[_Item]:
    items: list[_Item] = []
    if state.next_step:
        items.append(_Item(1, 0, "next", state.next_step))
    for i, a in enumerate(state.files):
        if a.symbol is None:
            section = "edited" if a.edited else "read"
        else:
            section = "edited_symbols" if a.edited else "read_symbols"
        # An edit to an indexed file before a file made in the session (often scratch).
        tier = int(section == "edited" and not a.sha256)
        items.append(_Item(_PRIORITY[section], i, section, a.symbol or a.path, a, tier))
    for section in ("decisions", "open_tasks", "done", "notes", "facts"):
        for i, text in enumerate(getattr(state, section)):
            items.append(_Item(_PRIORITY[section], i, section, text))
    for i, text in enumerate(state.errors):
        section = "fixed_errors" if text.endswith("(fixed later)") else "errors"
        items.append(_Item(_PRIORITY[section], i, section, text))
    # Stable: within a priority the most recent first; decisions and files keep their order.
    return sorted(items, key=lambda it: (it.priority, it.tier, -it.order))


def _render(goal: str, kept: Sequence[_Item], dropped: Mapping[str, int]) -> str:
    by: dict[str, list[_Item]] = {}
    for it in kept:
        by.setdefault(it.section, []).append(it)
    for group in by.values():
        group.sort(key=lambda it: it.order)
    lines = [f"Goal: {goal}"]
    if "next" in by:
        lines.append(f"Next: {by['next'][0].text}")
    for section, title in (("edited", "Edited"), ("read", "Read")):
        symbols: dict[str, list[str]] = {}
        for it in by.get(f"{section}_symbols", ()):
            assert it.anchor is not None
            symbols.setdefault(it.anchor.path, []).append(it.text)
        files = [
            f"{it.text} ({', '.join(symbols[it.text])})" if it.text in symbols else it.text
            for it in by.get(section, ())
        ]
        if files:
            lines.append(f"{title}: " + "; ".join(files))
    for section in ("decisions", "open_tasks", "errors", "done", "notes"):
        group = by.get(section, []) + (by.get("fixed_errors", []) if section == "errors" else [])
        if group:
            lines.append(f"{_TITLES[section]}:")
            lines.extend(f"- {it.text}" for it in group)
    if "facts" in by:
        lines.append("Facts: " + "; ".join(it.text for it in by["facts"]))
    if dropped:
        lines.append(
            "Dropped for the budget: "
            + ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in sorted(dropped.items()))
        )
    return "\n".join(lines)


def fit(state: Summary, budget_tokens: int, counter: TokenCounter) -> Summary:
    """``state`` cut to ``budget_tokens``: lowest-priority items dropped first, counted.

    Priority, highest first: goal, next step, edited files, decisions, open
    tasks, errors, symbols of edited files, steps done, notes, facts, files only
    read, their symbols, errors fixed later. Within a kind, the newest first.
    """
    if budget_tokens < MIN_BUDGET:
        raise InvalidRequest(f"a summary needs a budget of at least {MIN_BUDGET} tokens")
    items = _items(state)
    goal = state.goal or "(not stated)"
    room = budget_tokens - counter.count(f"Goal: {goal}") - 24  # headings and the dropped line
    costs = counter.count_many([it.text for it in items])
    kept: list[_Item] = []
    files_kept: set[str] = set()
    for it, cost in zip(items, costs, strict=True):
        if it.section.endswith("_symbols") and it.anchor and it.anchor.path not in files_kept:
            continue  # a symbol is shown after its file only
        if cost + 2 <= room:
            kept.append(it)
            room -= cost + 2
            if it.section in ("edited", "read"):
                files_kept.add(it.text)

    def dropped_counts() -> dict[str, int]:
        counts: dict[str, int] = {}
        for it in items:
            counts[it.section] = counts.get(it.section, 0) + 1
        for it in kept:
            counts[it.section] -= 1
        return {k: n for k, n in counts.items() if n}

    rendered = _render(goal, kept, dropped_counts())
    tokens = counter.count(rendered)
    while tokens > budget_tokens and kept:
        gone = kept.pop()  # the lowest priority kept
        if gone.section in ("edited", "read"):
            kept = [
                k for k in kept if not (k.anchor and k.anchor.path == gone.text and k.anchor.symbol)
            ]
        rendered = _render(goal, kept, dropped_counts())
        tokens = counter.count(rendered)
    while tokens > budget_tokens and len(goal) > 10:  # the goal alone is too long
        goal = _clip(goal, max(10, len(goal) * budget_tokens // tokens - 4))
        rendered = _render(goal, kept, dropped_counts())
        tokens = counter.count(rendered)
    if tokens > budget_tokens:  # a tiny budget: cut the text itself
        rendered = fit_lines(rendered, budget_tokens, counter.count)
        tokens = counter.count(rendered)
    sections = {s: [it for it in kept if it.section == s] for s in _PRIORITY}
    return replace(
        state,
        goal=goal,
        next_step=sections["next"][0].text if sections["next"] else "",
        files=tuple(it.anchor for it in sorted(kept, key=lambda it: it.order) if it.anchor),
        decisions=tuple(it.text for it in sorted(sections["decisions"], key=lambda it: it.order)),
        open_tasks=tuple(it.text for it in sorted(sections["open_tasks"], key=lambda it: it.order)),
        errors=tuple(
            it.text
            for it in sorted(sections["errors"] + sections["fixed_errors"], key=lambda it: it.order)
        ),
        done=tuple(it.text for it in sorted(sections["done"], key=lambda it: it.order)),
        notes=tuple(it.text for it in sorted(sections["notes"], key=lambda it: it.order)),
        facts=tuple(it.text for it in sorted(sections["facts"], key=lambda it: it.order)),
        dropped=dropped_counts(),
        rendered=rendered,
        tokens=tokens,
        budget_tokens=budget_tokens,
    )


# -- what changed since a checkpoint ---------------------------------------------------


def anchor_changes(
    anchors: Sequence[Anchor], files: Mapping[str, str], symbols: Sequence[Symbol]
) -> list[AnchorChange]:
    """How each anchored file and symbol differs in the index now.

    A file whose hash changed is "modified"; a missing file is "renamed" when
    another path holds the same content, else "deleted". A symbol gone from its
    file is "renamed" when a symbol of the same name exists elsewhere, or one
    with the same signature (bar the name) exists in its file or elsewhere;
    otherwise "symbol_deleted" (not reported again for a deleted file).
    """
    qualnames: dict[str, set[str]] = {}
    by_name: dict[str, list[Symbol]] = {}
    for s in symbols:
        qualnames.setdefault(s.path, set()).add(s.qualname)
        by_name.setdefault(s.name, []).append(s)
    by_sha: dict[str, list[str]] = {}
    for path, sha in files.items():
        by_sha.setdefault(sha, []).append(path)
    out: list[AnchorChange] = []
    gone: set[str] = set()
    for a in anchors:
        if a.symbol is None:
            if not a.sha256:
                continue  # not indexed at checkpoint time: nothing to compare with
            if a.path in files:
                if files[a.path] != a.sha256:
                    out.append(AnchorChange(a.path, None, "modified"))
                continue
            moved = [p for p in by_sha.get(a.sha256, ()) if p != a.path]
            if moved:
                out.append(AnchorChange(a.path, None, "renamed", new_path=sorted(moved)[0]))
            else:
                out.append(AnchorChange(a.path, None, "deleted"))
                gone.add(a.path)
            continue
        if a.symbol in qualnames.get(a.path, ()):
            continue
        name = a.symbol.rsplit(".", 1)[-1]
        same = [s for s in by_name.get(name, ()) if (s.path, s.qualname) != (a.path, a.symbol)]
        if not same and a.signature:
            key = signature_key(a.signature, name)
            same = [s for s in symbols if signature_key(s.signature, s.name) == key]
            same.sort(key=lambda s: s.path != a.path)  # the same file first
        if same:
            s = same[0]
            out.append(AnchorChange(a.path, a.symbol, "renamed", s.path, s.qualname))
        elif a.path not in gone:
            out.append(AnchorChange(a.path, a.symbol, "symbol_deleted"))
    return out


def signature_key(signature: str, name: str) -> str:
    """``signature`` with its own name blanked: equal keys mean a renamed symbol."""
    return re.sub(rf"\b{re.escape(name)}\b", "\x00", signature, count=1)


def render_changes(changes: Sequence[AnchorChange]) -> str:
    """The changes as lines an agent reads."""
    if not changes:
        return "## Changed since the checkpoint\nNothing the checkpoint anchored has changed."
    lines = ["## Changed since the checkpoint"]
    for c in changes:
        what = f"{c.path} {c.symbol}" if c.symbol else c.path
        if c.change == "renamed":
            to = f"{c.new_path} {c.new_symbol}" if c.new_symbol else str(c.new_path)
            lines.append(f"- {what}: renamed or moved to {to}")
        else:
            lines.append(f"- {what}: {c.change.replace('_', ' ')}")
    return "\n".join(lines)


def resume_query(summary: Summary, task: str) -> str:
    """What to ask the index for after a reset: the goal, the next step, open tasks."""
    parts = [summary.goal or task, summary.next_step, *summary.open_tasks[-5:]]
    return _clip(" ".join(p for p in parts if p), 2000)


def fit_lines(text: str, budget_tokens: int, count: Callable[[str], int]) -> str:
    """``text`` cut at a line boundary to ``budget_tokens`` (a marker says so)."""
    if count(text) <= budget_tokens:
        return text
    lines = text.split("\n")
    while lines and count("\n".join([*lines, "…"])) > budget_tokens:
        lines.pop()
    return "\n".join([*lines, "…"]) if lines else ""
