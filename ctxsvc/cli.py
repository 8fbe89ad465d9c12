"""The ``ctxsvc`` command line: parse, call the service, render.

Exit codes: 0 success (also a degraded index, which is reported on stderr
and in ``--json``), 1 internal error, 2 bad input or configuration, 3 no
such index, 4 embedding model mismatch (re-run with ``--reembed``), 5 the
embedding model cannot load, 74 storage failure (retryable), 75 the
repository is being indexed by another process (retryable), 130 interrupted.
``bench`` adds no code of its own: a path that is not a git repository is 2,
a history with no task in it is 2 (``no_tasks``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ctxsvc.bench.gitrepo import open_repo
from ctxsvc.bench.report import require_plotting, write_report
from ctxsvc.bench.repository import DEFAULT_TASKS, bench_name, bench_repository
from ctxsvc.bench.runner import BUDGETS, SYSTEMS
from ctxsvc.bench.terminal import RichProgress, tables
from ctxsvc.context import DETAILS
from ctxsvc.errors import ConfigError, CtxError, InvalidPath, InvalidRequest
from ctxsvc.models import EVENT_KINDS, ContextPack, IndexSummary, RepoStatus
from ctxsvc.progress import RichReporter
from ctxsvc.service import ContextService
from ctxsvc.settings import Settings

EXIT_INTERRUPTED = 130

# Messages are not wrapped when stderr is a file or pipe: one event, one line, greppable.
err = Console(stderr=True, highlight=False, soft_wrap=not sys.stderr.isatty())
out = Console(highlight=False, soft_wrap=True)


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and extra fields."""

    _STD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        data.update({k: v for k, v in record.__dict__.items() if k not in self._STD})
        return json.dumps(data, default=str)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ctxsvc", description=__doc__.split("\n\n")[0])
    p.add_argument("--home", help="data directory (default: $CTXSVC_HOME or ~/.local/share/ctxsvc)")
    p.add_argument("--log-json", action="store_true", help="structured JSON logs on stderr")
    sub = p.add_subparsers(dest="command", required=True)

    ix = sub.add_parser("index", help="index a repository (incremental after the first run)")
    ix.add_argument("path", nargs="?", default=".", help="repository root (default: .)")
    ix.add_argument("--name", help="index name (default: the directory name)")
    ix.add_argument("--model", help="sentence-transformers model name or path")
    ix.add_argument("--no-vectors", action="store_true", help="full text and symbols only")
    ix.add_argument(
        "--reembed", action="store_true", help="replace every vector (after a model change)"
    )
    ix.add_argument("--rebuild", action="store_true", help="drop the index and build it again")
    ix.add_argument("--json", action="store_true", help="print the summary as JSON")

    st = sub.add_parser("status", help="what is indexed, how fresh, what is degraded")
    st.add_argument("name", nargs="?", help="index name or repository path (default: all)")
    st.add_argument("--json", action="store_true")

    q = sub.add_parser("query", help="context for a task, within a token budget")
    q.add_argument("repo", help="index name or repository path")
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
    _formats(q)

    e = sub.add_parser("expand", help="one symbol or line range, with callers and callees")
    e.add_argument("repo", help="index name or repository path")
    target = e.add_mutually_exclusive_group(required=True)
    target.add_argument("--symbol", help="a definition's name or qualified name")
    target.add_argument("--path", help="a file of the index")
    e.add_argument("--lines", help="START-END, with --path")
    e.add_argument("--callers", action="store_true")
    e.add_argument("--callees", action="store_true")
    e.add_argument("--budget", type=int, default=4000)
    e.add_argument("--session")
    _formats(e)

    _checkpoint_parsers(sub)
    _bench_parser(sub)

    sv = sub.add_parser("serve", help="run the HTTP API (FastAPI on uvicorn)")
    sv.add_argument("--host", help="address to bind (default: $CTXSVC_HOST or 127.0.0.1)")
    sv.add_argument("--port", type=int, help="port (default: $CTXSVC_PORT or 8765)")

    mc = sub.add_parser("mcp", help="run an MCP server on stdin/stdout (for coding agents)")
    mc.add_argument("--repo", help="default repository (index name or path): tools may omit repo")
    return p


