"""Diff-aware context: given the change to one file, does ``--diff`` find the rest?

Method. For each mined localization task of ``../shared/bench/tasks/*.jsonl``
with two or more gold files, the agent is given the change to the task's
*first* gold file only: that file's hunks of the task's commit
(``git diff <commit>^ <commit> -- <file>``) are applied with ``git apply`` to
a ``git clone --shared`` of the corpus at the snapshot. The commit may come
hundreds of commits after the snapshot, so the file may have drifted: the
hunks are tried as they are, then merged three ways, then placed without
context lines; failing all three, the commit's whole version of the file is
written (its diff then carries the drift too). Results are printed for all
tasks and for those applied cleanly (as they are or three ways). Then

* ``ctxsvc --diff``: ``ContextService.context(repo, query, B, diff="HEAD")``
  with the task's query text (the diff first, then changed definitions,
  callers, callees, tests, co-changed files; the query fills the rest);
* ``bm25-diff``: the project's BM25 baseline over 60-line windows
  (``ctxsvc.bench.baselines``), queried with the text of that file's
  ``git diff HEAD``, packed in rank order;
* ``ctxsvc query`` (reference): ``context`` with the query text only, asked at
  the clean snapshot before the change is applied, no diff.

Each is scored on the *other* gold files: file recall (share of them with at
least one delivered line) and region recall (share of their gold regions
wholly covered by delivered lines, over tasks that have such regions), as
``../shared/bench`` defines the metrics, at B = 4,000 and 8,000 tokens
(cl100k_base); a context over B scores 0. Regions are in the snapshot's line
numbers, which the other files keep, since only the first file changes.
Means are taken over tasks per repository, then over repositories.

ctxsvc indexes without vectors (full text, symbols and the graph answer the
query part; the diff signals need no vectors). A task whose change cannot be
brought onto the snapshot at all is skipped and counted. The working tree is reset
(``git checkout -- . && git clean -fdq``) after every task.

    python -m benchmarks.diff_context
    python -m benchmarks.diff_context --repos click,requests --tasks 10
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.paths import TASKS_DIR
from ctxsvc.bench.baselines import BM25Ranker, pack_ranked
from ctxsvc.bench.metrics import Delivered, delivered_lines, file_hit, mean, region_recall
from ctxsvc.bench.runner import Corpora
from ctxsvc.bench.tasks import Task, load_tasks
from ctxsvc.compose import build_service
from ctxsvc.models import ContextPack
from ctxsvc.service import ContextService
from ctxsvc.settings import Settings
from ctxsvc.tokens import TiktokenCounter

REPOS = ("axios", "click", "cobra", "pytest", "requests", "tokio")
BUDGETS = (4000, 8000)
SYSTEMS = ("ctxsvc-diff", "bm25-diff", "ctxsvc-query")
SOURCE_CORPORA = Path("/tmp/corpora")  # read only: cloned from, never changed
WORK = Path("/tmp/diffbench")
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "diff_context.json"


@dataclass(frozen=True)
class Row:
    """One system's score on one task at one budget."""

    system: str
    repo: str
    task: str
    budget: int
    file_recall: float | None
    region_recall: float | None
    tokens: int
    overrun: bool
    ms: float


@dataclass(frozen=True)
class Skip:
    task: str
    reason: str


def git(root: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *args], cwd=root, input=stdin, capture_output=True, text=True, errors="replace"
    )


def prepare_clone(repo: str, snapshot: str, work: Path) -> Path:
    """``work/corpora/repo``: a shared clone of ``/tmp/corpora/repo``, clean, at ``snapshot``."""
    target = work / "corpora" / repo
    if not (target / ".git").is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        done = git(work, "clone", "-q", "--shared", str(SOURCE_CORPORA / repo), str(target))
        if done.returncode != 0:
            raise SystemExit(f"cloning {repo} failed: {done.stderr.strip()}")
    done = git(target, "-c", "advice.detachedHead=false", "checkout", "-q", "--force", snapshot)
    if done.returncode != 0:
        raise SystemExit(f"checking out {repo} at {snapshot[:10]} failed: {done.stderr.strip()}")
    reset(target)
    return target


def reset(root: Path) -> None:
    git(root, "reset", "-q")  # unstage what a three-way apply staged
    git(root, "checkout", "--", ".")
    git(root, "clean", "-fdq")


# How the first file's change is brought onto the snapshot, most faithful first: the
# commit's hunks as they are, merged three ways (the file changed between the
# snapshot and the commit's parent), placed by their removed lines without
# context, or else the commit's whole version of the file (with that drift).
APPLIED = ("exact", "three-way", "no-context", "post-file")
CLEAN = ("exact", "three-way")  # the task's own change and nothing else
_APPLY = {"exact": [], "three-way": ["--3way"], "no-context": ["-C0", "--recount"]}


