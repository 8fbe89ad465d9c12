"""The state database on a PostgreSQL server: the same stores, for many processes.

Selected by ``CTXSVC_STATE_URL=postgresql://user@host/db`` (see
``ctxsvc.stores.state.open_state``). The stores run the SQL they run on
SQLite (``ctxsvc.stores.database``); here ``?`` becomes psycopg's ``%s``
(every ``?``: a statement must pass as a parameter any text holding one, and
a quoted ``?`` is refused the first time a statement is seen). Connections
come from a pool (psycopg 3), opened at the first use so that a command
needing no session state never waits on the server. A write transaction
takes one transaction-scoped advisory lock first, as SQLite's ``BEGIN
IMMEDIATE`` takes the file's write lock: checkpoint numbers are given inside
it and workspace events are numbered and committed in one order, so a reader
that has seen event n never later finds an event below n. Writes are small (a
checkpoint, a few spans); one lock costs little and keeps the guarantees of
the SQLite store exactly. A transaction committed is durable as the server's
``synchronous_commit`` makes it (on by default).

Those guarantees rest on what each connection is set to, whatever the
server's defaults: READ COMMITTED (each statement after the lock sees every
earlier commit; a snapshot taken before the lock would number from stale
rows), a ``lock_timeout`` of 10 s (SQLite's busy timeout: a writer gives up
rather than queue forever behind a stuck one), an
``idle_in_transaction_session_timeout`` of 60 s (the server ends the session
of a process frozen or cut off inside a transaction, releasing the lock) and
TCP keepalives (a vanished server is noticed).

The schema is versioned in a ``meta`` table like the SQLite file's, and
migrated under a second advisory lock, so processes starting together migrate
once. Failures are typed as the SQLite store types them: a server that cannot
be reached, a pool with no free connection in time, a lock held past the
timeout, a serialization failure are retryable ``StoreError``; a schema that
is newer or damaged is ``StoreCorrupt``; a value PostgreSQL cannot hold (a
NUL character, an integer past 64 bits) is ``InvalidRequest``; a URL that is
not one is ``ConfigError``. Messages name the server by its URL without its
password (in the user part or the query), and never quote row data.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus, urlsplit

from ctxsvc.errors import ConfigError, InvalidRequest, StoreCorrupt, StoreError
from ctxsvc.limits import POSTGRES_URL
from ctxsvc.stores.sqlite import BUSY_TIMEOUT_MS, schema_version

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool

    from ctxsvc.stores.database import Cursor

log = logging.getLogger("ctxsvc.state")

WRITE_LOCK = 0x63747873  # "ctxs": the advisory lock every write transaction takes
MIGRATE_LOCK = WRITE_LOCK + 1
CONNECT_TIMEOUT_S = 10
LOCK_TIMEOUT_S = BUSY_TIMEOUT_MS / 1000  # as long as an SQLite writer waits for the file
IDLE_IN_TRANSACTION_S = 60.0
OPEN_BACKOFF_S = 1.0  # after a failed open, calls fail at once for this long
# Defaults for what the URL does not set: probe an idle connection after 30 s, give up
# on it after three unanswered probes 10 s apart.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
              "keepalives_count": 3}  # fmt: skip
UNREACHABLE_HINT = "check that the PostgreSQL server runs and CTXSVC_STATE_URL is right, then retry"
_SECRET = re.compile(r"pass|secret|token", re.IGNORECASE)  # password, sslpassword, ...
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def redacted(url: str) -> str:
    """``url`` without its passwords (user part and query), as messages and logs may show it."""
    parts = urlsplit(url)
    user, at, hosts = parts.netloc.rpartition("@")
    if ":" in user:
        user = user.split(":", 1)[0] + ":***"
    query = "&".join(_redacted_pair(pair) for pair in parts.query.split("&"))
    return (
        f"{parts.scheme}://{user}{at}{hosts}{parts.path}"
        + (f"?{query}" if parts.query else "")
        + (f"#{parts.fragment}" if parts.fragment else "")
    )


def _redacted_pair(pair: str) -> str:
    key, eq, _ = pair.partition("=")
    return f"{key}=***" if eq and _SECRET.search(unquote_plus(key)) else pair


@functools.lru_cache(maxsize=256)
def _pg(sql: str) -> str:
    """The stores' SQL (``?`` placeholders, no ``%``) in psycopg's paramstyle.

    Every ``?`` becomes a placeholder, so one inside a quoted literal or
    identifier is refused (checked once per statement: the result is cached).
    """
    if "?" in sql and any("?" in quoted for quoted in _QUOTED.findall(sql)):
        raise ValueError(f"a quoted '?' would become a placeholder; pass it as a parameter: {sql}")
    return sql.replace("%", "%%").replace("?", "%s")


def _ms(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"  # 0 would mean no timeout at all


class PgConnection:
    """One pooled connection, taking the stores' SQL as SQLite does."""

    def __init__(self, con: psycopg.Connection[Any]) -> None:
        self._con = con

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Cursor:
        return self._con.execute(_pg(sql), tuple(parameters))

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> object:
        with self._con.cursor() as cur:
            cur.executemany(_pg(sql), [tuple(p) for p in parameters])
        return None


