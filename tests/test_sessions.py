"""Session ledger (real SQLite files, real processes) and the already-sent rule."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ctxsvc.errors import InvalidRequest, StoreCorrupt, StoreError
from ctxsvc.models import Chunk, DeliveredSpan, Hit, WorkspaceEvent, span_hash
from ctxsvc.sessions import split_already_sent
from ctxsvc.stores import ledger as ledger_module
from ctxsvc.stores import sqlite as sqlite_module
from ctxsvc.stores.checkpoints import CheckpointStore
from ctxsvc.stores.events import EventLog
from ctxsvc.stores.ledger import SessionLedger
from ctxsvc.stores.state import StateStore

FILES = {
    "a.py": [f"a line {n}" for n in range(1, 41)],
    "b.py": [f"b line {n}" for n in range(1, 41)],
}


def text_of(files: dict[str, list[str]], path: str, start: int, end: int) -> str | None:
    lines = files.get(path)
    if lines is None or end > len(lines):
        return None
    return "\n".join(lines[start - 1 : end])


def span(path: str, start: int, end: int, files: dict[str, list[str]] = FILES) -> DeliveredSpan:
    text = text_of(files, path, start, end)
    assert text is not None
    return DeliveredSpan(path, start, end, span_hash(text), tokens=(end - start + 1) * 3)


def hit(path: str, start: int, end: int, score: float = 1.0) -> Hit:
    text = text_of(FILES, path, start, end) or ""
    chunk = Chunk(f"{path}:{start}", path, "python", start, end, "", text)
    return Hit(chunk, score)


# -- ledger -----------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "ledger.sqlite"


def test_round_trip_and_summaries(db: Path) -> None:
    ledger = SessionLedger(db)
    assert ledger.delivered("s1", "demo") == []
    ledger.record("s1", "demo", [span("b.py", 5, 9), span("a.py", 1, 10)])
    ledger.record("s1", "demo", [span("a.py", 20, 30)])
    ledger.record("s1", "other", [span("a.py", 1, 2)])
    ledger.record("s2", "demo", [span("a.py", 1, 2)])

    assert ledger.delivered("s1", "demo") == [
        span("a.py", 1, 10),
        span("a.py", 20, 30),
        span("b.py", 5, 9),
    ]
    assert ledger.delivered("s1", "other") == [span("a.py", 1, 2)]
    summaries = {(s.session_id, s.repo): s for s in ledger.sessions()}
    assert set(summaries) == {("s1", "demo"), ("s1", "other"), ("s2", "demo")}
    s1 = summaries["s1", "demo"]
    assert (s1.spans, s1.tokens) == (3, (10 + 11 + 5) * 3)
    assert s1.first_delivered < s1.last_delivered
    assert {s.session_id for s in ledger.sessions("other")} == {"s1"}

    assert ledger.forget("s1", "demo") == 3
    assert ledger.delivered("s1", "demo") == []
    assert ledger.delivered("s1", "other") != []
    assert ledger.forget("s1") == 1
    assert ledger.forget("s1") == 0
    assert [s.session_id for s in ledger.sessions()] == ["s2"]


def test_record_is_idempotent(db: Path) -> None:
    ledger = SessionLedger(db)
    for _ in range(3):
        ledger.record("s", "demo", [span("a.py", 1, 5)])
    assert ledger.delivered("s", "demo") == [span("a.py", 1, 5)]
    assert ledger.sessions()[0].tokens == 15


def test_wal_and_full_sync(db: Path) -> None:
    ledger = SessionLedger(db)
    con = ledger.db.connection()
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_survives_restart(db: Path) -> None:
    first = SessionLedger(db)
    first.record("s", "demo", [span("a.py", 1, 5)])
    first.close()
    assert SessionLedger(db).delivered("s", "demo") == [span("a.py", 1, 5)]


CHILD = """
import sys, time
from pathlib import Path
from ctxsvc.models import DeliveredSpan
from ctxsvc.stores.ledger import SessionLedger
ledger = SessionLedger(Path(sys.argv[1]))
name, count = sys.argv[2], int(sys.argv[3])
while not Path(sys.argv[5]).exists():  # a start line, so that writers overlap
    time.sleep(0.002)
for i in range(count):
    ledger.record(name, "demo", [DeliveredSpan(name + ".py", i + 1, i + 1, "0" * 64, 1)])
