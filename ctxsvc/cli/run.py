"""The commands of indexes and servers: index, status, query, expand, serve, mcp, bench."""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

from rich.console import Console

from ctxsvc.bench.gitrepo import open_repo
from ctxsvc.bench.report import require_plotting, write_report
from ctxsvc.bench.repository import bench_name, bench_repository
from ctxsvc.bench.terminal import RichProgress, tables
from ctxsvc.cli.render import configure_logging, err, out, print_status, print_summary, render
from ctxsvc.compose import build_service
from ctxsvc.errors import ConfigError, InvalidPath, InvalidRequest
from ctxsvc.limits import MAX_LINE
from ctxsvc.progress import RichReporter
from ctxsvc.service import ContextService
from ctxsvc.settings import Settings


def index(args: argparse.Namespace, settings: Settings) -> int:
    service = build_service(settings, model=args.model, vectors=not args.no_vectors)
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
        print_summary(summary)
    return 0


def status(args: argparse.Namespace, settings: Settings) -> int:
    service = build_service(settings, vectors=False)
    names = [args.name] if args.name else service.names()
    statuses = [service.status(n) for n in names]
    if args.json:
        out.print_json(json.dumps([asdict(s) for s in statuses]))
        return 0
    if not statuses:
        out.print("nothing is indexed yet: run `ctxsvc index PATH`")
    for s in statuses:
        print_status(s)
    return 0


def query(args: argparse.Namespace, settings: Settings) -> int:
    service = build_service(settings, for_repo=args.repo)
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
    return render(args, pack, (time.perf_counter() - t0) * 1000)


def expand(args: argparse.Namespace, settings: Settings) -> int:
    start = end = None
    if args.lines:
        try:
            start, end = (int(x) for x in args.lines.split("-", 1))
        except ValueError:
            raise InvalidRequest(f"--lines {args.lines!r} is not START-END") from None
        if not 1 <= start <= end <= MAX_LINE:  # as HTTP bounds start_line and end_line
            raise InvalidRequest(f"--lines {args.lines!r}: lines are 1 to {MAX_LINE}, START <= END")
    service = build_service(settings, for_repo=args.repo)
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
    return render(args, pack, (time.perf_counter() - t0) * 1000)


def serve(args: argparse.Namespace, settings: Settings) -> int:
    """Run the HTTP API, with MCP at ``/mcp``: the model loads before the server listens."""
    import ipaddress

    import uvicorn

    from ctxsvc.http import create_app
    from ctxsvc.http.observability import RequestContextFilter
    from ctxsvc.mcp.server import McpHttp

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
    service = build_service(settings)
    app = create_app(
        service,
        token=settings.token or None,
        allowed_roots=settings.allowed_roots or [Path.home()],
        cors_origins=settings.cors_origins,
        allowed_hosts=hosts,
        request_timeout=settings.request_timeout,
        body_timeout=settings.body_timeout,
        mounts=[McpHttp(service, allowed_origins=settings.cors_origins, allowed_hosts=hosts)],
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
    uvicorn.run(
        app,
        host=host,
        port=port,
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=settings.shutdown_timeout,
    )
    return 0


def mcp(args: argparse.Namespace, settings: Settings) -> int:
    """Serve MCP over stdio: stdout carries the protocol, logs and warnings go to stderr."""
    from ctxsvc.mcp.server import serve_stdio

    default = None
    if args.repo:  # an unknown repository fails here, before the server starts
        default = build_service(settings, vectors=False).resolve(args.repo).name

    def service() -> ContextService:
        # With a default repository, the model its index was built with; else the default model.
        return build_service(settings, for_repo=default)

    serve_stdio(service, default)
    return 0


def bench(args: argparse.Namespace, settings: Settings) -> int:
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
