"""The session ledger: which spans of which files each agent session received.

Its table lives in the state database (``ctxsvc.stores.state``), one SQLite
file in WAL mode with ``synchronous=FULL``: a ``record`` that returned is on
disk and survives a crash or a power loss, readers never block the writer,
and several service processes can share the file (writers queue on
``busy_timeout`` instead of failing). The schema is in
``ctxsvc.stores.schema``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ctxsvc.errors import InvalidRequest
from ctxsvc.limits import validate_session_id
from ctxsvc.models import DeliveredSpan
from ctxsvc.records import Delivery, SessionSummary
from ctxsvc.stores.schema import SCHEMA_VERSION, StateTable
from ctxsvc.stores.sqlite import BUSY_TIMEOUT_MS, now

__all__ = ["BUSY_TIMEOUT_MS", "SCHEMA_VERSION", "SessionLedger"]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
DELIVERIES_SHOWN = 5000  # the spans of a session listed at most (the newest)


class SessionLedger(StateTable):
    """Durable record of the spans delivered to each (session, repository).

    Works on ``db``, the state database a ``StateStore`` shares, or opens its
    own on a path. Safe to share between threads (each thread gets its own
    connection) and between processes (SQLite file locks). Every method raises
    ``StoreError`` (retryable) when the file is locked for too long or I/O
    fails, and ``StoreCorrupt`` when the file is damaged or written by a newer
    ctxsvc.
    """

    label = "the session ledger"

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
        at = now()
        rows = [
            (session_id, repo, s.path, s.start_line, s.end_line, s.content_hash, s.tokens, at)
            for s in spans
        ]
        with self.db.write(self.label, f"record what session {session_id} received") as con:
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
        with self.db.read(self.label, f"read what session {session_id} received") as con:
            rows = con.execute(
                "SELECT path, start_line, end_line, content_hash, tokens FROM deliveries"
                " WHERE session_id = ? AND repo = ?"
                " ORDER BY path, start_line, end_line, delivered_at",
                (session_id, repo),
            )
            return [DeliveredSpan(*row) for row in rows]

    def deliveries(self, session_id: str, limit: int = DELIVERIES_SHOWN) -> list[Delivery]:
        """What ``session_id`` received from every repository, oldest first: at most the
        ``limit`` most recent spans."""
        validate_session_id(session_id)
        with self.db.read(self.label, f"read what session {session_id} received") as con:
            rows = con.execute(
                "SELECT repo, path, start_line, end_line, tokens, delivered_at FROM deliveries"
                " WHERE session_id = ?"
                " ORDER BY delivered_at DESC, repo DESC, path DESC, start_line DESC"
                " LIMIT ?",
                (session_id, limit),
            ).fetchall()
        return [Delivery(*row) for row in reversed(rows)]

    def last_received(self, session_id: str, repo: str) -> dict[str, str]:
        """Each path ``session_id`` received from ``repo``, and when it last did."""
        validate_session_id(session_id)
        with self.db.read(self.label, f"read what session {session_id} received") as con:
            rows = con.execute(
                "SELECT path, MAX(delivered_at) FROM deliveries"
                " WHERE session_id = ? AND repo = ? GROUP BY path",
                (session_id, repo),
            )
            return dict(rows.fetchall())

    def forget(self, session_id: str, repo: str | None = None) -> int:
        """Drop what ``session_id`` received (from ``repo`` only, if given); rows removed."""
        validate_session_id(session_id)
        with self.db.write(self.label, f"forget what session {session_id} received") as con:
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
        with self.db.read(self.label, "list the sessions") as con:
            rows = con.execute(
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
