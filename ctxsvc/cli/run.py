"""The commands of indexes and servers: index, status, query, expand, serve, mcp, bench.

Each command imports the heavy parts it needs when it runs (the service and its
stores, the HTTP app, the benchmark): ``query``, ``expand`` and ``status``
answered by a running server (``ctxsvc.cli.remote``) never import them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import redirect_stdout
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ctxsvc.cli import remote, serving
from ctxsvc.cli.render import (
    configure_logging,
    err,
    out,
    print_search,
    print_status,
    print_summary,
    render,
)
from ctxsvc.errors import ConfigError, CtxError, InvalidPath, InvalidRequest
from ctxsvc.limits import MAX_LINE, NAME
from ctxsvc.settings import Settings

if TYPE_CHECKING:
    from ctxsvc.models import Links, RepoStatus
    from ctxsvc.service import ContextService

STARTUP_FAILURE = 3  # as uvicorn.run exits when the server cannot start
T = TypeVar("T")
# How long `ctxsvc mcp` waits, once stdin closes, for the service still being built.
SETTLE_SECONDS = 30.0
# The degraded note of `query --no-vectors`, said as any answer without a model says it.
NO_VECTORS = "--no-vectors: answered from full text, symbols and the graph"


def index(args: argparse.Namespace, settings: Settings) -> int:
    from ctxsvc.compose import build_service
    from ctxsvc.progress import RichReporter

    service = build_service(settings, model=args.model, vectors=not args.no_vectors)
    with RichReporter(err, enabled=not args.json) as reporter:
        summary = service.index(
            args.path,
            args.name,
            vectors=not args.no_vectors,
            reembed=args.reembed,
            rebuild=args.rebuild,
            reporter=reporter,
            wait=args.wait,
        )
    if summary.vectors == "partial" and not args.wait and summary.vectors_missing:
        note = _fill_detached(args, settings, summary.root, summary.repo)
        summary = replace(summary, warnings=(*summary.warnings, note))
    if args.json:
        out.print_json(json.dumps(asdict(summary)))
    else:
        print_summary(summary)
    return 0


def _fill_detached(args: argparse.Namespace, settings: Settings, root: str, name: str) -> str:
    """Start a process of its own that fills ``name``'s vectors once this one exits: an
    incremental `ctxsvc index` of the index, which finds nothing changed and embeds."""
    import os
    import subprocess
    import sys

    logs = settings.home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"fill-{name}.log"
    command = [sys.executable, "-m", "ctxsvc", "--home", str(settings.home)]
    if args.config:
        command += ["--config", str(args.config)]
    command += ["index", root, "--name", name, "--json"]
    if args.model:
        command += ["--model", args.model]
    with open(log, "ab") as sink:
        child = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink,
            start_new_session=True, env=os.environ.copy(),
        )  # fmt: skip
    return f"vectors fill in behind: process {child.pid}, log {log}"


def status(args: argparse.Namespace, settings: Settings) -> int:
    statuses = None
    server = remote.connect(settings, args.no_server)
    if server is not None:
        with server:
            statuses = server.statuses(args.name)
    if statuses is None:
        statuses = _statuses(args.name, settings)
    if args.json:
        out.print_json(json.dumps([asdict(s) for s in statuses]))
        return 0
    if not statuses:
        out.print("nothing is indexed yet: run `ctxsvc index PATH`")
    for s in statuses:
        print_status(s)
    return 0


def _statuses(name: str | None, settings: Settings) -> list[RepoStatus]:
    if name is None and not settings.index_uri and not settings.db_path.exists():
        return []  # a data directory never indexed into: no store to open
    from ctxsvc.compose import build_service

    service = build_service(settings, vectors=False)
    return [service.status(n) for n in ([name] if name else service.names())]


def query(args: argparse.Namespace, settings: Settings) -> int:
    call = {
        "budget_tokens": args.budget, "detail": args.detail, "session_id": args.session,
        "include": args.include, "exclude": args.exclude, "refresh": not args.no_refresh,
    }  # fmt: skip
    if args.diff is not None:  # (left out otherwise: an older server knows no such field)
        call["diff"] = args.diff
    if args.branch is not None:
        call["branch"] = args.branch
    if args.repos:
        call["repos"] = args.repos
    # --no-vectors asks this process not to load a model; a server has its own loaded.
    server = None if args.no_vectors else remote.connect(settings, args.no_server)
    if server is not None:
        with server:
            t0 = time.perf_counter()
            pack = server.context(args.repo, args.question, **call)
        if pack is not None:
            return render(args, pack, (time.perf_counter() - t0) * 1000)
    service = _query_service(args, settings)
    t0 = time.perf_counter()
    pack = service.context(args.repo, args.question, **call)
    return render(args, pack, (time.perf_counter() - t0) * 1000)


def search(args: argparse.Namespace, settings: Settings) -> int:
    """Ranked files and symbols for a question, over one index or several."""
    call: dict[str, Any] = {"limit": args.limit}
    if args.repos:
        call["repos"] = args.repos
    if args.branch is not None:
        call["branch"] = args.branch
    found = None
    server = None if args.no_vectors else remote.connect(settings, args.no_server)
    if server is not None:
        with server:
            found = server.search(args.repo, args.question, **call)
    if found is None:
        found = _query_service(args, settings).search(args.repo, args.question, **call)
    return print_search(found, args.json)


def _query_service(args: argparse.Namespace, settings: Settings) -> ContextService:
    """The service a query answers with here: no model with ``--no-vectors``, else the
    model of the first index's, loaded before the answer."""
    from ctxsvc.compose import build_service

    if args.no_vectors:
        return build_service(settings, vectors=False, embedder_error=NO_VECTORS)
    service = build_service(settings, for_repo=args.repo, preload=True)
    await_model(service, args.repo, settings)
    return service


