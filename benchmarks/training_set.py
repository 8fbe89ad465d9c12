"""Training and unseen task sets: one snapshot per repository, the commits after it as tasks.

For each repository (a fetched bare mirror under ``--mirrors``), the snapshot
is the parent of the oldest of its most recent ``--train-tasks`` (or
``--unseen-tasks``) minable commits, so that the window after it holds about
that many tasks; ``--commits N`` instead puts the snapshot N first-parent
commits before HEAD. The tasks of the window (``mine_window``: all on that one
snapshot) go to ``OUT/tasks/<name>.jsonl`` (train) or ``OUT/unseen/<name>.jsonl``,
the corpus to ``OUT/corpora/<name>`` (a ``git clone --shared`` of the mirror
checked out at the snapshot, history present), and what was made to
``OUT/repos.json``. Prints a table and writes ``OUT/training_set.json``.

    python -m benchmarks.training_set
    python -m benchmarks.training_set --repos jinja,chi --out /tmp/ctxsvc-small

The six benchmark repositories (``benchmarks.localization.REPOS``) are never
part of either set. Fetched code stays under ``--out``, outside the project.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console
from rich.table import Table

from benchmarks.localization import REPOS as BENCHMARK_REPOS
from benchmarks.localization import BenchError, guarded
from benchmarks.paths import MIRRORS
from ctxsvc.bench.gitrepo import GitRepo, open_repo, run_git
from ctxsvc.bench.mining import is_source, mine, mine_window
from ctxsvc.bench.tasks import Task, dump_tasks


@dataclass(frozen=True)
class Source:
    """A repository of a set: its short name, GitHub name, language and split."""

    name: str
    github: str
    language: str
    split: str  # "train" | "unseen"


def _sources(split: str, rows: str) -> list[Source]:
    return [
        Source(n, g, lang, split) for n, g, lang in (r.split() for r in rows.strip().splitlines())
    ]


SOURCES: list[Source] = _sources(
    "train",
    """
    jinja pallets/jinja python
    httpx encode/httpx python
    attrs python-attrs/attrs python
    marshmallow marshmallow-code/marshmallow python
    flask pallets/flask python
    rich Textualize/rich python
    pydantic-settings pydantic/pydantic-settings python
    gin gin-gonic/gin go
    cli urfave/cli go
    logrus sirupsen/logrus go
    viper spf13/viper go
    express expressjs/express javascript
    got sindresorhus/got typescript
    koa koajs/koa javascript
    ripgrep BurntSushi/ripgrep rust
    clap clap-rs/clap rust
    serde serde-rs/serde rust
    gson google/gson java
    javapoet square/javapoet java
    fmt fmtlib/fmt c++
    cjson DaveGamble/cJSON c
    """,
) + _sources(
    "unseen",
    """
    starlette encode/starlette python
    chi go-chi/chi go
    zod colinhacks/zod typescript
    hyper hyperium/hyper rust
    jsoup jhy/jsoup java
    hiredis redis/hiredis c
    """,
)

out = Console(highlight=False, width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True, highlight=False)


def read_sources(path: Path | None) -> list[Source]:
    """The built-in list, or a JSON file of ``name -> {github, language, split}``."""
    if path is None:
        return SOURCES
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return [
            Source(
                name, str(v["github"]), str(v.get("language", "?")), str(v.get("split", "train"))
            )
            for name, v in data.items()
        ]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BenchError(f"cannot read the repository list {path}: {exc}") from None


def pick_snapshot(repo: GitRepo, name: str, tasks: int, commits: int | None) -> str:
    """The commit before a window of about ``tasks`` tasks (or of ``commits`` commits)."""
    if commits is not None:
        done = run_git(
            ["rev-list", "--first-parent", f"--skip={commits}", "-n1", "HEAD"],
            git_dir=repo.git_dir,
        )
        sha = done.stdout.decode().strip()
        if not sha:
            raise BenchError(f"{name} has fewer than {commits} first-parent commits")
        return sha
    recent = mine(repo, limit=tasks, name=name)
    if not recent:
        raise BenchError(f"{name}: no minable commit in its history")
    return recent[0].snapshot  # the parent of the oldest: every one of them is after it


def make_corpus(git_dir: Path, snapshot: str, target: Path) -> None:
    """``target`` as a shared clone of ``git_dir`` checked out (detached) at ``snapshot``."""
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    run_git(["clone", "-q", "--shared", "--no-checkout", str(git_dir), str(target)])
    run_git(["checkout", "-q", "--detach", "--force", snapshot], cwd=target)


def source_files(repo: GitRepo, snapshot: str) -> tuple[int, int]:
    """(source files, all files) in the snapshot's tree."""
    done = run_git(["ls-tree", "-r", "-z", "--name-only", snapshot], git_dir=repo.git_dir)
    names = [n for n in done.stdout.decode("utf-8", "replace").split("\0") if n]
    return sum(map(is_source, names)), len(names)


