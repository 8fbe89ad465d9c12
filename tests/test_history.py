"""Git history signals on a real git repository built in the test."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

import pytest
from conftest import git

from ctxsvc.history import FileHistory, History, key, read_history, save
from ctxsvc.service import ContextService

DAY = 86400
T0 = 1_700_000_000

# ``target`` is lines 5-8 when written (its body's first line, 6, is edited later); an insertion of 5 lines above it moves it to 10-13.
MOD = "import os\n\n\n# the target\ndef target():\n    a = 1\n    return a\n\n"
FUNNY = 'dir with space/ü "q".py'


def commit(root: Path, day: int, files: dict[str, str], message: str = "change") -> str:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    stamp = f"{T0 + day * DAY} +0000"
    env = {**os.environ, "GIT_AUTHOR_DATE": stamp, "GIT_COMMITTER_DATE": stamp}
    run = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*run, "add", "-A"], cwd=root, check=True, env=env)
    subprocess.run(
        [*run, "commit", "-q", "--allow-empty", "-m", message], cwd=root, check=True, env=env
    )
    return git(root, "rev-parse", "HEAD").strip()


@pytest.fixture
def history_repo(tmp_path: Path) -> Path:
    root = tmp_path / "hist"
    root.mkdir()
    git(root, "init", "-q")
    commit(root, 0, {
        "hot.py": "h = 0\n", "cold.py": "c = 0\n", "a.py": "a = 0\n", "b.py": "b = 0\n",
        "mod.py": MOD, FUNNY: "x = 1\n", "sub/inner.py": "i = 0\n",
    })  # fmt: skip
    commit(root, 10, {"hot.py": "h = 1\n", "a.py": "a = 1\n", "b.py": "b = 1\n"})
    commit(root, 20, {"mod.py": MOD.replace("a = 1", "a = 2")})  # edits target's body
    inserted = "".join(f"# new {i}\n" for i in range(5))
    commit(root, 30, {
        "mod.py": inserted + MOD.replace("a = 1", "a = 2"), "a.py": "a = 3\n", "b.py": "b = 3\n",
    })  # fmt: skip
    commit(root, 40, {"hot.py": "h = 4\n", "a.py": "a = 4\n", "b.py": "b = 4\n"})
    return root


def test_file_counts_and_age(history_repo: Path) -> None:
    h = read_history(history_repo)
    assert h.commits == 5
    assert h.head == git(history_repo, "rev-parse", "HEAD").strip()
    assert h.file("hot.py") == FileHistory(3, 0.0)
    assert h.file("cold.py") == FileHistory(1, 40.0)
    assert h.file(FUNNY) == FileHistory(1, 40.0)  # a quoted name, unquoted
    assert h.file("absent.py") is None


def test_cochange(history_repo: Path) -> None:
    h = read_history(history_repo)
    assert h.cochanged("a.py")["b.py"] == 1.0  # always together
    assert h.cochanged("a.py")["hot.py"] == 0.75  # 3 of a.py's 4 commits
    assert h.cochanged("hot.py")["a.py"] == 1.0
    assert h.cochanged("mod.py")["a.py"] == pytest.approx(2 / 3)
    assert h.cochanged("nothing.py") == {}


def test_span_follows_lines_moved_by_later_insertions(history_repo: Path) -> None:
    h = read_history(history_repo)
    # target is at 10-13 now: the first commit wrote it, the one of day 20 edited it,
    # the insertion above it (day 30) did not touch it.
    assert h.span("mod.py", 10, 13) == (2, 20.0)
    assert h.span("mod.py", 11, 11) == (1, 20.0)  # the edited line: day 0's text is gone
    assert h.span("mod.py", 12, 13) == (1, 40.0)  # untouched since it was written
    assert h.span("mod.py", 10, 10) == (1, 40.0)
    assert h.span("mod.py", 1, 5) == (1, 10.0)  # the inserted lines
    assert h.span("missing.py", 1, 5) == (0, None)


def test_subdirectory_root_has_paths_relative_to_it(history_repo: Path) -> None:
    h = read_history(history_repo / "sub")
    assert h.commits == 1  # only the commits that touch the directory
    assert h.file("inner.py") == FileHistory(1, 40.0)
    assert h.file("hot.py") is None and h.file("sub/inner.py") is None


def test_not_git_is_empty(tmp_path: Path) -> None:
    (tmp_path / "x.py").write_text("x = 1\n")
    h = read_history(tmp_path)
    assert h is History.EMPTY and h.commits == 0 and h.head is None
    assert h.file("x.py") is None and h.span("x.py", 1, 1) == (0, None)


def test_capped_read_keeps_whole_commits(history_repo: Path) -> None:
    assert read_history(history_repo, max_commits=2).commits == 2
    h = read_history(history_repo, max_seconds=0.0)
    assert h.capped and h.commits < 5


def test_round_trip(history_repo: Path) -> None:
    h = read_history(history_repo)
    root, back = History.loads(h.dumps("/r"))
    assert root == "/r" and back.head == h.head and back.commits == h.commits
    assert back.span("mod.py", 10, 13) == h.span("mod.py", 10, 13)
    assert back.cochanged("a.py") == h.cochanged("a.py") and back.file("cold.py") == h.file(
        "cold.py"
    )
    with pytest.raises(ValueError):
        History.loads(h.dumps("/r")[:-10])


def test_index_run_stores_it_and_recomputes_when_head_moves(
    service: ContextService, history_repo: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = service.index(history_repo)
    assert "history" in [t.stage for t in first.timings]
    view = service.catalog.view(service.catalog.resolve("hist"))
    assert view.history.head == first.commit and view.history.commits == 5
    assert view.history.file("hot.py") == FileHistory(3, 0.0)

    again = service.index(history_repo)  # HEAD did not move: nothing read
    assert "history" not in [t.stage for t in again.timings]

    head = commit(history_repo, 50, {}, "empty")  # HEAD moves, no file changes
    moved = service.index(history_repo)
    assert moved.commit == head and moved.files_indexed == 0
    assert "history" in [t.stage for t in moved.timings]
    view = service.catalog.view(service.catalog.resolve("hist"))
    assert view.history.head == head and view.history.commits == 6
    assert view.history.file("cold.py") == FileHistory(1, 50.0)

    # A damaged file is not served (EMPTY, a warning) and the next run reads it again.
    path = Path(service.store.blobs.where(key("hist")))
    path.write_bytes(path.read_bytes()[:100])
    commit(history_repo, 60, {}, "empty again")
    service.index(history_repo)  # a new generation: its view loads the repaired file
    assert service.catalog.view(service.catalog.resolve("hist")).history.commits == 7
    path.write_bytes(b"{not json")
    caplog.set_level(logging.WARNING, "ctxsvc.view")
    reloaded = type(view).load(service.store.reader("hist"))
    assert reloaded.history is History.EMPTY
    assert any("git history unreadable" in r.getMessage() for r in caplog.records)
    assert service.context("hist", "target", 400).items  # a query does not fail for it


def test_a_stale_sidecar_is_not_served(service: ContextService, history_repo: Path) -> None:
    service.index(history_repo)
    path = Path(service.store.blobs.where(key("hist")))
    save(service.store.blobs, "hist", History("0" * 40, 1, {}, {}, {}, [0.0]), str(history_repo))
    view = type(service.catalog.view(service.catalog.resolve("hist"))).load(
        service.store.reader("hist")
    )
    assert view.history is History.EMPTY
    assert not list(path.parent.glob("*.tmp"))


def test_non_git_root_indexes_with_empty_history(service: ContextService, tmp_path: Path) -> None:
    root = tmp_path / "plain"
    root.mkdir()
    (root / "m.py").write_text("def f():\n    return 1\n")
    s = service.index(root)
    assert "history" not in [t.stage for t in s.timings]
    assert service.catalog.view(service.catalog.resolve("plain")).history is History.EMPTY


def test_a_merge_counts_once_as_its_first_parent_diff(history_repo: Path) -> None:
    git(history_repo, "checkout", "-q", "-b", "side")
    commit(history_repo, 41, {"side.py": "s = 1\n"})
    commit(history_repo, 42, {"side.py": "s = 2\n", "cold.py": "c = 1\n"})
    git(history_repo, "checkout", "-q", "-")
    commit(history_repo, 43, {"hot.py": "h = 5\n"})
    stamp = f"{T0 + 44 * DAY} +0000"
    env = {**os.environ, "GIT_AUTHOR_DATE": stamp, "GIT_COMMITTER_DATE": stamp}
    subprocess.run(
        ["git", "-c", "user.email=t@t", "-c", "user.name=t", "merge", "-q", "--no-ff", "-m",
         "merge", "side"], cwd=history_repo, check=True, env=env,
    )  # fmt: skip
    h = read_history(history_repo)
    assert h.commits == 7  # five, one on this branch, the merge; not the side's two
    assert h.file("side.py") == FileHistory(1, 0.0)
    assert h.file("cold.py") == FileHistory(2, 0.0)
    assert h.cochanged("side.py") == {"cold.py": 1.0}


def test_a_shallow_clone_leaves_out_its_boundary(history_repo: Path, tmp_path: Path) -> None:
    clone = tmp_path / "shallow"
    git(tmp_path, "clone", "-q", "--depth", "2", f"file://{history_repo}", str(clone))
    h = read_history(clone)
    assert h.commits == 1  # the boundary commit's diff would be the whole tree
    assert h.file("hot.py") == FileHistory(1, 0.0) and h.file("cold.py") is None
