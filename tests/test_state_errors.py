"""The state database's failures, typed: damage is ``StoreCorrupt`` naming the file and
the operation and never quoting a row; a lock held too long stays retryable; what it
cannot store is refused up front (real SQLite files throughout)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from ctxsvc.errors import InvalidRequest, StoreCorrupt, StoreError
from ctxsvc.models import DeliveredSpan, WorkspaceEvent, span_hash
from ctxsvc.records import Summary
from ctxsvc.stores import sqlite as sqlite_module
from ctxsvc.stores.sqlite import MAX_DEPTH, check_storable
from ctxsvc.stores.state import StateStore

SECRET = "SECRET-TRANSCRIPT-TEXT"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "home" / "state.sqlite"


def raw(db: Path, sql: str, *args: object) -> None:
    """A write that bypasses ctxsvc: what a damaged page or a bad tool leaves behind."""
    con = sqlite3.connect(db)
    with con:
        con.execute(sql, args)
    con.close()


def summary() -> Summary:
    return Summary(goal="g", rendered="Goal: g", tokens=3)


def test_the_state_database_is_opened_at_its_first_use(db: Path) -> None:
    state = StateStore(db)
    assert not db.parent.exists()  # a command that needs no session state touches nothing
    state.checkpoints.create_session("demo", "a task")
    assert db.exists()
    state.close()


def test_a_value_that_is_not_utf8_is_corrupt_and_never_quoted(db: Path) -> None:
    state = StateStore(db)
    session = state.checkpoints.create_session("demo", "a task")
    state.checkpoints.add(session.id, summary(), summary(), [{"role": "user", "content": "hi"}], 1)
    bad = (f'[{{"role": "user", "content": "{SECRET}'.encode() + b'\xff\xfe"}]').hex()
    raw(
        db,
        "INSERT INTO checkpoints VALUES (?, 2, 'now', ?, CAST(X'" + bad + "' AS TEXT), NULL, ?, 1)",
        session.id,
        '{"summary": {}, "state": {}}',
        "0" * 64,
    )
    for read in (
        lambda: state.checkpoints.get(session.id, 2),
        lambda: state.checkpoints.list(session.id),
    ):
        with pytest.raises(StoreCorrupt) as info:
            read()
        message = str(info.value)
        assert SECRET not in message and not info.value.retryable
        assert f"cannot read checkpoint 2 of session {session.id}" in message or (
            f"cannot read the checkpoints of session {session.id}" in message
        )
        assert f"the checkpoint store {db} is damaged" in message
        assert "column transcript_json holds bytes that are not UTF-8" in message
        assert "restore it from a backup" in info.value.hint
    assert state.checkpoints.get(session.id, 1) is not None  # the others still read
    state.close()


@pytest.mark.parametrize(
    "summary_json",
    [f'{{"summary": {{"{SECRET}": 1}}, "state": {{}}}}', f'{{"summary": "{SECRET}', "[]"],
)
def test_an_unreadable_checkpoint_is_corrupt_and_never_quoted(db: Path, summary_json: str) -> None:
    state = StateStore(db)
    session = state.checkpoints.create_session("demo", "a task")
    raw(
        db, "INSERT INTO checkpoints VALUES (?, 1, 'now', ?, '[]', NULL, ?, 1)",
        session.id, summary_json, "0" * 64,
    )  # fmt: skip
    with pytest.raises(StoreCorrupt, match=f"checkpoint 1 of session {session.id}") as info:
        state.checkpoints.get(session.id)
    assert SECRET not in str(info.value)
    state.close()


def test_an_unreadable_event_is_corrupt(db: Path) -> None:
    state = StateStore(db)
    state.events.append(WorkspaceEvent(0, "ws", None, None, None, "agent", "note", "hi", ""))
    raw(
        db,
        "INSERT INTO workspace_events (workspace, source, kind, text, created_at, paths_json,"
        " symbols_json) VALUES ('ws', 'agent', 'note', 'x', 'now', ?, '[]')",
        f"[{SECRET}",
    )
    with pytest.raises(StoreCorrupt, match="event 2 of the workspace log") as info:
        state.events.events("ws")
    assert SECRET not in str(info.value)
    state.close()


def test_a_damaged_file_names_the_operation(db: Path) -> None:
    db.parent.mkdir(parents=True)
    db.write_bytes(b"\0" * 8192)
    state = StateStore(db)
    with pytest.raises(StoreCorrupt) as info:
        state.ledger.delivered("s-1", "demo")
    assert str(info.value).startswith(
        f"cannot read what session s-1 received: the session ledger {db} is damaged"
    )
    assert info.value.exit_code == 74 and info.value.http_status == 503
    with pytest.raises(StoreCorrupt, match="cannot record what session s-1 received"):
        span = DeliveredSpan("a.py", 1, 2, span_hash("x"), 1)
        state.ledger.record("s-1", "demo", [span])


def test_a_lock_held_too_long_stays_retryable(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_module, "BUSY_TIMEOUT_MS", 100)
    state = StateStore(db)
    session = state.checkpoints.create_session("demo", "a task")
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreError, match="stayed locked") as info:
            state.checkpoints.add(session.id, summary(), summary(), [], 0)
        assert info.value.retryable and not isinstance(info.value, StoreCorrupt)
        assert f"cannot write a checkpoint of session {session.id}" in str(info.value)
    finally:
        other.execute("ROLLBACK")
        other.close()
    state.close()


def test_values_sqlite_cannot_bind_are_refused(db: Path) -> None:
    state = StateStore(db)
    with pytest.raises(
        InvalidRequest, match="cannot list the sessions: a value given is not valid"
    ):
        state.ledger.sessions("demo\udcff")  # argv bytes that are not UTF-8
    with pytest.raises(InvalidRequest, match="larger than"):
        state.checkpoints.get(state.checkpoints.create_session("demo", "t").id, 2**64)
    with pytest.raises(InvalidRequest, match="after must be between 0 and"):
        state.events.events("ws", after=2**63)
    with pytest.raises(InvalidRequest, match=r"the event\.text is not valid Unicode text"):
        state.events.append(
            WorkspaceEvent(0, "ws", None, None, None, "agent", "note", "\ud800", "")
        )
    state.close()


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ([{"role": "user", "content": "a \ud800 b"}], "messages[0].content is not valid"),
        ([{"role": "user", "content": "x", "\udfff": 1}], "a key of messages[0] is not valid"),
        ([{"role": "user", "tool calls": ["\udcff"]}], "messages[0]['tool calls'][0] is not"),
        ([{"deep": [[[[["\ud800"]]]]]}], "messages[0].deep[0][0]... is not valid"),
    ],
)
def test_check_storable_names_the_place_not_the_text(value: object, says: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        check_storable(value, "messages")
    assert says in info.value.message and " b" not in info.value.message


def test_check_storable_bounds_nesting_without_recursing() -> None:
    deep: object = "leaf"
    for _ in range(MAX_DEPTH):
        deep = [deep]
    check_storable(deep, "messages")  # MAX_DEPTH levels: kept
    with pytest.raises(InvalidRequest, match=f"nested deeper than {MAX_DEPTH} levels"):
        check_storable([deep], "messages")
    very: object = []
    for _ in range(100_000):  # deeper than Python's recursion limit
        very = [very]
    with pytest.raises(InvalidRequest, match="nested deeper"):
        check_storable(very, "messages")
    check_storable({"emoji": "\U0001f600 caf\xe9", "n": [1, 2.5, None, True]}, "messages")
