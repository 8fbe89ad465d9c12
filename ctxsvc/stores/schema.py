"""The schema of the state database, shared by the session ledger, the
checkpoint store and the workspace log (``ctxsvc.stores.state``).

The file's ``meta`` table holds its schema version; opening the file applies
the migrations it lacks (``ctxsvc.stores.sqlite.SqliteFile``).
"""

from __future__ import annotations

from pathlib import Path

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
)
SCHEMA_VERSION = len(MIGRATIONS)


def open_state(db: SqliteFile | Path, label: str) -> tuple[SqliteFile, bool]:
    """The state database a store works on, and whether the store owns it.

    ``db`` itself when it is one (a ``StateStore`` shares one among its
    stores); else a new one opened on the path, naming itself ``label``.
    """
    if isinstance(db, SqliteFile):
        return db, False
    return SqliteFile(db, MIGRATIONS, label), True


class StateTable:
    """Base of the stores of the state database (ledger, checkpoints, workspace log).

    A store works on ``db``, the database a ``StateStore`` shares among its
    stores, or opens its own on a path (tests and tools that need one store).
    """

    label = STATE_LABEL  # names the store in error messages

    def __init__(self, db: SqliteFile | Path) -> None:
        self.db, self._owns_db = open_state(db, self.label)
        self.path = self.db.path

    def close(self) -> None:
        """Close the database if this store opened it (a ``StateStore`` closes its own)."""
        if self._owns_db:
            self.db.close()
