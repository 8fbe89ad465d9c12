"""The command line's arguments: one sub-command per task.

Every text argument must be UTF-8: argv bytes that are not arrive as lone
surrogates (Python's ``surrogateescape``), which no store or answer can hold,
so they are refused here, naming the argument, as HTTP refuses them with a 422.
Only what may be a file path takes any bytes (``type=str`` or ``Path``). A
malformed command line is an ``InvalidRequest`` like any other bad input: one
line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, NoReturn

from ctxsvc import __version__
from ctxsvc.errors import InvalidRequest

DESCRIPTION = "The ``ctxsvc`` command line: parse, call the service, render."
REPO_HELP = "index name or repository path"
MORE_REPOS_HELP = (
    "another index to answer from as well (repeatable, up to 8 in all): scores made "
    "comparable across them, the budget shared fairly, each item naming its index"
)
NO_SERVER_HELP = (
    "answer in this process even when a `ctxsvc serve` of this data directory runs "
    "(also: CTXSVC_USE_SERVER=0)"
)
# Copies of constants whose modules are slow to import (the bench runner, retrieval);
# tests/test_startup.py checks that they match.
DETAILS = ("snippets", "skeleton", "map", "full")  # ctxsvc.candidates.DETAILS
EVENT_KINDS = ("decision", "renamed", "removed", "changed", "note")  # ctxsvc.models
BENCH_BUDGETS = (2000, 4000, 8000, 16000)  # ctxsvc.bench.runner.BUDGETS
BENCH_SYSTEMS = (  # .SYSTEMS
    "ctxsvc", "bm25-files", "bm25-windows", "grep-agent", "oracle", "whole-repo",
)  # fmt: skip
BENCH_TASKS = 50  # ctxsvc.bench.repository.DEFAULT_TASKS


def text(value: str) -> str:
    """``value`` if it is UTF-8 text (argparse's ``type`` of every text argument)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raw = value[exc.start].encode("utf-8", "surrogateescape")
        raise argparse.ArgumentTypeError(
            f"not UTF-8 text (byte 0x{raw[0]:02x} at character {exc.start + 1})"
        ) from None
    return value


class Parser(argparse.ArgumentParser):
    """An argument parser whose text arguments are checked by :func:`text` unless they
    say another ``type``, and whose errors are ``InvalidRequest``."""

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        if kwargs.get("action", "store") in ("store", "append") and "type" not in kwargs:
            kwargs["type"] = text
        return super().add_argument(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise InvalidRequest(message, hint=f"see `{self.prog} --help`")


class HookParser(Parser):
    """The parser of a hook's command line: an error is one line on stderr and exit code
    0, as every failure of a hook (``ctxsvc.cli.hook``): exit code 2 would block the tool."""

    def error(self, message: str) -> NoReturn:
        print(f"ctxsvc hook: no context: {message}", file=sys.stderr)
        raise SystemExit(0)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="ctxsvc", description=DESCRIPTION)
    p.add_argument("--version", action="version", version=f"ctxsvc {__version__}")
    p.add_argument("--home", help="data directory (default: $CTXSVC_HOME or ~/.local/share/ctxsvc)")
    p.add_argument(
        "--config",
        type=Path,
        help="a TOML settings file (default: ctxsvc.toml in the data directory)",
    )
    p.add_argument("--log-json", action="store_true", help="structured JSON logs on stderr")
    sub = p.add_subparsers(dest="command", required=True)

    ix = sub.add_parser("index", help="index a repository (incremental after the first run)")
    ix.add_argument("path", nargs="?", default=".", type=str, help="repository root (default: .)")
    ix.add_argument("--name", help="index name (default: the directory name)")
    ix.add_argument("--model", help="sentence-transformers model name or path")
    ix.add_argument("--no-vectors", action="store_true", help="full text and symbols only")
    ix.add_argument(
        "--executor",
        choices=("local", "ray"),
        help="where chunks are embedded: worker processes here (default), or Ray actors "
        "(a local Ray instance, or the cluster RAY_ADDRESS names; needs ctxsvc[ray])",
    )
    ix.add_argument(
        "--reembed", action="store_true", help="replace every vector (after a model change)"
    )
    ix.add_argument("--rebuild", action="store_true", help="drop the index and build it again")
    ix.add_argument(
        "--wait",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="wait for every vector (default); --no-wait returns once the index answers "
        "and a background process fills the vectors",
    )
    ix.add_argument("--json", action="store_true", help="print the summary as JSON")

    st = sub.add_parser("status", help="what is indexed, how fresh, what is degraded")
    st.add_argument("name", nargs="?", type=str, help=f"{REPO_HELP} (default: all)")
    st.add_argument("--json", action="store_true")
    st.add_argument("--no-server", action="store_true", help=NO_SERVER_HELP)

    q = sub.add_parser("query", help="context for a task, within a token budget")
    q.add_argument("repo", type=str, help=REPO_HELP)
    q.add_argument("question")
    q.add_argument("--budget", type=int, default=8000, help="token budget (default 8000)")
    q.add_argument("--detail", choices=DETAILS, default="snippets", help="how much of each file")
    q.add_argument("--session", help="session id: what it already received is not sent again")
    q.add_argument("--include", action="append", help="only paths matching this glob (repeatable)")
    q.add_argument("--exclude", action="append", help="never paths matching this glob (repeatable)")
    q.add_argument(
        "--no-refresh",
        action="store_true",
        help="answer from the index as is, even if files changed",
    )
    q.add_argument(
        "--no-vectors",
        action="store_true",
        help="answer from full text, symbols and the graph only: the model is not loaded "
        "(always in this process)",
    )
    q.add_argument(
        "--diff",
        nargs="?",
        const="HEAD",
        metavar="BASE",
        help="context for the working tree's change against BASE (default HEAD; a branch or "
        "commit): the diff first, then what it changed, its callers, callees, tests and "
        "co-changed files, ranked with what the question finds",
    )
    _branch(q)
    q.add_argument("--repo", dest="repos", action="append", metavar="NAME", help=MORE_REPOS_HELP)
    q.add_argument("--no-server", action="store_true", help=NO_SERVER_HELP)
    _formats(q)

    sr = sub.add_parser("search", help="ranked files and symbols for a question, without code")
    sr.add_argument("repo", type=str, help=REPO_HELP)
    sr.add_argument("question")
    _branch(sr)
    sr.add_argument("--repo", dest="repos", action="append", metavar="NAME", help=MORE_REPOS_HELP)
    sr.add_argument("--limit", type=int, default=20, help="most files and symbols (default 20)")
    sr.add_argument(
        "--no-vectors", action="store_true", help="full text, symbols and the graph only"
    )
    sr.add_argument("--no-server", action="store_true", help=NO_SERVER_HELP)
    sr.add_argument("--json", action="store_true")

    im = sub.add_parser("impact", help="who depends on a symbol, grouped by depth")
    im.add_argument("repo", type=str, help=REPO_HELP)
    im.add_argument(
        "symbol", type=text, help="a definition's id (path::Qualified.name), qualified name or name"
    )
    im.add_argument("--depth", type=int, default=2, help="levels of dependents, 1 to 5 (default 2)")
    im.add_argument(
        "--limit", type=int, default=100, help="dependents listed per depth (default 100)"
    )
    im.add_argument("--json", action="store_true")
    im.add_argument("--no-server", action="store_true", help=NO_SERVER_HELP)

    rf = sub.add_parser("references", help="the uses of a symbol, and how each was resolved")
    rf.add_argument("repo", type=str, help=REPO_HELP)
    rf.add_argument("symbol", type=text, help="a definition's id, qualified name or name")
    rf.add_argument("--limit", type=int, default=100, help="most uses to list (default 100)")
    rf.add_argument("--json", action="store_true")
    rf.add_argument("--no-server", action="store_true", help=NO_SERVER_HELP)

    df = sub.add_parser("definition", help="what a name means where it is used (go to definition)")
    df.add_argument("repo", type=str, help=REPO_HELP)
    df.add_argument("name", type=text, help="the name as used (a qualified one narrows it)")
    df.add_argument("--at", help="PATH:LINE of the use (without it: every definition of the name)")
    df.add_argument("--json", action="store_true")
    df.add_argument("--no-server", action="store_true", help=NO_SERVER_HELP)

    e = sub.add_parser("expand", help="one symbol or line range, with callers and callees")
    e.add_argument("repo", type=str, help=REPO_HELP)
    target = e.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--symbol",
        type=text,
        help="a definition's id (path::Qualified.name), qualified name or name; "
        "an ambiguous name lists the candidates' ids",
    )
    target.add_argument("--path", type=text, help="a file of the index")
    e.add_argument("--lines", help="START-END, with --path")
    e.add_argument("--callers", action="store_true")
    e.add_argument("--callees", action="store_true")
    e.add_argument("--budget", type=int, default=4000)
    e.add_argument("--session")
    _branch(e)
    e.add_argument("--no-server", action="store_true", help=NO_SERVER_HELP)
    _formats(e)

    _checkpoint_parsers(sub)
    _bench_parser(sub)

    sv = sub.add_parser("serve", help="run the HTTP API (FastAPI on uvicorn)")
    sv.add_argument("--host", help="address to bind (default: $CTXSVC_HOST or 127.0.0.1)")
    sv.add_argument("--port", type=int, help="port (default: $CTXSVC_PORT or 8765)")
    sv.add_argument(
        "--watch",
        nargs="?",
        action="append",
        const=None,
        metavar="NAME",
        help="re-index as files change: --watch alone watches every index (also those indexed "
        "later), --watch NAME (repeatable) only those",
    )
    sv.add_argument(
        "--workers",
        type=int,
        help="server processes on the port, sharing the data directory and its job queue "
        "(default: $CTXSVC_WORKERS or 1)",
    )

    mc = sub.add_parser("mcp", help="run an MCP server on stdin/stdout (for coding agents)")
    mc.add_argument(
        "--repo", type=str, help="default repository (index name or path): tools may omit repo"
    )

    wa = sub.add_parser(
        "watch", help="keep an index current as its files change (until Ctrl-C or SIGTERM)"
    )
    wa.add_argument("repo", type=str, help=REPO_HELP)

    hk = sub.add_parser("hook", help="answer a coding agent's hook with context (docs/recipes)")
    # argparse makes every command's parser of one class; hook's must exit 0 on any error
    # (`hook`, `hook codex`): an agent takes exit code 2 as "block the tool".
    hk.__class__ = HookParser
    agents = hk.add_subparsers(dest="agent", required=True, parser_class=HookParser)
    cc = agents.add_parser(
        "claude-code",
        help="a Claude Code command hook (PreToolUse of Grep or Glob, UserPromptSubmit): the "
        "event on stdin, context as additionalContext on stdout; exit code 0 whatever happens",
    )
    cc.add_argument("--budget", type=int, default=1500, help="token budget (default 1500)")
    cc.add_argument(
        "--timeout", type=float, default=8.0, help="seconds before giving up, silently (default 8)"
    )
    cc.add_argument("--no-server", action="store_true", help=NO_SERVER_HELP)
    return p


