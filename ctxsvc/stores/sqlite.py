"""One SQLite file shared by the stores of session state (ledger, checkpoints, events).

WAL mode with ``synchronous=FULL``: a transaction that committed is on disk
and survives a crash or a power loss, readers never block the writer, and
several service processes can share the file (writers queue on
``busy_timeout`` instead of failing). SQLite rather than a server or a log of
JSON files: it is in the standard library, transactional, and one file in
``CTXSVC_HOME``. The schema is versioned in a ``meta`` table and grows by
appending to one tuple of migrations (``ctxsvc.stores.schema``), so every
store opening the file upgrades it the same way.

Failures are typed: a damaged file (``StoreCorrupt``, not retryable) names the
file and the operation and never quotes row data or parameters (transcripts);
a lock held too long or an I/O failure is a retryable ``StoreError``. No
integrity check runs at open: ``PRAGMA quick_check`` reads every page (about
0.2 s warm and 2 s cold for 10,000 checkpoints, every command) and misses
damage inside a value; reads find damage where it matters.
"""

from __future__ import annotations

import hashlib
import json
import math
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
from ctxsvc.stores.database import Connection

BUSY_TIMEOUT_MS = 10_000
MIN_SQLITE = (3, 35)
IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")  # printable ASCII, as HTTP headers carry
MAX_DEPTH = 100  # nesting of a stored JSON value; real transcripts have fewer than 10 levels
MAX_INTEGER = 2**63 - 1  # SQLite's largest integer
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_idempotency_key(key: str | None) -> None:
    """Refuse a key HTTP could not carry."""
    if key is not None and not IDEMPOTENCY_KEY.match(key):
        raise InvalidRequest(
            "invalid Idempotency-Key", hint="use 1 to 255 printable ASCII characters"
        )


def check_storable(
    value: object, what: str, max_depth: int = MAX_DEPTH, *, column: bool = False
) -> None:
    """Refuse a value the state database cannot keep as JSON text; ``InvalidRequest``.

    That is a string (or a key) with a lone surrogate, which UTF-8 cannot
    encode (JSON's ``"\\ud800"`` escape decodes to one, and so do argv bytes
    that are not UTF-8), a number that is not finite (NaN, Infinity), or
    nesting deeper than ``max_depth``. With ``column`` (text kept in a column of
    its own, not as JSON, which escapes it), a NUL character too: PostgreSQL's
    text cannot hold one, and both backends refuse the same values. The error
    names the place (``messages[3].content``), never the text.
    """
    stack: list[tuple[object, tuple[str | int, ...]]] = [(value, ())]
    while stack:
        v, where = stack.pop()
        if isinstance(v, str):
            if not _encodable(v):
                raise _not_unicode(what, where)
            if column and "\x00" in v:
                raise InvalidRequest(
                    f"{_place(what, where)} holds a NUL character, which cannot be stored",
                    hint="send text without \\u0000",
                )
            continue
        if isinstance(v, float) and not math.isfinite(v):
            # JSON has no NaN or Infinity: stored, it would fail every later read.
            raise InvalidRequest(
                f"{_place(what, where)} is {v}, which JSON cannot hold",
                hint="send finite numbers, or the value as a string",
            )
        if isinstance(v, dict):
            items: list[tuple[str | int, object]] = []
            for k, x in v.items():
                if isinstance(k, str) and not _encodable(k):
                    raise _not_unicode(what, where, key=True)
                items.append((str(k), x))
        elif isinstance(v, list | tuple):
            items = list(enumerate(v))
        else:
            continue
        if len(where) >= max_depth and items:
            raise InvalidRequest(
                f"{_place(what, where)} is nested deeper than {max_depth} levels",
                hint="send chat messages as JSON of ordinary depth",
            )
        stack.extend((x, (*where, k)) for k, x in items)