def await_model(service: ContextService, repo: str, settings: Settings) -> None:
    """Load the index of ``repo`` while the model loads, then wait for the model.

    A server answers without vectors while its model loads; a one-shot command
    has nothing else to do, and its answer should have them. A model that
    fails to load is said in the answer's ``degraded``, as ever.
    """
    embedder = service.embedder
    wait = getattr(embedder, "wait", None)
    if embedder is None or getattr(embedder, "loaded", True) or not callable(wait):
        return
    service.view(service.resolve(repo))
    with contextlib.suppress(CtxError):
        wait(settings.embed_timeout or None)


def expand(args: argparse.Namespace, settings: Settings) -> int:
    start = end = None
    if args.lines:
        try:
            start, end = (int(x) for x in args.lines.split("-", 1))
        except ValueError:
            raise InvalidRequest(f"--lines {args.lines!r} is not START-END") from None
        if not 1 <= start <= end <= MAX_LINE:  # as HTTP bounds start_line and end_line
            raise InvalidRequest(f"--lines {args.lines!r}: lines are 1 to {MAX_LINE}, START <= END")
    call = {
        "symbol": args.symbol, "path": args.path, "start_line": start, "end_line": end,
        "budget_tokens": args.budget, "callers": args.callers, "callees": args.callees,
        "session_id": args.session, "branch": args.branch,
    }  # fmt: skip
    server = remote.connect(settings, args.no_server)
    if server is not None:
        with server:
            t0 = time.perf_counter()
            pack = server.expand(args.repo, **call)
        if pack is not None:
            return render(args, pack, (time.perf_counter() - t0) * 1000)
    from ctxsvc.compose import build_service

    service = build_service(settings, vectors=False)  # expanding embeds nothing
    t0 = time.perf_counter()
    pack = service.expand(args.repo, **call)
    return render(args, pack, (time.perf_counter() - t0) * 1000)


def impact(args: argparse.Namespace, settings: Settings) -> int:
    """Who depends on a symbol, by depth, each link marked resolved or a guess."""
    from rich.markup import escape

    from ctxsvc.compose import build_service

    found = _remote(
        settings, args, lambda s: s.impact(args.repo, args.symbol, args.depth, args.limit)
    )
    if found is None:
        found = build_service(settings, vectors=False).impact(
            args.repo, args.symbol, args.depth, args.limit
        )
    if args.json:
        out.print_json(json.dumps(asdict(found)))
        return 0
    at = f" at {found.commit[:12]}" if found.commit else ""
    out.print(f"[bold]{escape(found.symbol)}[/] in {escape(found.repo)}{at}: "
              f"{', '.join(escape(i) for i in found.ids)}")  # fmt: skip
    for depth, (level, total) in enumerate(zip(found.levels, found.totals, strict=True), 1):
        more = f" (first {len(level)})" if total > len(level) else ""
        out.print(f"[bold]depth {depth}[/]: {total} dependents{more}")
        for d in level:
            mark = "" if d.resolution == "resolved" else " [yellow](by name: a guess)[/]"
            test = " [dim]test[/]" if d.test else ""
            out.print(f"  {escape(d.id)}  {escape(d.path)}:{d.line} {d.kind}s "
                      f"{escape(d.via)}{mark}{test}")  # fmt: skip
    if not any(found.levels):
        out.print("nothing in the index uses it")
    return 0


def references(args: argparse.Namespace, settings: Settings) -> int:
    """The uses of a symbol, resolved ones first."""
    from ctxsvc.compose import build_service

    found = _remote(settings, args, lambda s: s.references(args.repo, args.symbol, args.limit))
    if found is None:
        found = build_service(settings, vectors=False).references(
            args.repo, args.symbol, args.limit
        )
    return _print_links(args, found, f"{found.total} uses")


