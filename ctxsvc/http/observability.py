"""Request context for logs, and the Prometheus metrics of the HTTP API.

Every log line written while a request (or a job it started) is handled
carries its ``request_id``: the id lives in a context variable, which the
threadpool and the job threads copy, and :class:`RequestContextFilter` puts
it on each record. Metrics live in one ``CollectorRegistry`` per app, so two
apps in one process (tests) never share counters.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Iterator
from contextvars import ContextVar, Token
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from ctxsvc.errors import CtxError
from ctxsvc.stores.lance import IndexMeta

log = logging.getLogger("ctxsvc.api")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_CONTEXT: ContextVar[dict[str, Any] | None] = ContextVar("ctxsvc_request", default=None)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
JOB_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


def request_id_from(header: str | None) -> str:
    """The client's ``X-Request-ID`` when it is safe to log and echo, else a new one."""
    if header and _REQUEST_ID.match(header):
        return header
    return uuid.uuid4().hex


def bind(**fields: Any) -> Token[dict[str, Any] | None]:
    """Start a log context (a request, a job); reset it with :func:`unbind`."""
    return _CONTEXT.set(dict(fields))


def unbind(token: Token[dict[str, Any] | None]) -> None:
    _CONTEXT.reset(token)


def annotate(**fields: Any) -> None:
    """Add fields (repo, tokens_used) to the current request's log line.

    The context holds a mutable dict, so fields set in a threadpool thread
    (which runs in a copy of the context) reach the request's middleware.
    """
    ctx = _CONTEXT.get()
    if ctx is not None:
        ctx.update(fields)


def context() -> dict[str, Any]:
    """The fields of the current log context (empty outside a request or job)."""
    return dict(_CONTEXT.get() or {})


class RequestContextFilter(logging.Filter):
    """Puts ``request_id`` (and ``job_id`` in a job) on every record; install on handlers."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = _CONTEXT.get()
        if ctx:
            for key in ("request_id", "job_id"):
                if key in ctx and not hasattr(record, key):
                    setattr(record, key, ctx[key])
        return True


class _IndexSizes(Collector):
    """Index sizes, read from the ``repos`` table at each scrape."""

    def __init__(self, metas: Callable[[], list[IndexMeta]]) -> None:
        self._metas = metas

    def collect(self) -> Iterator[Metric]:
        sizes = GaugeMetricFamily(
            "ctxsvc_index_size", "Rows of each committed index, by kind", labels=["repo", "kind"]
        )
        generation = GaugeMetricFamily(
            "ctxsvc_index_generation", "Committed runs of each index", labels=["repo"]
        )
        try:
            metas = self._metas()
        except CtxError as exc:  # a scrape must not fail because the store does
            log.warning("index sizes unavailable: %s", exc)
            metas = []
        for m in metas:
            for kind in ("files", "chunks", "symbols", "refs", "tokens"):
                value = m.stats.get(kind)
                if isinstance(value, int | float):
                    sizes.add_metric([m.name, kind], float(value))
            generation.add_metric([m.name], float(m.generation))
        yield sizes
        yield generation

    def describe(self) -> Iterator[Metric]:
        return iter(())


class Metrics:
    """The app's Prometheus metrics, in a registry of its own."""

    def __init__(self, metas: Callable[[], list[IndexMeta]]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.latency = Histogram(
            "ctxsvc_http_request_duration_seconds",
            "Request latency by route template",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "ctxsvc_http_requests_in_flight", "Requests being handled", registry=r
        )
        self.errors = Counter(
            "ctxsvc_http_errors", "Error responses by problem code", ["code"], registry=r
        )
        self.jobs = Histogram(
            "ctxsvc_job_duration_seconds",
            "Indexing job durations by kind and final state",
            ["kind", "state"],
            buckets=JOB_BUCKETS,
            registry=r,
        )
        self.embedded = Counter(
            "ctxsvc_embedded_chunks", "Chunks embedded by indexing jobs", registry=r
        )
        self.embed_seconds = Counter(
            "ctxsvc_embed_seconds", "Seconds indexing jobs spent embedding", registry=r
        )
        r.register(_IndexSizes(metas))

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