def _encodable(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _place(what: str, where: tuple[str | int, ...], shown: int = 4) -> str:
    """``messages[3].content``: where in ``what`` a value is (its first ``shown`` steps)."""
    parts = [what]
    for k in where[:shown]:
        parts.append(f".{k}" if isinstance(k, str) and _IDENTIFIER.match(k) else f"[{k!r}]")
    return "".join(parts) + ("..." if len(where) > shown else "")


def _not_unicode(what: str, where: tuple[str | int, ...], *, key: bool = False) -> InvalidRequest:
    place = f"a key of {_place(what, where)}" if key else _place(what, where)
    return InvalidRequest(
        f"{place} is not valid Unicode text (a lone surrogate, such as the JSON escape \\ud800)",
        hint="send UTF-8 text; escape only whole characters (a surrogate pair, or none)",
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
    scope_marks: int = 1  # placeholders of the scope in ``query`` (the key's come after)

    def find(
        self, con: Connection, scope: object, key: str | None, request: str
    ) -> tuple[Any, ...] | None:
        """The record ``key`` stored in ``scope`` (its request hash cut off).

        None without a key or when the key is new. The same key with another
        request (another hash) is refused.
        """
        if key is None:
            return None
        row = con.execute(self.query, (*(scope,) * self.scope_marks, key)).fetchone()
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
    ledger") and the operation they attempt ("read checkpoint 2 of session
    s-1") to :meth:`read` and :meth:`write`. With ``lazy`` the file is opened
    at its first use, not here: a command that needs none of it never touches
    it (and never fails on it). Every failure is raised as ``StoreError``
    (retryable) or ``StoreCorrupt``.
    """

    def __init__(
        self, path: Path, migrations: Sequence[str], label: str, *, lazy: bool = False
    ) -> None:
        self.path = path
        self.label = label
        self._migrations = tuple(migrations)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open_lock = threading.Lock()
        self._ready = False  # the directory exists and the schema is current
        self._connections: list[sqlite3.Connection] = []
        if not lazy:
            self.connection(op="open the file")

    def damaged_hint(self) -> str:
        return damaged_hint(self.path)

    def close(self) -> None:
        """Close every thread's connection; the file must not be used after."""
        with self._lock:
            for con in self._connections:
                con.close()
            self._connections.clear()
        self._local = threading.local()

    def connection(self, label: str | None = None, op: str = "open the file") -> sqlite3.Connection:
        """This thread's connection (in autocommit mode: transactions are explicit).

        The first one opens the file: its directory is made and the missing
        migrations are applied.
        """
        con: sqlite3.Connection | None = getattr(self._local, "con", None)
        if con is None:
            if not self._ready:
                try:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise StoreError(
                        f"cannot {op}: cannot create the directory of {self.path}: "
                        f"{exc.strerror or exc}",
                        hint="check the permissions of the ctxsvc home, then retry",
                    ) from exc
            con = self._connect(label, op)
        if not self._ready:
            with self._open_lock:
                if not self._ready:
                    self._migrate(con, label, op)
                    self._ready = True
        return con

    @contextmanager
    def read(self, label: str | None = None, op: str = "read") -> Iterator[sqlite3.Connection]:
        """This thread's connection, sqlite3 failures in the block translated."""
        con = self.connection(label, op)
        with self.errors(label, op):
            yield con

    @contextmanager
    def write(self, label: str | None = None, op: str = "write") -> Iterator[sqlite3.Connection]:
        """A write transaction, committed when the block ends without error.

        sqlite3 failures in the block are translated like :meth:`errors`.
        """
        with self._transaction(self.connection(label, op), label, op) as con:
            yield con

    @contextmanager
    def errors(self, label: str | None = None, op: str = "use the file") -> Iterator[None]:
        """Translate sqlite3 failures into the ctxsvc hierarchy, naming ``label``
        (by default this file's own label) and the operation ``op``."""
        try:
            yield
        except sqlite3.Error as exc:
            raise translate(exc, self.path, label or self.label, op) from exc
        # sqlite3 binding a str with a lone surrogate, or an int past 64 bits
        except UnicodeEncodeError:
            raise InvalidRequest(
                f"cannot {op}: a value given is not valid Unicode text (a lone surrogate)",
                hint="send UTF-8 text",
            ) from None
        except OverflowError:
            raise InvalidRequest(
                f"cannot {op}: a number given is larger than {MAX_INTEGER}"
            ) from None

    def _connect(self, label: str | None, op: str) -> sqlite3.Connection:
        if sqlite3.sqlite_version_info < MIN_SQLITE:  # the stores' SQL uses RETURNING
            raise StoreError(
                f"cannot {op}: this Python's SQLite is {sqlite3.sqlite_version}, older than"
                f" {'.'.join(map(str, MIN_SQLITE))}",
                hint="use a Python built with a newer SQLite, or CTXSVC_STATE_URL=postgresql://…",
            )
        with self.errors(label, op):
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
    def _transaction(
        self, con: sqlite3.Connection, label: str | None, op: str
    ) -> Iterator[sqlite3.Connection]:
        with self.errors(label, op):
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

    def _migrate(self, con: sqlite3.Connection, label: str | None, op: str) -> None:
        latest = len(self._migrations)
        with self._transaction(con, label, op):
            con.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            version = schema_version(
                row, latest, f"cannot {op}: {label or self.label} {self.path}", str(self.path),
                self.damaged_hint(), "upgrade ctxsvc, or move the file aside to start a new one",
            )  # fmt: skip
            for script in self._migrations[version:]:
                for statement in _statements(script):
                    con.execute(statement)
            con.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(latest),))


