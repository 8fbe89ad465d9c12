"""Train the learned ranker (``ctxsvc/data/ranker.txt``) from mined history.

One command, reproducible: for every training repository of ``--data`` (made
by ``benchmarks/training_set.py``: task files, corpora checked out at their
snapshot with their git history, and a ctxsvc data directory with each corpus
indexed under its name), each task's query runs through retrieval's signals
exactly as a query does (``ctxsvc.retrieval.gather``), and every candidate
chunk becomes a row of ``ctxsvc.ranking.FEATURES`` with a graded label: 3 when
it overlaps a line range the task's commit rewrote, 1 when it is elsewhere in
a file the commit changed, 0 otherwise. A LightGBM LambdaRank model is fitted
on those groups, with early stopping on a few repositories held out of the
fit (whole repositories, not tasks), then refitted on all of them for the
best number of rounds. The six benchmark repositories of ``../shared/bench``
are refused: they are the held-out test.

    python -m benchmarks.train_ranker --data /tmp/ctxsvc-train
    python -m benchmarks.train_ranker --data /tmp/ctxsvc-train --out /tmp/ranker.txt

Features are cached per repository (``--data/features/<repo>.npz``, keyed by
the feature version and the index generation); ``--fresh`` recomputes them.
Prints a table of repositories, tasks and candidates, and writes
``train_ranker.json`` beside the model's report directory.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from rich.console import Console
from rich.table import Table

from ctxsvc import ranking
from ctxsvc.bench.tasks import Task, load_tasks
from ctxsvc.compose import build_service
from ctxsvc.ranking import (
    FEATURE_VERSION,
    FEATURES,
    blank_history,
    features,
    model_path,
    save_model,
)
from ctxsvc.retrieval import RetrievalConfig, gather
from ctxsvc.settings import Settings

HELD_OUT = frozenset({"requests", "click", "pytest", "cobra", "axios", "tokio"})
BUDGETS = (2000, 8000, 16000)  # candidate pools as a query of each budget draws them
VALIDATION_SHARE = 0.2
SEED = 16
PARAMS: dict[str, Any] = {
    "objective": "lambdarank",
    "metric": "ndcg",
    "ndcg_eval_at": [5, 10, 20],
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_data_in_leaf": 50,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambdarank_truncation_level": 30,
    "num_threads": 2,
    "seed": SEED,
    "deterministic": True,
    "force_row_wise": True,
    "verbose": -1,
}
MAX_ROUNDS = 600
DEFAULT_REPORT = Path(__file__).resolve().parent / "results"

out = Console(highlight=False, width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True, highlight=False)


def labels(task: Task, view: Any, positions: Sequence[int]) -> np.ndarray:
    """3 for a chunk on a rewritten range, 1 elsewhere in a changed file, 0 else."""
    gold = set(task.gold)
    y = np.zeros(len(positions), dtype=np.int32)
    for row, i in enumerate(positions):
        c = view.chunks[i]
        if c.path not in gold:
            continue
        ranges = task.regions.get(c.path, ())
        hit = any(a <= c.end_line and b >= c.start_line for a, b in ranges)
        y[row] = 3 if hit else 1
    return y


def repo_rows(
    service: Any, name: str, tasks: Sequence[Task], config: RetrievalConfig, target: int
) -> tuple[np.ndarray, np.ndarray, list[int], dict[str, int]]:
    """Feature rows, labels and group sizes of one repository's tasks."""
    current = service.catalog.current(name)
    view = current.view
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    groups: list[int] = []
    stats = {"tasks": len(tasks), "used": 0, "candidates": 0, "positives": 0}
    for k, task in enumerate(tasks):
        vector, _ = service.queries.vectors.vector(view.meta, task.query)
        budget = BUDGETS[k % len(BUDGETS)]
        limit = max(60, 2 * budget // target)
        signals = gather(view, task.query, vector, config, limit=limit)
        pos, x = features(view, task.query, signals, history=config.history)
        y = labels(task, view, pos)
        if not len(pos) or not (y > 0).any():
            continue  # nothing to learn from a task whose candidates hold none of its code
        xs.append(x)
        ys.append(y)
        groups.append(len(pos))
        stats["used"] += 1
        stats["candidates"] += len(pos)
        stats["positives"] += int((y > 0).sum())
    if not xs:
        return np.zeros((0, len(FEATURES)), np.float32), np.zeros(0, np.int32), [], stats
    return np.concatenate(xs), np.concatenate(ys), groups, stats


def _cache_key(view: Any, tasks: Sequence[Task]) -> str:
    h = hashlib.sha256()
    h.update(f"{FEATURE_VERSION}:{view.meta.generation}:{view.meta.commit}".encode())
    h.update(f"{view.history.head}:{view.meta.model}".encode())
    for module in ("ranking.py", "retrieval.py", "history.py"):  # the code that makes the rows
        h.update((Path(ranking.__file__).parent / module).read_bytes())
    h.update(json.dumps([t.to_json() for t in tasks], sort_keys=True).encode())
    return h.hexdigest()[:16]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="output of training_set.py")
    p.add_argument("--out", type=Path, help="model file to write (default: the shipped one)")
    p.add_argument("--report", type=Path, default=DEFAULT_REPORT)
    p.add_argument("--repos", help="comma-separated subset of the training repositories")
    p.add_argument("--fresh", action="store_true", help="recompute cached features")
    p.add_argument("--no-history", action="store_true", help="train without history features")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    for noisy in ("sentence_transformers", "transformers", "httpx", "lancedb"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    import lightgbm

    data: Path = args.data
    repos_info = json.loads((data / "repos.json").read_text())
    names = sorted(n for n, r in repos_info.items() if r.get("split") == "train")
    if args.repos:
        names = [n for n in args.repos.split(",") if n]
    refused = HELD_OUT & set(names)
    if refused:
        raise SystemExit(f"refusing to train on the held-out benchmark repositories: {refused}")
    settings = Settings.from_env(home=data / "home")
    service = build_service(settings, vectors=True)
    if service.embedder is None:
        raise SystemExit(f"the embedding model did not load: {service.embedder_error}")
    config = RetrievalConfig()  # rows keep the history features; --no-history blanks them
    cache_dir = data / "features"
    cache_dir.mkdir(parents=True, exist_ok=True)
    per_repo: dict[str, tuple[np.ndarray, np.ndarray, list[int]]] = {}
    table_rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for name in names:
        tasks = load_tasks(data / "tasks" / f"{name}.jsonl", None)
        # Brings the index and its git history up to date (a no-op when they are).
        service.index(data / "corpora" / name, name)
        view = service.catalog.current(name).view
        cache = cache_dir / f"{name}-{_cache_key(view, tasks)}.npz"
        t0 = time.perf_counter()
        if cache.is_file() and not args.fresh:
            z = np.load(cache)
            x, y, groups = z["x"], z["y"], [int(g) for g in z["groups"]]
            stats = json.loads(str(z["stats"]))
        else:
            x, y, groups, stats = repo_rows(
                service, name, tasks, config, settings.chunk_target_tokens
            )
            np.savez_compressed(cache, x=x, y=y, groups=np.array(groups), stats=json.dumps(stats))
        per_repo[name] = (blank_history(x.copy()) if args.no_history else x, y, groups)
        row = {"repo": name, "language": repos_info[name].get("language"), **stats,
               "chunks": len(view.chunks), "history_commits": view.history.commits,
               "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
        table_rows.append(row)
        err.print(f"{name}: {stats['used']}/{stats['tasks']} tasks, {stats['candidates']} rows")

    rng = random.Random(SEED)
    shuffled = [n for n in names if per_repo[n][2]]
    rng.shuffle(shuffled)
    n_val = max(1, round(VALIDATION_SHARE * len(shuffled))) if len(shuffled) > 2 else 0
    val, fit = shuffled[:n_val], shuffled[n_val:]

    def dataset(which: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[int]]:
        return (
            np.concatenate([per_repo[n][0] for n in which]),
            np.concatenate([per_repo[n][1] for n in which]),
            [g for n in which for g in per_repo[n][2]],
        )

    rounds = MAX_ROUNDS
    best_val: dict[str, float] = {}
    if val:
        xf, yf, gf = dataset(fit)
        xv, yv, gv = dataset(val)
        train_set = lightgbm.Dataset(xf, yf, group=gf, feature_name=list(FEATURES))
        val_set = lightgbm.Dataset(xv, yv, group=gv, reference=train_set)
        booster = lightgbm.train(
            PARAMS, train_set, MAX_ROUNDS, valid_sets=[val_set], valid_names=["val"],
            callbacks=[lightgbm.early_stopping(50, verbose=False)],
        )  # fmt: skip
        rounds = max(booster.best_iteration, 50)
        best_val = {k: round(v, 4) for k, v in booster.best_score["val"].items()}
    xa, ya, ga = dataset(shuffled)
    full = lightgbm.train(
        PARAMS, lightgbm.Dataset(xa, ya, group=ga, feature_name=list(FEATURES)), rounds
    )
    tasks_used = sum(r["used"] for r in table_rows)
    meta = {
        "name": f"lambdarank-f{FEATURE_VERSION}-{len(shuffled)}repos-{tasks_used}tasks",
        "rounds": rounds,
        "repos": shuffled,
        "tasks": tasks_used,
        "history": not args.no_history,
    }
    target = args.out or model_path(not args.no_history)
    target.parent.mkdir(parents=True, exist_ok=True)
    save_model(full, target, meta)
    gains = full.feature_importance(importance_type="gain")
    importance = sorted(zip(FEATURES, gains, strict=True), key=lambda kv: -kv[1])

    table = Table(title=f"training set: {len(shuffled)} repositories, {tasks_used} tasks")
    for col in ("repo", "language", "tasks", "used", "candidates", "positives", "chunks",
                "history_commits"):  # fmt: skip
        table.add_column(col, justify="left" if col in ("repo", "language") else "right")
    for r in table_rows:
        table.add_row(*(str(r[c]) for c in (
            "repo", "language", "tasks", "used", "candidates", "positives", "chunks",
            "history_commits")))  # fmt: skip
    out.print(table)
    out.print(f"validation repos {val}: {best_val}; rounds {rounds}")
    out.print("top features by gain: " + ", ".join(f"{k} {v:.0f}" for k, v in importance[:12]))
    report = {
        "model": target.name,
        "meta": meta,
        "params": PARAMS,
        "validation_repos": val,
        "validation": best_val,
        "repos": table_rows,
        "importance": {k: round(float(v), 1) for k, v in importance},
        "seconds": round(time.perf_counter() - started, 1),
        "cpus": os.cpu_count(),
    }
    args.report.mkdir(parents=True, exist_ok=True)
    path = args.report / f"train_ranker{'-nohist' if args.no_history else ''}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    err.print(f"wrote {target} and {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