def _bench_parser(sub: Any) -> None:
    b = sub.add_parser(
        "bench",
        help="measure what ctxsvc finds and saves on a repository's own history",
        description="Mine tasks from git history (commit message -> the source lines it changed), "
        "answer each on the commit before it with ctxsvc and baselines, and report.",
    )
    b.add_argument("path", nargs="?", default=".", help="a git repository (default: .)")
    b.add_argument(
        "--budgets",
        default=",".join(map(str, BUDGETS)),
        help="comma-separated token budgets (default: %(default)s)",
    )
    b.add_argument(
        "--tasks",
        type=int,
        default=DEFAULT_TASKS,
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
        default=",".join(SYSTEMS),
        help="comma-separated subset of %(default)s",
    )
    b.add_argument("--no-vectors", action="store_true", help="ctxsvc on full text and symbols only")
    b.add_argument("--json", action="store_true", help="print the means and file paths as JSON")


def _formats(p: argparse.ArgumentParser) -> None:
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true")
    fmt.add_argument("--markdown", action="store_true", help="only the rendered context")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _logging(args.log_json)
    try:
        settings = Settings.from_env(home=Path(args.home) if args.home else None)
        if args.command == "index":
            return _index(args, settings)
        if args.command == "status":
            return _status(args, settings)
        if args.command == "expand":
            return _expand(args, settings)
        if args.command == "serve":
            return _serve(args, settings)
        if args.command == "mcp":
            return _mcp(args, settings)
        if args.command in ("session", "checkpoint"):
            return _checkpoint(args, settings)
        if args.command == "workspace":
            return _workspace(args, settings)
        if args.command == "bench":
            return _bench(args, settings)
        return _query(args, settings)
    except CtxError as exc:
        err.print(
            f"[bold red]error[/] ({exc.code}{', retryable' if exc.retryable else ''}): {exc.message}"
        )
        if exc.hint:
            err.print(f"  hint: {exc.hint}")
        return exc.exit_code
    except KeyboardInterrupt:
        err.print(
            "interrupted: the last committed index is intact; run the command again to resume"
        )
        return EXIT_INTERRUPTED