def schema_version(
    row: tuple[Any, ...] | None, latest: int, what: str, where: str, damaged: str, newer: str
) -> int:
    """The schema version a ``meta`` row holds (0 without one); ``StoreCorrupt`` when it is
    unreadable (``damaged``: what to do) or newer than ``latest`` (``newer``)."""
    try:
        version = int(row[0]) if row else 0
    except ValueError:
        raise StoreCorrupt(
            f"{what} is damaged (an unreadable schema version)", hint=damaged
        ) from None
    if version > latest:
        raise StoreCorrupt(
            f"{where} has schema version {version}, newer than this ctxsvc understands ({latest})",
            hint=newer,
        )
    return version


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


def damaged_hint(path: Path) -> str:
    """What to do about a damaged state database at ``path``, and what it costs."""
    return (
        "restore it from a backup, or move it aside with its -wal and -shm files"
        f" (mv {path} {path}.damaged): ctxsvc then starts an empty one, and its sessions,"
        " checkpoints, workspace logs and records of what sessions received are lost"
        " (indexes are kept)"
    )


def translate(exc: sqlite3.Error, path: Path, label: str, op: str = "use the file") -> StoreError:
    """``exc`` as a ctxsvc error naming ``label``, the file and the operation ``op``.

    The message never quotes what sqlite3 put of a row in its own: a TEXT
    value that is not UTF-8 comes back quoted in full (a transcript, say).
    """
    name = getattr(exc, "sqlite_errorname", "") or ""
    reason = _reason(exc)
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or any(
        sign in str(exc) for sign in _DAMAGE
    ):
        return StoreCorrupt(
            f"cannot {op}: {label} {path} is damaged ({reason})", hint=damaged_hint(path)
        )
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in reason:
        return StoreError(
            f"cannot {op}: {label} {path} stayed locked by another process for"
            f" {BUSY_TIMEOUT_MS // 1000}s; nothing was written",
            hint="retry; if it persists, look for a stuck ctxsvc process",
        )
    if name.startswith(("SQLITE_IOERR", "SQLITE_FULL", "SQLITE_CANTOPEN", "SQLITE_READONLY")):
        return StoreError(
            f"cannot {op}: cannot read or write {label} {path} ({reason})",
            hint="check free disk space and permissions, then retry",
        )
    return StoreError(f"cannot {op}: {label} {path} ({reason})", hint="retry")


# What SQLite (or sqlite3, decoding a value) says of a file it cannot read as written.
_DAMAGE = ("malformed", "not a database", "Could not decode to UTF-8", "no such table")
_UNDECODABLE = re.compile(r"Could not decode to UTF-8 column '([^']*)'")


def _reason(exc: sqlite3.Error) -> str:
    """What went wrong, without any of the row's data."""
    text = str(exc)
    undecodable = _UNDECODABLE.match(text)
    if undecodable:
        return f"column {undecodable[1]} holds bytes that are not UTF-8"
    text = text.split(" with text ", 1)[0]  # never quote a value
    name = getattr(exc, "sqlite_errorname", "") or type(exc).__name__
    return text[:200] if text else name


def unreadable(exc: Exception) -> str:
    """Why a stored JSON value could not be read back, without quoting any of it."""
    if isinstance(exc, json.JSONDecodeError):
        return f"not JSON: {exc.msg} at character {exc.pos}"
    return f"not in the stored form ({type(exc).__name__})"
