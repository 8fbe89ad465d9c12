"""One SQLite file shared by the stores of session state (ledger, checkpoints, events).

WAL mode with ``synchronous=FULL``: a transaction that committed is on disk
and survives a crash or a power loss, readers never block the writer, and
several service processes can share the file (writers queue on
``busy_timeout`` instead of failing). SQLite rather than a server or a log of
JSON files: it is in the standard library, transactional, and one file in
``CTXSVC_HOME``. The schema is versioned in a ``meta`` table and grows by
appending to one tuple of migrations (``ctxsvc.stores.schema``), so every
store opening the file upgrades it the same way.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ctxsvc.errors import InvalidRequest, StoreCorrupt, StoreError

BUSY_TIMEOUT_MS = 10_000
IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")  # printable ASCII, as HTTP headers carry


def check_idempotency_key(key: str | None) -> None:
    """Refuse a key HTTP could not carry."""
    if key is not None and not IDEMPOTENCY_KEY.match(key):
        raise InvalidRequest(
            "invalid Idempotency-Key", hint="use 1 to 255 printable ASCII characters"
        )


def request_sha256(text: str) -> str:
    """The hash an idempotent write stores of its request, to tell a retry from a reuse."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class Replay:
    """How a store finds the record an idempotency key stored.

    ``query`` selects the record's columns then its request hash, by a scope
    (the session, the workspace) and the key. ``kind`` and ``describe(row)``
    name the record when a key is reused for another request.
    """

    query: str
    kind: str
    describe: Callable[[tuple[Any, ...]], str]

    def find(
        self, con: sqlite3.Connection, scope: object, key: str | None, request: str
    ) -> tuple[Any, ...] | None:
        """The record ``key`` stored in ``scope`` (its request hash cut off).

        None without a key or when the key is new. The same key with another
        request (another hash) is refused.
        """
        if key is None:
            return None
        row = con.execute(self.query, (scope, key)).fetchone()
        if row is None:
            return None
        if row[-1] != request:
            raise InvalidRequest(
                f"Idempotency-Key {key!r} was used for another {self.kind} {self.describe(row)}",
                hint=f"send a new key for a new {self.kind}",
            )
        return tuple(row[:-1])


def now() -> str:
    """The time now, as the stores write it: ISO-8601 UTC with microseconds (sortable)."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


class SqliteFile:
    """Per-thread connections to one SQLite file, explicit transactions, migrations.

    ``migrations[i]`` takes the file from schema version i to i + 1; opening
    applies the missing ones. ``label`` names the file in error messages ("the
    state database"); the stores sharing it pass their own ("the session
    ledger") to :meth:`connection`, :meth:`write` and :meth:`errors`. Every
    failure is raised as ``StoreError`` (retryable) or ``StoreCorrupt``.
    """

    def __init__(self, path: Path, migrations: Sequence[str], label: str) -> None:
        self.path = path
        self.label = label
        self._migrations = tuple(migrations)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the directory of {path}: {exc}") from exc
        self._migrate()

    def close(self) -> None:
        """Close every thread's connection; the file must not be used after."""
        with self._lock:
            for con in self._connections:
                con.close()
            self._connections.clear()
        self._local = threading.local()

    def connection(self, label: str | None = None) -> sqlite3.Connection:
        """This thread's connection (in autocommit mode: transactions are explicit)."""
        con: sqlite3.Connection | None = getattr(self._local, "con", None)
        if con is not None:
            return con
        with self.errors(label):
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
    def write(self, label: str | None = None) -> Iterator[sqlite3.Connection]:
        """A write transaction, committed when the block ends without error.

        sqlite3 failures in the block are translated like :meth:`errors`.
        """
        con = self.connection(label)
        with self.errors(label):
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

    @contextmanager
    def errors(self, label: str | None = None) -> Iterator[None]:
        """Translate sqlite3 failures into the ctxsvc hierarchy, naming ``label``
        (by default this file's own label)."""
        try:
            yield
        except sqlite3.Error as exc:
            raise translate(exc, self.path, label or self.label) from exc

    def _migrate(self) -> None:
        latest = len(self._migrations)
        with self.write() as con:
            con.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            try:
                version = int(row[0]) if row else 0
            except ValueError:
                raise StoreCorrupt(
                    f"{self.path} has an unreadable schema version {row[0]!r}",
                    hint=f"move {self.path} aside; ctxsvc will start a new one",
                ) from None
            if version > latest:
                raise StoreCorrupt(
                    f"{self.path} has schema version {version}, newer than this"
                    f" ctxsvc understands ({latest})",
                    hint="upgrade ctxsvc, or move the file aside to start a new one",
                )
            for script in self._migrations[version:]:
                for statement in _statements(script):
                    con.execute(statement)
            con.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(latest),))


def _statements(script: str) -> Iterator[str]:
    """The statements of ``script``, one by one: executescript() would COMMIT early.

    Split at semicolons, joined again while incomplete (a trigger's body holds
    semicolons of its own).
    """
    pending = ""
    for part in script.split(";"):
        pending += part + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \t\n;"):
                yield pending
            pending = ""


def translate(exc: sqlite3.Error, path: Path, label: str) -> StoreError:
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc)
    if (
        name in ("SQLITE_CORRUPT", "SQLITE_NOTADB")
        or "malformed" in text
        or "not a database" in text
    ):
        return StoreCorrupt(
            f"{label} {path} is damaged: {text}",
            hint=f"move {path} aside; ctxsvc will start a new, empty one",
        )
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in text:
        return StoreError(
            f"{label} {path} stayed locked by another process for"
            f" {BUSY_TIMEOUT_MS // 1000}s: nothing was written",
            hint="retry; if it persists, look for a stuck ctxsvc process",
        )
    if name.startswith(("SQLITE_IOERR", "SQLITE_FULL", "SQLITE_CANTOPEN", "SQLITE_READONLY")):
        return StoreError(
            f"cannot read or write {label} {path}: {text}",
            hint="check free disk space and permissions, then retry",
        )
    return StoreError(f"{label} {path}: {text}", hint="retry")