def _logging(as_json: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if as_json:
        handler.setFormatter(JsonLogFormatter())
        level = logging.INFO
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        level = logging.WARNING
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Third-party chatter (model loading, HTTP retries) stays out of the way.
    for noisy in ("sentence_transformers", "transformers", "httpx", "urllib3", "lancedb"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def _service(settings: Settings, *, model: str | None, load_model: bool) -> ContextService:
    from ctxsvc.stores.lance import LanceStore
    from ctxsvc.stores.ledger import SessionLedger
    from ctxsvc.summarizer import ChatSummarizer
    from ctxsvc.tokens import TiktokenCounter

    store = LanceStore(settings.db_path)
    tokens = TiktokenCounter(settings.encoding)
    ledger = SessionLedger(settings.state_path)
    summarizer = None
    if settings.summarizer_url:
        summarizer = ChatSummarizer(
            settings.summarizer_url,
            settings.summarizer_model,
            settings.summarizer_api_key,
            settings.summarizer_timeout,
        )
    if not load_model:
        return ContextService(settings, store, tokens, ledger=ledger, summarizer=summarizer)
    from indexers.embed import GuardedEmbedder, SentenceTransformerEmbedder

    try:
        loaded = SentenceTransformerEmbedder(
            model or settings.model,
            max_seq_tokens=settings.embed_max_seq_tokens,
            quantize=settings.embed_quantize,
            batch_size=settings.embed_batch_size,
            threads=settings.embed_threads,
        )
    except CtxError as exc:
        err.print(f"[bold yellow]warning[/]: {exc}")
        return ContextService(
            settings, store, tokens, embedder_error=str(exc), ledger=ledger, summarizer=summarizer
        )
    # Calls that overrun raise (indexing then degrades) and pause the model for a while.
    embedder = GuardedEmbedder(loaded, timeout=settings.embed_timeout)
    return ContextService(
        settings, store, tokens, embedder, ledger=ledger, summarizer=summarizer,
        query_embedder=embedder.with_timeout(settings.query_embed_timeout),
    )  # fmt: skip


def _index(args: argparse.Namespace, settings: Settings) -> int:
    service = _service(settings, model=args.model, load_model=not args.no_vectors)
    with RichReporter(err, enabled=not args.json) as reporter:
        summary = service.index(
            args.path,
            args.name,
            vectors=not args.no_vectors,
            reembed=args.reembed,
            rebuild=args.rebuild,
            reporter=reporter,
        )
    if args.json:
        out.print_json(json.dumps(asdict(summary)))
    else:
        _print_summary(summary)
    return 0


def _print_summary(s: IndexSummary) -> None:
    t = Table(title=f"indexed {s.repo} ({s.root})", show_header=False)
    t.add_row("commit", s.commit or "(not a git repository)")
    t.add_row(
        "files",
        f"{s.files_seen} seen, {s.files_indexed} parsed, {s.files_unchanged} unchanged, "
        f"{s.files_deleted} deleted",
    )
    skipped = ", ".join(f"{k} {v}" for k, v in sorted(s.skipped.items())) or "none"
    t.add_row("skipped", skipped)
    t.add_row("syntax errors", f"{s.files_with_syntax_errors} files (partial trees used)")
    t.add_row(
        "index",
        f"{s.chunks} chunks, {s.tokens} tokens, {s.symbols} symbols, {s.references} references",
    )
    t.add_row(
        "vectors",
        f"{s.vectors} ({s.model}); {s.chunks_embedded} embedded, {s.chunks_reused} reused",
    )
    t.add_row("seconds", ", ".join(f"{x.stage} {x.seconds:.2f}" for x in s.timings))
    out.print(t)
    for w in s.warnings:
        err.print(f"[bold yellow]warning[/]: {w}")
    if s.vectors == "missing":
        err.print(
            "[bold yellow]DEGRADED[/]: vectors are missing; queries use full text and symbols only. "
            "Run `ctxsvc index` again once the model loads."
        )


def _status(args: argparse.Namespace, settings: Settings) -> int:
    service = _service(settings, model=None, load_model=False)
    names = [args.name] if args.name else [m.name for m in service.repos()]
    statuses = [service.status(n) for n in names]
    if args.json:
        out.print_json(json.dumps([asdict(s) for s in statuses]))
        return 0
    if not statuses:
        out.print("nothing is indexed yet: run `ctxsvc index PATH`")
    for s in statuses:
        _print_status(s)
    return 0


def _print_status(s: RepoStatus) -> None:
    t = Table(title=f"{s.name} ({s.root})", show_header=False)
    t.add_row("indexed", f"{s.indexed_at}, commit {s.commit or '-'}, generation {s.version}")
    t.add_row("contents", f"{s.files} files, {s.chunks} chunks, {s.symbols} symbols")
    t.add_row("vectors", f"{s.vectors} ({s.model}, {s.dimension} dims); tokenizer {s.tokenizer}")
    fresh = (
        "up to date"
        if not (s.changed or s.added or s.deleted)
        else (
            f"{len(s.changed)} changed, {len(s.added)} added, {len(s.deleted)} deleted since indexing"
        )
    )
    t.add_row("freshness", fresh)
    t.add_row("skipped", ", ".join(f"{k} {v}" for k, v in sorted(s.skipped.items())) or "none")
    t.add_row("degraded", "; ".join(s.degraded) or "no")
    out.print(t)


def _query(args: argparse.Namespace, settings: Settings) -> int:
    service = _query_service(args.repo, settings)
    t0 = time.perf_counter()
    pack = service.context(
        args.repo,
        args.question,
        args.budget,
        detail=args.detail,
        session_id=args.session,
        include=args.include,
        exclude=args.exclude,
        refresh=not args.no_refresh,
    )
    return _render(args, pack, (time.perf_counter() - t0) * 1000)


def _expand(args: argparse.Namespace, settings: Settings) -> int:
    start = end = None
    if args.lines:
        try:
            start, end = (int(x) for x in args.lines.split("-", 1))
        except ValueError:
            raise InvalidRequest(f"--lines {args.lines!r} is not START-END") from None
    service = _query_service(args.repo, settings)
    t0 = time.perf_counter()
    pack = service.expand(
        args.repo,
        symbol=args.symbol,
        path=args.path,
        start_line=start,
        end_line=end,
        budget_tokens=args.budget,
        callers=args.callers,
        callees=args.callees,
        session_id=args.session,
    )
    return _render(args, pack, (time.perf_counter() - t0) * 1000)


def _query_service(repo: str, settings: Settings) -> ContextService:
    """A service with the embedding model the index was built with, if it has vectors."""
    meta = _service(settings, model=None, load_model=False).resolve(repo)
    if meta.vectors != "disabled" and meta.model:
        return _service(settings, model=meta.model.split("@")[0], load_model=True)
    return _service(settings, model=None, load_model=False)


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    """Run the HTTP API: the model loads once, before the server starts listening."""
    import ipaddress
    import os

    import uvicorn

    from ctxsvc.api import create_app
    from ctxsvc.observability import RequestContextFilter

    host = args.host or settings.host
    port = settings.port if args.port is None else args.port
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not settings.token:
        raise ConfigError(
            f"refusing to serve on {host} without a token: anyone who can reach it could read "
            "every indexed repository",
            hint="set CTXSVC_TOKEN (clients send Authorization: Bearer <token>), or bind 127.0.0.1",
        )
    if not 0 <= port <= 65535:
        raise ConfigError(f"invalid port {port}")
    roots = [Path(p).expanduser() for p in settings.allowed_roots.split(os.pathsep) if p]
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    # A server logs JSON lines, each with the id of the request it belongs to.
    _logging(True)
    for handler in logging.getLogger().handlers:
        handler.addFilter(RequestContextFilter())
    service = _service(settings, model=None, load_model=True)
    app = create_app(
        service,
        token=settings.token or None,
        allowed_roots=roots or [Path.home()],
        cors_origins=origins,
    )
    logging.getLogger("ctxsvc.api").info(
        "serving",
        extra={
            "host": host,
            "port": port,
            "auth": bool(settings.token),
            "home": str(settings.home),
        },
    )
    uvicorn.run(app, host=host, port=port, access_log=False, log_config=None)
    return 0


def _mcp(args: argparse.Namespace, settings: Settings) -> int:
    """Serve MCP over stdio: stdout carries the protocol, logs and warnings go to stderr."""
    from ctxsvc.mcp import serve_stdio

    default = None
    if args.repo:  # an unknown repository fails here, before the server starts
        default = _service(settings, model=None, load_model=False).resolve(args.repo).name

    def service() -> ContextService:
        # With a default repository, the model its index was built with; else the default model.
        if default:
            return _query_service(default, settings)
        return _service(settings, model=None, load_model=True)

    serve_stdio(service, default)
    return 0


def _checkpoint_parsers(sub: Any) -> None:
    se = sub.add_parser("session", help="start an agent session (the owner of checkpoints)")
    se_sub = se.add_subparsers(dest="action", required=True)
    start = se_sub.add_parser("start", help="start a session on an indexed repository")
    start.add_argument("repo", help="index name or repository path")
    start.add_argument("--task", required=True, help="what the session is for")
    start.add_argument("--agent", help="the agent's name")
    start.add_argument("--workspace", help="a workspace shared by parallel sessions")
    start.add_argument("--json", action="store_true")

    cp = sub.add_parser("checkpoint", help="write, read and resume from session checkpoints")
    cp_sub = cp.add_subparsers(dest="action", required=True)
    w = cp_sub.add_parser("write", help="summarize the transcript since the last checkpoint")
    w.add_argument("session", help="session id (from `ctxsvc session start`)")
    w.add_argument("--messages", help="a JSON file of OpenAI-style chat messages ('-': stdin)")
    w.add_argument("--goal")
    w.add_argument("--done", action="append", help="a step done (repeatable)")
    w.add_argument("--decision", action="append", help="a decision and its reason (repeatable)")
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


def _workspace(args: argparse.Namespace, settings: Settings) -> int:
    service = _service(settings, model=None, load_model=False)
    if args.action == "record":
        event, _ = service.record_event(
            args.workspace, args.text, kind=args.kind, session_id=args.session,
            idempotency_key=args.key,
        )  # fmt: skip
        events = [event]
    else:
        events = service.workspace_events(args.workspace, after=args.after, limit=1000)
    if args.json:
        out.print_json(json.dumps([asdict(e) for e in events]))
        return 0
    for e in events:
        who = "re-index" if e.source == "index" else (e.agent or e.session_id or "agent")
        out.print(f"#{e.seq} {e.created_at[:19]}Z {e.kind} by {who}: {e.text}", highlight=False)
    return 0


def _checkpoint(args: argparse.Namespace, settings: Settings) -> int:
    service = _service(settings, model=None, load_model=False)
    if args.command == "session":
        session = service.start_session(args.repo, args.task, args.agent, args.workspace)
        if args.json:
            out.print_json(json.dumps(asdict(session)))
        else:
            out.print(session.id)
        return 0
    if args.action == "write":
        messages: Any = None
        if args.messages:
            try:
                raw = sys.stdin.read() if args.messages == "-" else Path(args.messages).read_text()
                messages = json.loads(raw)
            except (OSError, ValueError) as exc:
                raise InvalidRequest(
                    f"cannot read messages from {args.messages}: {exc}",
                    hint="give a JSON file holding a list of chat messages",
                ) from None
            if isinstance(messages, dict) and isinstance(messages.get("messages"), list):
                messages = messages["messages"]
        fields = {
            k: v
            for k, v in {
                "goal": args.goal, "done": args.done, "decisions": args.decision,
                "open_tasks": args.todo, "next_step": args.next_step, "notes": args.note,
            }.items()
            if v
        }  # fmt: skip
        cp = service.write_checkpoint(args.session, messages, fields, args.key, args.budget)
    elif args.action == "list":
        cps = service.checkpoints(args.session)
        if args.json:
            out.print_json(json.dumps([{**asdict(c), "transcript": []} for c in cps]))
            return 0
        t = Table(title=f"checkpoints of {args.session}")
        for col in ("#", "created", "transcript tokens", "summary tokens", "goal"):
            t.add_column(col)
        for c in cps:
            t.add_row(
                str(c.number), c.created_at, str(c.transcript_tokens), str(c.summary.tokens),
                c.summary.goal,
            )  # fmt: skip
        out.print(t)
        return 0
    elif args.action == "resume":
        session = service.session(args.session)
        result = _query_service(session.repo, settings).resume(args.session, args.budget)
        if args.json:
            out.print_json(json.dumps(asdict(result)))
        else:
            out.out(result.rendered, highlight=False)
            err.print(f"[bold]{result.tokens_used}/{result.budget_tokens} tokens[/]")
            for d in result.degraded:
                err.print(f"[bold yellow]degraded[/]: {d}")
            for w in result.warnings:
                err.print(f"[bold yellow]changed by another session[/]: [{w.subject}] {w.message}")
        return 0
    else:
        cp = service.checkpoint(args.session, args.number)
    if args.json:
        out.print_json(json.dumps(asdict(cp)))
    else:
        out.out(cp.summary.rendered, highlight=False)
        err.print(
            f"[bold]checkpoint {cp.number} of {cp.session_id}, {cp.created_at}: "
            f"{cp.transcript_tokens} transcript tokens -> {cp.summary.tokens} summary tokens[/]"
        )
    return 0


def _bench(args: argparse.Namespace, settings: Settings) -> int:
    budgets = _int_list(args.budgets, "--budgets")
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    require_plotting()  # fail now rather than after the run
    repo = open_repo(Path(args.path).expanduser())
    target = args.out or Path(f"ctxsvc-bench-{bench_name(repo, args.name)}")
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidPath(f"cannot write the report to {target}: {exc.strerror or exc}") from None
    vectors = not args.no_vectors and "ctxsvc" in systems
    service = _service(settings, model=None, load_model=vectors)
    with RichProgress(err, enabled=not args.json) as progress:
        report = bench_repository(
            service, repo, name=args.name, tasks=args.tasks, since=args.since,
            tasks_file=args.tasks_file, budgets=budgets, systems=systems, vectors=vectors,
            progress=progress,
        )  # fmt: skip
    paths = write_report(report, target)
    if args.json:
        summary = {k: report[k] for k in ("config", "seconds", "repos", "mean")}
        out.print_json(json.dumps({**summary, "files": [str(p) for p in paths]}))
        return 0
    # A redirected table stays whole rather than wrapping at 80 columns.
    console = out if out.is_terminal else Console(highlight=False, width=140)
    for table in tables(report):
        console.print(table)
    degraded = report["repos"][report["config"]["repo"]]["degraded_tasks"]
    if vectors and degraded:
        err.print(
            f"[bold yellow]degraded[/]: {degraded} tasks were answered without a signal ctxsvc "
            "normally uses (see `degraded` in report.json's per_task)"
        )
    err.print(f"wrote {', '.join(str(p) for p in paths)}")
    return 0


def _int_list(text: str, option: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InvalidRequest(
            f"{option} {text!r} is not a comma-separated list of numbers",
            hint="e.g. 2000,4000,8000,16000",
        ) from None


def _render(args: argparse.Namespace, pack: ContextPack, ms: float) -> int:
    if args.json:
        out.print_json(json.dumps(asdict(pack)))
    elif args.markdown:
        out.out(pack.rendered, highlight=False)
    else:
        _print_pack(pack, ms)
    return 0


def _print_pack(p: ContextPack, ms: float) -> None:
    out.out(p.rendered, highlight=False)
    err.print(
        f"[bold]{len(p.items)} snippets, {p.tokens_used}/{p.budget_tokens} tokens ({p.encoding}), "
        f"{len(p.omitted)} more candidates left out, {ms:.0f} ms[/]"
    )
    for o in p.omitted[:5]:
        err.print(
            f"  left out: {o.path}:{o.start_line}-{o.end_line} {o.symbol or ''} ({o.tokens} tokens)"
        )
    if p.index and p.index.changed_since:
        err.print(f"[yellow]{len(p.index.changed_since)} files changed on disk since indexing[/]")
    for d in p.degraded:
        err.print(f"[bold yellow]degraded[/]: {d}")
    for w in p.warnings:
        err.print(f"[bold yellow]changed by another session[/]: [{w.subject}] {w.message}")


if __name__ == "__main__":
    raise SystemExit(main())
