"""One suite for the stores of session state, run on SQLite and on PostgreSQL.

Each test gets a ``StateStore`` on a fresh SQLite file or a fresh database of
the session's PostgreSQL server (``benchmarks.pgcluster``), and holds both to the same
guarantees: idempotency keys, immutable numbered checkpoints, an append-only
event log numbered in commit order, the same errors for the same bad values.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks import pgcluster
from ctxsvc.errors import ConfigError, IndexBusy, InvalidRequest, NotFound, StoreCorrupt, StoreError
from ctxsvc.indexing import Reporter
from ctxsvc.jobs import JobCancelled, JobRunner
from ctxsvc.models import DeliveredSpan, IndexSummary, WorkspaceEvent, span_hash
from ctxsvc.records import Summary
from ctxsvc.settings import Settings
from ctxsvc.stores.jobs import STALE_S, JobQueue, JobRecord
from ctxsvc.stores.postgres import OPEN_BACKOFF_S, WRITE_LOCK, PostgresDatabase, _pg, redacted
from ctxsvc.stores.schema import MIGRATIONS, PG_MIGRATIONS, STATE_LABEL
from ctxsvc.stores.state import StateStore, open_state_store

BACKENDS = ["sqlite", "postgresql"]


def open_store(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> StateStore:
    if backend == "sqlite":
        return open_state_store(tmp_path / "state.sqlite")
    url = request.getfixturevalue("pg_url")
    return open_state_store(tmp_path / "unused.sqlite", url)


def pg_store(url: str, **options: Any) -> StateStore:
    """A state store on the PostgreSQL database at ``url``, its timeouts set by ``options``."""
    return StateStore(PostgresDatabase(url, PG_MIGRATIONS, STATE_LABEL, **options))


@pytest.fixture(params=BACKENDS)
def location(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, str | None]:
    """Where a store lives: an SQLite file, or a PostgreSQL database (its URL)."""
    if request.param == "sqlite":
        return tmp_path / "state.sqlite", None
    return tmp_path / "unused.sqlite", request.getfixturevalue("pg_url")


@pytest.fixture
def state(location: tuple[Path, str | None]) -> Iterator[StateStore]:
    store = open_state_store(*location)
    try:
        yield store
    finally:
        store.close()


def span(path: str, a: int, z: int, text: str = "x") -> DeliveredSpan:
    return DeliveredSpan(path, a, z, span_hash(text), 3)


SUMMARY = Summary(goal="fix the parser")


def event(text: str, workspace: str | None = "ws", **kw: object) -> WorkspaceEvent:
    fields: dict[str, object] = {
        "seq": 0, "workspace": workspace, "repo": "demo", "session_id": None, "agent": "a1",
        "source": "agent", "kind": "decision", "text": text, "created_at": "",
    }  # fmt: skip
    fields.update(kw)
    return WorkspaceEvent(**fields)  # type: ignore[arg-type]


def test_the_ledger_records_once_and_forgets(state: StateStore) -> None:
    ledger = state.ledger
    ledger.record("s-1", "demo", [span("a.py", 1, 5), span("b.py", 2, 3)])
    ledger.record("s-1", "demo", [span("a.py", 1, 5)])  # a retry: not counted twice
    ledger.record("s-1", "other", [span("c.py", 1, 1)])
    assert [(s.path, s.start_line) for s in ledger.delivered("s-1", "demo")] == [
        ("a.py", 1), ("b.py", 2),
    ]  # fmt: skip
    assert set(ledger.last_received("s-1", "demo")) == {"a.py", "b.py"}
    assert {(s.repo, s.spans, s.tokens) for s in ledger.sessions()} == {
        ("demo", 2, 6), ("other", 1, 3),
    }  # fmt: skip
    assert ledger.forget("s-1", "demo") == 2
    assert ledger.delivered("s-1", "demo") == [] and len(ledger.delivered("s-1", "other")) == 1


def test_what_the_inspector_lists_comes_newest_first_within_its_limit(
    state: StateStore,
) -> None:
    ledger = state.ledger
    ledger.record("s-1", "demo", [span("a.py", 1, 5), span("b.py", 2, 3)])
    ledger.record("s-1", "other", [span("c.py", 1, 1)])
    ledger.record("s-2", "demo", [span("z.py", 1, 1)])
    got = ledger.deliveries("s-1")
    assert [(d.repo, d.path) for d in got] == [
        ("demo", "a.py"),
        ("demo", "b.py"),
        ("other", "c.py"),
    ]
    assert got[0].delivered_at == got[1].delivered_at < got[2].delivered_at  # one answer, then one
    assert [d.path for d in ledger.deliveries("s-1", limit=1)] == ["c.py"]  # the newest kept
    sessions = [state.checkpoints.create_session("demo", f"task {i}") for i in range(3)]
    assert [s.id for s in state.checkpoints.recent()] == [s.id for s in reversed(sessions)]
    assert [s.id for s in state.checkpoints.recent(limit=1)] == [sessions[-1].id]
    jobs = state.jobs
    first, _ = jobs.submit("index", "demo", "/src/demo", {})
    second, _ = jobs.submit("index", "other", "/src/other", {})
    assert [j.id for j in jobs.recent()] == [second.id, first.id]
    assert [j.id for j in jobs.recent(limit=1)] == [second.id]


def test_checkpoints_are_numbered_idempotent_and_immutable(state: StateStore) -> None:
    store = state.checkpoints
    session = store.create_session("demo", "fix the parser", agent="a1", workspace="ws")
    assert store.session(session.id) == session
    first, new = store.add(
        session.id, SUMMARY, SUMMARY, [{"role": "user", "content": "a"}], 5, "k1"
    )
    assert new and first.number == 1
    again, new = store.add(
        session.id, SUMMARY, SUMMARY, [{"role": "user", "content": "a"}], 5, "k1"
    )
    assert not new and again == first  # a retry returns what was stored
    with pytest.raises(InvalidRequest, match="was used for another checkpoint"):
        store.add(session.id, SUMMARY, SUMMARY, [{"role": "user", "content": "b"}], 5, "k1")
    second, _ = store.add(session.id, SUMMARY, SUMMARY, [{"role": "user", "content": "b"}], 5)
    assert second.number == 2 and store.get(session.id) == second
    assert [c.number for c in store.list(session.id)] == [1, 2]
    assert store.get_by_key(session.id, "k1") == first and store.get(session.id, 1) == first
    assert store.in_workspace("ws") == [session] and store.has_workspaces("demo")
    with pytest.raises(StoreError), state.db.write() as con:  # the database refuses updates
        con.execute("UPDATE checkpoints SET tokens = 0 WHERE number = 1")
    assert store.get(session.id, 1) == first
    with pytest.raises(NotFound):
        store.session("s-nosuch")


def test_a_checkpoint_and_its_events_are_written_together(state: StateStore) -> None:
    session = state.checkpoints.create_session("demo", "t", workspace="ws")
    events = [event("chose JSON", session_id=session.id, source="checkpoint")]
    state.checkpoints.add(session.id, SUMMARY, SUMMARY, [], 0, events=events)
    (stored,) = state.events.events("ws")
    assert stored.text == "chose JSON" and stored.seq >= 1


def test_the_event_log_is_numbered_append_only_and_idempotent(state: StateStore) -> None:
    log = state.events
    one, new = log.append(event("first"), "e1")
    assert new and one.seq >= 1 and one.created_at
    same, new = log.append(event("first"), "e1")
    assert not new and same == one
    with pytest.raises(InvalidRequest, match="was used for another event"):
        log.append(event("another"), "e1")
    # The same key in another workspace, and for the index's events (no workspace).
    other, new = log.append(event("first", workspace="ws2"), "e1")
    assert new and other.seq > one.seq
    index = event("renamed", workspace=None, source="index", kind="renamed")
    a, new_a = log.append(index, "e1")
    b, new_b = log.append(index, "e1")
    assert new_a and not new_b and a == b
    two, _ = log.append(event("second", paths=("a.py",), symbols=("f",)))
    assert [e.text for e in log.events("ws")] == ["first", "second"]
    assert [e.text for e in log.events("ws", ["demo"])] == ["first", "renamed", "second"]
    assert [e.text for e in log.events("ws", after=one.seq)] == ["second"]
    assert log.events("ws", since=two.created_at) == []
    assert two.paths == ("a.py",) and log.events("ws")[-1] == two
    log.mark_warned("s-1", [one.seq, two.seq])
    log.mark_warned("s-1", [one.seq])  # again: idempotent
    assert log.warned("s-1") == {one.seq, two.seq}
    with pytest.raises(StoreError), state.db.write() as con:
        con.execute("UPDATE workspace_events SET text = 'x'")


@pytest.mark.parametrize(
    "bad",
    [
        lambda s: s.checkpoints.create_session("demo", "a NUL \x00 in the task"),
        lambda s: s.events.append(event("a NUL \x00 in the text")),
        lambda s: s.events.append(event("ok", paths=("a\x00.py",))),
        lambda s: s.events.append(event("a lone surrogate \ud800")),
        lambda s: s.events.events("ws", after=2**63),
    ],
    ids=["nul-task", "nul-text", "nul-path", "surrogate", "huge-after"],
)
def test_values_neither_backend_can_hold_are_refused_alike(state: StateStore, bad: object) -> None:
    with pytest.raises(InvalidRequest):
        bad(state)  # type: ignore[operator]
    assert state.events.events("ws") == []


def test_concurrent_writers_never_share_a_number(state: StateStore) -> None:
    check_concurrent_writers(state)


def check_concurrent_writers(state: StateStore, writers: int = 6, each: int = 10) -> None:
    """Writers numbering checkpoints and events at once, and a reader following the log:
    no number is shared, and the reader, asking only for what follows the last event it
    saw, meets every event exactly once (events become visible in the order of their
    numbers)."""
    session = state.checkpoints.create_session("demo", "t")
    errors: list[BaseException] = []
    followed: list[int] = []
    done = threading.Event()

    def write(n: int) -> None:
        try:
            for i in range(each):
                state.checkpoints.add(session.id, SUMMARY, SUMMARY, [{"n": n, "i": i}], 1)
                state.events.append(event(f"{n}-{i}"))
        except BaseException as exc:  # reported below
            errors.append(exc)

    def follow() -> None:
        try:
            while True:
                finished = done.is_set()  # read once more after the writers are done
                followed.extend(
                    e.seq for e in state.events.events("ws", after=max(followed, default=0))
                )
                if finished:
                    return
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    reader = threading.Thread(target=follow)
    reader.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    reader.join()
    assert not errors
    total = writers * each
    assert [c.number for c in state.checkpoints.list(session.id)] == list(range(1, total + 1))
    seqs = [e.seq for e in state.events.events("ws")]
    assert len(set(seqs)) == total
    assert followed == seqs  # none missed (committed below a number already seen), none twice


def _append_events(where: tuple[str, str | None], n: int, tag: str) -> None:
    store = open_state_store(Path(where[0]), where[1])
    try:
        for i in range(n):
            store.events.append(event(f"{tag}-{i}"), f"{tag}-{i}")
    finally:
        store.close()


def test_processes_share_one_log(location: tuple[Path, str | None]) -> None:
    where = (str(location[0]), location[1])
    spawn = multiprocessing.get_context("spawn")
    procs = [spawn.Process(target=_append_events, args=(where, 15, t)) for t in ("p", "q")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    store = open_state_store(*location)
    try:
        texts = [e.text for e in store.events.events("ws")]
        assert sorted(texts) == sorted(
            [f"p-{i}" for i in range(15)] + [f"q-{i}" for i in range(15)]
        )
        session = store.checkpoints.create_session("demo", "t")
        written, _ = store.checkpoints.add(session.id, SUMMARY, SUMMARY, [], 0)
    finally:
        store.close()
    other = open_state_store(*location)  # another process's view: what one wrote, the other reads
    try:
        assert other.checkpoints.get(session.id) == written
    finally:
        other.close()


def test_a_schema_newer_than_this_ctxsvc_is_refused(location: tuple[Path, str | None]) -> None:
    store = open_state_store(*location)
    store.ledger.sessions()  # opened and migrated
    with store.db.write() as con:
        con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    store.close()
    again = open_state_store(*location)
    with pytest.raises(StoreCorrupt, match="schema version 99"):
        again.ledger.sessions()
    again.close()


def test_an_unreachable_server_is_a_retryable_error_without_the_password() -> None:
    from conftest import free_port

    url = f"postgresql://ctxsvc:hunter2@127.0.0.1:{free_port()}/ctxsvc"
    store = open_state_store(Path("unused"), url)
    with pytest.raises(StoreError) as caught:
        store.ledger.sessions()
    assert caught.value.retryable and "hunter2" not in str(caught.value)
    assert "ctxsvc:***@127.0.0.1" in str(caught.value)


def test_a_write_lock_held_too_long_fails_retryably_writing_nothing(pg_url: str) -> None:
    import psycopg

    store = pg_store(pg_url, lock_timeout=0.5)
    try:
        store.events.events("ws")  # opened and migrated
        with psycopg.connect(pg_url, autocommit=True) as holder:
            holder.execute("SELECT pg_advisory_lock(%s)", (WRITE_LOCK,))
            with pytest.raises(StoreError, match=r"for 0\.5s; nothing was written") as caught:
                store.events.append(event("blocked"))
            assert caught.value.retryable
        assert store.events.append(event("through"))[1]  # the holder gone, the lock is free
        assert [e.text for e in store.events.events("ws")] == ["through"]
    finally:
        store.close()


def test_a_writer_frozen_in_its_transaction_is_cut_off_and_the_others_go_on(pg_url: str) -> None:
    frozen, other = pg_store(pg_url, idle_timeout=1), pg_store(pg_url)
    try:
        frozen.events.events("ws")
        with pytest.raises(StoreError) as caught, frozen.db.write() as con:
            con.execute("INSERT INTO drift_warned VALUES (?, ?)", ("s-1", 1))
            # Frozen here, holding the write lock: after 1 s idle the server ends its
            # session, and the other writer (waiting up to 10 s) gets the lock.
            assert other.events.append(event("went on"))[1]
        assert caught.value.retryable  # its commit fails: nothing of it was written
        assert other.events.warned("s-1") == set()
        assert [e.text for e in frozen.events.events("ws")] == ["went on"]  # a new connection
    finally:
        frozen.close()
        other.close()


def test_numbering_holds_on_a_database_that_defaults_to_serializable(pg_url: str) -> None:
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as con:
        (name,) = con.execute("SELECT current_database()").fetchone() or ("",)
        con.execute(f"ALTER DATABASE {name} SET default_transaction_isolation = 'serializable'")
    store = open_state_store(Path("unused"), pg_url)
    try:
        with store.db.read() as c:
            assert c.execute("SHOW default_transaction_isolation").fetchone()[0] == "serializable"
        check_concurrent_writers(store, each=5)
    finally:
        store.close()


def test_a_pool_with_every_connection_in_use_says_so(pg_url: str) -> None:
    store = pg_store(pg_url, pool_size=1, timeout=0.5)
    try:
        with store.db.read(), pytest.raises(StoreError) as caught:
            store.ledger.sessions()
        assert "all 1 connections" in str(caught.value)
        assert "CTXSVC_STATE_POOL_SIZE" in str(caught.value) and caught.value.retryable
        assert store.ledger.sessions() == []  # returned, the connection serves again
    finally:
        store.close()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:hunter2@db:5432/s", "postgresql://u:***@db:5432/s"),
        ("postgresql://db/s?password=hunter2&sslmode=require",
         "postgresql://db/s?password=***&sslmode=require"),
        ("postgresql://u@/s?host=/run/pg&sslpassword=hunter2&Password=hunter2",
         "postgresql://u@/s?host=/run/pg&sslpassword=***&Password=***"),
        ("postgres://u@db/s?application_name=x", "postgres://u@db/s?application_name=x"),
    ],
)  # fmt: skip
def test_urls_are_shown_without_their_passwords(url: str, shown: str) -> None:
    assert redacted(url) == shown


def test_a_url_that_is_not_a_postgresql_one_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        PostgresDatabase("mysql://db/s", PG_MIGRATIONS, STATE_LABEL)
    for url in ("postgresql://db/s?nosuchoption=1", "postgresql://u:hun%zzer2@db/s"):
        with pytest.raises(ConfigError) as caught:
            pg_store(url).ledger.sessions()
        assert "hun%zzer2" not in str(caught.value)


def test_the_sql_translation_refuses_a_quoted_question_mark() -> None:
    assert _pg("SELECT a FROM t WHERE b = ? AND c LIKE 'x%'") == (
        "SELECT a FROM t WHERE b = %s AND c LIKE 'x%%'"
    )
    with pytest.raises(ValueError, match="quoted"):
        _pg("SELECT 'why?' FROM t WHERE b = ?")


def test_the_test_cluster_is_reachable_only_through_its_own_directory(
    pg_server: pgcluster.PostgresServer,
) -> None:
    import psycopg

    assert pg_server.dir.stat().st_mode & 0o777 == 0o700
    assert f"host={pg_server.dir}" in pg_server.url.replace("%2F", "/")
    with psycopg.connect(pg_server.url) as con:
        assert con.execute("SHOW listen_addresses").fetchone() == ("",)


def test_a_cluster_left_by_a_killed_session_is_stopped_by_the_next(
    pg_server: pgcluster.PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    make = (
        "import sys; from pathlib import Path; from benchmarks.pgcluster import PostgresServer;"
        " print(PostgresServer(Path(sys.argv[1])).start().dir)"
    )
    # In a temp dir of its own: test processes running beside this one reap orphans too.
    own = Path(tempfile.mkdtemp())
    own.chmod(0o755)  # as root, the cluster's user enters it
    made = subprocess.run(
        [sys.executable, "-c", make, str(pg_server.bindir)], capture_output=True, text=True,
        check=True, cwd=Path(__file__).parent.parent, env={**os.environ, "TMPDIR": str(own)},
    )  # fmt: skip
    left = Path(made.stdout.strip())  # its maker exited without stopping it
    assert left.parent == own
    postmaster = int((left / "data" / "postmaster.pid").read_text().split()[0])
    assert pgcluster._started(postmaster) is not None
    monkeypatch.setattr(tempfile, "tempdir", str(own))
    assert pgcluster.reap(pg_server.bindir) == [left]
    monkeypatch.undo()
    pgcluster.reap(pg_server.bindir)
    assert pg_server.dir.exists()  # a live maker's cluster is kept
    deadline = time.monotonic() + 10
    while pgcluster._started(postmaster) is not None:  # stopped: exiting, if not gone yet
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert not left.exists()
    own.rmdir()
    assert pg_server.dir.exists()


def _sqlite_schema(path: Path) -> dict[str, dict[str, object]]:
    """Each table's columns, keys, indexes and triggers, as SQLite's catalog has them."""
    con = sqlite3.connect(path)
    try:
        names = con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name != 'sqlite_sequence'"
        ).fetchall()
        schema: dict[str, dict[str, object]] = {}
        for (table,) in names:
            info = con.execute(f"PRAGMA table_info({table})").fetchall()
            unique, indexes = [], {}
            for _, name, _, origin, _ in con.execute(f"PRAGMA index_list({table})").fetchall():
                columns = tuple(r[2] for r in con.execute(f"PRAGMA index_info({name})"))
                if origin == "u":
                    unique.append(columns)
                elif origin == "c":
                    indexes[name] = columns
            triggers = con.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?",
                (table,),
            ).fetchall()
            schema[table] = {
                "columns": [r[1] for r in info],
                "primary key": tuple(r[1] for r in sorted(info, key=lambda r: r[5]) if r[5]),
                "unique": sorted(unique),
                "foreign keys": sorted(
                    ((r[3],), r[2], (r[4],))
                    for r in con.execute(f"PRAGMA foreign_key_list({table})")
                ),
                "indexes": indexes,
                "triggers": sorted((n, "BEFORE UPDATE" in sql.upper()) for n, sql in triggers),
            }
        return schema
    finally:
        con.close()


_PG_COLUMNS = """ARRAY(SELECT a.attname FROM unnest({keys}) WITH ORDINALITY k(n, o)
    JOIN pg_attribute a ON a.attrelid = {rel} AND a.attnum = k.n ORDER BY k.o)"""
_PG_PUBLIC = "JOIN pg_namespace ns ON ns.oid = t.relnamespace AND ns.nspname = 'public'"


def _pg_schema(con: Any) -> dict[str, dict[str, object]]:
    """The same, as PostgreSQL's catalog (information_schema, pg_catalog) has it."""
    schema: dict[str, dict[str, Any]] = {}
    for table, column in con.execute(
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = 'public' ORDER BY table_name, ordinal_position"
    ):
        schema.setdefault(table, {
            "columns": [], "primary key": (), "unique": [], "foreign keys": [], "indexes": {},
            "triggers": [],
        })["columns"].append(column)  # fmt: skip
    constraints = con.execute(
        "SELECT t.relname, c.contype, "
        + _PG_COLUMNS.format(keys="c.conkey", rel="c.conrelid")
        + ", r.relname, "
        + _PG_COLUMNS.format(keys="c.confkey", rel="c.confrelid")
        + f" FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid {_PG_PUBLIC}"
        " LEFT JOIN pg_class r ON r.oid = c.confrelid WHERE c.contype IN ('p', 'u', 'f')"
    )
    for table, kind, columns, referenced, to in constraints:
        if kind == "p":
            schema[table]["primary key"] = tuple(columns)
        elif kind == "u":
            schema[table]["unique"].append(tuple(columns))
        else:
            schema[table]["foreign keys"].append((tuple(columns), referenced, tuple(to)))
    indexes = con.execute(
        "SELECT t.relname, i.relname, "
        + _PG_COLUMNS.format(keys="x.indkey::int2[]", rel="t.oid")
        + " FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid"
        f" JOIN pg_class t ON t.oid = x.indrelid {_PG_PUBLIC}"
        " WHERE NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)"
    )
    for table, name, columns in indexes:
        schema[table]["indexes"][name] = tuple(columns)
    triggers = con.execute(  # tgtype's bit 2 is BEFORE, 16 is UPDATE
        "SELECT t.relname, g.tgname, (g.tgtype & 18) = 18 FROM pg_trigger g"
        f" JOIN pg_class t ON t.oid = g.tgrelid {_PG_PUBLIC} WHERE NOT g.tgisinternal"
    )
    for table, name, before_update in triggers:
        schema[table]["triggers"].append((name, before_update))
    for table in schema.values():
        for key in ("unique", "foreign keys", "triggers"):
            table[key].sort()
    return schema


