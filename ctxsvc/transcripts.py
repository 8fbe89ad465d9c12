"""Reading chat transcripts: messages, tool calls, commands and diffs.

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
_CODE_BLOCK = re.compile(r"```.*?```", re.S)
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
