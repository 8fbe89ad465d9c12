"""Sessions and their checkpoints, in the state database (``ctxsvc.stores.state``).

A checkpoint is written once, in one transaction, and never updated (a
trigger refuses updates). Numbers run 1..n per session, assigned inside the
write transaction, so concurrent writers never share a number. A write with an
``idempotency_key`` already used in the session returns the checkpoint stored
then: a retried request never creates a second one.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from ctxsvc.errors import NotFound, StoreCorrupt
from ctxsvc.limits import validate_session_id
from ctxsvc.models import Stored, WorkspaceEvent
from ctxsvc.records import Anchor, Checkpoint, Session, Summary
from ctxsvc.stores.events import insert_event
from ctxsvc.stores.schema import StateTable
from ctxsvc.stores.sqlite import (
    Replay,
    check_idempotency_key,
    check_storable,
    now,
    request_sha256,
    unreadable,
)

_COLUMNS = "session_id, number, created_at, summary_json, transcript_json, idempotency_key, tokens"
_REPLAY = Replay(
    query=f"SELECT {_COLUMNS}, request_sha256 FROM checkpoints"
    " WHERE session_id = ? AND idempotency_key = ?",
    kind="checkpoint",
    describe=lambda row: f"(number {row[1]}) of this session",
)


class CheckpointStore(StateTable):
    """Durable sessions and checkpoints. Thread- and process-safe like the ledger."""

    label = "the checkpoint store"

    def create_session(
        self, repo: str, task: str, agent: str | None = None, workspace: str | None = None
    ) -> Session:
        """A new session with a fresh random id."""
        check_storable({"repo": repo, "task": task}, "the session", column=True)
        session = Session(
            id="s-" + secrets.token_hex(8), repo=repo, task=task, agent=agent,
            workspace=workspace, created_at=now(),
        )  # fmt: skip
        with self.db.write(self.label, "start a session") as con:
            con.execute(
                "INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?)",
                (session.id, repo, task, agent, workspace, session.created_at),
            )
        return session

    def find(self, session_id: str) -> Session | None:
        """The session ``session_id``, or None."""
        validate_session_id(session_id)
        with self.db.read(self.label, f"read session {session_id}") as con:
            row = con.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)).fetchone()
        return None if row is None else Session(*row)

    def recent(self, limit: int = 100) -> list[Session]:
        """The ``limit`` sessions started last, newest first."""
        with self.db.read(self.label, "list the sessions") as con:
            rows = con.execute(
                "SELECT * FROM sessions ORDER BY created_at DESC, id LIMIT ?", (limit,)
            ).fetchall()
        return [Session(*r) for r in rows]

    def in_workspace(self, workspace: str) -> list[Session]:
        """The sessions of ``workspace``, oldest first."""
        with self.db.read(self.label, f"read the sessions of workspace {workspace}") as con:
            rows = con.execute(
                "SELECT * FROM sessions WHERE workspace = ? ORDER BY created_at", (workspace,)
            ).fetchall()
        return [Session(*r) for r in rows]

    def has_workspaces(self, repo: str) -> bool:
        """Whether a session in some workspace works on ``repo``."""
        with self.db.read(self.label, f"read the sessions on {repo}") as con:
            row = con.execute(
                "SELECT 1 FROM sessions WHERE repo = ? AND workspace IS NOT NULL LIMIT 1", (repo,)
            ).fetchone()
        return row is not None

    def session(self, session_id: str) -> Session:
        """The session ``session_id``; ``NotFound`` (404) when there is none."""
        found = self.find(session_id)
        if found is None:
            raise NotFound(
                f"no session {session_id!r}",
                hint="start one with POST /v1/sessions or `ctxsvc session start`",
            )
        return found

    def add(
        self,
        session_id: str,
        summary: Summary,
        state: Summary,
        transcript: list[dict[str, Any]],
        transcript_tokens: int,
        idempotency_key: str | None = None,
        fields: dict[str, Any] | None = None,
        events: Sequence[WorkspaceEvent] = (),
    ) -> Stored[Checkpoint]:
        """Store the next checkpoint of ``session_id``; returns it and whether it is new.

        With an ``idempotency_key`` seen before in this session, nothing is
        written and the stored checkpoint is returned (``False``); the same key
        with another transcript or fields is refused. ``events`` (for the
        session's workspace log) are written in the same transaction: both or
        neither survive a crash.
        """
        self.session(session_id)
        check_idempotency_key(idempotency_key)
        transcript_json = json.dumps(transcript, ensure_ascii=False, sort_keys=True)
        # What the client sent (transcript and explicit fields): a retry must match it.
        request = request_sha256(transcript_json + json.dumps(fields or {}, sort_keys=True))
        summary_json = json.dumps({"summary": asdict(summary), "state": asdict(state)})
        with self.db.write(self.label, f"write a checkpoint of session {session_id}") as con:
            replay = _REPLAY.find(con, session_id, idempotency_key, request)
            if replay is not None:
                return Stored(_checkpoint(replay, self.path), False)
            number = con.execute(
                "SELECT COALESCE(MAX(number), 0) + 1 FROM checkpoints WHERE session_id = ?",
                (session_id,),
            ).fetchone()[0]
            row = (
                session_id, number, now(), summary_json, transcript_json, idempotency_key,
                transcript_tokens,
            )  # fmt: skip
            con.execute(
                f"INSERT INTO checkpoints ({_COLUMNS}, request_sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (*row, request),
            )
            for event in events:
                insert_event(con, event)
        return Stored(_checkpoint(row, self.path), True)

    def get(self, session_id: str, number: int | None = None) -> Checkpoint | None:
        """Checkpoint ``number`` (the latest when None) of the session, if any."""
        self.session(session_id)
        select = f"SELECT {_COLUMNS} FROM checkpoints WHERE session_id = ?"
        args: tuple[object, ...]
        if number is None:
            query, args = select + " ORDER BY number DESC LIMIT 1", (session_id,)
        else:
            query, args = select + " AND number = ?", (session_id, number)
        which = "the latest checkpoint" if number is None else f"checkpoint {number}"
        with self.db.read(self.label, f"read {which} of session {session_id}") as con:
            row = con.execute(query, args).fetchone()
        return None if row is None else _checkpoint(row, self.path)

    def get_by_key(self, session_id: str, idempotency_key: str) -> Checkpoint | None:
        """The checkpoint written with ``idempotency_key`` in the session, if any."""
        with self.db.read(self.label, f"read the checkpoints of session {session_id}") as con:
            row = con.execute(
                f"SELECT {_COLUMNS} FROM checkpoints WHERE session_id = ? AND idempotency_key = ?",
                (session_id, idempotency_key),
            ).fetchone()
        return None if row is None else _checkpoint(row, self.path)

    def list(self, session_id: str) -> list[Checkpoint]:
        """Every checkpoint of the session, by number."""
        self.session(session_id)
        with self.db.read(self.label, f"read the checkpoints of session {session_id}") as con:
            rows = con.execute(
                f"SELECT {_COLUMNS} FROM checkpoints WHERE session_id = ? ORDER BY number",
                (session_id,),
            ).fetchall()
        return [_checkpoint(r, self.path) for r in rows]


def _checkpoint(row: tuple[Any, ...], path: Path | str) -> Checkpoint:
    session_id, number, created_at, summary_json, transcript_json, key, tokens = row
    try:
        data = json.loads(summary_json)
        transcript = tuple(json.loads(transcript_json))
        summary, state = summary_from_dict(data["summary"]), summary_from_dict(data["state"])
    except (ValueError, KeyError, TypeError) as exc:
        raise StoreCorrupt(
            f"checkpoint {number} of session {session_id} in {path} is unreadable"
            f" ({unreadable(exc)})",
            hint="read another checkpoint of the session (they are independent)",
        ) from exc
    return Checkpoint(
        session_id=session_id, number=number, created_at=created_at, summary=summary,
        state=state, transcript=transcript, transcript_tokens=tokens, idempotency_key=key,
    )  # fmt: skip


def summary_from_dict(d: dict[str, Any]) -> Summary:
    """A ``Summary`` from its ``asdict`` form (lists back to tuples)."""
    tuples = ("constraints", "done", "decisions", "open_tasks", "errors", "facts", "notes")
    # Fields a newer ctxsvc wrote are left out, so that an older replica (or a rollback)
    # still reads its checkpoints; fields an older one lacks take their defaults.
    known = {f.name for f in fields(Summary)}
    values: dict[str, Any] = {k: tuple(v) if k in tuples else v for k, v in d.items() if k in known}
    anchor_fields = {f.name for f in fields(Anchor)}
    values["files"] = tuple(
        Anchor(**{k: v for k, v in a.items() if k in anchor_fields}) for a in d.get("files", ())
    )
    return Summary(**values)
