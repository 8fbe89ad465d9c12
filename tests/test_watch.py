"""``ctxsvc watch`` and ``serve --watch``: the index follows the files, ignored paths set
nothing off, a server watches what is indexed after it started and outlives a vanished root."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import cli_env, free_port, git, run_cli, start_server, write_tree

from ctxsvc.errors import RepoNotFound
from ctxsvc.models import IndexSummary
from ctxsvc.service import ContextService
from ctxsvc.settings import Settings
from ctxsvc.stores.lance_schema import IndexMeta
from ctxsvc.stores.locks import FileLock
from ctxsvc.watch import IndexedPaths, Watcher, Watching

TIMEOUT = 20.0


class Counting:
    """The service, with its index runs counted (the seam a ``Watcher`` takes); a run
    waits, before it starts, while ``gate`` is clear."""

    def __init__(self, service: ContextService) -> None:
        self.service = service
        self.calls = 0
        self.asked: list[str | None] = []  # the name of each run, in order
        self.gate = threading.Event()
        self.gate.set()

    @property
    def settings(self) -> Settings:
        return self.service.settings

    def resolve(self, name_or_path: str) -> IndexMeta:
        return self.service.resolve(name_or_path)

    def repos(self) -> list[IndexMeta]:
        return self.service.repos()

    def index(
        self, path: str | Path, name: str | None = None, *, vectors: bool = True,
        wait: bool = True, existing: bool = False,
    ) -> IndexSummary:  # fmt: skip
        self.calls += 1
        self.asked.append(name)
        assert self.gate.wait(TIMEOUT)
        return self.service.index(path, name, vectors=vectors, wait=wait, existing=existing)


def until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


@contextmanager
def stopped_by_sigterm(proc: subprocess.Popen[bytes], log: Path) -> Iterator[None]:
    """Run the block, then stop ``proc`` with SIGTERM: it exits 0 within the timeout."""
    try:
        yield
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(TIMEOUT) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def defined(service: ContextService, name: str, repo: str = "demo") -> bool:
    return bool(service.symbol_uses(repo, name).definitions)


def watch_threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"watch-{name}" and t.is_alive()]


@pytest.fixture
def watching(service: ContextService, repo: Path) -> Iterator[tuple[Watcher, Counting]]:
    """A watcher of the indexed sample repository, running in a thread, ready."""
    write_tree(repo, {".gitignore": "logs/\n*.log\n"})
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "ignore logs")
    service.index(repo)
    counting = Counting(service)
    watcher = Watcher(counting, "demo", catch_up=False)
    stop = threading.Event()
    thread = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
    thread.start()
    assert watcher.ready.wait(TIMEOUT)
    try:
        yield watcher, counting
    finally:
        stop.set()
        thread.join(TIMEOUT)
        assert not thread.is_alive()


def test_a_new_function_is_found_once_written(
    watching: tuple[Watcher, Counting], service: ContextService, repo: Path
) -> None:
    store = repo / "app" / "store.py"
    store.write_text(store.read_text() + "\n\ndef freshly_watched(x: int) -> int:\n    return x\n")
    until(lambda: defined(service, "freshly_watched"), "the new function in the index")
    until(lambda: bool(watching[0].runs), "the run to finish")
    # refresh=False: the answer is the index's own, not a re-index done by the query.
    pack = service.context("demo", "freshly_watched", 4000, refresh=False)
    assert "freshly_watched" in pack.rendered
    assert watching[0].runs[-1].changed == ("app/store.py",)


def test_ignored_paths_set_off_no_run(watching: tuple[Watcher, Counting], repo: Path) -> None:
    watcher, counting = watching
    write_tree(
        repo,
        {
            "logs/debug.py": "def noise() -> None: ...\n",
            "app/run.log": "noise\n",
            ".git/watch-probe": "noise\n",
            "node_modules/pkg/index.js": "export const x = 1;\n",
            "build/out.py": "x = 1\n",
        },
    )
    # A change that counts, written after: the runs up to it are all that happened.
    write_tree(repo, {"app/sentinel.py": "def sentinel() -> None: ...\n"})
    until(lambda: bool(watcher.runs), "the sentinel's run")
    assert counting.calls == len(watcher.runs) == 1
    assert watcher.runs[0].changed == ("app/sentinel.py",)


def test_a_burst_of_writes_is_coalesced(
    watching: tuple[Watcher, Counting], service: ContextService, repo: Path
) -> None:
    watcher, counting = watching
    names = [f"burst_{i}" for i in range(6)]
    for name in names:
        write_tree(repo, {f"app/{name}.py": f"def {name}() -> None: ...\n"})
    until(lambda: all(defined(service, n) for n in names), "every function of the burst")
    until(lambda: len(watcher.runs) == counting.calls, "the last run to finish")
    assert 1 <= counting.calls < len(names)
    assert {p for run in watcher.runs for p in run.changed} == {f"app/{n}.py" for n in names}


def test_indexed_paths_follow_the_walk(tmp_path: Path) -> None:
    root = tmp_path / "r"
    write_tree(
        root,
        {
            ".gitignore": "*.log\n/out/\n!keep.log\n",
            "pkg/.gitignore": "gen/\n",
            "pkg/gen/x.py": "",
            "env/pyvenv.cfg": "",
            "out/a.py": "",
        },
    )
    home = root / ".ctxsvc-home"
    wanted = IndexedPaths(root, home)
    for rel, expected in [
        ("app/main.py", True),
        ("pkg/gen/x.py", False),  # the nested .gitignore
        ("a/b.log", False),
        ("keep.log", True),  # re-included
        ("out/a.py", False),  # anchored directory pattern
        ("sub/out/a.py", True),
        (".git/HEAD", False),
        ("node_modules/x/y.js", False),
        ("env/lib/site.py", False),  # a virtualenv
        ("x.egg-info/PKG-INFO", False),
        (".ctxsvc-home/db/t.lance", False),  # the data directory
        (".gitignore", True),
    ]:
        assert wanted(None, str(root / rel)) is expected, rel
    assert wanted(None, str(tmp_path / "elsewhere.py")) is False
    # An edited .gitignore applies to the next change.
    (root / ".gitignore").write_text("*.py\n")
    assert wanted(None, str(root / "app" / "main.py")) is False


@pytest.mark.slow
def test_cli_watch_picks_up_an_edit_and_stops_on_sigterm(repo: Path, tmp_path: Path) -> None:
    env = cli_env(tmp_path / "home")
    done = run_cli(env, "index", str(repo), "--no-vectors", "--json")
    assert done.returncode == 0, done.stderr
    log = tmp_path / "watch.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ctxsvc", "watch", "demo"],
            env=env,
            stdout=sink,
            stderr=sink,
        )
    with stopped_by_sigterm(proc, log):
        until(lambda: "caught up" in log.read_text(), "the watcher's catch-up run")
        store = repo / "app" / "store.py"
        store.write_text(store.read_text() + "\n\ndef cli_watched() -> None: ...\n")
        until(lambda: "1 files changed" in log.read_text(), "the re-index of the edit")
        q = run_cli(
            env, "query", "demo", "cli_watched", "--no-vectors", "--no-server", "--no-refresh",
            "--json", timeout=120,
        )  # fmt: skip
        assert q.returncode == 0, q.stderr
        assert "cli_watched" in json.loads(q.stdout)["rendered"]
    assert "re-indexed demo" in log.read_text()


# -- a server's watches (serve --watch) ---------------------------------------------------


@pytest.fixture
def counted(indexed: ContextService) -> Counting:
    return Counting(indexed)


@pytest.fixture
def watching_all(counted: Counting) -> Iterator[Watching]:
    """Every index of ``indexed`` watched (its runs ``counted``), the list of indexes read
    every 0.1 s."""
    watching = Watching(counted, poll_s=0.1, retry_s=0.1)
    watching.start()
    try:
        yield watching
    finally:
        assert watching.stop(TIMEOUT)
    assert not [t for t in threading.enumerate() if t.name.startswith("watch")]


def watched(watching: Watching, name: str) -> Callable[[], bool]:
    def check() -> bool:
        status = watching.status(name)
        return status is not None and status.state == "watching" and status.runs >= 1

    return check  # once caught up: the watch is set up


def test_an_index_added_after_the_start_is_watched(
    watching_all: Watching, indexed: ContextService, tmp_path: Path
) -> None:
    until(watched(watching_all, "demo"), "the watch of demo")
    other = tmp_path / "other"
    write_tree(other, {"lib/util.py": "def helper() -> None: ...\n"})
    indexed.index(other)
    until(watched(watching_all, "other"), "the watch of the index added")
    write_tree(other, {"lib/late.py": "def added_later() -> None: ...\n"})
    until(lambda: bool(indexed.symbol_uses("other", "added_later").definitions), "the edit")
    status = watching_all.status("other")
    assert status is not None and status.last_error is None
    until(lambda: (watching_all.status("other") or status).last_run_changed == ("lib/late.py",),
          "the run's status")  # fmt: skip


def test_a_vanished_root_is_skipped_and_a_dropped_index_not_rebuilt(
    watching_all: Watching, counted: Counting, indexed: ContextService, repo: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    other = tmp_path / "other"
    write_tree(other, {"lib/util.py": "def helper() -> None: ...\n"})
    indexed.index(other)
    until(watched(watching_all, "demo"), "the watch of demo")
    until(watched(watching_all, "other"), "the watch of other")
    moved = tmp_path / "moved"
    other.rename(moved)
    until(lambda: getattr(watching_all.status("other"), "state", "") == "root_missing",
          "the vanished root noticed")  # fmt: skip
    moved.rename(other)  # back: watched again
    until(watched(watching_all, "other"), "the root back")
    # Dropped while a run of a change waits for the repository's lock, as a drop holds it:
    # the run builds nothing once it has the lock, and the watch stops.
    with FileLock(indexed.settings.locks_path / "other.lock", "index 'other'"):
        asked = len(counted.asked)
        write_tree(other, {"lib/after.py": "def after_drop() -> None: ...\n"})
        until(lambda: "other" in counted.asked[asked:], "the run of the change")
        indexed.catalog.store.drop("other")  # what `ctxsvc drop` does under the lock
    until(lambda: not watch_threads("other"), "the watch of the dropped index to stop")
    assert "other" not in indexed.names()
    until(lambda: watching_all.status("other") is None, "the watch of the dropped index gone")
    # The other index is still watched meanwhile.
    store = repo / "app" / "store.py"
    store.write_text(store.read_text() + "\n\ndef still_watched() -> None: ...\n")
    until(lambda: defined(indexed, "still_watched"), "the edit of demo")
    assert "other" not in indexed.names()


def test_a_run_of_an_existing_index_builds_none_dropped_or_re_pointed(
    service: ContextService, repo: Path, tmp_path: Path
) -> None:
    service.index(repo)
    service.drop("demo")
    with pytest.raises(RepoNotFound, match="dropped or re-pointed"):
        service.index(repo, "demo", existing=True)
    assert service.names() == []
    assert service.index(repo, "demo", existing=False).repo == "demo"  # unless asked


def test_an_index_re_pointed_is_watched_at_its_new_root(
    watching_all: Watching, indexed: ContextService, tmp_path: Path
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    write_tree(first, {"lib/a.py": "def in_first() -> None: ...\n"})
    write_tree(second, {"lib/b.py": "def in_second() -> None: ...\n"})
    indexed.index(first, "other")
    until(watched(watching_all, "other"), "the watch of other")
    indexed.index(second, "other", rebuild=True)  # the name now indexes another directory
    write_tree(second, {"lib/late.py": "def second_late() -> None: ...\n"})
    until(lambda: defined(indexed, "second_late", "other"), "the edit under the new root")
    until(lambda: len(watch_threads("other")) == 1, "the old root's watch to stop")
    assert indexed.resolve("other").root == str(second)


def held_run(
    watching: Watching, counted: Counting, indexed: ContextService, tmp_path: Path
) -> Path:
    """Index ``other`` watched, and a run of a change to it under way, held at the gate."""
    other = tmp_path / "other"
    write_tree(other, {"lib/util.py": "def helper() -> None: ...\n"})
    indexed.index(other)
    until(watched(watching, "other"), "the watch of other")
    counted.gate.clear()
    asked = len(counted.asked)
    write_tree(other, {"lib/slow.py": "def slow() -> None: ...\n"})
    until(lambda: "other" in counted.asked[asked:], "the run of the change")
    return other


def test_a_watch_starts_again_only_once_its_last_run_ended(
    watching_all: Watching, counted: Counting, indexed: ContextService, tmp_path: Path
) -> None:
    other, moved = held_run(watching_all, counted, indexed, tmp_path), tmp_path / "moved"
    other.rename(moved)
    until(lambda: getattr(watching_all.status("other"), "state", "") == "root_missing",
          "the vanished root noticed")  # fmt: skip
    moved.rename(other)
    time.sleep(1.0)  # ten looks at the root back while the old watch's run is under way
    assert len(watch_threads("other")) == 1
    counted.gate.set()
    until(watched(watching_all, "other"), "the watch started again")
    until(lambda: defined(indexed, "slow", "other"), "the run under way to commit")
    assert len(watch_threads("other")) == 1


def test_stopping_waits_for_the_run_of_a_dropped_index(
    watching_all: Watching, counted: Counting, indexed: ContextService, tmp_path: Path
) -> None:
    held_run(watching_all, counted, indexed, tmp_path)
    indexed.drop("other")  # the run has not taken the lock yet
    until(lambda: watching_all.status("other") is None, "the watch of the dropped index gone")
    opening = threading.Timer(0.5, counted.gate.set)
    opening.start()
    try:
        assert watching_all.stop(TIMEOUT)
        assert not watch_threads("other")
    finally:
        opening.join()
    assert "other" not in indexed.names()


def test_watching_names_only_those_and_refuses_an_unknown_one(indexed: ContextService) -> None:
    with pytest.raises(RepoNotFound):
        Watching(indexed, ["nope"])
    assert Watching(indexed, ["demo"]).names == {"demo"}


@pytest.mark.slow
def test_serve_watch_answers_an_edit_and_stops_on_sigterm(repo: Path, tmp_path: Path) -> None:
    # No model: the server is ready at once (the index has no vectors anyway).
    env = cli_env(tmp_path / "home", CTXSVC_MODEL=str(tmp_path / "no-such-model"))
    assert run_cli(env, "index", str(repo), "--no-vectors").returncode == 0
    port, log = free_port(), tmp_path / "server.log"
    proc = start_server(env, port, log, "--watch")
    base = f"http://127.0.0.1:{port}"
    with stopped_by_sigterm(proc, log):

        def status() -> dict[str, Any]:
            watch: dict[str, Any] = httpx.get(f"{base}/v1/repos/demo", timeout=10).json()["watch"]
            return watch

        until(lambda: status()["state"] == "watching" and status()["runs"] >= 1, "the catch-up")
        store = repo / "app" / "store.py"
        store.write_text(store.read_text() + "\n\ndef served_and_watched() -> None: ...\n")
        # refresh false: the answer is the index's own, not a re-index done by the query.
        body = {"repo": "demo", "query": "served_and_watched", "budget_tokens": 1000,
                "refresh": False}  # fmt: skip

        def answered() -> bool:
            r = httpx.post(f"{base}/v1/context", json=body, timeout=10)
            return r.status_code == 200 and "served_and_watched" in r.json()["rendered"]

        until(answered, "the new function in the server's answer")
        until(lambda: status()["last_run_changed"] == ["app/store.py"], "the run's status")
        assert status()["last_run_at"] and status()["last_error"] is None
        # The CLI's status, through the server, says it too.
        shown = run_cli(env, "status", "demo", timeout=120)
        assert shown.returncode == 0 and "watching since" in shown.stdout, shown.stderr
    lines = log.read_text()
    assert "re-indexed demo: 1 files changed" in lines and "stopped watching demo" in lines


def test_serve_watch_takes_no_name_or_names(tmp_path: Path) -> None:
    from ctxsvc.cli.parser import build_parser

    parse = build_parser().parse_args
    assert parse(["serve"]).watch is None
    assert parse(["serve", "--watch"]).watch == [None]  # every index
    assert parse(["serve", "--watch", "a", "--watch", "b"]).watch == ["a", "b"]
    # An unknown name fails before anything listens, as `ctxsvc watch` does.
    done = run_cli(cli_env(tmp_path / "home"), "serve", "--watch", "nope", "--port", "0")
    assert done.returncode == 3 and "no index named or rooted at 'nope'" in done.stderr
