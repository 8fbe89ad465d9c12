"""What the HTTP app adds to the index jobs the service runs (``ctxsvc.jobs``): each
run's log context (the request that queued it) and its metrics.

``POST /v1/repos`` and ``/v1/repos/{name}/refresh`` queue a job and answer 202
once its row is committed; the job threads of every server process of the data
directory run it, and ``GET /v1/jobs/{id}`` through any shows it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ctxsvc.http.observability import Metrics, bind, unbind
from ctxsvc.jobs import OnDone
from ctxsvc.stores.jobs import JobRecord


@contextmanager
def job_context(job: JobRecord) -> Iterator[None]:
    """The log context of a run: the id of the request that queued it, and the job's."""
    token = bind(request_id=job.request_id or job.id, job_id=job.id)
    try:
        yield
    finally:
        unbind(token)


def job_metrics(metrics: Metrics) -> OnDone:
    """What counts each recorded outcome in ``metrics``."""

    def done(job: JobRecord, seconds: float) -> None:
        metrics.jobs.labels(job.kind, job.state).observe(seconds)
        if job.result:
            metrics.embedded.inc(job.result.get("chunks_embedded", 0))
            for t in job.result.get("timings", ()):
                if t.get("stage") == "embed":
                    metrics.embed_seconds.inc(t.get("seconds", 0.0))

    return done
