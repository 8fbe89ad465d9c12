"""``mine_window``: every task of a window on one snapshot, its regions in the snapshot's lines."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ctxsvc.bench.gitrepo import open_repo
from ctxsvc.bench.mining import mine, mine_window

ORIGINAL = [f"value_{i} = {i}" for i in range(1, 11)]  # pkg/core.py at the snapshot, lines 1-10
HEADER = ["# header one", "# header two", "# header three"]


def git(root: Path, *args: str, day: int = 1) -> str:
    date = f"2024-02-{day:02d}T12:00:00+00:00"
    env = {**os.environ, "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
    return subprocess.run(
        ["git", "-c", "user.email=t@t", "-c", "user.name=t", *args],
        cwd=root, env=env, check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip


@pytest.fixture
def window(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A snapshot, then five commits: four tasks on it and one whose gold came later."""
    root = tmp_path / "proj"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    shas: dict[str, str] = {}
    core = list(ORIGINAL)

    def commit(key: str, message: str, files: dict[str, list[str]]) -> None:
        for path, lines in files.items():
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_text("\n".join(lines) + "\n")
        day = len(shas) + 1
        git(root, "add", "-A", day=day)
        git(root, "commit", "-q", "-m", message, day=day)
        shas[key] = git(root, "rev-parse", "HEAD")

    commit("snapshot", "Start the package with its core values", {"pkg/core.py": core})
    core[2:2] = HEADER  # after line 2: the snapshot's line 6 is now line 9
    commit("insert", "Document the values with a header block", {"pkg/core.py": core})
    commit("add", "Add the extra helpers module", {"pkg/extra.py": ["def helper(): pass"]})
    core[8] = "value_6 = 66  # CHANGED"
    commit(
        "shifted",
        "Change the sixth value and the helper together",
        {"pkg/core.py": core, "pkg/extra.py": ["def helper(): return 1"]},
    )
    commit(
        "later", "Make the helper return two instead", {"pkg/extra.py": ["def helper(): return 2"]}
    )
    core[3] = "# header two, reworded"
    commit("inside", "Reword the second line of the header", {"pkg/core.py": core})
    return root, shas


def test_window_tasks_share_the_snapshot_and_map_regions_to_its_lines(
    window: tuple[Path, dict[str, str]],
) -> None:
    root, shas = window
    repo = open_repo(root)
    tasks = mine_window(repo, shas["snapshot"], limit=10, name="proj")
    by_commit = {t.commit: t for t in tasks}
    assert [t.id for t in tasks] == ["proj-000", "proj-001", "proj-002"]
    assert [t.commit for t in tasks] == [shas["insert"], shas["shifted"], shas["inside"]]
    assert {t.snapshot for t in tasks} == {shas["snapshot"]}

    # The in-between insertion of three lines shifts the change back from line 9 to 6,
    # and the helper, added after the snapshot, is not gold.
    shifted = by_commit[shas["shifted"]]
    assert shifted.gold == ("pkg/core.py",)
    assert shifted.regions == {"pkg/core.py": ((6, 6),)}
    assert ORIGINAL[6 - 1] == "value_6 = 6"
    # The same commit mined on its own parent keeps the parent's numbering.
    alone = next(t for t in mine(repo, limit=10) if t.commit == shas["shifted"])
    assert alone.snapshot == shas["add"]
    assert alone.regions["pkg/core.py"] == ((9, 9),)

    # A line written in between stands for the snapshot's lines around that insertion.
    assert by_commit[shas["insert"]].regions == {"pkg/core.py": ((2, 3),)}
    assert by_commit[shas["inside"]].regions == {"pkg/core.py": ((2, 3),)}


def test_a_task_whose_gold_did_not_exist_at_the_snapshot_is_dropped(
    window: tuple[Path, dict[str, str]],
) -> None:
    root, shas = window
    repo = open_repo(root)
    assert shas["later"] in {t.commit for t in mine(repo, limit=10)}  # a task on its own parent
    assert shas["later"] not in {t.commit for t in mine_window(repo, shas["snapshot"], limit=10)}
    # Later snapshots see the helper: from "add" on, it is gold.
    after_add = mine_window(repo, shas["add"], limit=10)
    assert [t.commit for t in after_add] == [shas["shifted"], shas["later"], shas["inside"]]
    assert after_add[0].gold == ("pkg/core.py", "pkg/extra.py")


def test_the_window_is_cut_at_limit_oldest_first(window: tuple[Path, dict[str, str]]) -> None:
    root, shas = window
    tasks = mine_window(open_repo(root), shas["snapshot"][:10], limit=2)
    assert [t.commit for t in tasks] == [shas["insert"], shas["shifted"]]
    assert tasks[0].snapshot == shas["snapshot"]  # an abbreviated sha comes back whole
