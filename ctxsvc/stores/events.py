"""The shared log of workspaces, in the state database (``ctxsvc.stores.state``).

Sessions working in one workspace (parallel agents on one codebase) append
events to one log: decisions, renames, removals, edits. The log is append
only (a trigger refuses updates) and numbered by one ``seq`` for the whole
file, so "what happened after event n" is one comparison. Events a re-index
finds by itself carry no workspace, only their repository: they concern every
workspace working on it. ``drift_warned`` remembers which events a session was
already warned about, so a warning is given once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from typing import Any

from ctxsvc.errors import InvalidRequest, StoreCorrupt
from ctxsvc.limits import validate_session_id
from ctxsvc.models import EVENT_KINDS, Stored, WorkspaceEvent
from ctxsvc.stores.database import Connection, Database
from ctxsvc.stores.schema import StateTable
from ctxsvc.stores.sqlite import (
    MAX_INTEGER,
    Replay,
    check_idempotency_key,
    check_storable,
    now,
    request_sha256,
    unreadable,
)

SOURCES = ("agent", "checkpoint", "index")
MAX_TEXT = 2000
MAX_SUBJECTS = 50
MAX_SUBJECT_CHARS = 1000
_COLUMNS = (
    "seq, workspace, repo, session_id, agent, source, kind, text, created_at,"
    " paths_json, symbols_json, new_path, new_symbol"
)
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_REPLAY = Replay(
    query=f"SELECT {_COLUMNS}, request_sha256 FROM workspace_events"
    " WHERE (workspace = ? OR (workspace IS NULL AND CAST(? AS TEXT) IS NULL))"
    " AND idempotency_key = ?",
    kind="event",
    describe=lambda row: f"(seq {row[0]}) of this workspace",
    scope_marks=2,
)


class EventLog(StateTable):
    """Append and read workspace events. Thread- and process-safe like the ledger."""

    label = "the workspace log"

    def append(
        self, event: WorkspaceEvent, idempotency_key: str | None = None
    ) -> Stored[WorkspaceEvent]:
        """Store ``event`` (its ``seq`` and ``created_at`` are assigned here).

        Returns the stored event and whether it is new: with an
        ``idempotency_key`` already used in the workspace, the event stored
        then is returned and nothing is written; the same key with another
        event is refused.
        """
        _check(event)
        check_idempotency_key(idempotency_key)
        request = request_sha256(
            json.dumps(
                {k: v for k, v in asdict(event).items() if k not in ("seq", "created_at")},
                sort_keys=True,
            )
        )
        where = (
            f"the log of workspace {event.workspace}" if event.workspace else "the workspace log"
        )
        with self.db.write(self.label, f"append to {where}") as con:
            replay = _REPLAY.find(con, event.workspace, idempotency_key, request)
            if replay is not None:
                return Stored(_event(replay, self.db), False)
            stored = insert_event(con, event, idempotency_key, request)
        return Stored(stored, True)

    def events(
        self,
        workspace: str | None,
        repos: Iterable[str] = (),
        *,
        after: int = 0,
        since: str = "",
        limit: int = 1000,
    ) -> list[WorkspaceEvent]:
        """Events of ``workspace`` and re-index events of ``repos``, after seq ``after``
        (and written after the time ``since``, when given)."""
        if not 0 <= after <= MAX_INTEGER:
            raise InvalidRequest(f"after must be between 0 and {MAX_INTEGER}, got {after}")
        repos = sorted(set(repos))
        marks = ", ".join("?" for _ in repos)
        where = "(workspace = ?" + (
            f" OR (workspace IS NULL AND repo IN ({marks})))" if repos else ")"
        )
        with self.db.read(self.label, f"read the log of workspace {workspace}") as con:
            rows = con.execute(
                f"SELECT {_COLUMNS} FROM workspace_events WHERE {where} AND seq > ?"
                " AND created_at > ? ORDER BY seq LIMIT ?",
                (workspace, *repos, after, since, limit),
            ).fetchall()
        return [_event(r, self.db) for r in rows]

    def warned(self, session_id: str) -> set[int]:
        """The events ``session_id`` was already warned about."""
        validate_session_id(session_id)
        with self.db.read(self.label, f"read the warnings session {session_id} had") as con:
            rows = con.execute("SELECT seq FROM drift_warned WHERE session_id = ?", (session_id,))
            return {r[0] for r in rows}

    def mark_warned(self, session_id: str, seqs: Iterable[int]) -> None:
        """Remember that ``session_id`` was warned about ``seqs`` (idempotent)."""
        rows = [(session_id, s) for s in set(seqs)]
        if rows:
            op = f"record the warnings session {session_id} had"
            with self.db.write(self.label, op) as con:
                con.executemany(
                    "INSERT INTO drift_warned VALUES (?, ?) ON CONFLICT DO NOTHING", rows
                )


def insert_event(
    con: Connection,
    event: WorkspaceEvent,
    idempotency_key: str | None = None,
    request: str | None = None,
) -> WorkspaceEvent:
    """Append ``event`` inside the open transaction of ``con``; the stored event."""
    _check(event)
    created = now()
    columns = _COLUMNS.removeprefix("seq, ")
    row = con.execute(
        f"INSERT INTO workspace_events ({columns}, idempotency_key, request_sha256)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING seq",
        (
            event.workspace,
            event.repo,
            event.session_id,
            event.agent,
            event.source,
            event.kind,
            event.text,
            created,
            json.dumps(list(event.paths)),
            json.dumps(list(event.symbols)),
            event.new_path,
            event.new_symbol,
            idempotency_key,
            request,
        ),
    ).fetchone()
    seq = int(row[0])
    return WorkspaceEvent(
        **{
            **asdict(event), "seq": seq, "created_at": created,
            "paths": tuple(event.paths), "symbols": tuple(event.symbols),
        }
    )  # fmt: skip


def _check(event: WorkspaceEvent) -> None:
    if event.source not in SOURCES:
        raise InvalidRequest(f"unknown event source {event.source!r}")
    if event.kind not in EVENT_KINDS:
        raise InvalidRequest(
            f"unknown event kind {event.kind!r}", hint=f"use one of {', '.join(EVENT_KINDS)}"
        )
    if event.workspace is None and (event.source != "index" or not event.repo):
        raise InvalidRequest("an event needs a workspace")
    for label, value in (("workspace", event.workspace), ("agent", event.agent)):
        if value is not None and not _NAME.match(value):
            raise InvalidRequest(
                f"invalid {label} {value!r}", hint="use letters, digits, '.', '_' or '-'"
            )
    if event.session_id is not None:
        validate_session_id(event.session_id)
    texts = {"text": event.text, "paths": event.paths, "symbols": event.symbols}
    texts.update({"new_path": event.new_path or "", "new_symbol": event.new_symbol or ""})
    check_storable(texts, "the event", column=True)
    if not event.text.strip() or len(event.text) > MAX_TEXT:
        raise InvalidRequest(f"an event's text must be 1 to {MAX_TEXT} characters")
    subjects: Sequence[str] = (*event.paths, *event.symbols)
    if len(event.paths) > MAX_SUBJECTS or len(event.symbols) > MAX_SUBJECTS:
        raise InvalidRequest(f"an event names at most {MAX_SUBJECTS} paths and symbols")
    if any(not s or len(s) > MAX_SUBJECT_CHARS for s in subjects):
        raise InvalidRequest(f"paths and symbols must be 1 to {MAX_SUBJECT_CHARS} characters")


def _event(row: tuple[Any, ...], db: Database) -> WorkspaceEvent:
    (seq, ws, repo, sid, agent, source, kind, text, at, paths, symbols, new_path, new_sym) = row
    try:
        subjects = tuple(json.loads(paths)), tuple(json.loads(symbols))
    except (ValueError, TypeError) as exc:
        raise StoreCorrupt(
            f"event {seq} of the workspace log in {db.path} is unreadable ({unreadable(exc)})",
            hint=db.damaged_hint(),
        ) from exc
    return WorkspaceEvent(
        seq=seq, workspace=ws, repo=repo, session_id=sid, agent=agent, source=source,
        kind=kind, text=text, created_at=at, paths=subjects[0], symbols=subjects[1],
        new_path=new_path, new_symbol=new_sym,
    )  # fmt: skip