def build(source: Source, args: argparse.Namespace) -> dict[str, object]:
    """Mine one repository's window, write its task file and corpus; its repos.json row."""
    git_dir = args.mirrors / source.github.replace("/", "+") / "repo"
    if not git_dir.is_dir():
        raise BenchError(f"no mirror {git_dir}: fetch github:{source.github} first")
    repo = open_repo(git_dir)
    target = args.train_tasks if source.split == "train" else args.unseen_tasks
    cap = args.max_tasks or (target * 115 // 100 if source.split == "train" else target)
    # A window whose gold moved (a renamed package) keeps few of its tasks: a
    # longer one may keep more. The one keeping the most wins.
    best: tuple[str, list[Task]] | None = None
    for factor in (1.0, 1.5, 2.2) if args.commits is None else (1.0,):
        snapshot = pick_snapshot(repo, source.name, round(target * factor), args.commits)
        tasks = mine_window(repo, snapshot, limit=cap, name=source.name)
        if best is None or len(tasks) > len(best[1]):
            best = (snapshot, tasks)
        if len(best[1]) >= target * 0.9:
            break
    assert best is not None
    snapshot, tasks = best
    folder = args.out / ("tasks" if source.split == "train" else "unseen")
    folder.mkdir(parents=True, exist_ok=True)
    dump_tasks(tasks, folder / f"{source.name}.jsonl")
    if not args.no_corpora:
        make_corpus(git_dir, snapshot, args.out / "corpora" / source.name)
    window = run_git(
        ["rev-list", "--first-parent", "--count", f"{snapshot}..HEAD"], git_dir=repo.git_dir
    )
    src, files = source_files(repo, snapshot)
    return {
        "github": source.github,
        "language": source.language,
        "split": source.split,
        "snapshot": snapshot,
        "tasks": len(tasks),
        "window_commits": int(window.stdout.decode().strip()),
        "source_files": src,
        "files": files,
        "regions": sum(len(rs) for t in tasks for rs in t.regions.values()),
        "name_leaks": sum(t.name_leak for t in tasks),
        "first_date": tasks[0].date if tasks else None,
        "last_date": tasks[-1].date if tasks else None,
    }


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("/tmp/ctxsvc-train"))
    p.add_argument("--mirrors", type=Path, default=MIRRORS)
    p.add_argument("--repos", help="comma-separated subset of the names")
    p.add_argument("--repos-file", type=Path, help="JSON: name -> {github, language, split}")
    p.add_argument("--train-tasks", type=int, default=130, help="window size in tasks, train")
    p.add_argument("--unseen-tasks", type=int, default=50, help="window size in tasks, unseen")
    p.add_argument("--max-tasks", type=int, help="tasks kept per repository at most "
                   "(default: 115%% of the train target, the unseen target)")  # fmt: skip
    p.add_argument("--commits", type=int, help="snapshot N first-parent commits before HEAD")
    p.add_argument("--no-corpora", action="store_true", help="task files and repos.json only")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    return guarded(_run, _parser().parse_args(argv))


def _run(args: argparse.Namespace) -> int:
    sources = read_sources(args.repos_file)
    if args.repos:
        wanted = {r.strip() for r in args.repos.split(",") if r.strip()}
        unknown = wanted - {s.name for s in sources}
        if unknown:
            raise BenchError(f"unknown repos: {', '.join(sorted(unknown))}")
        sources = [s for s in sources if s.name in wanted]
    benchmark = {g.lower() for g in BENCHMARK_REPOS.values()}
    if clash := [s.name for s in sources if s.github.lower() in benchmark]:
        raise BenchError(f"{', '.join(clash)}: benchmark repositories never train or stay unseen")
    args.out.mkdir(parents=True, exist_ok=True)
    index = args.out / "repos.json"
    rows: dict[str, dict[str, object]] = json.loads(index.read_text()) if index.is_file() else {}
    started = time.perf_counter()
    for source in sources:
        t0 = time.perf_counter()
        rows[source.name] = build(source, args)
        index.write_text(json.dumps(rows, indent=2) + "\n")  # kept after each: others read it
        err.print(
            f"{source.name}: {rows[source.name]['tasks']} tasks at "
            f"{str(rows[source.name]['snapshot'])[:10]} ({time.perf_counter() - t0:.1f} s)"
        )
    table = Table(title=f"training set in {args.out}")
    for col in (
        "repo",
        "split",
        "language",
        "snapshot",
        "window",
        "tasks",
        "source files",
        "files",
    ):
        table.add_column(col, justify="left" if col in ("repo", "split", "language") else "right")
    for name, r in sorted(rows.items(), key=lambda kv: (str(kv[1]["split"]) != "train", kv[0])):
        table.add_row(
            name, str(r["split"]), str(r["language"]), str(r["snapshot"])[:10],
            str(r.get("window_commits", "")), str(r["tasks"]), str(r.get("source_files", "")),
            str(r.get("files", "")),
        )  # fmt: skip
    out.print(table)
    totals = {
        split: sum(int(str(r["tasks"])) for r in rows.values() if r["split"] == split)
        for split in ("train", "unseen")
    }
    out.print(f"tasks: {totals['train']} train, {totals['unseen']} unseen")
    summary = {"repos": rows, "totals": totals, "seconds": round(time.perf_counter() - started, 1)}
    (args.out / "training_set.json").write_text(json.dumps(summary, indent=2) + "\n")
    err.print(f"wrote {index} and {args.out / 'training_set.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