def test_both_schemas_have_the_same_tables_columns_keys_indexes_and_triggers(
    pg_url: str, tmp_path: Path
) -> None:
    assert len(MIGRATIONS) == len(PG_MIGRATIONS)
    lite = open_state_store(tmp_path / "s.sqlite")
    lite.ledger.sessions()
    lite.close()
    want = _sqlite_schema(tmp_path / "s.sqlite")
    assert want["checkpoints"]["triggers"] == [("checkpoints_immutable", True)]
    assert want["checkpoints"]["foreign keys"] == [(("session_id",), "sessions", ("id",))]
    assert want["workspace_events"]["unique"] == [("workspace", "idempotency_key")]
    assert want["deliveries"]["indexes"] == {"deliveries_repo": ("repo", "session_id")}
    assert want["workspace_events"]["primary key"] == ("seq",)
    pg = open_state_store(tmp_path / "unused", pg_url)
    pg.ledger.sessions()
    with pg.db.read() as con:
        got = _pg_schema(con)
    pg.close()
    assert got == want


def test_the_service_keeps_sessions_on_postgresql(
    pg_url: str, tmp_path: Path, repo: Path, counter: object, embedder: object
) -> None:
    from ctxsvc.compose import build_service
    from ctxsvc.settings import Settings

    settings = Settings.from_env({"CTXSVC_STATE_URL": pg_url}, home=tmp_path / "home")
    service = build_service(settings, tokens=counter, embedder=embedder)  # type: ignore[arg-type]
    service.index(repo)
    session = service.start_session("demo", "make the store persist")
    first = service.context("demo", "Store put writes JSON", 400, session_id=session.id)
    assert first.items and not first.already_sent
    again = service.context("demo", "Store put writes JSON", 400, session_id=session.id)
    assert again.already_sent  # the ledger, on the server, says what the session holds
    messages = [
        {"role": "user", "content": "Make Store.put persist to disk."},
        {"role": "assistant", "content": "I edited app/store.py. Next I'll add a test."},
    ]
    written, new = service.store_checkpoint(session.id, messages, idempotency_key="c1")
    assert new and written.number == 1
    assert not (tmp_path / "home" / "state.sqlite").exists()  # nothing went to the file
    # Another service (another process, another machine) on the same database reads it back.
    other = build_service(settings, tokens=counter, embedder=embedder)  # type: ignore[arg-type]
    assert other.checkpoint(session.id) == written
    assert other.resume(session.id, 800).checkpoint == written