def apply_first_change(root: Path, task: Task) -> tuple[str, str] | None:
    """Apply the commit's change to ``task.gold[0]`` alone: (its ``git diff HEAD``, how).

    None when nothing applies (or the change leaves the file as it is).
    """
    path = task.gold[0]
    patch = git(
        root,
        "diff",
        "--no-color",
        "--no-renames",
        "--full-index",
        f"{task.commit}^",
        task.commit,
        "--",
        path,
    )
    if patch.returncode != 0 or not patch.stdout.strip():
        return None
    how = None
    for mode, flags in _APPLY.items():
        if git(root, "apply", *flags, "--whitespace=nowarn", "-", stdin=patch.stdout).returncode:
            reset(root)  # a conflicted three-way merge leaves markers behind
            continue
        how = mode
        break
    if how is None:
        after = subprocess.run(
            ["git", "show", f"{task.commit}:{path}"], cwd=root, capture_output=True
        )
        if after.returncode != 0:
            return None
        (root / path).write_bytes(after.stdout)
        how = "post-file"
    diff = git(root, "diff", "--no-color", "HEAD", "--", path).stdout
    return (diff, how) if diff else None


def others(task: Task) -> tuple[list[str], dict[str, list[list[int]]]]:
    """The gold files after the first, and their regions."""
    rest = list(task.gold[1:])
    return rest, {p: [list(r) for r in task.regions[p]] for p in rest if task.regions.get(p)}


def pack_lines(pack: ContextPack) -> Delivered:
    """The lines a pack quotes verbatim (as ``ctxsvc.bench.runner`` counts them)."""
    return delivered_lines(
        (i.path, a, z)
        for i in pack.items
        if i.kind != "skeleton"
        for a, z in (i.lines or ((i.start_line, i.end_line),))
    )


def score(
    system: str, task: Task, budget: int, delivered: Delivered, tokens: int, ms: float
) -> Row:
    gold, regions = others(task)
    overrun = tokens > budget
    hit, recall = file_hit(delivered, gold), region_recall(delivered, regions)
    return Row(
        system=system,
        repo=task.repo,
        task=task.id,
        budget=budget,
        file_recall=0.0 if overrun and hit is not None else hit,
        region_recall=0.0 if overrun and recall is not None else recall,
        tokens=tokens,
        overrun=overrun,
        ms=round(ms, 1),
    )


def run_repo(
    service: ContextService, corpora: Corpora, repo: str, tasks: Sequence[Task], work: Path
) -> tuple[list[Row], list[Skip], dict[str, str], dict[str, float]]:
    """Every system on every task of one repository."""
    counter = service.tokens
    t0 = time.perf_counter()
    root = prepare_clone(repo, tasks[0].snapshot, work)
    name = f"diffbench-{repo}"
    service.index(root, name, vectors=False)
    index_s = time.perf_counter() - t0
    docs, sizes, terms = corpora.documents(corpora.load(root), "windows")
    ranker = BM25Ranker(docs, terms)
    rows: list[Row] = []
    skips: list[Skip] = []
    methods: dict[str, str] = {}  # task id -> how its change was applied (APPLIED)
    for task in tasks:
        try:
            for budget in BUDGETS:  # the reference, at the clean snapshot
                t = time.perf_counter()
                pack = service.context(name, task.query, budget)
                ms = (time.perf_counter() - t) * 1000
                rows.append(
                    score(
                        "ctxsvc-query",
                        task,
                        budget,
                        pack_lines(pack),
                        counter.count(pack.rendered),
                        ms,
                    )
                )
            applied = apply_first_change(root, task)
            if applied is None:
                skips.append(Skip(task.id, f"the change to {task.gold[0]} does not apply"))
                rows = [r for r in rows if r.task != task.id]
                continue
            diff, methods[task.id] = applied
            for budget in BUDGETS:
                t = time.perf_counter()
                pack = service.context(name, task.query, budget, diff="HEAD")
                ms = (time.perf_counter() - t) * 1000
                rows.append(
                    score(
                        "ctxsvc-diff",
                        task,
                        budget,
                        pack_lines(pack),
                        counter.count(pack.rendered),
                        ms,
                    )
                )
            t = time.perf_counter()
            order = ranker.rank(diff)
            rank_ms = (time.perf_counter() - t) * 1000
            for budget in BUDGETS:
                t = time.perf_counter()
                packed = pack_ranked(
                    [docs[i] for i in order], budget, counter, sizes=[sizes[i] for i in order]
                )
                ms = rank_ms + (time.perf_counter() - t) * 1000
                rows.append(score("bm25-diff", task, budget, packed.delivered, packed.tokens, ms))
        finally:
            reset(root)
    service.index(root, name, vectors=False)  # leave the index at the clean snapshot
    return (
        rows,
        skips,
        methods,
        {"index_seconds": round(index_s, 1), "seconds": round(time.perf_counter() - t0, 1)},
    )


