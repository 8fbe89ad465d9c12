"""Reading chat transcripts: messages, tool calls, commands, diffs and failures.

Transcripts are OpenAI-style chat messages: roles system/user/assistant/tool,
``tool_calls`` with a function name and JSON arguments (or a legacy
``function_call``), and tool results. These are the pieces the checkpoint
extraction (:mod:`ctxsvc.checkpoints`) is built on. Pure functions, no I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from ctxsvc.errors import InvalidRequest
from ctxsvc.shell_edits import in_place, simple_commands

ROLES = frozenset({"system", "user", "assistant", "tool", "function", "developer"})
MAX_MESSAGES = 20_000
READ_COMMANDS = frozenset({"view", "read", "open", "show", "cat", "list"})

_PATH_KEYS = (
    "path", "file", "filename", "file_path", "filepath", "target_file", "paths", "files",
)  # fmt: skip
_EDIT_TOOL = re.compile(r"edit|write|patch|replace|create|insert|apply|modify|append|rename|move")
_EDIT_COMMANDS = frozenset({"create", "str_replace", "insert", "undo_edit"})
_EDITOR_COMMANDS = READ_COMMANDS | _EDIT_COMMANDS  # an editor's own, no shell's
_VIEW_TOOLS = frozenset({
    "read", "view", "open", "goto", "scroll_down", "scroll_up", "search_file", "search_dir",
    "find_file", "grep", "glob", "ls", "read_file", "view_file", "list_dir", "list_files",
})  # fmt: skip
_TEXT_KEYS = (
    "old_str", "new_str", "old_string", "new_string", "content", "patch", "diff", "text", "code",
    "file_text",
)  # fmt: skip
_DIFF_FILE = re.compile(r"^\+\+\+ (?:b/)?(\S+)", re.M)
# A line saying only the exit status: "Exit code: 1", "(exit status 2)", "returncode=1".
_EXIT = re.compile(
    r"\W*(?:exit(?:ed)?(?: with)? (?:code|status)|return ?code)[ \t:=]*(-?\d+)\W*", re.I
)
_RETURNCODE = re.compile(r"<returncode>\s*(-?\d+)\s*</returncode>")  # mini-SWE-agent's
_FAILURE = re.compile(
    r"Traceback \(most recent call last\)|^FAILED\b|^ERROR\b|\b[1-9]\d* (?:failed|errors?)\b|"
    r"^(?:\w+(?:Error|Exception)|error|fatal)(?::|\b)|: command not found$",
    re.M,
)
_ERROR_LINE = re.compile(
    r"^(?:FAILED .*|E\s+\S.*|\w+(?:Error|Exception)\b.*|error[:\[].*|fatal: .*|.*\b[1-9]\d* failed\b.*|"
    r".*: command not found)$",
    re.M,
)
_CODE_BLOCK = re.compile(r"```.*?```", re.S)
# A line that says why a test or command failed.
_REASON = re.compile(
    r"(?i:\b(?:expected|actual|got|want(?:ed)?|but was|to equal|not equal)\b)|"
    r"(?i:\bassert(?:ion)?\b)|^\s*E\s+\S|\bpanic:|^--- FAIL\b|\s(?:!=|==)\s|"
    r"\b\w+(?:Error|Exception)\b:|^\S+\.\w+:\d+:",  # the last: where (file.py:12:)
)
# A script's own words, from the start of a line, that it reproduced the bug ("Issue
# reproduced: ...", "BUG: ...", "FAIL: ..."), not that it did not; matched against one
# short line at a time.
_REPRODUCED = re.compile(
    r"\W*(?:(?:the )?(?:issue|bug|error|problem)s? (?:is |was |still |has been |been )?"
    r"reproduced\b(?!\W*(?:no|not|false)\b)|(?:bug|fail(?:ed|ure)?)\b\s*[:!](?!\s*(?:0|none|no|false)\b))",
    re.I,
)
# A line of code or of a listing, not a script's output: `print(...)`, "12:" or "12\t"
# (cat -n, an editor's view), "path:12:" (grep -n), a quoted string.
_CODE_LINE = re.compile(
    r"^\s*(?:\d+[\t:]|\S+:\d+:|[\"'])|\b(?:print|console\.log|println|printf)\("
)
# Commands that only show or find things: a result of theirs reproduces nothing.
_VIEWERS = frozenset({
    "cat", "head", "tail", "less", "more", "nl", "awk", "grep", "egrep", "fgrep", "rg", "ag",
    "ack", "find", "ls", "echo", "printf", "wc", "sort", "uniq", "cut", "cd", "tree", "file",
    "stat", "true", "pwd", "git show", "git log", "git diff", "git status", "git grep",
    "git blame",
    # SWE-agent's viewer
    "open", "goto", "scroll_down", "scroll_up", "search_file", "search_dir", "find_file",
})  # fmt: skip
# Searches whose exit 1 means "none found" (``xargs grep`` exits 123: not one of them).
_FINDERS = frozenset({"grep", "egrep", "fgrep", "rg", "ag", "ack", "test", "[", "[[", "git grep"})
_TAGS = re.compile(r"</?\w+>")
# "npm WARN ...", "x.py:207: FutureWarning: ...": not why it failed.
_WARNING = re.compile(r"^(?:\S+ )?(?:WARN(?:ING)?|warning)\b|^\S+:\d+: \w*Warning:")
REASON_SCAN = 400  # lines of a result's end read for reasons
REASON_LINES = 3  # of a failure's output kept in its error line
FAILURE_CHARS = 320
COMMAND_CHARS = 80  # of a failing command in its error line
# A sentence ends at . ! ? before a space (not after "e.g.", "i.e.", "vs.", "cf.") or a line.
_SENTENCE = re.compile(r"(?<=[.!?])(?<![Ee]\.g\.)(?<![Ii]\.e\.)(?<! vs\.)(?<! cf\.)\s+|\n+")


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
        return "\n".join(
            str(p.get("text") or "") if isinstance(p, dict) else str(p) for p in content
        )
    return ""


# -- tool calls ------------------------------------------------------------------------


def tool_calls(message: Mapping[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
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


def command_of(name: str, args: Mapping[str, Any]) -> str | None:
    """The shell command a tool call runs, if it runs one."""
    for key in ("command", "cmd", "script"):
        value = args.get(key)
        if isinstance(value, list):
            value = " ".join(map(str, value))
        # An editor's own command ("view", "str_replace") runs no shell.
        if isinstance(value, str) and (key != "command" or value not in _EDITOR_COMMANDS):
            return value.strip()
    if re.search(r"bash|shell|terminal|exec|run", name) and isinstance(args.get("input"), str):
        return str(args["input"]).strip()
    return None


def is_edit(name: str, args: Mapping[str, Any]) -> bool:
    """Whether a tool call writes the files its arguments name (not a view or read)."""
    sub = str(args.get("command", "")).lower()
    return (bool(_EDIT_TOOL.search(name.lower())) and sub not in READ_COMMANDS) or (
        sub in _EDIT_COMMANDS
    )


def is_view(name: str, args: Mapping[str, Any]) -> bool:
    """Whether a tool call only shows or finds things without a shell: an editor's
    ``view``, Claude Code's ``Read``/``Grep``/``Glob``, SWE-agent's ``open``/``goto``/
    ``search_file``, ..."""
    return not is_edit(name, args) and (
        name.lower() in _VIEW_TOOLS or str(args.get("command", "")).lower() in READ_COMMANDS
    )


def call_paths(args: Mapping[str, Any]) -> list[str]:
    """The paths a tool call's arguments name (``path``, ``file``, ``paths``, ...)."""
    out: list[str] = []
    for key in _PATH_KEYS:
        value = args.get(key)
        for raw in value if isinstance(value, list) else [value]:
            if isinstance(raw, str) and raw:
                out.append(raw)
    return out