class Clock:
    """A settable wall clock for the job queue."""

    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


def queue_on(state: StateStore, clock: Clock, scope: str = "host:/home") -> JobQueue:
    return JobQueue(state.db, clock=clock, scope=scope)


def claimed(jobs: JobQueue, owner: str) -> JobRecord:
    job = jobs.claim(owner)
    assert job is not None and job.claim is not None
    return job


def test_one_active_job_per_repository_and_one_writer(state: StateStore) -> None:
    jobs = state.jobs
    a, new_a = jobs.submit("index", "demo", "/src/demo", {"vectors": True}, "req-1")
    b, new_b = jobs.submit("refresh", "demo", "/src/demo", {"vectors": True})
    assert new_a and not new_b and b.id == a.id  # queued: the same job is returned
    other, _ = jobs.submit("index", "other", "/src/other", {})
    first = claimed(jobs, "w1")
    assert first.id == a.id and first.owner == "w1" and first.attempts == 1
    assert jobs.submit("index", "demo", "/src/demo", {})[0].id == a.id  # running: still that one
    second = claimed(jobs, "w2")
    assert second.id == other.id and second.claim != first.claim
    assert jobs.claim("w3") is None
    assert jobs.heartbeat(a.id, first.claim or "", {"parse": {"done": 3, "total": 9}}, first.events)
    assert not jobs.heartbeat(a.id, second.claim or "", {}, [])  # not w2's
    seen = jobs.get(a.id)
    assert seen is not None and seen.progress == {"parse": {"done": 3, "total": 9}}
    assert not jobs.finish(a.id, second.claim or "", "done", progress={}, events=[], result={})
    with pytest.raises(InvalidRequest):  # a check that `python -O` keeps
        jobs.finish(a.id, first.claim or "", "running", progress={}, events=[])
    assert jobs.finish(a.id, first.claim or "", "done", progress={}, events=seen.events,
                       result={"x": 1})  # fmt: skip
    done = jobs.get(a.id)
    assert done is not None and done.state == "done" and done.result == {"x": 1}
    assert [e["message"] for e in done.events] == ["queued", "running", "done"]
    # Finished, the repository takes a new job.
    again, new = jobs.submit("refresh", "demo", "/src/demo", {})
    assert new and again.id != a.id