def definition(args: argparse.Namespace, settings: Settings) -> int:
    """What a name means where it is used."""
    from ctxsvc.compose import build_service

    path, line = None, None
    if args.at:
        path, _, tail = args.at.rpartition(":")
        if not path or not tail.isdigit():
            path, line = args.at, None
        else:
            line = int(tail)
    found = _remote(settings, args, lambda s: s.definition(args.repo, args.name, path, line))
    if found is None:
        found = build_service(settings, vectors=False).definition(args.repo, args.name, path, line)
    return _print_links(args, found, f"{found.total} definitions")


def _remote(
    settings: Settings, args: argparse.Namespace, call: Callable[[remote.Remote], T | None]
) -> T | None:
    """``call`` on the running server of this data directory; None to answer here."""
    server = remote.connect(settings, args.no_server)
    if server is None:
        return None
    with server:
        return call(server)


def _print_links(args: argparse.Namespace, found: Links, what: str) -> int:
    from rich.markup import escape

    if args.json:
        out.print_json(json.dumps(asdict(found)))
        return 0
    at = f" at {escape(found.at)}" if found.at else ""
    out.print(f"[bold]{escape(found.name)}[/]{at} in {escape(found.repo)}: {what}")
    for x in found.links:
        mark = "" if x.resolution == "resolved" else " [yellow](by name: a guess)[/]"
        place = f"{x.path}:{x.line}" + (f"-{x.end_line}" if x.end_line else "")
        out.print(f"  {escape(x.id)}  {escape(place)} {x.kind}{mark}")
    return 0


def serve(args: argparse.Namespace, settings: Settings) -> int:
    """Run the HTTP API, with MCP at ``/mcp``.

    It listens before the model is loaded: the model loads in the background
    (``/readyz`` says ready once it has, or has failed). While it runs,
    ``<home>/server.json`` tells the CLI of this data directory where it is.
    With ``--watch`` it re-indexes the indexes watched as their files change
    (``ctxsvc.watch.Watching``). SIGTERM stops it gracefully, with exit code 0.
    """
    import ipaddress
    import signal

    import uvicorn

    from ctxsvc.http.observability import RequestContextFilter

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
    # A server logs JSON lines, each with the id of the request it belongs to.
    configure_logging(True)
    for handler in logging.getLogger().handlers:
        handler.addFilter(RequestContextFilter())
    hosts = list(settings.allowed_hosts)
    if not loopback and host not in ("0.0.0.0", "::"):
        hosts.append(host)  # the address bound is a name clients reach it by
    elif not loopback and not hosts:
        logging.getLogger("ctxsvc.api").warning(
            "serving on every address, but only loopback names are allowed in Host: "
            "set CTXSVC_ALLOWED_HOSTS to the names clients use",
            extra={"host": host},
        )
    if args.workers is not None:
        if not 1 <= args.workers <= 64:
            raise ConfigError(f"--workers must be 1 to 64, got {args.workers}")
        settings = settings.model_copy(update={"workers": args.workers})
    watch = None if args.watch is None else list(args.watch)
    plan = serving.plan_for(settings, hosts, watch)
    if settings.workers > 1:
        if watch:  # an unknown NAME fails here, before anything listens
            service = _build(settings, vectors=False)
            for name in watch:
                if name is not None:
                    service.resolve(name)
        return _serve_workers(settings, plan, host, port)
    app = serving.build_app(settings, plan)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        access_log=False,
        # Records propagate to configure_logging's handler, uncoloured (no color_message).
        log_config=None,
        use_colors=False,
        timeout_graceful_shutdown=settings.shutdown_timeout,
    )
    sock = config.bind_socket()  # bound here, so that server.json names the port (also for 0)
    bound = sock.getsockname()[1]
    logging.getLogger("ctxsvc.api").info(
        "serving",
        extra={
            "host": host,
            "port": bound,
            "auth": bool(settings.token),
            "home": str(settings.home),
        },
    )
    record = remote.publish(settings.home, remote.url_of(host, bound))

    class Server(uvicorn.Server):
        # uvicorn raises a caught SIGTERM again once it has stopped, which ends the
        # process before a `finally` of ours: so the file goes as the server stops.
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            with super().capture_signals():
                try:
                    yield
                finally:
                    remote.withdraw(settings.home, record)
                    # SIGTERM is how a service is asked to stop: once stopped, exit 0 rather
                    # than die of it again. (A Ctrl-C is raised again: exit code 130.)
                    captured = getattr(self, "_captured_signals", None)
                    if isinstance(captured, list):
                        captured[:] = [s for s in captured if s != signal.SIGTERM]

    server = Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        remote.withdraw(settings.home, record)
        sock.close()
    if not server.started:
        return STARTUP_FAILURE
    return 0


