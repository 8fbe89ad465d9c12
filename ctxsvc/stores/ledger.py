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
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from ctxsvc.errors import InvalidRequest, StoreCorrupt, StoreError
from ctxsvc.models import DeliveredSpan, SessionSummary

BUSY_TIMEOUT_MS = 10_000
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


class SessionLedger:
    """Durable record of the spans delivered to each (session, repository).

    Safe to share between threads (each thread gets its own connection) and
    between processes (SQLite file locks). Every method raises ``StoreError``
    (retryable) when the file is locked for too long or I/O fails, and
    ``StoreCorrupt`` when the file is damaged or written by a newer ctxsvc.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the directory of {path}: {exc}") from exc
        self._migrate()

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

    def close(self) -> None:
        """Close every thread's connection; the ledger must not be used after."""
        with self._lock:
            for con in self._connections:
                con.close()
            self._connections.clear()
        self._local = threading.local()

    # -- connection and transactions -----------------------------------------

    def _connection(self) -> sqlite3.Connection:
        con: sqlite3.Connection | None = getattr(self._local, "con", None)
        if con is not None:
            return con
        with self._errors():
            # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE below).
            # check_same_thread is off only so that close() may run anywhere.
            con = sqlite3.connect(
                self.path,
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
            try:
                con.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                mode = con.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise StoreError(
                        f"cannot use WAL journaling on {self.path} (got {mode!r})",
                        hint="keep the ctxsvc home on a local filesystem",
                    )
                # FULL syncs the WAL on every commit: NORMAL could lose the
                # last acknowledged transactions on power loss.
                con.execute("PRAGMA synchronous = FULL")
            except BaseException:
                con.close()
                raise
        self._local.con = con
        with self._lock:
            self._connections.append(con)
        return con

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction, committed when the block ends without error."""
        con = self._connection()
        with self._errors():
            # IMMEDIATE takes the write lock up front, where busy_timeout applies;
            # upgrading a read transaction later can fail at once with SQLITE_BUSY.
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
                con.execute("COMMIT")
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise

    def _migrate(self) -> None:
        with self._write() as con:
            con.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            try:
                version = int(row[0]) if row else 0
            except ValueError:
                raise StoreCorrupt(
                    f"{self.path} has an unreadable schema version {row[0]!r}",
                    hint=f"move {self.path} aside; ctxsvc will start a new ledger",
                ) from None
            if version > SCHEMA_VERSION:
                raise StoreCorrupt(
                    f"{self.path} has schema version {version}, newer than this"
                    f" ctxsvc understands ({SCHEMA_VERSION})",
                    hint="upgrade ctxsvc, or move the file aside to start a new ledger",
                )
            for script in MIGRATIONS[version:]:
                # Statement by statement: executescript() would COMMIT early.
                for statement in script.split(";"):
                    if statement.strip():
                        con.execute(statement)
            con.execute(
                "INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Translate sqlite3 failures into the ctxsvc hierarchy."""
        try:
            yield
        except sqlite3.Error as exc:
            raise _translate(exc, self.path) from exc


def _translate(exc: sqlite3.Error, path: Path) -> StoreError:
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc)
    if (
        name in ("SQLITE_CORRUPT", "SQLITE_NOTADB")
        or "malformed" in text
        or "not a database" in text
    ):
        return StoreCorrupt(
            f"the session ledger {path} is damaged: {text}",
            hint=f"move {path} aside; ctxsvc will start a new, empty ledger",
        )
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in text:
        return StoreError(
            f"the session ledger {path} stayed locked by another process for"
            f" {BUSY_TIMEOUT_MS // 1000}s: nothing was written",
            hint="retry; if it persists, look for a stuck ctxsvc process",
        )
    if name.startswith(("SQLITE_IOERR", "SQLITE_FULL", "SQLITE_CANTOPEN", "SQLITE_READONLY")):
        return StoreError(
            f"cannot read or write the session ledger {path}: {text}",
            hint="check free disk space and permissions, then retry",
        )
    return StoreError(f"session ledger {path}: {text}", hint="retry")


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
