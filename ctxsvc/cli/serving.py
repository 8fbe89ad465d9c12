"""``ctxsvc serve``: the HTTP app one server process runs, and several of them.

With ``--workers N`` (``CTXSVC_WORKERS``) the command binds the port and
supervises N worker processes (uvicorn's supervisor: a worker that dies is
started again) that accept on it. They share the data directory: the indexes
(each committed version visible to all), the state database and the durable
job queue in it (``ctxsvc.stores.jobs``, run by ``ctxsvc.jobs``), so any
worker answers any request. Each builds the service and the app the same way
from one plan (:class:`Plan`: the settings as resolved, secrets and all, in a
file of mode 0600 in the data directory that the environment names, removed
when the command ends; never the secrets themselves in an environment, which
``/proc`` shows). A worker that cannot build its app exits with uvicorn's
start-up failure code, which stops the supervisor (no restart loop), and the
command then exits with it. One of them, the one holding
``<home>/locks/serve-watch.lock``, runs the watches of ``--watch``; if it
dies, its replacement takes the lock over.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ctxsvc.cli.render import configure_logging
from ctxsvc.errors import ConfigError, CtxError, IndexBusy
from ctxsvc.settings import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI

PLAN_ENV = "CTXSVC_SERVE_PLAN"  # the plan file's path, for the worker processes
STARTUP_FAILURE = 3  # uvicorn's: the supervisor stops rather than start the worker again
_held: list[object] = []  # the watch lock of this process, held for its life


@dataclass(frozen=True)
class Plan:
    """What every server process builds its app from."""

    settings: dict[str, Any]  # Settings, as JSON
    hosts: list[str]  # names besides loopback ones that requests may carry in Host
    watch: list[str | None] | None  # --watch: None in the list for every index
    workers: int = 1


def build_app(settings: Settings, plan: Plan, *, watch_here: bool = True) -> FastAPI:
    """The service and the HTTP app (with MCP at ``/mcp``) of one server process."""
    from ctxsvc.compose import build_service
    from ctxsvc.http import create_app
    from ctxsvc.mcp.server import McpHttp

    # The model starts loading in the app's lifespan, once everything the server needs
    # to listen is imported: loading it sooner would only slow those imports down.
    service = build_service(settings, fill_behind=True)  # vectors fill in behind runs
    watching = None
    if plan.watch is not None and watch_here:
        from ctxsvc.watch import Watching

        logging.getLogger("watchfiles").setLevel(logging.WARNING)  # a line per batch otherwise
        # An unknown NAME fails here, before anything listens; None in the list: every index.
        names = None if None in plan.watch else [n for n in plan.watch if n is not None]
        watching = Watching(service, names, stop_timeout=settings.shutdown_timeout)
    return create_app(
        service,
        token=settings.token or None,
        allowed_roots=settings.allowed_roots or [Path.home()],
        cors_origins=settings.cors_origins,
        allowed_hosts=plan.hosts,
        request_timeout=settings.request_timeout,
        body_timeout=settings.body_timeout,
        mounts=[McpHttp(service, allowed_origins=settings.cors_origins, allowed_hosts=plan.hosts)],
        watching=watching,
    )


def plan_for(settings: Settings, hosts: list[str], watch: list[str | None] | None) -> Plan:
    """The plan of this server. With several workers and no thread count set, each
    worker's model gets its share of the cores: N workers of torch's default (a thread per
    core each) would contend for the same cores on every query."""
    if watch is not None and settings.read_only:
        raise ConfigError(
            "--watch re-indexes, and this server is read-only (CTXSVC_READ_ONLY)",
            hint="watch on the indexer host, the one server of the shared index that writes",
        )
    values = settings.model_dump(mode="json")
    if settings.workers > 1 and settings.embed_threads == 0:
        values["embed_threads"] = max(1, (os.cpu_count() or 1) // settings.workers)
    return Plan(values, hosts, watch, settings.workers)


@contextlib.contextmanager
def exported(plan: Plan, home: Path) -> Iterator[Path]:
    """``plan`` in a private file that the worker processes spawned meanwhile find (through
    ``PLAN_ENV``); removed at the end."""
    home.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=".serve-plan-", suffix=".json", dir=home)  # mode 0600
    path = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(asdict(plan), f)
        os.environ[PLAN_ENV] = str(path)
        yield path
    finally:
        os.environ.pop(PLAN_ENV, None)
        path.unlink(missing_ok=True)


def worker_app() -> FastAPI:
    """The app of one worker process of ``serve --workers N`` (uvicorn's factory)."""
    from ctxsvc.http.observability import RequestContextFilter

    configure_logging(True)
    for handler in logging.getLogger().handlers:
        handler.addFilter(RequestContextFilter())
    log = logging.getLogger("ctxsvc.api")
    try:
        path = os.environ.get(PLAN_ENV)
        if path is None:
            raise ConfigError(f"{PLAN_ENV} is not set: this factory is for `ctxsvc serve` only")
        plan = Plan(**json.loads(Path(path).read_text(encoding="utf-8")))
        settings = Settings(**plan.settings)
        watch_here = plan.watch is not None and _take_watch(settings)
        return build_app(settings, plan, watch_here=watch_here)
    except CtxError as exc:
        log.error(exc.message, extra={"code": exc.code, "hint": exc.hint})
    except Exception:  # the same failure at every start: no restart loop
        log.exception("the worker could not build its app")
    sys.exit(STARTUP_FAILURE)


def _take_watch(settings: Settings) -> bool:
    """Whether this worker runs the watches: the one that holds the watch lock does."""
    from ctxsvc.stores.locks import FileLock

    lock = FileLock(settings.locks_path / "serve-watch.lock", "the watches of this server")
    try:
        lock.__enter__()  # held until the process ends (the kernel drops it then)
    except IndexBusy:
        return False
    _held.append(lock)
    logging.getLogger("ctxsvc.api").info("this worker runs the watches")
    return True
