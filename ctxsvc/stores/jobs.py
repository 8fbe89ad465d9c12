"""The durable queue of index jobs, in the state database (``ctxsvc.stores.state``).

Every server process of one data directory (``ctxsvc serve --workers N``)
shares this queue: a job submitted through one is claimed and run by whichever
has a free job thread, and read, with its progress, through any. A job belongs
to the data directory it was submitted for, its ``scope`` (the machine's name
and the resolved ctxsvc home, :func:`local_scope`): processes of other data
directories sharing one PostgreSQL state database read it but never claim it,
as their indexes are other files. The rules, each kept by doing it inside one
write transaction (which holds the database's one write lock,
``ctxsvc.stores.database``):

* one active job per repository of a scope: a submit while one is queued or
  running returns that one;
* one writer per repository index: a job is claimed only while no other job
  of its repository and scope runs;
* a job is never lost: its row is committed before the submit answers, and a
  running job whose worker stopped sending heartbeats for ``stale_seconds`` (the
  process died, or froze) is queued again, up to ``MAX_ATTEMPTS`` runs, then
  failed with the reason;
* never doubled: each claim gets its own token (``JobRecord.claim``), and a
  job's heartbeats and outcome are written only with the token of its current
  claim; a run that lost its job (it froze past ``stale_seconds``, or another
  thread of the same process re-claimed it) finds its writes refused.

Heartbeats carry the progress, so a poll through another process sees it
within ``heartbeat_seconds``. Times are wall clocks. A local index's jobs are
claimed only on the machine of their scope, so a heartbeat's age is measured
on the clock that wrote it. A shared index's (on object storage,
:func:`index_scope`) are claimed by any host that runs jobs for it: their
clocks must agree to well within ``stale_seconds`` (NTP does).
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctxsvc.errors import InvalidRequest, StoreCorrupt
from ctxsvc.stores.database import Connection, Database
from ctxsvc.stores.schema import StateTable
from ctxsvc.stores.sqlite import now

HEARTBEAT_S = 1.0  # at most; a tenth of the stale time below 10 s (tests)
STALE_S = 20.0
MAX_ATTEMPTS = 3
KEEP = 1000  # finished jobs kept; older ones are pruned
MAX_EVENTS = 100
ACTIVE = ("queued", "running")
OUTCOMES = ("done", "failed")
_COLUMNS = (
    "id, kind, repo, root, args_json, state, attempts, owner, heartbeat_at, created_at,"
    " started_at, finished_at, progress_json, events_json, result_json, error_json, request_id,"
    " scope, claim"
)

Progress = dict[str, dict[str, int | None]]


def local_scope(home: Path) -> str:
    """The scope of the jobs of the data directory ``home`` on this machine."""
    return f"{socket.gethostname()}:{home.expanduser().resolve()}"


def index_scope(uri: str) -> str:
    """The scope of the jobs of a shared index (``CTXSVC_INDEX_URI``), on any host."""
    return f"index:{uri.rstrip('/')}"


@dataclass(frozen=True)
class JobRecord:
    """One index job as stored: ``queued`` → ``running`` → ``done`` or ``failed``."""

    id: str
    kind: str  # "index" or "refresh"
    repo: str
    root: str
    args: dict[str, Any]
    state: str
    attempts: int  # runs started (a run whose worker died is retried)
    owner: str | None  # the worker process running it
    heartbeat_at: float | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    progress: Progress = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    request_id: str | None = None
    scope: str = ""  # the data directory it indexes (local_scope)
    claim: str | None = None  # the token of its current claim, while running

    def public(self) -> dict[str, Any]:
        """The job as the API shows it."""
        return {
            "id": self.id, "kind": self.kind, "repo": self.repo, "root": self.root,
            "state": self.state, "created_at": self.created_at, "started_at": self.started_at,
            "finished_at": self.finished_at, "progress": self.progress, "events": self.events,
            "result": self.result, "error": self.error, "attempts": self.attempts,
            "worker": self.owner,
        }  # fmt: skip


def event(message: str, **fields: Any) -> dict[str, Any]:
    return {"at": now(), "message": message, **fields}


class JobQueue(StateTable):
    """Submit, claim, heartbeat and finish the index jobs of ``scope``. Thread- and
    process-safe."""

    label = "the job queue"

    def __init__(
        self,
        db: Database | Path,
        *,
        clock: Callable[[], float] = time.time,
        stale_seconds: float = STALE_S,
        scope: str | None = None,
    ) -> None:
        super().__init__(db)
        self._clock = clock
        self.stale_seconds = stale_seconds
        # Several beats per stale time: one lost to a busy database (SQLite waits 10 s) is not
        # yet silence.
        self.heartbeat_seconds = min(HEARTBEAT_S, stale_seconds / 10)
        self.scope = scope if scope is not None else f"{socket.gethostname()}:{self.db.path}"

    def submit(
        self, kind: str, repo: str, root: str, args: dict[str, Any], request_id: str | None = None
    ) -> tuple[JobRecord, bool]:
        """Queue a job for ``repo``; returns it and whether it is new (while one is queued or
        running, that one is returned instead)."""
        with self.db.write(self.label, f"queue a job for {repo}") as con:
            row = con.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE scope = ? AND repo = ?"
                " AND state IN ('queued', 'running') ORDER BY created_at LIMIT 1",
                (self.scope, repo),
            ).fetchone()
            if row is not None:
                return _record(row), False
            job_id = uuid.uuid4().hex
            con.execute(
                f"INSERT INTO jobs ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, 'queued', 0, NULL, NULL, ?,"
                " NULL, NULL, '{}', ?, NULL, NULL, ?, ?, NULL)",
                (
                    job_id, kind, repo, root, json.dumps(args), now(),
                    json.dumps([event("queued")]), request_id, self.scope,
                ),
            )  # fmt: skip
            return _get(con, job_id), True

    def get(self, job_id: str) -> JobRecord | None:
        """The job ``job_id``, of any scope; None when there is none."""
        with self.db.read(self.label, f"read job {job_id}") as con:
            row = con.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else _record(row)

    def recent(self, limit: int = 50) -> list[JobRecord]:
        """The ``limit`` jobs submitted last, of any scope, newest first."""
        with self.db.read(self.label, "list the jobs") as con:
            rows = con.execute(
                f"SELECT {_COLUMNS} FROM jobs ORDER BY created_at DESC, id LIMIT ?", (limit,)
            ).fetchall()
        return [_record(tuple(r)) for r in rows]

    def claim(self, owner: str) -> JobRecord | None:
        """The oldest queued job of this scope whose repository no running job holds, now
        ``owner``'s under a new claim token; None when there is none. Jobs of workers gone
        silent are queued again first."""
        at = self._clock()
        with self.db.read(self.label, "look for queued jobs") as con:
            # Most polls find nothing: a read first, and the write lock only when there is work.
            pending = con.execute(
                "SELECT 1 FROM jobs WHERE scope = ? AND (state = 'queued'"
                " OR (state = 'running' AND heartbeat_at < ?)) LIMIT 1",
                (self.scope, at - self.stale_seconds),
            ).fetchone()
        if pending is None:
            return None
        with self.db.write(self.label, "claim a job") as con:
            stale = con.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE scope = ? AND state = 'running'"
                " AND heartbeat_at < ?",
                (self.scope, at - self.stale_seconds),
            ).fetchall()
            for job in _readable(con, stale):
                silent = f"worker {job.owner} sent no heartbeat for {self.stale_seconds:.0f}s"
                _requeue(con, job, silent)
            while True:
                row = con.execute(
                    f"SELECT {_COLUMNS} FROM jobs WHERE scope = ? AND state = 'queued'"
                    " AND repo NOT IN (SELECT repo FROM jobs WHERE scope = ? AND state = 'running')"
                    " ORDER BY created_at, id LIMIT 1",
                    (self.scope, self.scope),
                ).fetchone()
                if row is None:
                    return None
                if found := _readable(con, [row]):  # a damaged one is failed: the next
                    job = found[0]
                    break
            events = [*job.events, event("running", worker=owner, attempt=job.attempts + 1)]
            con.execute(
                "UPDATE jobs SET state = 'running', owner = ?, claim = ?, heartbeat_at = ?,"
                " attempts = attempts + 1, started_at = ?, events_json = ? WHERE id = ?",
                (owner, uuid.uuid4().hex, at, now(), _events(events), job.id),
            )
            return _get(con, job.id)

    def heartbeat(self, job_id: str, claim: str, progress: Progress, events: list[Any]) -> bool:
        """Say the run of claim ``claim`` goes on, with its progress and events so far; False
        when that claim no longer holds the job (it was silent too long and the job was
        queued again, or claimed since)."""
        with self.db.write(self.label, f"record the progress of job {job_id}") as con:
            cur = con.execute(
                "UPDATE jobs SET heartbeat_at = ?, progress_json = ?, events_json = ?"
                " WHERE id = ? AND claim = ? AND state = 'running'",
                (self._clock(), json.dumps(progress), _events(events), job_id, claim),
            )
            return cur.rowcount == 1

    def finish(
        self,
        job_id: str,
        claim: str,
        state: str,
        *,
        progress: Progress,
        events: list[dict[str, Any]],
        result: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
    ) -> bool:
        """Write the outcome (``state`` "done" or "failed") of the run of claim ``claim``;
        False (nothing written) when that claim no longer holds the job."""
        if state not in OUTCOMES:
            raise InvalidRequest(f"a job finishes done or failed, not {state!r}")
        with self.db.write(self.label, f"record the outcome of job {job_id}") as con:
            cur = con.execute(
                "UPDATE jobs SET state = ?, finished_at = ?, progress_json = ?, events_json = ?,"
                " result_json = ?, error_json = ?, claim = NULL"
                " WHERE id = ? AND claim = ? AND state = 'running'",
                (
                    state, now(), json.dumps(progress), _events([*events, event(state)]),
                    None if result is None else json.dumps(result),
                    None if error is None else json.dumps(error), job_id, claim,
                ),
            )  # fmt: skip
            done = cur.rowcount == 1
            if done:
                _prune(con)
            return done

    def release(self, job_id: str, claim: str, why: str, events: list[dict[str, Any]]) -> bool:
        """Queue again, without counting its attempt, the job the run of claim ``claim``
        gives back (it could not start, or its server stops); False when that claim no
        longer holds it."""
        with self.db.write(self.label, f"queue job {job_id} again") as con:
            cur = con.execute(
                "UPDATE jobs SET state = 'queued', owner = NULL, claim = NULL, heartbeat_at = NULL,"
                " attempts = attempts - 1, events_json = ?"
                " WHERE id = ? AND claim = ? AND state = 'running'",
                (_events([*events, event(f"{why}: queued again")]), job_id, claim),
            )
            return cur.rowcount == 1

    def requeue(self, gone: Callable[[str], bool], why: str, *, counted: bool = True) -> list[str]:
        """Queue again at once the running jobs of this scope whose owner ``gone`` says
        runs them no more (a process that died, this one as it stops), without waiting for
        their heartbeats to go stale; the ids. ``counted``: their attempt counts (a run that
        died: ``MAX_ATTEMPTS`` holds), else it is given back (one stopped on purpose)."""
        with self.db.write(self.label, "queue again the jobs of stopped workers") as con:
            rows = con.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE scope = ? AND state = 'running'",
                (self.scope,),
            ).fetchall()
            jobs = [job for job in _readable(con, rows) if job.owner and gone(job.owner)]
            for job in jobs:
                _requeue(con, job, f"worker {job.owner}: {why}", counted=counted)
            return [job.id for job in jobs]

    def cancel(self, repo: str, why: str) -> list[str]:
        """Fail the queued jobs of ``repo`` in this scope (its index was deleted: they would
        build it again); the ids."""
        error = {
            "code": "job_cancelled", "retryable": False, "message": why,
            "hint": "register the repository again to index it",
        }  # fmt: skip
        with self.db.write(self.label, f"cancel the queued jobs of {repo}") as con:
            rows = con.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE scope = ? AND repo = ? AND state = 'queued'",
                (self.scope, repo),
            ).fetchall()
            jobs = _readable(con, rows)
            for job in jobs:
                con.execute(
                    "UPDATE jobs SET state = 'failed', finished_at = ?, error_json = ?,"
                    " events_json = ? WHERE id = ? AND state = 'queued'",
                    (now(), json.dumps(error), _events([*job.events, event(f"cancelled: {why}")]),
                     job.id),
                )  # fmt: skip
            return [job.id for job in jobs]


def _requeue(con: Connection, job: JobRecord, why: str, *, counted: bool = True) -> None:
    """Queue a running job again, or fail it when it has run ``MAX_ATTEMPTS`` times."""
    if counted and job.attempts >= MAX_ATTEMPTS:
        error = {
            "code": "job_lost", "retryable": True, "hint": "submit the job again",
            "message": f"{why}, on each of {job.attempts} attempts: the job failed",
        }  # fmt: skip
        con.execute(
            "UPDATE jobs SET state = 'failed', finished_at = ?, error_json = ?, claim = NULL,"
            " events_json = ? WHERE id = ?",
            (now(), json.dumps(error), _events([*job.events, event("failed")]), job.id),
        )
        return
    con.execute(
        "UPDATE jobs SET state = 'queued', owner = NULL, claim = NULL, heartbeat_at = NULL,"
        " attempts = ?, events_json = ? WHERE id = ?",
        (
            job.attempts if counted else job.attempts - 1,
            _events([*job.events, event(f"{why}: queued again")]), job.id,
        ),
    )  # fmt: skip


def _readable(con: Connection, rows: list[Any]) -> list[JobRecord]:
    """The records of ``rows``; a row that cannot be read is failed in place (it would
    stop the queue at every claim), saying so."""
    found = []
    for row in rows:
        try:
            found.append(_record(tuple(row)))
        except StoreCorrupt as exc:
            con.execute(
                "UPDATE jobs SET state = 'failed', finished_at = ?, error_json = ?, claim = NULL"
                " WHERE id = ?",
                (now(), json.dumps(exc.to_dict()), row[0]),
            )
    return found


def _events(events: list[dict[str, Any]]) -> str:
    return json.dumps(events[-MAX_EVENTS:])


def _get(con: Connection, job_id: str) -> JobRecord:
    row = con.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None:  # read inside the transaction that wrote it
        raise StoreCorrupt(f"job {job_id} vanished from the job queue inside a transaction")
    return _record(tuple(row))


def _prune(con: Connection) -> None:
    """Keep the newest ``KEEP`` finished jobs."""
    con.execute(
        "DELETE FROM jobs WHERE state IN ('done', 'failed') AND id NOT IN"
        " (SELECT id FROM jobs WHERE state IN ('done', 'failed')"
        " ORDER BY created_at DESC LIMIT ?)",
        (KEEP,),
    )


def _record(row: tuple[Any, ...]) -> JobRecord:
    """The record of a row; ``StoreCorrupt`` naming the job when the row cannot be read."""
    try:
        (
            job_id, kind, repo, root, args, state, attempts, owner, heartbeat, created, started,
            finished, progress, events, result, error, request_id, scope, claim,
        ) = row  # fmt: skip
    except (TypeError, ValueError) as exc:
        raise StoreCorrupt(f"a row of the job queue cannot be read: {exc}") from exc
    try:
        return JobRecord(
            id=job_id, kind=kind, repo=repo, root=root, args=json.loads(args), state=state,
            attempts=int(attempts), owner=owner,
            heartbeat_at=None if heartbeat is None else float(heartbeat), created_at=created,
            started_at=started, finished_at=finished, progress=json.loads(progress),
            events=json.loads(events), result=None if result is None else json.loads(result),
            error=None if error is None else json.loads(error), request_id=request_id,
            scope=scope, claim=claim,
        )  # fmt: skip
    except (TypeError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
        raise StoreCorrupt(
            f"job {job_id} in the job queue cannot be read: {exc}",
            hint="the job is lost: submit it again",
        ) from exc
