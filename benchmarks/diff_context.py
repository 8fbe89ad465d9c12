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
  with the task's query text (the diff first, then the query's hits and the
  change's links, ranked together: changed definitions, callers, callees,
  tests, co-changed files);
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

The weighting of ``--diff`` (:class:`ctxsvc.impact.DiffWeights`) is the
production one unless ``--weights`` names others of :data:`WEIGHTS`: each is
run on the same tasks in one process (systems ``ctxsvc-diff:<name>``). Tune
on the training repositories (``benchmarks.training_set``), never on the six:

    python -m benchmarks.diff_context
    python -m benchmarks.diff_context --repos click,requests --tasks 10
    python -m benchmarks.diff_context --weights old,default
    python -m benchmarks.diff_context --repos-file /tmp/ctxsvc-train/repos.json \\
        --tasks-dir /tmp/ctxsvc-train/tasks --corpora /tmp/ctxsvc-train/corpora \\
        --work /tmp/diffbench-train --tasks 10 --weights old,sum --out /tmp/train.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.localization import BenchError, load_repos
from benchmarks.paths import TASKS_DIR
from ctxsvc.bench.baselines import BM25Ranker, pack_ranked
from ctxsvc.bench.metrics import Delivered, delivered_lines, file_hit, mean, region_recall
from ctxsvc.bench.runner import Corpora
from ctxsvc.bench.tasks import Task, load_tasks
from ctxsvc.compose import build_service
from ctxsvc.impact import DIFF_WEIGHTS, DiffWeights
from ctxsvc.models import ContextPack
from ctxsvc.queries import Queries
from ctxsvc.service import ContextService
from ctxsvc.settings import Settings
from ctxsvc.tokens import TiktokenCounter, TokenCounter

REPOS = ("axios", "click", "cobra", "pytest", "requests", "tokio")
BUDGETS = (4000, 8000)
SYSTEMS = ("ctxsvc-diff", "bm25-diff", "ctxsvc-query")
SOURCE_CORPORA = Path("/tmp/corpora")  # read only: cloned from, never changed
# Weightings of ``--diff`` that ``--weights`` can name: "old" is the hand-set one
# before tuning; the others are the training grid (see README, "Diff-aware context").
_OLD = DiffWeights(
    changed=1.0, caller=(0.8, 0.5), callee=(0.7, 0.4), second=(0.45, 0.25), test_bonus=0.05,
    cochange=0.35, query=0.3, combine="max", preface=0.25, own_files=None,
)  # fmt: skip
_SUM = replace(_OLD, combine="sum", query=1.0, preface=0.125, own_files=0.125)
WEIGHTS: dict[str, DiffWeights] = {
    "default": DIFF_WEIGHTS,
    "old": _OLD,
    "old-shares": replace(_OLD, preface=0.125, own_files=0.125),
    "sum-0.5": replace(_SUM, query=0.5),
    "sum-1": _SUM,
    "sum-2": replace(_SUM, query=2.0),
    "sum-4": replace(_SUM, query=4.0),
    "sum-1-cochange": replace(_SUM, cochange=0.7),
    "sum-1-resolved": replace(_SUM, caller=(0.8, 0.0), callee=(0.7, 0.0), second=(0.45, 0.0)),
    "sum-1-no-own": replace(_SUM, own_files=0.0),
    "sum-1-old-shares": replace(_SUM, preface=0.25, own_files=None),
    "sum-1-no-preface": replace(_SUM, preface=0.0),
    "sum-2-resolved-cochange": replace(
        _SUM, query=2.0, caller=(0.8, 0.0), callee=(0.7, 0.0), second=(0.45, 0.0), cochange=0.7
    ),
}
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


def prepare_clone(repo: str, snapshot: str, work: Path, source: Path = SOURCE_CORPORA) -> Path:
    """``work/corpora/repo``: a shared clone of ``source/repo``, clean, at ``snapshot``."""
    target = work / "corpora" / repo
    if not (target / ".git").is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        done = git(work, "clone", "-q", "--shared", str(source / repo), str(target))
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


def diff_systems(names: Sequence[str]) -> dict[str, str]:
    """System name -> the weighting it runs: plain ``ctxsvc-diff`` for the default alone."""
    if list(names) == ["default"]:
        return {"ctxsvc-diff": "default"}
    return {f"ctxsvc-diff:{n}": n for n in names}


def run_repo(
    service: ContextService,
    corpora: Corpora,
    repo: str,
    tasks: Sequence[Task],
    work: Path,
    source: Path = SOURCE_CORPORA,
    weights: Sequence[str] = ("default",),
) -> tuple[list[Row], list[Skip], dict[str, str], dict[str, float]]:
    """Every system on every task of one repository (``--diff`` once per weighting)."""
    counter = service.tokens
    variants = {
        system: replace(service.queries, diff_weights=WEIGHTS[w])
        for system, w in diff_systems(weights).items()
    }  # the same catalog and index: only how the diff's links are ranked differs
    t0 = time.perf_counter()
    root = prepare_clone(repo, tasks[0].snapshot, work, source)
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
            for system, queries in variants.items():
                rows += diff_rows(queries, system, name, task, counter)
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