print("ok", flush=True)
time.sleep(float(sys.argv[4]))
"""


def child(
    db: Path, name: str, count: int, linger: float = 0.0, go: Path | None = None
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(db), name, str(count), str(linger), str(go or db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_acknowledged_write_survives_kill_9(db: Path) -> None:
    proc = child(db, "killed", 1, linger=60)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "ok", proc.stderr.read() if proc.stderr else ""
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    assert SessionLedger(db).delivered("killed", "demo") == [
        DeliveredSpan("killed.py", 1, 1, "0" * 64, 1)
    ]


@pytest.mark.slow
def test_two_processes_lose_nothing(db: Path) -> None:
    SessionLedger(db).close()  # created up front so both children only write
    go = db.parent / "go"
    procs = [child(db, name, 100, go=go) for name in ("p1", "p2")]
    time.sleep(0.5)  # both children import and open the ledger
    go.touch()
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    ledger = SessionLedger(db)
    for name in ("p1", "p2"):
        assert [s.start_line for s in ledger.delivered(name, "demo")] == list(range(1, 101))


def test_two_threads_lose_nothing(db: Path) -> None:
    ledger = SessionLedger(db)
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def work(name: str) -> None:
        try:
            start.wait()
            for i in range(1, 51):
                ledger.record(name, "demo", [DeliveredSpan("x.py", i, i, "0" * 64, 1)])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in ("t1", "t2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [(s.session_id, s.spans) for s in sorted(ledger.sessions(), key=str)] == [
        ("t1", 50),
        ("t2", 50),
    ]


@pytest.mark.parametrize("bad", ["", "a" * 129, "has space", "semi;colon", "ü", "a/b"])
def test_invalid_session_id(db: Path, bad: str) -> None:
    ledger = SessionLedger(db)
    with pytest.raises(InvalidRequest):
        ledger.record(bad, "demo", [span("a.py", 1, 2)])
    with pytest.raises(InvalidRequest):
        ledger.delivered(bad, "demo")
    with pytest.raises(InvalidRequest):
        ledger.forget(bad)


def test_valid_session_ids(db: Path) -> None:
    ledger = SessionLedger(db)
    for good in ("a", "a" * 128, "claude:run-1.2_x"):
        ledger.record(good, "demo", [span("a.py", 1, 2)])
    assert len(ledger.sessions()) == 3


@pytest.mark.parametrize(
    "bad",
    [
        DeliveredSpan("a.py", 0, 3, "0" * 64, 1),
        DeliveredSpan("a.py", 5, 3, "0" * 64, 1),
        DeliveredSpan("", 1, 3, "0" * 64, 1),
        DeliveredSpan("a.py", 1, 3, "not-a-hash", 1),
        DeliveredSpan("a.py", 1, 3, "0" * 64, -1),
    ],
)
def test_invalid_span_writes_nothing(db: Path, bad: DeliveredSpan) -> None:
    ledger = SessionLedger(db)
    with pytest.raises(InvalidRequest):
        ledger.record("s", "demo", [span("a.py", 1, 2), bad])
    assert ledger.delivered("s", "demo") == []


def test_newer_schema_is_refused(db: Path) -> None:
    SessionLedger(db).close()
    con = sqlite3.connect(db)
    with con:
        con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    con.close()
    with pytest.raises(StoreCorrupt, match="newer"):
        SessionLedger(db)


def test_schema_version_is_written(db: Path) -> None:
    SessionLedger(db).close()
    con = sqlite3.connect(db)
    row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    con.close()
    assert row == (str(ledger_module.SCHEMA_VERSION),)


def test_garbage_file_is_corrupt(db: Path) -> None:
    db.parent.mkdir(parents=True)
    db.write_bytes(b"this is not a sqlite database at all" * 200)
    with pytest.raises(StoreCorrupt):
        SessionLedger(db)


def test_locked_database_is_a_retryable_store_error(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_module, "BUSY_TIMEOUT_MS", 200)
    ledger = SessionLedger(db)
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreError, match="locked") as info:
            ledger.record("s", "demo", [span("a.py", 1, 2)])
        assert info.value.retryable
        assert not isinstance(info.value, StoreCorrupt)
    finally:
        other.execute("ROLLBACK")
        other.close()
    ledger.record("s", "demo", [span("a.py", 1, 2)])
    assert len(ledger.delivered("s", "demo")) == 1


# -- the state store --------------------------------------------------------


def test_state_store_shares_one_database(db: Path) -> None:
    state = StateStore(db)
    assert state.ledger.db is state.checkpoints.db is state.events.db
    assert state.path == state.ledger.path == state.checkpoints.path == state.events.path == db
    session = state.checkpoints.create_session("demo", "a task", workspace="ws")
    state.ledger.record(session.id, "demo", [span("a.py", 1, 2)])
    event = WorkspaceEvent(0, "ws", "demo", session.id, None, "agent", "decision", "use X", "")
    stored, new = state.events.append(event)
    con = state.db.connection()
    for store in (state.ledger, state.checkpoints, state.events):
        store.close()  # the state store's database is its own to close
    assert state.db.connection() is con
    state.close()
    # Each store opens the file alone on a path, and sees the same data.
    assert SessionLedger(db).delivered(session.id, "demo") == [span("a.py", 1, 2)]
    assert CheckpointStore(db).find(session.id) == session
    assert new and EventLog(db).events("ws") == [stored]


def test_state_store_errors_name_the_file_or_the_store(db: Path) -> None:
    db.parent.mkdir(parents=True)
    db.write_bytes(b"this is not a sqlite database at all" * 200)
    state = StateStore(db)  # opened at its first use, by the store that needs it
    with pytest.raises(StoreCorrupt, match=r"cannot start a session: the checkpoint store .* is"):
        state.checkpoints.create_session("demo", "a task")
    with pytest.raises(StoreCorrupt, match=r"the session ledger .* is damaged"):
        SessionLedger(db)


# -- the already-sent rule --------------------------------------------------


def split(
    hits: list[Hit], delivered: list[DeliveredSpan], files: dict[str, list[str]] = FILES
) -> tuple[list[Hit], list[DeliveredSpan]]:
    return split_already_sent(hits, delivered, lambda p, s, e: text_of(files, p, s, e))


def test_span_hash_is_sha256_of_text() -> None:
    assert span_hash("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert span_hash("a\nb") != span_hash("a\nb\n")


def test_wholly_covered_and_current_is_removed_and_referenced() -> None:
    sent = span("a.py", 1, 20)
    hits = [hit("b.py", 1, 5), hit("a.py", 3, 8), hit("a.py", 10, 20), hit("a.py", 30, 35)]
    kept, refs = split(hits, [sent])
    assert kept == [hits[0], hits[3]]
    assert refs == [sent]  # once, though it covers two hits


def test_covered_but_file_changed_is_kept() -> None:
    sent = span("a.py", 1, 20)
    changed = {**FILES, "a.py": [*FILES["a.py"][:9], "edited", *FILES["a.py"][10:]]}
    hits = [hit("a.py", 3, 8)]
    assert split(hits, [sent], changed) == (hits, [])
    # A change outside the delivered lines does not make them stale.
    elsewhere = {**FILES, "a.py": [*FILES["a.py"][:30], "edited", *FILES["a.py"][31:]]}
    assert split(hits, [sent], elsewhere) == ([], [sent])


def test_deleted_file_or_lines_are_stale() -> None:
    hits = [hit("a.py", 3, 8)]
    assert split(hits, [span("a.py", 1, 20)], {"b.py": FILES["b.py"]}) == (hits, [])
    assert split(hits, [span("a.py", 1, 20)], {"a.py": FILES["a.py"][:15]}) == (hits, [])


def test_stale_and_resent_copies_of_one_span() -> None:
    old = DeliveredSpan("a.py", 1, 20, span_hash("old text"), 5)
    new = span("a.py", 1, 20)
    assert split([hit("a.py", 2, 4)], [old, new]) == ([], [new])


@pytest.mark.parametrize("lines", [(15, 25), (1, 21), (21, 22), (5, 40)])
def test_partially_covered_is_kept(lines: tuple[int, int]) -> None:
    hits = [hit("a.py", *lines)]
    assert split(hits, [span("a.py", 1, 20)]) == (hits, [])


def test_union_of_adjacent_spans_covers() -> None:
    first, second = span("a.py", 1, 10), span("a.py", 11, 20)
    kept, refs = split([hit("a.py", 5, 15)], [second, first])
    assert kept == []
    assert set(refs) == {first, second}


def test_gap_between_spans_does_not_cover() -> None:
    hits = [hit("a.py", 5, 15)]
    assert split(hits, [span("a.py", 1, 10), span("a.py", 12, 20)]) == (hits, [])


def test_union_needs_every_part_current() -> None:
    first, second = span("a.py", 1, 10), span("a.py", 11, 20)
    changed = {**FILES, "a.py": [*FILES["a.py"][:14], "edited", *FILES["a.py"][15:]]}
    hits = [hit("a.py", 5, 15)]
    assert split(hits, [first, second], changed) == (hits, [])


def test_other_sessions_and_repos_do_not_count(db: Path) -> None:
    ledger = SessionLedger(db)
    ledger.record("other-session", "demo", [span("a.py", 1, 40)])
    ledger.record("mine", "other-repo", [span("a.py", 1, 40)])
    ledger.record("mine", "demo", [span("b.py", 1, 10)])
    hits = [hit("a.py", 1, 5), hit("b.py", 2, 3)]
    kept, refs = split(hits, ledger.delivered("mine", "demo"))
    assert kept == [hits[0]]
    assert refs == [span("b.py", 1, 10)]


def test_order_of_remaining_hits_is_kept() -> None:
    hits = [hit("b.py", 30, 31, 0.9), hit("a.py", 2, 3, 0.8), hit("b.py", 1, 2, 0.7)]
    kept, _ = split(hits, [span("a.py", 1, 5)])
    assert kept == [hits[0], hits[2]]


def test_current_text_is_read_only_when_coverage_is_possible() -> None:
    calls: list[tuple[str, int, int]] = []

    def current(path: str, start: int, end: int) -> str | None:
        calls.append((path, start, end))
        return text_of(FILES, path, start, end)

    sent = [span("a.py", 1, 10), span("b.py", 1, 10)]
    hits = [hit("a.py", 2, 3), hit("a.py", 4, 5), hit("a.py", 8, 12), hit("b.py", 20, 22)]
    split_already_sent(hits, sent, current)
    assert calls == [("a.py", 1, 10)]