class PostgresDatabase:
    """A pool of connections to the state database at ``url``, with its migrations.

    ``migrations[i]`` takes the schema from version i to i + 1, as for the
    SQLite file; ``label`` names it in messages. ``timeout`` bounds the wait
    for a connection, ``lock_timeout`` the wait for the write lock and
    ``idle_timeout`` a transaction left idle (seconds). Thread-safe; any
    number of processes may share the server.
    """

    def __init__(
        self, url: str, migrations: Sequence[str], label: str, *, pool_size: int = 8,
        timeout: float = CONNECT_TIMEOUT_S, lock_timeout: float = LOCK_TIMEOUT_S,
        idle_timeout: float = IDLE_IN_TRANSACTION_S,
    ) -> None:  # fmt: skip
        if not POSTGRES_URL.match(url):
            raise ConfigError(
                f"not a PostgreSQL URL: {redacted(url)}",
                hint="set CTXSVC_STATE_URL to postgresql://user@host/db, or unset it for SQLite",
            )
        self.url = url
        self.label = label
        self._migrations = tuple(migrations)
        self._pool_size = pool_size
        self._timeout = timeout
        self._lock_timeout = lock_timeout
        self._idle_timeout = idle_timeout
        # Guards the fields below, and is never held while connecting.
        self._lock = threading.Lock()
        self._pool: ConnectionPool[Any] | None = None  # open and migrated
        self._opening: threading.Event | None = None  # set when an open under way ends
        self._failure: StoreError | None = None  # of the last open, failed before _retry_at
        self._failed_op = ""  # what that call was doing
        self._retry_at = 0.0
        self._in_use = 0  # connections taken from the pool and not yet returned

    @property
    def path(self) -> str:
        return redacted(self.url)

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def damaged_hint(self) -> str:
        return (
            f"restore the database at {self.path} from a backup, or point CTXSVC_STATE_URL at a"
            " new one: its sessions, checkpoints, workspace logs and records of what sessions"
            " received are then lost (indexes are kept)"
        )

    @contextmanager
    def read(self, label: str | None = None, op: str = "read") -> Iterator[PgConnection]:
        with self._connection(label, op) as con, self.errors(label, op):
            yield PgConnection(con)

    @contextmanager
    def write(self, label: str | None = None, op: str = "write") -> Iterator[PgConnection]:
        with self._connection(label, op) as con, self.errors(label, op), con.transaction():
            con.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            yield PgConnection(con)

    @contextmanager
    def errors(self, label: str | None = None, op: str = "use the database") -> Iterator[None]:
        """Translate psycopg failures into the ctxsvc hierarchy, naming ``label`` and ``op``."""
        import psycopg

        what = f"{label or self.label} at {self.path}"
        try:
            yield
        except psycopg.errors.UndefinedTable as exc:
            raise StoreCorrupt(
                f"cannot {op}: {what} lacks a table of its schema ({_reason(exc)})",
                hint=self.damaged_hint(),
            ) from None
        except (psycopg.errors.UntranslatableCharacter, psycopg.errors.NumericValueOutOfRange):
            raise InvalidRequest(f"cannot {op}: a value given cannot be stored") from None
        except psycopg.DataError as exc:
            if "NUL" in str(exc):
                raise InvalidRequest(
                    f"cannot {op}: a text given holds a NUL character, which PostgreSQL"
                    " cannot store",
                    hint="send text without \\u0000",
                ) from None
            raise InvalidRequest(f"cannot {op}: a value given cannot be stored") from None
        except (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled) as exc:
            if isinstance(exc, psycopg.errors.QueryCanceled) and "lock" not in str(exc):
                raise StoreError(f"cannot {op}: {what} ({_reason(exc)})", hint="retry") from None
            # As SQLite's busy timeout: the transaction rolled back, nothing was written.
            raise StoreError(
                f"cannot {op}: {what} stayed locked by another process for"
                f" {self._lock_timeout:g}s; nothing was written",
                hint="retry; if it persists, look for a stuck ctxsvc process",
            ) from None
        except (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected) as exc:
            raise StoreError(
                f"cannot {op}: {what} refused it as conflicting with another transaction"
                f" ({_reason(exc)}); nothing was written",
                hint="retry",
            ) from None
        except psycopg.OperationalError as exc:
            raise StoreError(
                f"cannot {op}: {what} did not answer ({_reason(exc)})", hint=UNREACHABLE_HINT
            ) from None
        except psycopg.Error as exc:
            raise StoreError(f"cannot {op}: {what} ({_reason(exc)})", hint="retry") from None
        except UnicodeEncodeError:
            raise InvalidRequest(
                f"cannot {op}: a value given is not valid Unicode text (a lone surrogate)",
                hint="send UTF-8 text",
            ) from None

    @contextmanager
    def _connection(self, label: str | None, op: str) -> Iterator[psycopg.Connection[Any]]:
        from psycopg_pool import PoolTimeout

        pool = self._open(label, op)
        with self.errors(label, op):
            try:
                con = pool.getconn(timeout=self._timeout)
            except PoolTimeout:
                raise self._starved(pool, label, op) from None
        with self._lock:
            self._in_use += 1
        try:
            yield con
        finally:
            with self._lock:
                self._in_use -= 1
            pool.putconn(con)

    def _starved(self, pool: ConnectionPool[Any], label: str | None, op: str) -> StoreError:
        """Why no connection came in time: every one in use, or none to be made."""
        what = f"{label or self.label} at {self.path}"
        with self._lock:
            busy = self._in_use
        if busy >= self._pool_size:
            return StoreError(
                f"cannot {op}: all {self._pool_size} connections to {what} stayed in use for"
                f" {self._timeout:g}s",
                hint="retry; if it persists, raise CTXSVC_STATE_POOL_SIZE or look at the server",
            )
        failure = StoreError(
            f"cannot {op}: {what} did not answer (no connection in {self._timeout:g}s)",
            hint=UNREACHABLE_HINT,
        )
        # Drop the pool: its reconnection attempts back off ever longer, while a new one
        # (after OPEN_BACKOFF_S) connects at once to a server that is back.
        with self._lock:
            dropped = self._pool is pool
            if dropped:
                self._pool = None
        if dropped:
            pool.close(timeout=1)
            self._back_off(failure, op)
        return failure

    def _back_off(self, failure: StoreError, op: str) -> None:
        with self._lock:
            self._failure, self._failed_op = failure, op
            self._retry_at = time.monotonic() + OPEN_BACKOFF_S

    def _open(self, label: str | None, op: str) -> ConnectionPool[Any]:
        """The pool, opened and the schema migrated at the first use.

        One thread opens it, outside the lock; the others wait for that one
        attempt. For OPEN_BACKOFF_S after a failed attempt, calls fail at once.
        """
        while True:
            with self._lock:
                if self._pool is not None:
                    return self._pool
                if self._failure is not None and time.monotonic() < self._retry_at:
                    reason = self._failure.message.removeprefix(f"cannot {self._failed_op}: ")
                    raise StoreError(f"cannot {op}: {reason}", hint=self._failure.hint)
                opening = self._opening
                if opening is None:
                    self._opening = threading.Event()
                    break
            opening.wait()
        pool = None
        try:
            pool = self._new_pool(label, op)
        except StoreError as exc:
            if exc.retryable:
                self._back_off(exc, op)
            raise
        finally:
            with self._lock:
                self._pool, event, self._opening = pool, self._opening, None
            if event is not None:
                event.set()
        log.info("state database opened", extra={"state": self.path})
        return pool

    def _new_pool(self, label: str | None, op: str) -> ConnectionPool[Any]:
        """A pool to the server, the schema migrated first on a connection of its own
        (which fails at once, saying why, where the server refuses it)."""
        try:
            import psycopg
            from psycopg_pool import ConnectionPool
        except ImportError:
            raise ConfigError(
                "CTXSVC_STATE_URL names a PostgreSQL server, but psycopg is not installed",
                hint="pip install 'ctxsvc[postgres]', or unset CTXSVC_STATE_URL for SQLite",
            ) from None
        kwargs = self._connect_kwargs()
        with self.errors(label, op):
            with psycopg.connect(self.url, **kwargs) as con:
                self._configure(con)
                self._migrate(con, label, op)
            pool: ConnectionPool[Any] = ConnectionPool(
                self.url, min_size=1, max_size=self._pool_size, open=False, kwargs=kwargs,
                configure=self._configure, check=ConnectionPool.check_connection,
                name="ctxsvc-state",
            )  # fmt: skip
            pool.open(wait=False)
        return pool

    def _connect_kwargs(self) -> dict[str, Any]:
        """What every connection is opened with: the URL's settings, then ours."""
        import psycopg
        from psycopg.conninfo import conninfo_to_dict

        try:
            given = conninfo_to_dict(self.url)
        except psycopg.ProgrammingError as exc:
            # libpq quotes the token it stumbled on, which may be the password or the URL.
            reason = _reason(exc).replace(self.url, redacted(self.url))
            password = urlsplit(self.url).password
            shown = f" ({reason})" if not password or password not in reason else ""
            raise ConfigError(
                f"CTXSVC_STATE_URL is not a valid PostgreSQL URL: {redacted(self.url)}{shown}",
                hint="write it as postgresql://user:password@host:port/db?option=value",
            ) from None
        defaults = {"connect_timeout": max(2, math.ceil(self._timeout)), **KEEPALIVES}
        return {"autocommit": True, **{k: v for k, v in defaults.items() if k not in given}}

    def _configure(self, con: psycopg.Connection[Any]) -> None:
        """Pin what the guarantees rest on, whatever the server's or database's defaults."""
        import psycopg

        con.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
        con.execute(
            "SELECT set_config('lock_timeout', %s, false),"
            " set_config('idle_in_transaction_session_timeout', %s, false)",
            (_ms(self._lock_timeout), _ms(self._idle_timeout)),
        )

    def _migrate(self, con: psycopg.Connection[Any], label: str | None, op: str) -> None:
        latest = len(self._migrations)
        with con.transaction():
            con.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK,))
            con.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            version = schema_version(
                row, latest, f"cannot {op}: {label or self.label} at {self.path}", self.path,
                self.damaged_hint(), "upgrade ctxsvc, or point CTXSVC_STATE_URL at another database",
            )  # fmt: skip
            for script in self._migrations[version:]:
                con.execute(script.encode())  # no parameters: run as written, % and all
            con.execute(
                "INSERT INTO meta VALUES ('schema_version', %s)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(latest),),
            )


def _reason(exc: Exception) -> str:
    """What went wrong, without any row data (psycopg's detail lines can quote values)."""
    first = str(exc).strip().splitlines()
    return first[0][:200] if first else type(exc).__name__
