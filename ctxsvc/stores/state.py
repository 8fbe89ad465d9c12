"""The state database: one SQLite file holding every store of session state.

``StateStore`` opens the file once (connections, migrations), at its first
use, and hands its stores that one database: the session ledger (what each session received),
the checkpoint store (sessions and their checkpoints) and the workspace log
(events shared by the sessions of a workspace). Each store can also open the
file alone, on a path, for a test or a tool that needs only it.
"""

from __future__ import annotations

from pathlib import Path

from ctxsvc.stores.checkpoints import CheckpointStore
from ctxsvc.stores.events import EventLog
from ctxsvc.stores.ledger import SessionLedger
from ctxsvc.stores.schema import MIGRATIONS, STATE_LABEL
from ctxsvc.stores.sqlite import SqliteFile

__all__ = ["StateStore"]


class StateStore:
    """The state database at ``path`` and the stores that share it.

    Thread- and process-safe like its stores. Nothing is opened here: the
    file is, at the first call of one of its stores, so that what needs no
    session state (a query without a session) never fails on a damaged
    file. That call raises ``StoreError`` (retryable) or ``StoreCorrupt``
    (a damaged file, or one a newer ctxsvc wrote).
    """

    def __init__(self, path: Path) -> None:
        self.db = SqliteFile(path, MIGRATIONS, STATE_LABEL, lazy=True)
        self.path = path
        self.ledger = SessionLedger(self.db)
        self.checkpoints = CheckpointStore(self.db)
        self.events = EventLog(self.db)

    def close(self) -> None:
        """Close the file's connections; neither this nor its stores may be used after."""
        self.db.close()