def _serve_workers(settings: Settings, plan: serving.Plan, host: str, port: int) -> int:
    """Supervise ``settings.workers`` server processes on one port (``ctxsvc.cli.serving``)."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    config = uvicorn.Config(
        "ctxsvc.cli.serving:worker_app", factory=True, host=host, port=port,
        workers=settings.workers, access_log=False, log_config=None, use_colors=False,
        timeout_graceful_shutdown=settings.shutdown_timeout,
        # A worker busy with requests and an index run answers the supervisor's ping late;
        # one that misses it is killed (and its job waits for the stale time): be patient.
        timeout_worker_healthcheck=60,
    )  # fmt: skip
    sock = config.bind_socket()
    bound = sock.getsockname()[1]
    logging.getLogger("ctxsvc.api").info(
        "serving", extra={"host": host, "port": bound, "workers": settings.workers,
                          "auth": bool(settings.token), "home": str(settings.home)},
    )  # fmt: skip
    record = remote.publish(settings.home, remote.url_of(host, bound))
    supervisor = Multiprocess(config, sockets=[sock])
    try:
        with serving.exported(plan, settings.home):
            # SIGTERM or Ctrl-C stops the workers (each drains its requests), then returns here.
            supervisor.run()
    finally:
        remote.withdraw(settings.home, record)
        sock.close()
    if any(p.exitcode == serving.STARTUP_FAILURE for p in supervisor.processes):
        return STARTUP_FAILURE  # a worker could not start (its log line says why)
    return 0


def mcp(args: argparse.Namespace, settings: Settings) -> int:
    """Serve MCP over stdio: stdout carries the protocol, logs and warnings go to stderr.

    The handshake is answered at once (from the record of an earlier start,
    ``ctxsvc.mcp.startup``); the service opens and the model loads in the
    background: a tool call waits for the service, a query for the model up to
    the query embedding timeout (then it is answered without vectors).
    """
    from ctxsvc.mcp.startup import HandshakeFront, PendingService, Record

    key = "" if args.repo is None else _repo_key(args.repo)
    record = Record.load(settings.home / "mcp", key)
    with redirect_stdout(sys.stderr), HandshakeFront(record) as front:
        default = None
        if args.repo:  # an unknown repository fails here, before the SDK's server starts
            default = _build(settings, vectors=False).resolve(args.repo).name
        # With a default repository, the model its index was built with; else the default model.
        service = PendingService(
            lambda: _build(settings, for_repo=default, preload=True, fill_behind=True)
        )
        if record.initialize:  # the handshake is answered: build it while the SDK loads
            service.start()

        from ctxsvc.mcp.server import serve_stdio

        serve_stdio(service, default, front=front)
    if not service.settle(SETTLE_SECONDS):
        logging.getLogger("ctxsvc.mcp").warning(
            "the service was still being built at exit (after %.0f s)", SETTLE_SECONDS
        )
    return 0


def _build(settings: Settings, **options: Any) -> ContextService:
    from ctxsvc.compose import build_service

    return build_service(settings, **options)


def _repo_key(repo: str) -> str:
    """``--repo`` as the handshake record's key: a name as it is, a path absolute."""
    return f"name:{repo}" if NAME.match(repo) else f"path:{Path(repo).expanduser().resolve()}"


def bench(args: argparse.Namespace, settings: Settings) -> int:
    from rich.console import Console

    from ctxsvc.bench.gitrepo import open_repo
    from ctxsvc.bench.report import require_plotting, write_report
    from ctxsvc.bench.repository import bench_name, bench_repository
    from ctxsvc.bench.terminal import RichProgress, tables
    from ctxsvc.compose import build_service

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
    service = build_service(settings, vectors=vectors)
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


def watch(args: argparse.Namespace, settings: Settings) -> int:
    """Re-index ``args.repo`` whenever its files change, until SIGINT or SIGTERM (exit 0).

    The first signal lets a run under way commit, then stops; a second one
    interrupts it (the last committed index stays intact).
    """
    import signal
    import threading
    from types import FrameType

    from ctxsvc.compose import build_service
    from ctxsvc.watch import Watcher

    if settings.read_only:
        raise ConfigError(
            "`ctxsvc watch` re-indexes, and this configuration is read-only (CTXSVC_READ_ONLY)",
            hint="watch on the indexer host, the one of the shared index that writes",
        )

    # One line per run even without --log-json; watchfiles' own chatter stays out.
    logging.getLogger("ctxsvc.watch").setLevel(logging.INFO)
    logging.getLogger("watchfiles").setLevel(logging.WARNING)
    service = build_service(settings, for_repo=args.repo, preload=True)
    watcher = Watcher(service, args.repo)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        watcher.run(stop)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 0