def test_a_job_whose_worker_fell_silent_runs_again_then_fails(state: StateStore) -> None:
    clock = Clock()
    jobs = queue_on(state, clock)
    job, _ = jobs.submit("index", "demo", "/src/demo", {})
    runs = []
    for attempt in range(1, 4):
        run = claimed(jobs, f"w{attempt}")
        assert run.id == job.id and run.attempts == attempt
        runs.append(run)
        clock.t += STALE_S - 1
        assert jobs.claim("late") is None  # not silent for long enough yet
        clock.t += 2
    assert jobs.claim("w4") is None  # three attempts: failed, not queued again
    lost = jobs.get(job.id)
    assert lost is not None and lost.state == "failed" and lost.error is not None
    assert lost.error["code"] == "job_lost" and "3 attempts" in lost.error["message"]
    for run in runs:  # the late workers: neither their heartbeats nor their outcomes count
        assert not jobs.heartbeat(job.id, run.claim or "", {}, [])
        assert not jobs.finish(job.id, run.claim or "", "done", progress={}, events=[])


def test_a_heartbeat_after_a_requeue_is_refused(state: StateStore) -> None:
    clock = Clock()
    jobs = queue_on(state, clock)
    job, _ = jobs.submit("index", "demo", "/src/demo", {})
    frozen = claimed(jobs, "w1")
    clock.t += STALE_S + 1
    assert jobs.claim("w2") is not None  # requeued as silent, and claimed again
    assert not jobs.heartbeat(job.id, frozen.claim or "", {"parse": {"done": 1, "total": 2}}, [])
    back = jobs.get(job.id)
    assert back is not None and back.progress == {} and back.owner == "w2"
    assert any("queued again" in e["message"] for e in back.events)


