"""``ctxsvc bench`` on a git repository built here: mining, snapshots, metrics, reports."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import cli_env, run_cli

from ctxsvc.bench.gitrepo import CheckoutSnapshots, open_repo
from ctxsvc.bench.mining import clean_message, is_source, mine, names_a_gold_file
from ctxsvc.bench.report import write_report
from ctxsvc.bench.repository import bench_repository, index_name
from ctxsvc.bench.runner import check_systems, run_repo
from ctxsvc.bench.tasks import Task, dump_tasks, load_tasks
from ctxsvc.cli import main
from ctxsvc.errors import InvalidPath, InvalidRequest, NoTasks
from ctxsvc.service import ContextService
from ctxsvc.tokens import TiktokenCounter


def numbered(prefix: str, n: int) -> list[str]:
    return [f"{prefix}_{i} = {i}" for i in range(1, n + 1)]


SERVER = [
    '"""Serve requests."""',
    "import time",
    "",
    "TIMEOUT = 10",
    "",
    "",
    "def handle(request):",
    '    """Answer one request."""',
    "    started = time.time()",
    '    return {"ok": True, "took": time.time() - started}',
]
STORE = [
    '"""A key-value store kept in a JSON file."""',
    "import json",
    "",
    "",
    "def save(path, data):",
    '    open(path, "w").write(json.dumps(data))',
    "",
    "",
    "def load(path):",
    "    return json.loads(open(path).read())",
]
UTIL = ["CACHE = None", "", "DEBUG_FLAG = False", "", "def parse_config(text):", "    return text"]
MODULES = [f"pkg/mod_{c}.py" for c in "abcdef"]


class History:
    """A repository written commit by commit, each at its own date."""

    def __init__(self, root: Path, *, new: bool = True, day: int = 0) -> None:
        self.root = root
        self.day = day
        if new:
            root.mkdir()
            self.git("init", "-q", "-b", "main")

    def git(self, *args: str) -> str:
        date = f"2024-01-{self.day + 1:02d}T12:00:00+00:00"
        env = {**os.environ, "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
        return subprocess.run(
            ["git", "-c", "user.email=t@t", "-c", "user.name=t", *args],
            cwd=self.root, env=env, check=True, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip

    def write(self, path: str, lines: list[str]) -> None:
        p = self.root / path
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("\n".join(lines) + "\n")

    def commit(self, message: str, files: dict[str, list[str]]) -> str:
        self.day += 1
        for path, lines in files.items():
            self.write(path, lines)
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        return self.git("rev-parse", "HEAD")


@pytest.fixture
def history(tmp_path: Path) -> dict[str, str]:
    """Nine commits: three tasks, and six that must not become tasks."""
    h = History(tmp_path / "fixture")
    c = {"root": str(h.root)}
    c["init"] = h.commit(
        "Initial import of the demo package",
        {"pkg/server.py": SERVER, "pkg/store.py": STORE, "pkg/util.py": UTIL,
         "pkg/__init__.py": ['VERSION = "1.2.2"'], "tests/test_store.py": ["def test_x(): pass"],
         "docs/guide.md": ["# Guide", "", "Use the store."], "README.md": ["# Demo"],
         **{m: numbered(m[-4], 3) for m in MODULES}},
    )  # fmt: skip
    server = SERVER.copy()
    server[3] = "TIMEOUT = 30"
    server.append("def retry(request, budget=3):  # RETRY_SENTINEL")
    c["retry"] = h.commit(
        "Add a retry budget to the request loop",
        {"pkg/server.py": server, "tests/test_server.py": ["def test_retry(): pass"]},
    )
    c["tests"] = h.commit(
        "Cover the store with more tests",
        {"tests/test_store.py": ["def test_x(): pass", "def test_y(): pass"]},
    )
    c["docs"] = h.commit(
        "Document the store layout in the guide",
        {"docs/guide.md": ["# Guide", "", "The store is one JSON file."], "README.md": ["# Demo!"]},
    )
    store = STORE.copy()
    store[4:6] = ["def save(path, data):  # ATOMIC_SENTINEL", "    atomic_write(path, data)"]
    c["atomic"] = h.commit(
        "Persist store entries atomically (#42)\n\n"
        "Write to a temporary file, then rename it. Details: https://example.com/issues/42\n\n"
        "Fixes #41\n\n"
        "Signed-off-by: Dev <dev@example.com>\nCo-authored-by: Other <other@example.com>",
        {"pkg/store.py": store, "pkg/util.py": UTIL[:2] + UTIL[3:]},
    )
    h.git("checkout", "-q", "-b", "cache")
    h.commit("wip", {"pkg/util.py": ["CACHE = {}  # CACHE_SENTINEL", *UTIL[1:2], *UTIL[3:]]})
    h.git("checkout", "-q", "main")
    h.day += 1
    h.git("merge", "-q", "--no-ff", "cache", "-m", "Merge pull request #7 from dev/cache",
          "-m", "Cache parsed configs in memory")  # fmt: skip
    c["merge"] = h.git("rev-parse", "HEAD")
    c["six"] = h.commit(
        "Rename the logger in every module", {m: numbered(m[-4] + "x", 3) for m in MODULES}
    )
    c["typo"] = h.commit("Fix typo", {"pkg/server.py": [*server[:-1], "# typo fixed"]})
    c["added"] = h.commit("Add a module for metrics export", {"pkg/metrics.py": ["X = 1"]})
    c["bump"] = h.commit("Bump version to 1.2.3", {"pkg/__init__.py": ['VERSION = "1.2.3"']})
    return c


# -- mining ----------------------------------------------------------------------


def test_mining_finds_the_three_tasks_with_gold_regions_and_clean_queries(
    history: dict[str, str],
) -> None:
    repo = open_repo(Path(history["root"]))
    tasks = mine(repo, limit=10)
    assert [t.commit for t in tasks] == [history["retry"], history["atomic"], history["merge"]]
    assert [t.id for t in tasks] == ["fixture-000", "fixture-001", "fixture-002"]
    retry, atomic, merge = tasks

    assert retry.snapshot == history["init"]
    assert retry.gold == ("pkg/server.py",)  # the new test file is not gold
    # Line 4 rewritten; a definition inserted after the last line (10): the lines around it.
    assert retry.regions == {"pkg/server.py": ((4, 4), (10, 10))}
    assert retry.query == "Add a retry budget to the request loop"
    assert not retry.name_leak

    assert atomic.snapshot == history["docs"]
    assert atomic.gold == ("pkg/store.py", "pkg/util.py")
    assert atomic.regions == {"pkg/store.py": ((5, 6),), "pkg/util.py": ((3, 3),)}
    assert atomic.query == (
        "Persist store entries atomically Write to a temporary file, then rename it. Details"
    )
    assert atomic.name_leak  # "store" names pkg/store.py

    # A merged pull request: its first-parent diff, the title without the merge line.
    assert merge.snapshot == history["atomic"]
    assert merge.gold == ("pkg/util.py",)
    assert merge.regions == {"pkg/util.py": ((1, 1),)}
    assert merge.query == "Cache parsed configs in memory"
    assert not merge.name_leak


def test_mining_keeps_the_most_recent_tasks_and_honours_since(history: dict[str, str]) -> None:
    repo = open_repo(Path(history["root"]))
    assert [t.commit for t in mine(repo, limit=2)] == [history["atomic"], history["merge"]]
    assert [t.commit for t in mine(repo, limit=10, since="2024-01-04")] == [
        history["atomic"],
        history["merge"],
    ]
    assert mine(repo, limit=10, since="2030-01-01") == []


def test_a_linked_work_tree_is_mined_at_its_own_head(
    history: dict[str, str], tmp_path: Path, service: ContextService
) -> None:
    History(Path(history["root"]), new=False).git(
        "worktree", "add", "-q", "-b", "side", str(tmp_path / "side")
    )
    h = History(tmp_path / "side", new=False, day=20)
    side = h.commit(
        "Speed up config parsing with a lookup table", {"pkg/util.py": ["TABLE = {}", *UTIL[1:]]}
    )
    repo = open_repo(tmp_path / "side" / "pkg")  # any directory of the work tree
    assert (repo.head, repo.root, repo.name) == (side, tmp_path / "side", "side")
    tasks = mine(repo, limit=10)
    assert tasks[-1].commit == side
    assert mine(open_repo(Path(history["root"])), limit=1)[0].commit == history["merge"]
    # Its snapshots come from the shared object store.
    run = run_repo(
        service, "side", tasks[-1:], CheckoutSnapshots(repo, tmp_path / "snap"), index="side"
    )
    assert [s.commit for s in run.snapshots] == [tasks[-1].snapshot]


@pytest.mark.parametrize(
    ("message", "query"),
    [
        ("Fix parser (#12)\n\nSigned-off-by: A <a@b>", "Fix parser"),
        ("Merge pull request #3 from a/b\n\nSpeed up the cache", "Speed up the cache"),
        ("Handle EOF\n\nCloses #9\nSee https://x.org/y\n", "Handle EOF"),
        ("Use [the spec](https://x.org/spec) for `f()` (GH-4)", "Use the spec for `f()`"),
        ('Revert "Add x"\n\nThis reverts commit 0123456789abcdef.', 'Revert "Add x"'),
        ("Merge branch 'main' into feature", ""),
    ],
)
def test_clean_message(message: str, query: str) -> None:
    assert clean_message(message) == query


@pytest.mark.parametrize(
    ("path", "source"),
    [
        ("pkg/server.py", True),
        ("src/lib.rs", True),
        ("cmd/root_test.go", False),
        ("tests/test_x.py", False),
        ("pkg/test_x.py", False),
        ("lib/a.spec.ts", False),
        ("docs/conf.py", False),
        ("examples/basic.py", False),
        ("vendor/x/y.go", False),
        ("api/v1/types.pb.go", False),
        ("README.md", False),
        ("config.yaml", False),
    ],
)
def test_is_source(path: str, source: bool) -> None:
    assert is_source(path) is source


def test_name_leak_is_a_stem_named_as_a_word() -> None:
    assert names_a_gold_file("fix the Store loader", ["pkg/store.py"])
    assert not names_a_gold_file("fix the storage loader", ["pkg/store.py"])


def test_task_files_round_trip(tmp_path: Path, history: dict[str, str]) -> None:
    tasks = mine(open_repo(Path(history["root"])), limit=10)
    dump_tasks(tasks, tmp_path / "t.jsonl")
    assert load_tasks(tmp_path / "t.jsonl") == tasks
    assert load_tasks(tmp_path / "t.jsonl", limit=1) == tasks[:1]
    (tmp_path / "bad.jsonl").write_text('{"id": "x"}\n')
    with pytest.raises(InvalidRequest, match=r"bad\.jsonl:1 is not a task"):
        load_tasks(tmp_path / "bad.jsonl")


# -- the snapshot rule -----------------------------------------------------------


def indexed_text(service: ContextService, index: str) -> str:
    view = service.view(service.resolve(index))
    return "\n".join(c.text for c in view.chunks)


def test_no_task_is_answered_from_an_index_holding_its_own_change(
    history: dict[str, str], service: ContextService, tmp_path: Path
) -> None:
    repo = open_repo(Path(history["root"]))
    tasks = mine(repo, limit=10)
    sentinels = ["RETRY_SENTINEL", "ATOMIC_SENTINEL", "CACHE_SENTINEL"]
    source = CheckoutSnapshots(repo, tmp_path / "snap")
    for i, task in enumerate(tasks):
        run_repo(service, "fixture", [task], source, index="snap", budgets=(500,))
        text = indexed_text(service, "snap")
        # Its own change is absent, every earlier change is there: the snapshot is the parent.
        assert sentinels[i] not in text
        assert all(s in text for s in sentinels[:i])
        # The change does exist at the task's commit (the check above can fail).
        shown = subprocess.run(
            ["git", "-C", history["root"], "show", f"{task.commit}:{task.gold[0]}"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert sentinels[i] in shown
    # One work tree, re-indexed incrementally: the last step parsed only what changed.
    assert (tmp_path / "snap" / "pkg" / "store.py").read_text().count("ATOMIC_SENTINEL") == 1


# -- metrics on a known answer, and the report -----------------------------------


def test_runner_scores_the_oracle_and_whole_repository_exactly(
    history: dict[str, str], service: ContextService, counter: TiktokenCounter
) -> None:
    repo = open_repo(Path(history["root"]))
    tasks = mine(repo, limit=10)
    run = run_repo(
        service, "fixture", tasks, CheckoutSnapshots(repo, service.settings.home / "snap"),
        index="fx", budgets=(40, 100_000),
    )  # fmt: skip
    by = {(s.system, s.task, s.budget): s for s in run.scores}
    assert len(run.scores) == 6 * 3 * 2
    for task in tasks:
        # Whole-repository injection: every tracked text file of the parent, counted here again.
        names = subprocess.run(
            ["git", "-C", history["root"], "ls-tree", "-r", "--name-only", task.snapshot],
            capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        texts = [
            subprocess.run(
                ["git", "-C", history["root"], "show", f"{task.snapshot}:{n}"],
                capture_output=True, text=True, check=True,
            ).stdout
            for n in names
        ]  # fmt: skip
        whole = sum(counter.count_many(texts))
        small, large = by[("whole-repo", task.id, 40)], by[("whole-repo", task.id, 100_000)]
        assert small.tokens == large.tokens == whole
        assert (small.overrun, small.file_hit, small.region_recall) == (True, 0.0, 0.0)
        assert (large.overrun, large.file_hit, large.region_recall) == (False, 1.0, 1.0)
        assert large.savings == 0.0
        # The oracle sends the changed lines: all of them once the budget allows.
        oracle = by[("oracle", task.id, 100_000)]
        assert (oracle.file_hit, oracle.region_recall, oracle.overrun) == (1.0, 1.0, False)
        assert oracle.savings == pytest.approx(1 - oracle.tokens / whole)
        for system in ("ctxsvc", "bm25-files", "bm25-windows", "oracle"):
            assert by[(system, task.id, 40)].tokens <= 40  # never over budget
    assert [s.commit for s in run.snapshots] == [t.snapshot for t in tasks]


def test_bench_repository_writes_json_markdown_and_plots(
    history: dict[str, str], service: ContextService, tmp_path: Path
) -> None:
    repo = open_repo(Path(history["root"]))
    report = bench_repository(service, repo, tasks=10, budgets=(300, 2000))
    paths = write_report(report, tmp_path / "out")
    assert [p.name for p in paths] == [
        "report.json", "report.md", "report-recall.png", "report-tokens.png"
    ]  # fmt: skip
    data = json.loads(paths[0].read_text())
    assert data["config"]["index"] == index_name("bench-fixture", service.settings, True)
    assert data["repos"]["fixture"]["tasks"] == 3 and data["repos"]["fixture"]["name_leaks"] == 1
    assert set(data["mean"]) == {
        "ctxsvc",
        "bm25-files",
        "bm25-windows",
        "grep-agent",
        "oracle",
        "whole-repo",
    }
    assert data["mean"]["oracle"]["2000"]["region_recall"] == 1.0
    assert len(data["per_task"]) == 6 * 3 * 2 and len(data["tasks"]) == 3
    md = paths[1].read_text()
    assert "| system | budget | file hit | region recall |" in md
    assert "the lines that had to change were in the context" in md
    assert "fixture-001" in md and "![report-recall.png](report-recall.png)" in md
    for png in paths[2:]:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000

    # The same tasks from a task file give the same scores.
    dump_tasks([Task.from_json(t) for t in data["tasks"]], tmp_path / "tasks.jsonl")
    again = bench_repository(
        service, repo, tasks_file=tmp_path / "tasks.jsonl", budgets=(300, 2000)
    )
    assert without_latency(again["mean"]) == without_latency(report["mean"])


def without_latency(mean: dict[str, dict[str, dict[str, object]]]) -> object:
    return {
        system: {
            b: {k: v for k, v in cell.items() if not k.endswith("_ms")} for b, cell in cells.items()
        }
        for system, cells in mean.items()
    }


def test_bench_errors(tmp_path: Path, history: dict[str, str], service: ContextService) -> None:
    with pytest.raises(InvalidPath, match="is not a git repository"):
        open_repo(tmp_path)
    repo = open_repo(Path(history["root"]))
    with pytest.raises(NoTasks, match="since 2030-01-01"):
        bench_repository(service, repo, since="2030-01-01")
    foreign = Task("x-0", "x", "0" * 40, "1" * 40, "a query here", ("a.py",))
    dump_tasks([foreign], tmp_path / "foreign.jsonl")
    with pytest.raises(InvalidRequest, match="not in"):
        bench_repository(service, repo, tasks_file=tmp_path / "foreign.jsonl")
    with pytest.raises(InvalidRequest, match="unknown systems: grep"):
        bench_repository(service, repo, systems=["ctxsvc", "grep"])


# -- the command line ------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "code", "text"),
    [
        ("plain", 2, "is not a git repository"),
        ("tests-only", 2, "no commit of tests-only qualifies as a task"),
    ],
)
def test_cli_errors_are_one_line_and_an_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: str, code: int, text: str
) -> None:
    if make == "plain":
        (tmp_path / make).mkdir()
    else:
        h = History(tmp_path / make)
        h.commit("Initial import", {"pkg/a.py": ["A = 1"]})
        h.commit("Cover the module with tests", {"tests/test_a.py": ["def test(): pass"]})
    rc = main(["--home", str(tmp_path / "home"), "bench", str(tmp_path / make), "--no-vectors"])
    err = " ".join(capsys.readouterr().err.split())  # rich wraps at 80 columns here
    assert rc == code
    assert text in err and "Traceback" not in err


@pytest.mark.slow
def test_cli_bench_end_to_end(history: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "report"
    r = run_cli(
        cli_env(tmp_path / "home"), "bench", history["root"], "--no-vectors", "--tasks", "2",
        "--budgets", "500,2000", "--out", str(out),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "ctxsvc bench: fixture" in r.stdout and "region recall" in r.stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "report-recall.png", "report-tokens.png", "report.json", "report.md"
    ]  # fmt: skip
    data = json.loads((out / "report.json").read_text())
    assert [t["commit"] for t in data["tasks"]] == [history["atomic"], history["merge"]]
    assert data["config"]["budgets"] == [500, 2000] and data["config"]["vectors"] is False


def test_ablation_variants_run_beside_ctxsvc_under_their_own_names(
    history: dict[str, str], service: ContextService
) -> None:
    repo = open_repo(Path(history["root"]))
    tasks = mine(repo, limit=10)
    # Variants alone, without "ctxsvc": they index the snapshots themselves.
    systems = ("ctxsvc-fusion", "ctxsvc-no-history", "ctxsvc-fragments")
    run = run_repo(
        service, "fixture", tasks, CheckoutSnapshots(repo, service.settings.home / "snap"),
        index="fx", budgets=(200,), systems=systems,
    )  # fmt: skip
    assert sorted({s.system for s in run.scores}) == sorted(systems)
    assert len(run.scores) == len(systems) * len(tasks)
    assert all(s.tokens <= 200 and not s.overrun for s in run.scores)
    assert run.index == "fx" and any(s.file_hit for s in run.scores)
    with pytest.raises(InvalidRequest, match="ctxsvc-fusion"):
        check_systems(["ctxsvc-nonsense"])