def _branch(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--branch",
        metavar="NAME",
        help="answer from the version the index kept of a branch the working tree left (or "
        "of a detached commit), as indexed then; `ctxsvc status NAME` lists them",
    )


def _bench_parser(sub: Any) -> None:
    b = sub.add_parser(
        "bench",
        help="measure what ctxsvc finds and saves on a repository's own history",
        description="Mine tasks from git history (commit message -> the source lines it changed), "
        "answer each on the commit before it with ctxsvc and baselines, and report.",
    )
    b.add_argument("path", nargs="?", default=".", type=str, help="a git repository (default: .)")
    b.add_argument(
        "--budgets",
        default=",".join(map(str, BENCH_BUDGETS)),
        help="comma-separated token budgets (default: %(default)s)",
    )
    b.add_argument(
        "--tasks",
        type=int,
        default=BENCH_TASKS,
        help="the N most recent tasks, or the first N of --tasks-file (default: %(default)s)",
    )
    b.add_argument(
        "--since", help="mine commits after this date (git's --since: 2024-01-31, '1 year ago')"
    )
    b.add_argument(
        "--tasks-file",
        type=Path,
        help="run the tasks of a JSON-lines file (the ../shared/bench format) instead of mining",
    )
    b.add_argument("--out", type=Path, help="report directory (default: ./ctxsvc-bench-NAME)")
    b.add_argument("--name", help="the repository's name in the report (default: its directory)")
    b.add_argument(
        "--systems",
        default=",".join(BENCH_SYSTEMS),
        help="comma-separated subset of %(default)s",
    )
    b.add_argument("--no-vectors", action="store_true", help="ctxsvc on full text and symbols only")
    b.add_argument("--json", action="store_true", help="print the means and file paths as JSON")