def test_a_job_claimed_again_by_the_same_process_refuses_the_old_claim(
    state: StateStore,
) -> None:
    """Every job thread of a process claims as the same owner: only the claim token tells
    the run that lost the job from the one that holds it now."""
    clock = Clock()
    jobs = queue_on(state, clock)
    job, _ = jobs.submit("index", "demo", "/src/demo", {})
    old = claimed(jobs, "host:42:abc")
    clock.t += STALE_S + 1
    new = claimed(jobs, "host:42:abc")
    assert new.id == job.id and new.owner == old.owner and new.claim != old.claim
    assert not jobs.heartbeat(job.id, old.claim or "", {}, [])
    assert not jobs.finish(job.id, old.claim or "", "failed", progress={}, events=[])
    assert jobs.heartbeat(job.id, new.claim or "", {}, new.events)
    assert jobs.finish(job.id, new.claim or "", "done", progress={}, events=new.events)


def test_jobs_are_claimed_only_in_the_data_directory_they_index(state: StateStore) -> None:
    """Two machines (or homes) on one state database: each runs the jobs of its own disk."""
    clock = Clock()
    a, b = queue_on(state, clock, "a:/home/a"), queue_on(state, clock, "b:/home/b")
    on_a, _ = a.submit("index", "demo", "/src/demo", {})
    on_b, new = b.submit("index", "demo", "/src/demo", {})
    assert new and on_b.id != on_a.id  # the same name, another index
    assert claimed(b, "wb").id == on_b.id
    assert b.claim("wb") is None  # a's job is not b's to run, nor to requeue
    clock.t += STALE_S + 1
    assert b.claim("wb") is not None and b.get(on_a.id) is not None  # b reads a's jobs
    assert claimed(a, "wa").id == on_a.id  # b's stale job was not a's to take
    assert a.claim("wa") is None


