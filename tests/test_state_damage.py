"""A damaged state database (flipped bytes in ``state.sqlite``), through the CLI.

Queries without a session never need the file; queries with one answer,
degraded (everything sent again); checkpoint commands fail with
``store_corrupt`` (exit 74, not retryable), naming the file and what was being
done, and never quoting a transcript.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import SAMPLE, cli_env, run_cli, write_tree

from ctxsvc.cli import main

SECRET = "SECRET-TRANSCRIPT-TEXT"
MESSAGES = f'[{{"role": "user", "content": "{SECRET}: please fix Store.get in app/store.py"}}]'
PAGE = 4096
Run = Callable[..., tuple[int, str, str]]


def flip_values(data: bytearray) -> None:
    """Bytes inside the stored transcript text: a TEXT value that is not UTF-8."""
    at = data.find(SECRET.encode())
    assert at > 0
    while at > 0:
        for i in range(at + 7, at + 10):
            data[i] ^= 0xC0
        at = data.find(SECRET.encode(), at + 1)


def flip_pages(data: bytearray) -> None:
    """The b-tree header of every page but the first: tables and indexes unreadable."""
    for page in range(1, len(data) // PAGE):
        for i in range(page * PAGE, page * PAGE + 12):
            data[i] ^= 0xFF


def flip_header(data: bytearray) -> None:
    """The file's header: not a database any more."""
    data[0:16] = bytes(16)


DAMAGE = {"values": flip_values, "pages": flip_pages, "header": flip_header}


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A data directory as real processes leave it: an index, a workspace session with a
    checkpoint, and a ledger of what a query sent it. Returns the home and the session."""
    tmp = tmp_path_factory.mktemp("state_damage")
    write_tree(tmp / "demo", SAMPLE)
    home = tmp / "home"
    env = cli_env(home)

    def ok(*args: str) -> str:
        r = run_cli(env, *args)
        assert r.returncode == 0, r.stderr
        return r.stdout

    ok("index", str(tmp / "demo"), "--no-vectors")
    sid = ok("session", "start", "demo", "--task", "fix the store", "--workspace", "ws").strip()
    (tmp / "m.json").write_text(MESSAGES)
    ok("checkpoint", "write", sid, "--messages", str(tmp / "m.json"))
    ok("query", "demo", "how does the store get a value", "--session", sid, "--budget", "500")
    con = sqlite3.connect(home / "state.sqlite")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything in the main file
    con.close()
    return home, sid


@pytest.fixture(params=sorted(DAMAGE))
def damaged(
    request: pytest.FixtureRequest, made: tuple[Path, str], tmp_path: Path
) -> tuple[Path, str, str]:
    """A copy of the made home whose state database is damaged one way."""
    home = tmp_path / "home"
    shutil.copytree(made[0], home)
    db = home / "state.sqlite"
    for side in ("state.sqlite-wal", "state.sqlite-shm"):
        (home / side).unlink(missing_ok=True)
    data = bytearray(db.read_bytes())
    DAMAGE[request.param](data)
    db.write_bytes(data)
    return home, made[1], request.param


@pytest.fixture
def ctxsvc(
    damaged: tuple[Path, str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> Run:
    for key in [k for k in os.environ if k.startswith("CTXSVC_")]:
        monkeypatch.delenv(key)
    home = damaged[0]

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(["--home", str(home), *args])
        captured = capsys.readouterr()
        return code, captured.out, " ".join(captured.err.split())

    return run


def test_a_query_without_a_session_answers(ctxsvc: Run) -> None:
    code, out, err = ctxsvc("query", "demo", "how does the store get a value", "--json")
    assert code == 0, err
    assert "app/store.py" in out
    assert "session ledger" not in err


def test_a_query_with_a_session_answers_degraded(
    ctxsvc: Run, damaged: tuple[Path, str, str]
) -> None:
    _, sid, how = damaged
    code, out, err = ctxsvc("query", "demo", "how does the store get a value", "--session", sid)
    assert code == 0, err
    if how == "values":  # the ledger is intact: what the session holds is not sent again
        assert "Already sent in this session" in out and "session ledger" not in err
    else:
        assert "def get(self, key: str)" in out  # sent again in full
        assert "degraded: session ledger unavailable: everything sent again" in err
    # What other sessions changed cannot be read either (the session, its checkpoint).
    assert "degraded: workspace log unavailable" in err
    assert SECRET[:6] not in err


@pytest.mark.parametrize(
    "args",
    [
        ["checkpoint", "show", "{sid}"],
        ["checkpoint", "list", "{sid}"],
        ["checkpoint", "write", "{sid}", "--goal", "carry on"],
        ["checkpoint", "resume", "{sid}", "--no-refresh"],
    ],
    ids=["show", "list", "write", "resume"],
)
def test_checkpoint_commands_fail_as_store_corrupt_without_quoting_the_transcript(
    ctxsvc: Run, damaged: tuple[Path, str, str], args: list[str]
) -> None:
    home, sid, _ = damaged
    code, _, err = ctxsvc(*(a.format(sid=sid) for a in args))
    assert code == 74, err
    assert "Traceback" not in err
    assert "error (store_corrupt): cannot read" in err and "retryable" not in err
    assert str(home / "state.sqlite") in err and "is damaged" in err
    assert "restore it from a backup, or move it aside" in err and "are lost" in err
    assert SECRET[:6] not in err and "please fix" not in err


def test_a_real_process_answers_a_plain_query_on_a_damaged_database(
    made: tuple[Path, str], tmp_path: Path
) -> None:
    home = tmp_path / "home"
    shutil.copytree(made[0], home)
    db = home / "state.sqlite"
    data = bytearray(db.read_bytes())
    flip_pages(data)
    db.write_bytes(data)
    env = cli_env(home)
    r = run_cli(env, "query", "demo", "how does the store get a value", "--markdown")
    assert r.returncode == 0, r.stderr
    assert "app/store.py" in r.stdout
    r = run_cli(env, "checkpoint", "show", made[1])
    assert r.returncode == 74 and "Traceback" not in r.stderr
    assert "store_corrupt" in r.stderr and SECRET[:6] not in r.stderr


def test_index_runs_and_refreshing_queries_work_on_a_damaged_database(
    ctxsvc: Run, tmp_path: Path
) -> None:
    root = tmp_path / "other"
    write_tree(root, {"calc.py": "def add(a, b):\n    return a + b\n"})
    code, _, err = ctxsvc("index", str(root), "--no-vectors")
    assert code == 0, err
    (root / "calc.py").write_text(
        "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n"
    )
    code, out, err = ctxsvc("query", "other", "def sub a b", "--json")
    assert code == 0, err
    assert "def sub(a, b)" in out
