"""``ctxsvc watch``: the index follows the files, ignored paths set nothing off."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import cli_env, git, run_cli, write_tree

from ctxsvc.models import IndexSummary
from ctxsvc.service import ContextService
from ctxsvc.settings import Settings
from ctxsvc.stores.lance_schema import IndexMeta
from ctxsvc.watch import IndexedPaths, Watcher

TIMEOUT = 20.0


class Counting:
    """The service, with its index runs counted (the seam a ``Watcher`` takes)."""

    def __init__(self, service: ContextService) -> None:
        self.service = service
        self.calls = 0

    @property
    def settings(self) -> Settings:
        return self.service.settings

    def resolve(self, name_or_path: str) -> IndexMeta:
        return self.service.resolve(name_or_path)

    def index(
        self, path: str | Path, name: str | None = None, *, vectors: bool = True, wait: bool = True
    ) -> IndexSummary:
        self.calls += 1
        return self.service.index(path, name, vectors=vectors, wait=wait)


def until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def defined(service: ContextService, name: str) -> bool:
    return bool(service.symbol_uses("demo", name).definitions)


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
    try:
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
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(TIMEOUT) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "re-indexed demo" in log.read_text()
