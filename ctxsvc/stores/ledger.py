"""The session ledger: which spans of which files each agent session received.

One SQLite file (stdlib ``sqlite3``) holds it, in WAL mode with
``synchronous=FULL``: a ``record`` that returned is on disk and survives a
crash or a power loss, readers never block the writer, and several service
processes can share the file (writers queue on ``busy_timeout`` instead of
failing). The schema is versioned in a ``meta`` table and grows by appending
to ``MIGRATIONS``, so other stores (checkpoints) can add their tables to the
same file.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from ctxsvc.errors import InvalidRequest
from ctxsvc.models import DeliveredSpan, SessionSummary
from ctxsvc.stores.sqlite import BUSY_TIMEOUT_MS, SqliteFile

__all__ = ["BUSY_TIMEOUT_MS", "MIGRATIONS", "SCHEMA_VERSION", "SessionLedger"]
_SESSION_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

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


def validate_session_id(session_id: str) -> str:
    """``session_id`` if valid, else ``InvalidRequest``."""
    if not isinstance(session_id, str) or not _SESSION_ID.match(session_id):
        raise InvalidRequest(
            f"invalid session id {session_id!r}",
            hint="use 1 to 128 letters, digits, '.', '_', ':' or '-'",
        )
    return session_id


class SessionLedger(SqliteFile):
    """Durable record of the spans delivered to each (session, repository).

    Safe to share between threads (each thread gets its own connection) and
    between processes (SQLite file locks). Every method raises ``StoreError``
    (retryable) when the file is locked for too long or I/O fails, and
    ``StoreCorrupt`` when the file is damaged or written by a newer ctxsvc.
    """

    def __init__(self, path: Path) -> None:
        super().__init__(path, MIGRATIONS, "the session ledger")

    # -- public API ---------------------------------------------------------

    def record(self, session_id: str, repo: str, spans: Sequence[DeliveredSpan]) -> None:
        """Add ``spans`` to what ``session_id`` received from ``repo``, in one transaction.

        Idempotent: recording the same span (same lines and content) again
        only refreshes its time, so a retried call never double counts.
        """
        validate_session_id(session_id)
        _check_repo(repo)
        for span in spans:
            _check_span(span)
        now = datetime.now(UTC).isoformat(timespec="microseconds")
        rows = [
            (session_id, repo, s.path, s.start_line, s.end_line, s.content_hash, s.tokens, now)
            for s in spans
        ]
        with self._write() as con:
            con.executemany(
                "INSERT INTO deliveries VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (session_id, repo, path, start_line, end_line, content_hash)"
                " DO UPDATE SET tokens = excluded.tokens,"
                " delivered_at = excluded.delivered_at",
                rows,
            )

    def delivered(self, session_id: str, repo: str) -> list[DeliveredSpan]:
        """Every span ``session_id`` received from ``repo``, by path and line."""
        validate_session_id(session_id)
        with self._errors():
            rows = self._connection().execute(
                "SELECT path, start_line, end_line, content_hash, tokens FROM deliveries"
                " WHERE session_id = ? AND repo = ?"
                " ORDER BY path, start_line, end_line, delivered_at",
                (session_id, repo),
            )
            return [DeliveredSpan(*row) for row in rows]

    def last_received(self, session_id: str, repo: str) -> dict[str, str]:
        """Each path ``session_id`` received from ``repo``, and when it last did."""
        validate_session_id(session_id)
        with self._errors():
            rows = self._connection().execute(
                "SELECT path, MAX(delivered_at) FROM deliveries"
                " WHERE session_id = ? AND repo = ? GROUP BY path",
                (session_id, repo),
            )
            return dict(rows.fetchall())

    def forget(self, session_id: str, repo: str | None = None) -> int:
        """Drop what ``session_id`` received (from ``repo`` only, if given); rows removed."""
        validate_session_id(session_id)
        with self._write() as con:
            if repo is None:
                cur = con.execute("DELETE FROM deliveries WHERE session_id = ?", (session_id,))
            else:
                cur = con.execute(
                    "DELETE FROM deliveries WHERE session_id = ? AND repo = ?",
                    (session_id, repo),
                )
            return cur.rowcount

    def sessions(self, repo: str | None = None) -> list[SessionSummary]:
        """One summary per (session, repository), most recently active first."""
        where, args = ("WHERE repo = ?", (repo,)) if repo is not None else ("", ())
        with self._errors():
            rows = self._connection().execute(
                "SELECT session_id, repo, COUNT(*), SUM(tokens),"
                " MIN(delivered_at), MAX(delivered_at)"
                f" FROM deliveries {where} GROUP BY session_id, repo"
                " ORDER BY MAX(delivered_at) DESC, session_id, repo",
                args,
            )
            return [SessionSummary(*row) for row in rows]


def _check_repo(repo: str) -> None:
    if not isinstance(repo, str) or not repo:
        raise InvalidRequest(f"invalid repository name {repo!r}")


def _check_span(span: DeliveredSpan) -> None:
    if not span.path or not 1 <= span.start_line <= span.end_line:
        raise InvalidRequest(
            f"invalid span {span.path!r}:{span.start_line}-{span.end_line}",
            hint="lines are 1-based and inclusive, start <= end",
        )
    if not _SHA256.match(span.content_hash) or span.tokens < 0:
        raise InvalidRequest(
            f"invalid span {span.path}:{span.start_line}-{span.end_line}:"
            " content_hash must be a sha256 hex digest and tokens >= 0"
        )