def test_a_job_run_that_could_not_start_goes_back_without_counting(state: StateStore) -> None:
    jobs = state.jobs
    job, _ = jobs.submit("index", "demo", "/src/demo", {})
    run = claimed(jobs, "w1")
    assert jobs.release(job.id, run.claim or "", "another run holds the index's lock", run.events)
    assert not jobs.release(job.id, run.claim or "", "twice", run.events)
    back = jobs.get(job.id)
    assert back is not None and back.state == "queued" and back.attempts == 0 and back.owner is None
    assert back.events[-1]["message"] == "another run holds the index's lock: queued again"
    assert claimed(jobs, "w2").attempts == 1


def test_a_damaged_job_row_is_store_corrupt_naming_the_job_and_does_not_stop_the_queue(
    state: StateStore,
) -> None:
    jobs = state.jobs
    bad, _ = jobs.submit("index", "bad", "/src/bad", {})
    good, _ = jobs.submit("index", "good", "/src/good", {})
    with state.db.write() as con:
        con.execute("UPDATE jobs SET events_json = ? WHERE id = ?", ("{not json", bad.id))
    with pytest.raises(StoreCorrupt, match=bad.id):
        jobs.get(bad.id)
    assert claimed(jobs, "w1").id == good.id  # the damaged one is failed, the next claimed
    with state.db.read() as con:
        row = con.execute("SELECT state FROM jobs WHERE id = ?", (bad.id,)).fetchone()
    assert row[0] == "failed"


def test_dropping_an_index_cancels_its_queued_jobs(state: StateStore) -> None:
    jobs = state.jobs
    job, _ = jobs.submit("index", "demo", "/src/demo", {})
    other, _ = jobs.submit("index", "other", "/src/other", {})
    runner = JobRunner(jobs, FakeIndexes())
    assert runner.drop("demo") == "demo"
    cancelled = jobs.get(job.id)
    assert cancelled is not None and cancelled.state == "failed" and cancelled.error is not None
    assert cancelled.error["code"] == "job_cancelled" and "deleted" in cancelled.error["message"]
    assert claimed(jobs, "w1").id == other.id and jobs.claim("w1") is None  # not rebuilt


