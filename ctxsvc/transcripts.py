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

ROLES = frozenset({"system", "user", "assistant", "tool", "function", "developer"})
MAX_MESSAGES = 20_000
READ_COMMANDS = frozenset({"view", "read", "open", "show", "cat", "list"})

_PATH_KEYS = (
    "path", "file", "filename", "file_path", "filepath", "target_file", "paths", "files",
)  # fmt: skip
_EDIT_TOOL = re.compile(r"edit|write|patch|replace|create|insert|apply|modify|append|rename|move")
_EDIT_COMMANDS = frozenset({"create", "str_replace", "insert"})
_TEXT_KEYS = ("old_str", "new_str", "content", "patch", "diff", "text", "code", "file_text")
_DIFF_FILE = re.compile(r"^\+\+\+ (?:b/)?(\S+)", re.M)
_EXIT = re.compile(
    r"(?:exit(?:ed)?(?: with)?(?: code| status)?|return ?code|returncode)(?:[\s:=]+|>\s*)([1-9]\d*)",
    re.I,
)  # "exit code 1", "returncode: 2", mini-SWE-agent's "<returncode>1</returncode>"
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
_WARNING = re.compile(r"^(?:\S+ )?(?:WARN(?:ING)?|warning)\b")  # "npm WARN ...": not why it failed
REASON_SCAN = 400  # lines of a result's end read for reasons
REASON_LINES = 3  # of a failure's output kept in its error line
FAILURE_CHARS = 320
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")


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
        if isinstance(value, str) and (key != "command" or value not in READ_COMMANDS):
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


def failure(text: str, command: str | None) -> str | None:
    """One line saying how a tool result failed and why, or None when it did not: the
    command, then the lines that say why (expected against actual, the exception, where),
    at most ``REASON_LINES`` of them, ``FAILURE_CHARS`` in all."""
    if not (_FAILURE.search(text) or _EXIT.search(text)):
        return None
    lines = [ln.strip() for ln in _ERROR_LINE.findall(text) if ln.strip()]
    # The last error line ends a traceback; a FAILED or exception line says more than counts.
    telling = [ln for ln in lines if not re.search(r"\b\d+ (?:failed|passed)\b", ln)]
    lines = telling or lines
    why = _reasons(text)
    last = lines[-1] if lines else ""
    parts = [*why, *([last] if last and not any(last in w or w in last for w in why) else [])]
    if not parts:
        parts = [f"exit {m.group(1)}" if (m := _EXIT.search(text)) else "failed"]
    detail = " | ".join(clip(p, 140) for p in parts[-REASON_LINES:])
    return clip(f"`{clip(command, 60)}`: {detail}" if command else detail, FAILURE_CHARS)


def _reasons(text: str) -> list[str]:
    """The lines of a failure's output that say why: an expected value against the actual
    one, a failed assertion, an exception, a panic; with their location when the line has
    one (``file.go:12:``, ``file.py:12:``). Distinct, in order."""
    out: list[str] = []
    for raw in text.splitlines()[-REASON_SCAN:]:  # a failure's summary ends its output
        line = raw.strip()
        if not line or _WARNING.match(line) or not _REASON.search(line):
            continue
        line = line.removeprefix("E").strip() if line.startswith("E ") else line
        if any(line in seen for seen in out):
            continue
        out = [seen for seen in out if seen not in line] + [line]  # the longer says more
    return out[-REASON_LINES:]
