"""The state database: one database holding every store of session state.

``StateStore`` opens the database once (connections, migrations), at its first
use, and hands its stores that one database: the session ledger (what each
session received), the checkpoint store (sessions and their checkpoints), the
workspace log (events shared by the sessions of a workspace) and the queue of
index jobs. The database is an SQLite file in the ctxsvc home by default, or a
PostgreSQL server when ``CTXSVC_STATE_URL`` names one
(:func:`open_state_store`): the same schema, the same SQL and the same
guarantees. Each store can also open an SQLite file alone, on a path, for a
test or a tool that needs only it.
"""

from __future__ import annotations

from pathlib import Path

from ctxsvc.stores.checkpoints import CheckpointStore
from ctxsvc.stores.database import Database
from ctxsvc.stores.events import EventLog
from ctxsvc.stores.jobs import STALE_S, JobQueue
from ctxsvc.stores.ledger import SessionLedger
from ctxsvc.stores.postgres import PostgresDatabase
from ctxsvc.stores.schema import MIGRATIONS, PG_MIGRATIONS, STATE_LABEL
from ctxsvc.stores.sqlite import SqliteFile

__all__ = ["StateStore", "open_state_store"]


class StateStore:
    """The state database ``db`` (an SQLite file's path, or a database) and the stores
    that share it.

    Thread- and process-safe like its stores. Nothing is opened here: the
    database is, at the first call of one of its stores, so that what needs no
    session state (a query without a session) never fails on a damaged
    file or a server that is down. That call raises ``StoreError``
    (retryable) or ``StoreCorrupt`` (damaged, or written by a newer ctxsvc).
    """

    def __init__(
        self,
        db: Path | Database,
        *,
        job_stale_seconds: float = STALE_S,
        job_scope: str | None = None,
    ) -> None:
        self.db: Database = (
            SqliteFile(db, MIGRATIONS, STATE_LABEL, lazy=True) if isinstance(db, Path) else db
        )
        self.path = self.db.path
        self.ledger = SessionLedger(self.db)
        self.checkpoints = CheckpointStore(self.db)
        self.events = EventLog(self.db)
        self.jobs = JobQueue(self.db, stale_seconds=job_stale_seconds, scope=job_scope)

    def close(self) -> None:
        """Close the database's connections; neither this nor its stores may be used after."""
        self.db.close()


def open_state_store(
    path: Path,
    url: str | None = None,
    *,
    pool_size: int = 8,
    job_stale_seconds: float = STALE_S,
    job_scope: str | None = None,
) -> StateStore:
    """The state database at ``url`` (``postgresql://…``) when given, else the SQLite
    file at ``path``; ``job_scope``: the data directory whose jobs its queue claims
    (``ctxsvc.stores.jobs.local_scope``)."""
    db: Path | Database = path
    if url:
        db = PostgresDatabase(url, PG_MIGRATIONS, STATE_LABEL, pool_size=pool_size)
    return StateStore(db, job_stale_seconds=job_stale_seconds, job_scope=job_scope)