def summarize(rows: Sequence[Row], repos: Sequence[str]) -> dict[str, dict[str, object]]:
    """Per repository and overall (the mean over repositories): tasks and each mean."""
    table: dict[str, dict[str, object]] = {}
    for repo in [*repos, "overall"]:
        cell: dict[str, object] = {}
        for system in SYSTEMS:
            for budget in BUDGETS:
                for metric in ("file_recall", "region_recall"):
                    key = f"{system}/{metric}@{budget // 1000}K"
                    if repo == "overall":
                        cell[key] = mean(table[r][key] for r in repos)  # type: ignore[misc]
                    else:
                        cell[key] = mean(
                            getattr(r, metric)
                            for r in rows
                            if r.repo == repo and r.system == system and r.budget == budget
                        )
        if repo == "overall":
            cell["tasks"] = sum(int(table[r]["tasks"]) for r in repos)  # type: ignore[call-overload]
            cell["with_regions"] = sum(int(table[r]["with_regions"]) for r in repos)  # type: ignore[call-overload]
        else:
            first = [r for r in rows if r.repo == repo and r.system == "ctxsvc-diff"]
            cell["tasks"] = len({r.task for r in first})
            cell["with_regions"] = len({r.task for r in first if r.region_recall is not None})
        table[repo] = cell
    return table


def render(table: dict[str, dict[str, object]]) -> str:
    """The summary as a plain-text table, one block of four columns per system."""
    cols = [(s, m, b) for s in SYSTEMS for m in ("file", "region") for b in BUDGETS]
    width = 7
    lines = [
        f"{'':<22}" + "".join(f" | {s:<{4 * width - 3}}" for s in SYSTEMS),
        f"{'repo':<10}{'tasks':>6}{'w/reg':>6}"
        + "".join(
            (" |" if m == "file" and b == BUDGETS[0] else "")
            + f"{m[0]}@{b // 1000}K".rjust(width - 2 * (m == "file" and b == BUDGETS[0]))
            for _, m, b in cols
        ),
    ]
    for repo, cell in table.items():
        vals = []
        for s, m, b in cols:
            v = cell[f"{s}/{m}_recall@{b // 1000}K"]
            sep = m == "file" and b == BUDGETS[0]
            vals.append(
                (" |" if sep else "") + ("-" if v is None else f"{v:.2f}").rjust(width - 2 * sep)
            )
        lines.append(f"{repo:<10}{cell['tasks']:>6}{cell['with_regions']:>6}" + "".join(vals))
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repos", default=",".join(REPOS), help="comma-separated subset")
    p.add_argument("--tasks", type=int, help="first N multi-file tasks per repository")
    p.add_argument("--tasks-dir", type=Path, default=TASKS_DIR)
    p.add_argument("--work", type=Path, default=WORK, help="clones and the ctxsvc home")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    repos = [r.strip() for r in args.repos.split(",") if r.strip()]
    settings = Settings.from_env({}, home=args.work / "home")
    counter = TiktokenCounter(settings.encoding)
    service = build_service(settings, tokens=counter, vectors=False)
    corpora = Corpora(settings, counter)
    started = time.perf_counter()
    rows: list[Row] = []
    skips: list[Skip] = []
    runs: dict[str, dict[str, object]] = {}
    methods: dict[str, str] = {}
    for repo in repos:
        every = load_tasks(args.tasks_dir / f"{repo}.jsonl")
        multi = [t for t in every if len(t.gold) > 1][: args.tasks]
        print(
            f"{repo}: {len(multi)} of {len(every)} tasks have more than one gold file",
            file=sys.stderr,
            flush=True,
        )
        got, skipped, applied, timing = run_repo(service, corpora, repo, multi, args.work)
        rows += got
        skips += skipped
        methods.update(applied)
        runs[repo] = {
            "tasks": len(every),
            "multi_file": len(multi),
            "skipped": len(skipped),
            "applied": {m: sum(applied[t] == m for t in applied) for m in APPLIED},
            **timing,
        }
        print(
            f"{repo}: done in {timing['seconds']}s ({len(skipped)} skipped)",
            file=sys.stderr,
            flush=True,
        )
    table = summarize(rows, repos)
    clean = summarize([r for r in rows if methods.get(r.task) in CLEAN], repos)
    seconds = round(time.perf_counter() - started, 1)
    counts = ", ".join(f"{m} {list(methods.values()).count(m)}" for m in APPLIED)
    print(
        "ctxsvc indexed without vectors (full text, symbols, graph); recall over the gold "
        "files after the first; mean over tasks, then over repositories\n"
    )
    print(f"All tasks with more than one gold file (first file's change applied: {counts})")
    print(render(table))
    print("\nOnly the tasks whose change applied cleanly (exact or three-way)")
    print(render(clean))
    print(f"\n{table['overall']['tasks']} tasks used, {len(skips)} skipped; {seconds}s")
    report = {
        "method": __doc__,
        "config": {
            "repos": repos,
            "budgets": list(BUDGETS),
            "tasks_cap": args.tasks,
            "vectors": False,
            "encoding": settings.encoding,
            "home": str(settings.home),
            "cpus": os.cpu_count(),
        },
        "seconds": seconds,
        "runs": runs,
        "summary": table,
        "summary_clean": clean,
        "applied": methods,
        "skipped": [asdict(s) for s in skips],
        "rows": [asdict(r) for r in rows],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