def _formats(p: argparse.ArgumentParser) -> None:
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true")
    fmt.add_argument("--markdown", action="store_true", help="only the rendered context")


def _checkpoint_parsers(sub: Any) -> None:
    se = sub.add_parser("session", help="start an agent session (the owner of checkpoints)")
    se_sub = se.add_subparsers(dest="action", required=True)
    start = se_sub.add_parser("start", help="start a session on an indexed repository")
    start.add_argument("repo", type=str, help=REPO_HELP)
    start.add_argument("--task", required=True, help="what the session is for")
    start.add_argument("--agent", help="the agent's name")
    start.add_argument("--workspace", help="a workspace shared by parallel sessions")
    start.add_argument("--json", action="store_true")

    cp = sub.add_parser("checkpoint", help="write, read and resume from session checkpoints")
    cp_sub = cp.add_subparsers(dest="action", required=True)
    w = cp_sub.add_parser("write", help="summarize the transcript since the last checkpoint")
    w.add_argument("session", help="session id (from `ctxsvc session start`)")
    w.add_argument(
        "--messages", type=str, help="a JSON file of OpenAI-style chat messages ('-': stdin)"
    )
    w.add_argument("--goal")
    w.add_argument("--done", action="append", help="a step done (repeatable)")
    w.add_argument("--decision", action="append", help="a decision and its reason (repeatable)")
    w.add_argument(
        "--constraint", action="append", help="a requirement the work must keep (repeatable)"
    )
    w.add_argument("--todo", action="append", help="an open task (repeatable)")
    w.add_argument("--next", dest="next_step", help="the next step")
    w.add_argument("--note", action="append", help="a note (repeatable)")
    w.add_argument("--key", help="idempotency key: a retry with it never writes twice")
    w.add_argument("--budget", type=int, default=300, help="summary token budget (default 300)")
    w.add_argument("--json", action="store_true")
    sh = cp_sub.add_parser("show", help="one checkpoint (the latest by default)")
    sh.add_argument("session")
    sh.add_argument("--number", type=int, help="checkpoint number (default: the latest)")
    sh.add_argument("--json", action="store_true", help="everything, the transcript included")
    ls = cp_sub.add_parser("list", help="the checkpoints of a session")
    ls.add_argument("session")
    ls.add_argument("--json", action="store_true")
    rs = cp_sub.add_parser("resume", help="summary, code changes since, and fresh context")
    rs.add_argument("session")
    rs.add_argument("--budget", type=int, default=2000, help="token budget (default 2000)")
    rs.add_argument(
        "--no-refresh",
        action="store_true",
        help="compare with the index as is, even if files changed",
    )
    rs.add_argument("--json", action="store_true")

    ws = sub.add_parser("workspace", help="the log parallel sessions of a workspace share")
    ws_sub = ws.add_subparsers(dest="action", required=True)
    rec = ws_sub.add_parser("record", help="record a decision or change for the other sessions")
    rec.add_argument("workspace")
    rec.add_argument("text", help="e.g. 'renamed interface Store to Repository'")
    rec.add_argument("--session", help="the session it comes from")
    rec.add_argument("--kind", choices=EVENT_KINDS, help="default: read from the text")
    rec.add_argument("--key", help="idempotency key: a retry with it never writes twice")
    rec.add_argument("--json", action="store_true")
    lg = ws_sub.add_parser("log", help="the workspace's events, oldest first")
    lg.add_argument("workspace")
    lg.add_argument("--after", type=int, default=0, help="only events after this number")
    lg.add_argument("--json", action="store_true")
