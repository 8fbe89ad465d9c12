"""Background indexing jobs for the HTTP API.

A job runs :meth:`ContextService.index` in a worker thread and keeps a record
a client can poll: its state (``queued`` → ``running`` → ``done`` or
``failed``), progress per stage (from the indexing ``Reporter`` protocol), a
short list of events, then the run's summary or the error's ``to_dict()``.
Records are kept in memory (the last ``keep`` of them); the index itself is
durable, so a restarted server loses only the job history. The worker threads
are daemons: a stopping server does not wait for a long index run, which is
crash-safe and resumes where it stopped when run again.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from ctxsvc.errors import CtxError, Overloaded
from ctxsvc.http.observability import bind, context, unbind
from ctxsvc.indexing import Reporter
from ctxsvc.models import IndexSummary

log = logging.getLogger("ctxsvc.jobs")

MAX_EVENTS = 100
ACTIVE = ("queued", "running")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass
class Job:
    id: str
    kind: str  # "index" or "refresh"
    repo: str
    root: str
    state: str = "queued"
    created_at: str = field(default_factory=_now)
    started_at: str | None = None
    finished_at: str | None = None
    progress: dict[str, dict[str, int | None]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None

    def event(self, message: str, **fields: Any) -> None:
        if len(self.events) < MAX_EVENTS:
            self.events.append({"at": _now(), "message": message, **fields})


class _JobReporter:
    """The indexing Reporter protocol, recorded into a job under the registry's lock."""

    def __init__(self, job: Job, lock: threading.Lock) -> None:
        self._job = job
        self._lock = lock

    def start(self, stage: str, total: int | None) -> None:
        with self._lock:
            self._job.progress[stage] = {"done": 0, "total": total}
            self._job.event(f"{stage} started", stage=stage, total=total)

    def advance(self, stage: str, n: int = 1) -> None:
        with self._lock:
            p = self._job.progress.setdefault(stage, {"done": 0, "total": None})
            p["done"] = (p["done"] or 0) + n

    def finish(self, stage: str) -> None:
        with self._lock:
            self._job.event(f"{stage} finished", stage=stage)


Runner = Callable[[Reporter], IndexSummary]
OnDone = Callable[[Job, float], None]


class JobRegistry:
    """Runs indexing jobs in a small thread pool and remembers their outcome."""

    def __init__(self, *, workers: int = 2, keep: int = 500, on_done: OnDone | None = None) -> None:
        self._workers = workers
        self._threads: list[threading.Thread] = []  # started with the first job
        self._queue: queue.SimpleQueue[tuple[Job, Runner, str | None] | None] = queue.SimpleQueue()
        self._closed = False
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._keep = keep
        self._on_done = on_done

    def submit(self, kind: str, repo: str, root: str, run: Runner) -> tuple[Job, bool]:
        """Queue ``run`` for ``repo``; returns the job and whether it is new.

        While a job for ``repo`` is queued or running, that job is returned
        instead of starting a second one (which would only fail on the lock).
        """
        with self._lock:
            if self._closed:
                raise Overloaded("the server is stopping", hint="retry once it is back")
            for job in self._jobs.values():
                if job.repo == repo and job.state in ACTIVE:
                    return job, False
            job = Job(id=uuid.uuid4().hex, kind=kind, repo=repo, root=root)
            job.event("queued")
            self._jobs[job.id] = job
            while len(self._jobs) > self._keep:
                oldest = next(iter(self._jobs.values()))
                if oldest.state in ACTIVE:
                    break
                self._jobs.popitem(last=False)
            if not self._threads:
                self._threads = [
                    threading.Thread(target=self._serve, name=f"ctxsvc-job-{i}", daemon=True)
                    for i in range(self._workers)
                ]
                for thread in self._threads:
                    thread.start()
        self._queue.put((job, run, context().get("request_id")))
        return job, True

    def get(self, job_id: str) -> dict[str, Any] | None:
        """A snapshot of the job as plain data, or None."""
        with self._lock:
            job = self._jobs.get(job_id)
            return None if job is None else asdict(job)

    def shutdown(self) -> None:
        """Stop taking jobs and drop the queued ones; running ones go on while the process
        lives (an index run is crash-safe)."""
        with self._lock:
            self._closed = True
        for _ in self._threads:
            self._queue.put(None)

    def _serve(self) -> None:
        while (item := self._queue.get()) is not None:
            job, run, request_id = item
            if self._closed:  # queued before the shutdown: not started
                self._finish(job, "failed", error=Overloaded("the server stopped").to_dict())
                continue
            self._run(job, run, request_id)

    def _run(self, job: Job, run: Runner, request_id: str | None) -> None:
        token = bind(request_id=request_id or job.id, job_id=job.id)
        t0 = time.perf_counter()
        try:
            with self._lock:
                job.state, job.started_at = "running", _now()
                job.event("running")
            log.info("job started", extra={"kind": job.kind, "repo": job.repo})
            try:
                summary = run(_JobReporter(job, self._lock))
            except CtxError as exc:
                self._finish(job, "failed", error=exc.to_dict())
            except Exception:
                # A job thread has no caller to raise to: record the failure (without
                # internals), keep the traceback in the log, and leave the worker alive.
                log.exception("job failed", extra={"kind": job.kind, "repo": job.repo})
                error = CtxError(
                    "indexing failed with an internal error", hint="see the server log"
                )
                self._finish(job, "failed", error=error.to_dict())
            else:
                self._finish(job, "done", result=asdict(summary))
            seconds = time.perf_counter() - t0
            log.info(
                "job finished",
                extra={"kind": job.kind, "repo": job.repo, "state": job.state, "seconds": seconds},
            )
            if self._on_done is not None:
                self._on_done(job, seconds)
        finally:
            unbind(token)

    def _finish(self, job: Job, state: str, **outcome: dict[str, Any]) -> None:
        with self._lock:
            job.state, job.finished_at = state, _now()
            job.result = outcome.get("result")
            job.error = outcome.get("error")
            job.event(state)
