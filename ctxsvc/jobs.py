"""Index jobs run in the background: this process's job threads over the durable queue.

A server (``ctxsvc serve``, any of its ``--workers``) puts index and refresh
jobs in the queue of the state database (``ctxsvc.stores.jobs``) and answers
at once; :class:`JobRunner` runs them. Its job threads claim queued jobs of
this data directory, from any process, and run each as an index run of the
catalog with a Reporter whose progress goes to the job's row with each
heartbeat, so a poll through any process sees it.

A run stops, at its next progress report, when its job is no longer this
process's to run (:class:`JobCancelled`): when a heartbeat is refused (this
process froze past the stale time and another worker claimed the job), and
when the server stops. An index run is crash-safe: stopped before its commit,
the index keeps its previous version. A run that finds the repository locked
by another run gives its job back to the queue, without counting an attempt.
A stopping server stops its runs, waits for them up to ``shutdown_timeout``,
and queues again at once the jobs it still holds; a starting one queues again
at once the jobs of dead processes of this machine. Every run is a thread that
is not a daemon (an exit never tears one down inside native code): the
process ends once its runs have stopped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Protocol

from ctxsvc.errors import CtxError, IndexBusy, Overloaded, StoreError
from ctxsvc.indexing import Reporter
from ctxsvc.models import IndexSummary
from ctxsvc.stores.jobs import MAX_EVENTS, JobQueue, JobRecord, event

log = logging.getLogger("ctxsvc.jobs")

THREADS = 2  # jobs run at once per process
POLL_S = 0.5  # how soon a job queued through another process starts here
MAX_BACKOFF_S = 30.0  # after repeated failures of a job thread's loop

OnDone = Callable[[JobRecord, float], None]
JobContext = Callable[[JobRecord], AbstractContextManager[object]]


class Indexes(Protocol):
    """What the runner needs of the catalog (``ctxsvc.catalog.Catalog``)."""

    def index(
        self,
        path: str | Path,
        name: str | None = None,
        *,
        vectors: bool = True,
        reporter: Reporter | None = None,
    ) -> IndexSummary: ...

    def drop(self, name_or_path: str) -> str: ...


class JobCancelled(Exception):
    """Raised inside an index run, at its next progress report, whose job this process no
    longer runs: ``lost`` (another worker claimed it) or the server stops. Not a
    ``CtxError``: nothing on the way up turns it into a warning or an answer."""

    def __init__(self, why: str, *, lost: bool) -> None:
        super().__init__(why)
        self.why = why
        self.lost = lost


class _Run:
    """One run of a job: the Reporter its index run gets (progress kept for the heartbeats),
    and the flag that stops it."""

    def __init__(self, job: JobRecord) -> None:
        self.job = job
        self.claim = job.claim or ""
        self.lock = threading.Lock()
        self.progress: dict[str, dict[str, int | None]] = dict(job.progress)
        self.events: list[dict[str, Any]] = list(job.events)
        self.cancelled: JobCancelled | None = None
        # Set when a stage starts (and when the run ends): the heartbeat publishes at once,
        # so a poll sees a stage begin without waiting for the next beat.
        self.wake = threading.Event()

    def cancel(self, why: str, *, lost: bool) -> None:
        with self.lock:
            if self.cancelled is None:
                self.cancelled = JobCancelled(why, lost=lost)

    def start(self, stage: str, total: int | None) -> None:
        with self.lock:
            self.check()
            self.progress[stage] = {"done": 0, "total": total}
            self._event(f"{stage} started", stage=stage, total=total)
        self.wake.set()

    def advance(self, stage: str, n: int = 1) -> None:
        with self.lock:
            self.check()
            p = self.progress.setdefault(stage, {"done": 0, "total": None})
            p["done"] = (p["done"] or 0) + n

    def finish(self, stage: str) -> None:
        with self.lock:
            self._event(f"{stage} finished", stage=stage)

    def snapshot(self) -> tuple[dict[str, dict[str, int | None]], list[dict[str, Any]]]:
        with self.lock:
            return {k: dict(v) for k, v in self.progress.items()}, list(self.events)

    def check(self) -> None:
        """Raise the cancellation, once the run is cancelled."""
        if self.cancelled is not None:
            raise self.cancelled

    def _event(self, message: str, **fields: Any) -> None:
        if len(self.events) < MAX_EVENTS:
            self.events.append(event(message, **fields))


class JobRunner:
    """Runs the jobs of ``queue`` as index runs of ``indexes``, ``threads`` at a time,
    once started (:meth:`start`, or the first :meth:`submit`). Thread-safe."""

    def __init__(
        self,
        queue: JobQueue,
        indexes: Indexes,
        *,
        threads: int = THREADS,
        shutdown_timeout: float = 10.0,
    ) -> None:
        self.queue = queue
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._indexes = indexes
        self._threads = threads
        self._shutdown_timeout = shutdown_timeout
        self._context: JobContext = lambda job: contextlib.nullcontext()
        self._on_done: OnDone | None = None
        self._lock = threading.Lock()
        self._serving: list[threading.Thread] = []
        self._stop = threading.Event()  # of the threads started last
        self._stopping = False
        self._wake = threading.Event()
        self._runs: dict[str, tuple[threading.Thread, _Run]] = {}

    def observe(self, *, context: JobContext | None = None, on_done: OnDone | None = None) -> None:
        """``context``: entered around each run (a server's log context); ``on_done``:
        called with each outcome recorded and its seconds (metrics)."""
        if context is not None:
            self._context = context
        self._on_done = on_done

    def start(self) -> None:
        """Start the job threads (once; again after :meth:`shutdown`): they take queued
        jobs, those queued before too, first queueing again those of dead processes of
        this machine."""
        with self._lock:
            if self._serving or self._stopping or not self._threads:
                return  # running, stopping, or one that runs no job (a read-only replica)
            self._stop = stop = threading.Event()
            # Daemons while they poll: each run is a thread of its own that is not.
            self._serving = [
                threading.Thread(target=self._serve, args=(stop,), name=f"ctxsvc-job-{i}",
                                 daemon=True)
                for i in range(self._threads)
            ]  # fmt: skip
            serving = list(self._serving)
        try:
            if ids := self.queue.requeue(self._gone, "its worker process is gone"):
                log.warning("jobs of dead workers queued again", extra={"jobs": ids})
        except CtxError as exc:  # they go stale and run again all the same
            log.warning("cannot requeue the jobs of dead workers", extra={"error": exc.message})
        for thread in serving:
            thread.start()

    def submit(
        self,
        kind: str,
        repo: str,
        root: str,
        args: dict[str, Any],
        request_id: str | None = None,
    ) -> tuple[JobRecord, bool]:
        """Queue a job for ``repo``; returns it and whether it is new (one queued or running
        for ``repo`` is returned instead of a second)."""
        if self._stopping:
            raise Overloaded("the server is stopping", hint="retry once it is back")
        job, new = self.queue.submit(kind, repo, root, args, request_id)
        if new:
            log.info("job queued", extra={"job_id": job.id, "kind": kind, "repo": repo})
        self.start()
        self._wake.set()
        return job, new

    def get(self, job_id: str) -> dict[str, Any] | None:
        """The job as the API shows it, or None."""
        job = self.queue.get(job_id)
        return None if job is None else job.public()

    def recent(self, limit: int = 50) -> list[dict[str, Any]]:
        """The jobs submitted last, newest first, as the API shows them."""
        return [job.public() for job in self.queue.recent(limit)]

    def drop(self, name_or_path: str) -> str:
        """Delete an index (``Catalog.drop``) and cancel its queued jobs, which would build
        it again; returns its name."""
        name = self._indexes.drop(name_or_path)
        if ids := self.queue.cancel(name, f"the index {name!r} was deleted"):
            log.info("queued jobs cancelled", extra={"repo": name, "jobs": ids})
        return name

    def shutdown(self, timeout: float | None = None) -> None:
        """Stop taking jobs, stop the runs under way and wait for them up to ``timeout``
        (default the settings' shutdown timeout), then queue again at once the jobs this
        process still holds. A run still going stops at its next progress report."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
            self._stop.set()
            serving, self._serving = self._serving, []
            runs = list(self._runs.values())
        self._wake.set()
        try:
            for _, run in runs:
                run.cancel("the server is stopping", lost=False)
            give_up = time.monotonic() + (self._shutdown_timeout if timeout is None else timeout)
            for thread in [t for t, _ in runs] + serving:
                thread.join(max(0.0, give_up - time.monotonic()))
            try:
                mine = self.owner
                ids = self.queue.requeue(lambda o: o == mine, "the server stopped", counted=False)
            except CtxError as exc:  # they go stale and run again all the same
                log.warning("cannot requeue this server's jobs", extra={"error": exc.message})
            else:
                if ids:
                    log.warning("runs not stopped in time; their jobs queued again",
                                extra={"jobs": ids})  # fmt: skip
        finally:
            with self._lock:
                self._stopping = False

    def _gone(self, owner: str) -> bool:
        """Whether ``owner`` is a process of this machine that no longer lives."""
        host, _, rest = owner.partition(":")
        pid_text, _, _ = rest.partition(":")
        if host != socket.gethostname() or not pid_text.isdigit():
            return False
        pid = int(pid_text)
        if pid == os.getpid():  # an earlier server of this pid (a container's restart)
            return owner != self.owner
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except OSError:  # alive, another user's
            return False
        return False

    def _serve(self, stop: threading.Event) -> None:
        failures = 0
        while not stop.is_set():
            # A job thread has no caller to raise to: whatever fails is logged, then
            # retried after a pause; the thread never dies of it.
            try:
                job = self.queue.claim(self.owner)
                if job is not None:
                    self._run(job)
                failures = 0
            except CtxError as exc:  # the state database is down, or a row is damaged
                failures += 1
                log.warning("cannot claim jobs", extra={"error": exc.message, "code": exc.code})
                stop.wait(min(MAX_BACKOFF_S, POLL_S * 2**failures))
                continue
            except Exception:
                failures += 1
                log.exception("the job thread failed; it goes on")
                stop.wait(min(MAX_BACKOFF_S, POLL_S * 2**failures))
                continue
            if job is None:
                self._wake.wait(POLL_S)
                self._wake.clear()

    def _run(self, job: JobRecord) -> None:
        """Run ``job`` in a thread of its own (not a daemon) and wait for it."""
        run = _Run(job)
        thread = threading.Thread(target=self._execute, args=(run,), name="ctxsvc-job-run")
        with self._lock:
            if self._stopping:
                run.cancel("the server is stopping", lost=False)
            self._runs[job.id] = (thread, run)
        try:
            thread.start()
            thread.join()
        finally:
            with self._lock:
                self._runs.pop(job.id, None)

    def _execute(self, run: _Run) -> None:
        job = run.job
        with self._context(job):
            stop = threading.Event()
            beat = threading.Thread(
                target=self._heartbeat, args=(run, stop), name="ctxsvc-job-beat"
            )
            beat.start()
            t0 = time.perf_counter()
            try:
                state, outcome = self._index(run)
            finally:
                stop.set()
                run.wake.set()
                beat.join()
            if state is None:
                return
            seconds = time.perf_counter() - t0
            if not self._finish(run, state, outcome):
                return
            log.info(
                "job finished",
                extra={"kind": job.kind, "repo": job.repo, "state": state, "seconds": seconds},
            )
            if self._on_done is not None:
                try:
                    self._on_done(replace(job, state=state, **outcome), seconds)
                except Exception:
                    log.exception("a job's observer failed", extra={"job_id": job.id})

    def _index(self, run: _Run) -> tuple[str | None, dict[str, Any]]:
        """The outcome of the run to record: (state, result or error); state None when
        there is none to record (the job went back to the queue, or to another worker)."""
        job = run.job
        log.info("job started", extra={"kind": job.kind, "repo": job.repo, "attempt": job.attempts})
        try:
            run.check()  # cancelled before it began (the server stops)
            vectors = bool(job.args.get("vectors", True))
            summary = self._indexes.index(job.root, job.repo, vectors=vectors, reporter=run)
        except JobCancelled as exc:
            if exc.lost:
                log.warning("job run stopped: another worker holds the job now; its outcome"
                            " here is not recorded", extra={"job_id": job.id})  # fmt: skip
            else:
                self._release(run, "the server stopped")
            return None, {}
        except IndexBusy as exc:  # another run holds the repository: not this job's failure
            log.info("job waits: the index is locked", extra={"job_id": job.id, "error": str(exc)})
            self._release(run, "another run holds the index's lock")
            return None, {}
        except CtxError as exc:
            return "failed", {"error": exc.to_dict()}
        except Exception:
            # Record the failure (without internals), keep the traceback in the log.
            log.exception("job failed", extra={"kind": job.kind, "repo": job.repo})
            error = CtxError("indexing failed with an internal error", hint="see the server log")
            return "failed", {"error": error.to_dict()}
        return "done", {"result": asdict(summary)}

    def _release(self, run: _Run, why: str) -> None:
        try:
            if self.queue.release(run.job.id, run.claim, why, run.snapshot()[1]):
                log.info(f"job queued again: {why}", extra={"job_id": run.job.id})
        except CtxError as exc:  # it goes stale and runs again all the same
            log.warning("cannot queue the job again", extra={"error": exc.message})

    def _heartbeat(self, run: _Run, stop: threading.Event) -> None:
        """Beat every ``heartbeat_seconds``, and at once when a stage starts."""
        while True:
            run.wake.wait(self.queue.heartbeat_seconds)
            if stop.is_set():
                return
            run.wake.clear()
            try:
                held = self.queue.heartbeat(run.job.id, run.claim, *run.snapshot())
            except CtxError as exc:  # the next beat may get through, before the job goes stale
                log.warning(
                    "job heartbeat failed", extra={"job_id": run.job.id, "error": exc.message}
                )
                continue
            except Exception:  # the same: the thread goes on
                log.exception("job heartbeat failed", extra={"job_id": run.job.id})
                continue
            if not held:
                log.warning(
                    "job taken from this worker after missed heartbeats: its run stops",
                    extra={"job_id": run.job.id},
                )
                run.cancel("another worker holds the job now", lost=True)
                return

    def _finish(self, run: _Run, state: str, outcome: dict[str, Any]) -> bool:
        """Record the outcome; whether it was. A state database that fails is tried a few
        times (the run is done: its outcome must not be lost to one failed write)."""
        current, events = run.snapshot()
        for attempt in range(5):
            try:
                if self.queue.finish(
                    run.job.id, run.claim, state, progress=current, events=events, **outcome
                ):
                    return True
                log.warning("job outcome not recorded: another worker holds it now",
                            extra={"job_id": run.job.id})  # fmt: skip
                return False
            except StoreError as exc:
                if not exc.retryable:
                    break
                log.warning("job outcome not recorded yet", extra={"error": exc.message})
                time.sleep(0.2 * 2**attempt)
            except CtxError:
                break
        log.error(
            "job outcome not recorded: the state database refused it; the job runs again once"
            " its heartbeats are missed",
            extra={"job_id": run.job.id},
        )
        return False
