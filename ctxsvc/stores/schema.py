"""The schema of the state database, shared by the session ledger, the
checkpoint store and the workspace log (``ctxsvc.stores.state``).

The database's ``meta`` table holds its schema version; opening it applies
the migrations it lacks (``ctxsvc.stores.sqlite.SqliteFile``,
``ctxsvc.stores.postgres.PostgresDatabase``). Each backend has its own tuple
of migrations, step for step the same tables, columns, keys and triggers in
its own DDL (a test holds them to that).
"""

from __future__ import annotations

from pathlib import Path

from ctxsvc.stores.database import Database
from ctxsvc.stores.sqlite import SqliteFile

STATE_LABEL = "the state database"

# MIGRATIONS[i] takes the file from schema version i to i + 1. Append only:
# a released step is never edited, so every older file upgrades the same way.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE deliveries (
        session_id   TEXT    NOT NULL,
        repo         TEXT    NOT NULL,
        path         TEXT    NOT NULL,
        start_line   INTEGER NOT NULL,
        end_line     INTEGER NOT NULL,
        content_hash TEXT    NOT NULL,
        tokens       INTEGER NOT NULL,
        delivered_at TEXT    NOT NULL,
        PRIMARY KEY (session_id, repo, path, start_line, end_line, content_hash)
    );
    CREATE INDEX deliveries_repo ON deliveries (repo, session_id);
    """,
    # Sessions and their checkpoints (ctxsvc.stores.checkpoints). A checkpoint
    # is never updated: (session_id, number) is written once.
    """
    CREATE TABLE sessions (
        id          TEXT PRIMARY KEY,
        repo        TEXT NOT NULL,
        task        TEXT NOT NULL,
        agent       TEXT,
        workspace   TEXT,
        created_at  TEXT NOT NULL
    );
    CREATE INDEX sessions_workspace ON sessions (workspace);
    CREATE TABLE checkpoints (
        session_id      TEXT    NOT NULL REFERENCES sessions (id),
        number          INTEGER NOT NULL,
        created_at      TEXT    NOT NULL,
        summary_json    TEXT    NOT NULL,
        transcript_json TEXT    NOT NULL,
        idempotency_key TEXT,
        request_sha256  TEXT    NOT NULL,
        tokens          INTEGER NOT NULL,
        PRIMARY KEY (session_id, number),
        UNIQUE (session_id, idempotency_key)
    );
    CREATE TRIGGER checkpoints_immutable BEFORE UPDATE ON checkpoints
    BEGIN SELECT RAISE(ABORT, 'checkpoints are immutable'); END
    """,
    # The shared log of workspaces (ctxsvc.stores.events), append only, and
    # which events each session was already warned about.
    """
    CREATE TABLE workspace_events (
        seq             INTEGER PRIMARY KEY AUTOINCREMENT,
        workspace       TEXT,
        repo            TEXT,
        session_id      TEXT,
        agent           TEXT,
        source          TEXT NOT NULL,
        kind            TEXT NOT NULL,
        text            TEXT NOT NULL,
        created_at      TEXT NOT NULL,
        paths_json      TEXT NOT NULL,
        symbols_json    TEXT NOT NULL,
        new_path        TEXT,
        new_symbol      TEXT,
        idempotency_key TEXT,
        request_sha256  TEXT,
        UNIQUE (workspace, idempotency_key)
    );
    CREATE INDEX workspace_events_ws ON workspace_events (workspace, seq);
    CREATE INDEX workspace_events_repo ON workspace_events (repo, seq);
    CREATE TRIGGER workspace_events_immutable BEFORE UPDATE ON workspace_events
    BEGIN SELECT RAISE(ABORT, 'workspace events are immutable'); END;
    CREATE TABLE drift_warned (
        session_id TEXT    NOT NULL,
        seq        INTEGER NOT NULL,
        PRIMARY KEY (session_id, seq)
    )
    """,
    # The durable queue of index jobs (ctxsvc.stores.jobs), shared by every server process;
    # a job's scope is the data directory it indexes, its claim the token of the run holding it.
    """
    CREATE TABLE jobs (
        id            TEXT    PRIMARY KEY,
        kind          TEXT    NOT NULL,
        repo          TEXT    NOT NULL,
        root          TEXT    NOT NULL,
        args_json     TEXT    NOT NULL,
        state         TEXT    NOT NULL,
        attempts      INTEGER NOT NULL,
        owner         TEXT,
        heartbeat_at  REAL,
        created_at    TEXT    NOT NULL,
        started_at    TEXT,
        finished_at   TEXT,
        progress_json TEXT    NOT NULL,
        events_json   TEXT    NOT NULL,
        result_json   TEXT,
        error_json    TEXT,
        request_id    TEXT,
        scope         TEXT    NOT NULL,
        claim         TEXT
    );
    CREATE INDEX jobs_state ON jobs (scope, state, created_at);
    CREATE INDEX jobs_repo ON jobs (scope, repo, state)
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)