def diff_rows(
    queries: Queries, system: str, name: str, task: Task, counter: TokenCounter
) -> list[Row]:
    """``context(diff="HEAD")`` at each budget, scored (the first call re-indexes the change)."""
    rows = []
    for budget in BUDGETS:
        t = time.perf_counter()
        pack = queries.context(name, task.query, budget, diff="HEAD")
        ms = (time.perf_counter() - t) * 1000
        rows.append(score(system, task, budget, pack_lines(pack), counter.count(pack.rendered), ms))
    return rows


def summarize(
    rows: Sequence[Row], repos: Sequence[str], systems: Sequence[str] = SYSTEMS
) -> dict[str, dict[str, object]]:
    """Per repository and overall (the mean over repositories): tasks and each mean."""
    table: dict[str, dict[str, object]] = {}
    for repo in [*repos, "overall"]:
        cell: dict[str, object] = {}
        for system in systems:
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
            first = [r for r in rows if r.repo == repo and r.system == systems[0]]
            cell["tasks"] = len({r.task for r in first})
            cell["with_regions"] = len({r.task for r in first if r.region_recall is not None})
        table[repo] = cell
    return table


def render(table: dict[str, dict[str, object]], systems: Sequence[str] = SYSTEMS) -> str:
    """The summary as a plain-text table, one block of four columns per system."""
    cols = [(s, m, b) for s in systems for m in ("file", "region") for b in BUDGETS]
    width = 7
    lines = [
        f"{'':<22}" + "".join(f" | {s:<{4 * width - 3}}" for s in systems),
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


def render_overall(
    table: dict[str, dict[str, object]],
    clean: dict[str, dict[str, object]],
    systems: Sequence[str],
) -> str:
    """The overall means, one line per system: file and region recall at each budget."""
    keys = [(m, b) for m in ("file", "region") for b in BUDGETS]
    head = "".join(f"{m[0]}@{b // 1000}K".rjust(7) for m, b in keys)
    lines = [f"{'system':<26}{head} |{head}"]
    for s in systems:
        vals = [
            "".join(
                ("-" if (v := t["overall"][f"{s}/{m}_recall@{b // 1000}K"]) is None else f"{v:.3f}")
                .rjust(7)
                for m, b in keys
            )
            for t in (table, clean)
        ]  # fmt: skip
        lines.append(f"{s:<26}{vals[0]} |{vals[1]}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repos", help="comma-separated subset (default: the six, or those of "
                   "--repos-file with a task file in --tasks-dir)")  # fmt: skip
    p.add_argument("--repos-file", type=Path, help="JSON: name -> GitHub name (or an object)")
    p.add_argument("--tasks", type=int, help="first N multi-file tasks per repository")
    p.add_argument("--tasks-dir", type=Path, default=TASKS_DIR)
    p.add_argument("--corpora", type=Path, default=SOURCE_CORPORA,
                   help="the corpora cloned from (read only)")  # fmt: skip
    p.add_argument("--weights", default="default",
                   help=f"weightings of --diff to compare: {', '.join(WEIGHTS)}")  # fmt: skip
    p.add_argument("--work", type=Path, default=WORK, help="clones and the ctxsvc home")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except BenchError as exc:
        print(f"diff_context: {exc}", file=sys.stderr)
        return 2


def _repos(args: argparse.Namespace) -> list[str]:
    if args.repos:
        return [r.strip() for r in args.repos.split(",") if r.strip()]
    if args.repos_file is None:
        return list(REPOS)
    known = load_repos(args.repos_file)
    return [r for r in known if (args.tasks_dir / f"{r}.jsonl").is_file()]


def _run(args: argparse.Namespace) -> int:
    repos = _repos(args)
    weights = [w.strip() for w in args.weights.split(",") if w.strip()]
    if unknown := [w for w in weights if w not in WEIGHTS]:
        raise BenchError(f"unknown weights {', '.join(unknown)}; known: {', '.join(WEIGHTS)}")
    if missing := [r for r in repos if not (args.tasks_dir / f"{r}.jsonl").is_file()]:
        raise BenchError(f"no task file in {args.tasks_dir} for {', '.join(missing)}")
    systems = [*diff_systems(weights), *SYSTEMS[1:]]
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
        if not multi:
            continue
        got, skipped, applied, timing = run_repo(
            service, corpora, repo, multi, args.work, args.corpora, weights
        )
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
    repos = [r for r in repos if r in runs]
    table = summarize(rows, repos, systems)
    clean = summarize([r for r in rows if methods.get(r.task) in CLEAN], repos, systems)
    seconds = round(time.perf_counter() - started, 1)
    counts = ", ".join(f"{m} {list(methods.values()).count(m)}" for m in APPLIED)
    print(
        "ctxsvc indexed without vectors (full text, symbols, graph); recall over the gold "
        "files after the first; mean over tasks, then over repositories\n"
    )
    print(f"All tasks with more than one gold file (first file's change applied: {counts})")
    print(render(table, systems))
    print("\nOnly the tasks whose change applied cleanly (exact or three-way)")
    print(render(clean, systems))
    if len(systems) > len(SYSTEMS):
        print("\nOverall, one line per system (all tasks | clean tasks)")
        print(render_overall(table, clean, systems))
    print(f"\n{table['overall']['tasks']} tasks used, {len(skips)} skipped; {seconds}s")
    report = {
        "method": __doc__,
        "config": {
            "repos": repos,
            "budgets": list(BUDGETS),
            "tasks_cap": args.tasks,
            "tasks_dir": str(args.tasks_dir),
            "corpora": str(args.corpora),
            "weights": {w: asdict(WEIGHTS[w]) for w in weights},
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