def test_concurrent_claimers_take_each_job_once(state: StateStore) -> None:
    jobs = state.jobs
    ids = {jobs.submit("index", f"r{i}", f"/src/r{i}", {})[0].id for i in range(12)}
    got: list[str] = []
    lock = threading.Lock()

    def work(owner: str) -> None:
        while (job := jobs.claim(owner)) is not None:
            with lock:
                got.append(job.id)
            jobs.finish(job.id, job.claim or "", "done", progress={}, events=job.events)

    threads = [threading.Thread(target=work, args=(f"w{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == sorted(ids)  # every job once: none lost, none doubled


def test_the_stale_time_is_ten_seconds_at_least_and_heartbeats_go_ten_times_as_often(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError, match="CTXSVC_JOB_STALE_SECONDS"):
        Settings(home=tmp_path, job_stale_seconds=5)
    assert Settings(home=tmp_path, job_stale_seconds=10).job_stale_seconds == 10
    assert JobQueue(tmp_path / "q.sqlite", stale_seconds=20).heartbeat_seconds == 1.0
    assert JobQueue(tmp_path / "q.sqlite", stale_seconds=2).heartbeat_seconds == 0.2


# -- the job runner (ctxsvc.jobs) over the queue, with a fake catalog at its seam ----------


class FakeIndexes:
    """Index runs that report ``files`` files of progress; ``gate`` holds each run before
    its first report until set; ``busy`` runs fail with IndexBusy first."""

    def __init__(self, files: int = 3, *, busy: int = 0, step: float = 0.01) -> None:
        self.files, self.busy, self.step = files, busy, step
        self.gate = threading.Event()
        self.gate.set()
        self.hold = threading.Event()  # each run waits here once its parse has started
        self.hold.set()
        self.started = threading.Event()
        self.runs: list[str] = []
        self.stopped: list[str] = []
        self.dropped: list[str] = []

    def index(
        self,
        path: str | Path,
        name: str | None = None,
        *,
        vectors: bool = True,
        reporter: Reporter | None = None,
    ) -> IndexSummary:
        assert reporter is not None and name is not None
        self.runs.append(name)
        self.started.set()
        if self.busy:
            self.busy -= 1
            raise IndexBusy(f"index {name!r} is locked by another ctxsvc process")
        self.gate.wait()
        try:
            reporter.start("parse", self.files)
            self.hold.wait()
            for _ in range(self.files):
                time.sleep(self.step)
                reporter.advance("parse")
            reporter.finish("parse")
        except JobCancelled:
            self.stopped.append(name)
            raise
        return IndexSummary(
            repo=name, root=str(path), commit=None, files_seen=self.files,
            files_indexed=self.files, files_unchanged=0, files_deleted=0, skipped={},
            files_with_syntax_errors=0, symbols=0, references=0, chunks=0, tokens=0,
            chunks_embedded=0, chunks_reused=0, vectors="disabled", model=None,
        )  # fmt: skip

    def drop(self, name_or_path: str) -> str:
        self.dropped.append(name_or_path)
        return name_or_path


def wait_for(jobs: JobQueue, job_id: str, until: Callable[[JobRecord], bool]) -> JobRecord:
    give_up = time.monotonic() + 30
    while True:
        job = jobs.get(job_id)
        assert job is not None
        if until(job):
            return job
        assert time.monotonic() < give_up, job
        time.sleep(0.02)


@pytest.fixture
def runner_queue(state: StateStore) -> JobQueue:
    return JobQueue(state.db, stale_seconds=2, scope="host:/home")  # heartbeats every 0.2 s


def test_a_run_that_loses_its_job_stops_at_its_next_report(runner_queue: JobQueue) -> None:
    """A frozen worker's job is claimed by another; once it thaws, its heartbeat is refused
    and its run stops, writing nothing."""
    indexes = FakeIndexes(files=10_000, step=0.001)
    runner = JobRunner(runner_queue, indexes, threads=1)
    job, _ = runner.submit("index", "demo", "/src/demo", {})
    wait_for(runner_queue, job.id, lambda j: bool(j.progress.get("parse")))
    # Another worker takes it over (as a claim after the stale time would).
    with runner_queue.db.write() as con:
        con.execute("UPDATE jobs SET claim = 'elsewhere', owner = 'w2' WHERE id = ?", (job.id,))
    try:
        give_up = time.monotonic() + 10
        while not indexes.stopped:
            assert time.monotonic() < give_up, "the run did not stop"
            time.sleep(0.02)
        held = runner_queue.get(job.id)
        assert held is not None and held.state == "running" and held.owner == "w2"
        assert runner_queue.finish(job.id, "elsewhere", "done", progress={}, events=held.events)
    finally:
        runner.shutdown(timeout=5)


def test_a_stage_that_starts_is_published_without_waiting_for_the_next_beat(
    runner_queue: JobQueue,
) -> None:
    runner_queue.heartbeat_seconds = 3600.0  # no beat comes on the clock in this test
    indexes = FakeIndexes(files=5)
    indexes.hold.clear()
    runner = JobRunner(runner_queue, indexes, threads=1)
    try:
        job, _ = runner.submit("index", "demo", "/src/demo", {})
        parsing = wait_for(runner_queue, job.id, lambda j: bool(j.progress.get("parse")))
        assert parsing.state == "running" and parsing.progress["parse"] == {"done": 0, "total": 5}
        assert [e["message"] for e in parsing.events][-1] == "parse started"
        indexes.hold.set()
        done = wait_for(runner_queue, job.id, lambda j: j.state == "done")
        assert done.progress["parse"] == {"done": 5, "total": 5}
    finally:
        indexes.hold.set()
        runner.shutdown(timeout=5)


def test_a_run_that_finds_the_index_locked_goes_back_to_the_queue(
    runner_queue: JobQueue,
) -> None:
    indexes = FakeIndexes(busy=1)
    runner = JobRunner(runner_queue, indexes, threads=1)
    try:
        job, _ = runner.submit("index", "demo", "/src/demo", {})
        done = wait_for(runner_queue, job.id, lambda j: j.state in ("done", "failed"))
    finally:
        runner.shutdown(timeout=5)
    assert done.state == "done" and done.attempts == 1 and indexes.runs == ["demo", "demo"]
    assert any(e["message"] == "another run holds the index's lock: queued again"
               for e in done.events)  # fmt: skip


def test_a_stopping_server_stops_its_runs_and_queues_them_again(runner_queue: JobQueue) -> None:
    indexes = FakeIndexes(files=100_000, step=0.001)
    # Threads of runners other tests left running (their servers never stopped) are not ours.
    before = {t for t in threading.enumerate() if t.name.startswith("ctxsvc-job")}
    runner = JobRunner(runner_queue, indexes, threads=1)
    job, _ = runner.submit("index", "demo", "/src/demo", {})
    wait_for(runner_queue, job.id, lambda j: bool(j.progress.get("parse")))
    runner.shutdown(timeout=10)
    assert indexes.stopped == ["demo"]
    back = runner_queue.get(job.id)
    assert back is not None and back.state == "queued" and back.attempts == 0
    assert back.owner is None and back.events[-1]["message"] == "the server stopped: queued again"
    assert not [
        t for t in threading.enumerate() if t.name.startswith("ctxsvc-job") and t not in before
    ]


def test_a_run_that_outlives_the_shutdown_timeout_has_its_job_queued_at_once(
    runner_queue: JobQueue,
) -> None:
    indexes = FakeIndexes()
    indexes.gate.clear()  # the run is held inside (native code, say) without reporting
    runner = JobRunner(runner_queue, indexes, threads=1)
    job, _ = runner.submit("index", "demo", "/src/demo", {})
    assert indexes.started.wait(10)
    runner.shutdown(timeout=0.2)
    back = runner_queue.get(job.id)
    assert back is not None and back.state == "queued" and back.owner is None
    assert "the server stopped" in back.events[-1]["message"]
    indexes.gate.set()  # it stops at its first report: its outcome is not written
    give_up = time.monotonic() + 10
    while [t for t in threading.enumerate() if t.name == "ctxsvc-job-run"]:
        assert time.monotonic() < give_up
        time.sleep(0.02)
    assert indexes.stopped == ["demo"]
    again = runner_queue.get(job.id)
    assert again is not None and again.state == "queued"


def test_a_starting_server_queues_again_the_jobs_of_dead_processes_at_once(
    runner_queue: JobQueue,
) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    orphan, _ = runner_queue.submit("index", "orphan", "/src/orphan", {})
    assert claimed(runner_queue, f"{host}:{dead.pid}:abcdef").id == orphan.id
    alive, _ = runner_queue.submit("index", "alive", "/src/alive", {})
    assert claimed(runner_queue, f"{host}:{os.getppid()}:abcdef").id == alive.id
    elsewhere, _ = runner_queue.submit("index", "far", "/src/far", {})
    assert claimed(runner_queue, f"not-{host}:{dead.pid}:abcdef").id == elsewhere.id
    runner = JobRunner(runner_queue, FakeIndexes(), threads=1)
    try:
        runner.start()
        done = wait_for(runner_queue, orphan.id, lambda j: j.state == "done")
    finally:
        runner.shutdown(timeout=5)
    assert done.attempts == 2 and any(
        "process is gone: queued again" in e["message"] for e in done.events
    )
    for other in (alive, elsewhere):  # a live process's, another machine's: left to stale
        still = runner_queue.get(other.id)
        assert still is not None and still.state == "running"


def test_job_threads_survive_failures_outside_ctxsvc_errors(runner_queue: JobQueue) -> None:
    def on_done(job: JobRecord, seconds: float) -> None:
        raise RuntimeError("an observer that fails")

    runner = JobRunner(runner_queue, FakeIndexes(), threads=1)
    runner.observe(on_done=on_done)
    try:
        first, _ = runner.submit("index", "one", "/src/one", {})
        wait_for(runner_queue, first.id, lambda j: j.state == "done")
        with runner_queue.db.write() as con:  # a row this ctxsvc cannot read
            con.execute(
                "INSERT INTO jobs (id, kind, repo, root, args_json, state, attempts, created_at,"
                " progress_json, events_json, scope) VALUES ('bad', 'index', 'x', '/x', 'nope',"
                " 'queued', 0, '0', '{}', '[]', 'host:/home')"
            )
        second, _ = runner.submit("index", "two", "/src/two", {})
        assert wait_for(runner_queue, second.id, lambda j: j.state == "done").state == "done"
    finally:
        runner.shutdown(timeout=5)


def test_a_server_that_goes_away_is_retryable_and_its_return_is_picked_up(
    pg_servers: Callable[[], pgcluster.PostgresServer],
) -> None:
    server = pg_servers()
    store = pg_store(server.new_database(), timeout=2)
    try:
        session = store.checkpoints.create_session("demo", "t")
        server.kill()
        with pytest.raises(StoreError, match="did not answer") as caught:
            store.checkpoints.session(session.id)
        assert caught.value.retryable and "CTXSVC_STATE_POOL_SIZE" not in str(caught.value)
        # Backing off: the next call fails at once, with the same error (trying to connect,
        # it would say why the connection was refused).
        with pytest.raises(StoreError) as again:
            store.checkpoints.session(session.id)
        assert str(again.value) == str(caught.value)
        server.restart()
        time.sleep(OPEN_BACKOFF_S)
        assert store.checkpoints.session(session.id) == session  # the first call after it
    finally:
        store.close()