# The same steps for PostgreSQL: identity columns for AUTOINCREMENT, BIGINT
# where SQLite's INTEGER holds 64 bits, and a trigger function that refuses updates.
PG_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE deliveries (
        session_id   TEXT    NOT NULL,
        repo         TEXT    NOT NULL,
        path         TEXT    NOT NULL,
        start_line   BIGINT  NOT NULL,
        end_line     BIGINT  NOT NULL,
        content_hash TEXT    NOT NULL,
        tokens       BIGINT  NOT NULL,
        delivered_at TEXT    NOT NULL,
        PRIMARY KEY (session_id, repo, path, start_line, end_line, content_hash)
    );
    CREATE INDEX deliveries_repo ON deliveries (repo, session_id);
    """,
    """
    CREATE TABLE sessions (
        id          TEXT PRIMARY KEY,
        repo        TEXT NOT NULL,
        task        TEXT NOT NULL,
        agent       TEXT,
        workspace   TEXT,
        created_at  TEXT NOT NULL
    );
    CREATE INDEX sessions_workspace ON sessions (workspace);
    CREATE TABLE checkpoints (
        session_id      TEXT    NOT NULL REFERENCES sessions (id),
        number          BIGINT  NOT NULL,
        created_at      TEXT    NOT NULL,
        summary_json    TEXT    NOT NULL,
        transcript_json TEXT    NOT NULL,
        idempotency_key TEXT,
        request_sha256  TEXT    NOT NULL,
        tokens          BIGINT  NOT NULL,
        PRIMARY KEY (session_id, number),
        UNIQUE (session_id, idempotency_key)
    );
    CREATE FUNCTION ctxsvc_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN RAISE EXCEPTION '% are immutable', TG_TABLE_NAME; END $$;
    CREATE TRIGGER checkpoints_immutable BEFORE UPDATE ON checkpoints
    FOR EACH ROW EXECUTE FUNCTION ctxsvc_immutable();
    """,
    """
    CREATE TABLE workspace_events (
        seq             BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        workspace       TEXT,
        repo            TEXT,
        session_id      TEXT,
        agent           TEXT,
        source          TEXT NOT NULL,
        kind            TEXT NOT NULL,
        text            TEXT NOT NULL,
        created_at      TEXT NOT NULL,
        paths_json      TEXT NOT NULL,
        symbols_json    TEXT NOT NULL,
        new_path        TEXT,
        new_symbol      TEXT,
        idempotency_key TEXT,
        request_sha256  TEXT,
        UNIQUE (workspace, idempotency_key)
    );
    CREATE INDEX workspace_events_ws ON workspace_events (workspace, seq);
    CREATE INDEX workspace_events_repo ON workspace_events (repo, seq);
    CREATE TRIGGER workspace_events_immutable BEFORE UPDATE ON workspace_events
    FOR EACH ROW EXECUTE FUNCTION ctxsvc_immutable();
    CREATE TABLE drift_warned (
        session_id TEXT   NOT NULL,
        seq        BIGINT NOT NULL,
        PRIMARY KEY (session_id, seq)
    )
    """,
    """
    CREATE TABLE jobs (
        id            TEXT    PRIMARY KEY,
        kind          TEXT    NOT NULL,
        repo          TEXT    NOT NULL,
        root          TEXT    NOT NULL,
        args_json     TEXT    NOT NULL,
        state         TEXT    NOT NULL,
        attempts      BIGINT NOT NULL,
        owner         TEXT,
        heartbeat_at  DOUBLE PRECISION,
        created_at    TEXT    NOT NULL,
        started_at    TEXT,
        finished_at   TEXT,
        progress_json TEXT    NOT NULL,
        events_json   TEXT    NOT NULL,
        result_json   TEXT,
        error_json    TEXT,
        request_id    TEXT,
        scope         TEXT    NOT NULL,
        claim         TEXT
    );
    CREATE INDEX jobs_state ON jobs (scope, state, created_at);
    CREATE INDEX jobs_repo ON jobs (scope, repo, state)
    """,
)


def open_state(db: Database | Path, label: str) -> tuple[Database, bool]:
    """The state database a store works on, and whether the store owns it.

    ``db`` itself when it is one (a ``StateStore`` shares one among its
    stores); else a new one opened on the path, naming itself ``label``.
    """
    if isinstance(db, Path):
        return SqliteFile(db, MIGRATIONS, label), True
    return db, False


class StateTable:
    """Base of the stores of the state database (ledger, checkpoints, workspace log).

    A store works on ``db``, the database a ``StateStore`` shares among its
    stores, or opens its own on a path (tests and tools that need one store).
    """

    label = STATE_LABEL  # names the store in error messages

    def __init__(self, db: Database | Path) -> None:
        self.db, self._owns_db = open_state(db, self.label)
        self.path = self.db.path

    def close(self) -> None:
        """Close the database if this store opened it (a ``StateStore`` closes its own)."""
        if self._owns_db:
            self.db.close()
