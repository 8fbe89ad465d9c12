"""What the stores of session state need of a database: one protocol, two backends.

The session ledger, the checkpoint store and the workspace log
(``ctxsvc.stores.ledger``, ``checkpoints``, ``events``) run the same SQL on
either backend: an SQLite file in the ctxsvc home (``ctxsvc.stores.sqlite``,
the default) or a PostgreSQL server (``ctxsvc.stores.postgres``, for several
processes on several machines). That SQL is written to mean the same on both:
``?`` placeholders (and no ``?`` in a quoted literal: on PostgreSQL every one
becomes a placeholder), ``ON CONFLICT``, ``RETURNING``, and no comparison that
either one reads its own way. A write transaction holds the database's one
write lock, so checkpoints and events are numbered in commit order on both:
each number is larger than every one committed before it, and a reader that
has seen n never later finds a number below n. A session's checkpoints count
1, 2, 3; event numbers may skip some: PostgreSQL's identity sequence does not
give back a number taken by a transaction that rolled back.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol


class Cursor(Protocol):
    """The rows of one statement (an ``sqlite3.Cursor``, or psycopg's)."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """What a store runs its statements on, inside one ``read`` or ``write`` block."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> object: ...


class Database(Protocol):
    """The state database the stores share: reads, write transactions, its name in messages.

    Every failure inside a block is raised as ``StoreError`` (retryable),
    ``StoreCorrupt`` (damaged, or written by a newer ctxsvc) or
    ``InvalidRequest`` (a value it cannot hold).
    """

    label: str

    @property
    def path(self) -> Path | str:
        """Where it is, as messages name it (a file, or a URL without its password)."""
        ...

    def read(
        self, label: str | None = None, op: str = "read"
    ) -> AbstractContextManager[Connection]:
        """A connection to read with; failures in the block translated."""
        ...

    def write(
        self, label: str | None = None, op: str = "write"
    ) -> AbstractContextManager[Connection]:
        """A write transaction holding the write lock, committed when the block ends
        without error, rolled back otherwise."""
        ...

    def damaged_hint(self) -> str:
        """What to do about damage found in it, and what that costs."""
        ...

    def close(self) -> None: ...