def call_text(args: Mapping[str, Any]) -> str:
    """The text a tool call writes or replaces (``new_str``, ``content``, ``patch``, ...)."""
    return "\n".join(str(args[k]) for k in _TEXT_KEYS if isinstance(args.get(k), str))


# -- what the text says ----------------------------------------------------------------


def diff_files(text: str) -> dict[str, str]:
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


def without_code(text: str) -> str:
    """``text`` with its fenced code blocks blanked out: the prose."""
    return _CODE_BLOCK.sub(" ", text)


def sentences(text: str) -> list[str]:
    """The sentences and lines of the prose of ``text``."""
    return [s.strip(" -*\t") for s in _SENTENCE.split(without_code(text)) if len(s.strip()) > 3]


def clip(text: str, limit: int) -> str:
    """``text`` on one line, cut to ``limit`` characters (an ellipsis says so)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _shown(command: str) -> str:
    """A failing command as its error line shows it: without a leading ``cd DIR &&`` when it
    is long, then cut in the middle to ``COMMAND_CHARS``."""
    if len(command) > COMMAND_CHARS:
        command = re.sub(r"^\s*cd\s+\S+\s*&&\s*", "", command)
    return clip_middle(command, COMMAND_CHARS)


def clip_middle(text: str, limit: int) -> str:
    """``text`` on one line, cut in the middle to ``limit`` characters: a command's end (the
    test it runs, ``pytest a.py::test_x``) says as much as its start."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    head = (limit - 1) * 2 // 5
    return text[:head].rstrip() + "…" + text[len(text) - (limit - 1 - head) :].lstrip()


def failure(text: str, command: str | None, *, views: bool = False) -> str | None:
    """One line saying how a tool result failed and why, or None when it did not: the
    command, then the lines that say why (expected against actual, the exception, where),
    at most ``REASON_LINES`` of them, ``FAILURE_CHARS`` in all.

    The exit status is the one the harness wraps the result in (``<returncode>1``, a first
    or last line "Exit code: 1"), never a number the output happens to hold. A search that
    finds nothing (``grep`` exiting 1 and saying nothing else) did not fail; a script that
    exits 0 saying it reproduced the bug did, with those lines as why. What a viewer shows
    (``cat``, ``sed -n``, ``git show``, an editor's view: ``views``) is no failure of it, a
    traceback in a log no more than "FAILED" in a test's source: only its exit status and
    its own complaint ("cat: x: No such file or directory") are."""
    simple = simple_commands(command or "")
    viewing = views or (bool(simple) and all(_views(words) for words in simple))
    status = exit_status(text)
    failed = None if viewing else _FAILURE.search(text)
    if status == "1" and not failed and _found_nothing(text, simple):
        status = None
    if not (failed or status):
        said = [] if viewing else _reproduced(text, command)
        if not said:
            return None
        detail = " | ".join(clip(p, 140) for p in said[-REASON_LINES:])
        return clip(f"`{_shown(command)}`: {detail}" if command else detail, FAILURE_CHARS)
    if viewing:  # its own complaint says why, not what it shows
        own = (*(f"{w[0].rsplit('/', 1)[-1]}: " for w in simple), "fatal: ")
        lines, why = [ln.strip() for ln in text.splitlines() if ln.startswith(own)], []
    else:
        lines = [ln.strip() for ln in _ERROR_LINE.findall(text) if ln.strip()]
        # The last error line ends a traceback; a FAILED or exception line says more.
        lines = [ln for ln in lines if not re.search(r"\b\d+ (?:failed|passed)\b", ln)] or lines
        why = _reasons(text)
    last = lines[-1] if lines else ""
    parts = [*why, *([last] if last and not any(last in w or w in last for w in why) else [])]
    if not parts:
        parts = [f"exit {status}" if status else "failed"]
    detail = " | ".join(clip(p, 140) for p in parts[-REASON_LINES:])
    return clip(f"`{_shown(command)}`: {detail}" if command else detail, FAILURE_CHARS)


def exit_status(text: str) -> str | None:
    """A tool result's non-zero exit status, as its harness wraps it: mini-SWE-agent's
    ``<returncode>1</returncode>``, or a first or last line that says only that ("Exit
    code: 1", "[exit status 2]"); None for 0 or when none is said."""
    if (tagged := _RETURNCODE.search(text)) is not None:
        return None if tagged.group(1) == "0" else tagged.group(1)
    lines = [ln for ln in text.splitlines() if ln.strip()]
    for line in {lines[0], lines[-1]} if lines else ():
        if (said := _EXIT.fullmatch(line.strip())) is not None:
            return None if said.group(1) == "0" else said.group(1)
    return None


def _found_nothing(text: str, simple: list[list[str]]) -> bool:
    """Whether a result is a search finding nothing: it says nothing but its exit status,
    and its command ends in ``grep``, ``rg``, ``test``, ... (the last command of a pipeline
    sets the status) or has one before an ``&&`` (``grep -q x f && echo found``)."""
    said = _EXIT.sub("", _TAGS.sub(" ", _RETURNCODE.sub(" ", text)))
    if not simple or said.strip():
        return False
    return any(_program(words) in _FINDERS for words in simple)


def _program(words: list[str]) -> str:
    """A simple command's program: git's own command after its options (``git -C d grep``)."""
    prog = words[0].rsplit("/", 1)[-1] if words else ""
    if prog == "git":
        rest = iter(words[1:])
        sub = [w for w in rest if not (w in ("-C", "-c") and next(rest, "")) and w[:1] != "-"]
        return f"git {sub[0]}" if sub else "git"
    return prog


def _views(words: list[str]) -> bool:
    """Whether a simple command only shows or finds things: ``cat``, ``grep``, ``sed -n``
    (not ``sed -i``), ``git show``/``log``/``diff``/``status``, SWE-agent's ``open``, ..."""
    prog = _program(words)
    if prog == "sed":
        return not in_place(prog, words[1:])
    return prog in _VIEWERS


def _reproduced(text: str, command: str | None) -> list[str]:
    """The short lines of a command's output that say, from their start, it reproduced the
    bug ("Issue reproduced: ...", "BUG: ...", "FAIL: ..."); none for a result without a
    command (an editor's view of the script is no run of it), nor for lines of code or of
    a listing."""
    if not command:
        return []
    return [
        line.strip()
        for line in text.splitlines()
        if len(line) <= 200 and not _CODE_LINE.search(line) and _REPRODUCED.match(line.strip())
    ]


def _reasons(text: str) -> list[str]:
    """The lines of a failure's output that say why: an expected value against the actual
    one, a failed assertion, an exception, a panic; with their location when the line has
    one (``file.go:12:``, ``file.py:12:``). Distinct, in order."""
    out: list[str] = []
    for raw in text.splitlines()[-REASON_SCAN:]:  # a failure's summary ends its output
        line = raw.strip()
        if not line or _WARNING.search(line) or not _REASON.search(line):
            continue
        line = line.removeprefix("E").strip() if line.startswith("E ") else line
        if any(line in seen for seen in out):
            continue
        out = [seen for seen in out if seen not in line] + [line]  # the longer says more
    return out[-REASON_LINES:]
