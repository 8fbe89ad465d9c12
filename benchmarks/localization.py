"""Localization benchmark: does the context hold the code a real change touched?

Runs the mined tasks (``/work/shared/bench/tasks/*.jsonl``) against ctxsvc and
two BM25 baselines on the same corpora, files and token counter, and reports
file hit, region recall, tokens, overruns and savings per budget, plus warm
query latency of ctxsvc. Prints rich tables, writes JSON and a PNG.

    python -m benchmarks.localization --no-vectors
    python -m benchmarks.localization --no-vectors --systems ctxsvc \\
        --chunk-target 128 --chunk-max 256 --label fts-t128

Corpora are read from ``--corpora/<repo>``; a missing one is written from the
bare mirror ``--mirrors/<owner>+<name>/repo`` at the task's snapshot commit.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console
from rich.table import Table

from benchmarks.baselines import BM25Ranker, Doc, file_docs, pack_ranked, window_docs
from benchmarks.metrics import (
    aggregate,
    delivered_lines,
    file_hit,
    percentile,
    region_recall,
    savings,
)
from ctxsvc.service import ContextService
from ctxsvc.settings import Settings
from ctxsvc.tokens import TiktokenCounter, TokenCounter
from indexers.discover import discover, read_text

REPOS: dict[str, str] = {
    "requests": "psf/requests",
    "click": "pallets/click",
    "pytest": "pytest-dev/pytest",
    "cobra": "spf13/cobra",
    "axios": "axios/axios",
    "tokio": "tokio-rs/tokio",
}
SYSTEMS = ("ctxsvc", "bm25-files", "bm25-windows")
BUDGETS = (2000, 4000, 8000, 16000)
TASKS_DIR = Path("/work/shared/bench/tasks")
DEFAULT_OUT = Path(__file__).resolve().parent / "results"

# Redirected output keeps the tables whole rather than wrapping at 80 columns.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True, highlight=False)


class BenchError(Exception):
    """A setup problem the user must fix: printed as one line, exit code 2."""


@dataclass(frozen=True)
class Corpus:
    repo: str
    root: Path
    files: dict[str, str]  # path -> text, every file discovery and read_text keep
    tokens: int  # of all of them: the whole-repository injection


# -- tasks and corpora --------------------------------------------------------


def load_tasks(
    tasks_dir: Path, repos: Sequence[str], limit: int | None
) -> dict[str, list[dict[str, Any]]]:
    """The first ``limit`` tasks of each repository, in file order."""
    tasks: dict[str, list[dict[str, Any]]] = {}
    for repo in repos:
        path = tasks_dir / f"{repo}.jsonl"
        if not path.is_file():
            raise BenchError(f"no task file {path}; pass --tasks-dir or drop {repo} from --repos")
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        tasks[repo] = rows[:limit] if limit else rows
    return tasks


def ensure_corpus(repo: str, snapshot: str, corpora: Path, mirrors: Path) -> Path:
    """The snapshot's tree at ``corpora/repo``, written from the mirror when missing."""
    target = corpora / repo
    if target.is_dir() and any(target.iterdir()):
        return target
    owner_name = REPOS[repo].replace("/", "+")
    git_dir = mirrors / owner_name / "repo"
    has_commit = git_dir.is_dir() and (
        subprocess.run(
            ["git", f"--git-dir={git_dir}", "cat-file", "-e", f"{snapshot}^{{commit}}"],
            capture_output=True,
        ).returncode
        == 0
    )
    if not has_commit:
        raise BenchError(
            f"no corpus for {repo}: {target} is missing or empty, and {git_dir} "
            f"{'lacks commit ' + snapshot[:10] if git_dir.is_dir() else 'does not exist'}. "
            f"Fetch github:{REPOS[repo]} into the mirrors, or pass --corpora/--mirrors."
        )
    err.print(f"writing {repo} at {snapshot[:10]} from {git_dir} to {target}")
    target.mkdir(parents=True, exist_ok=True)
    archive = subprocess.Popen(
        ["git", f"--git-dir={git_dir}", "archive", snapshot], stdout=subprocess.PIPE
    )
    subprocess.run(["tar", "-x", "-C", str(target)], stdin=archive.stdout, check=True)
    if archive.wait() != 0:
        raise BenchError(
            f"git archive of {repo} at {snapshot[:10]} failed; remove {target} and retry"
        )
    ident = ["-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    for cmd in (
        ["init", "-q"],
        ["add", "-A"],
        [*ident, "commit", "-q", "-m", f"snapshot {snapshot}"],
    ):
        subprocess.run(["git", "-C", str(target), *cmd], check=True, capture_output=True)
    return target


def load_corpus(repo: str, root: Path, settings: Settings, counter: TokenCounter) -> Corpus:
    """Every text file ctxsvc's discovery keeps, and their total tokens."""
    found = discover(root, max_file_bytes=settings.max_file_bytes)
    files: dict[str, str] = {}
    for f in found.files:
        text = read_text(
            root, f, max_file_bytes=settings.max_file_bytes, max_line_chars=settings.max_line_chars
        )
        if not hasattr(text, "reason"):
            files[f.path] = text.text  # type: ignore[union-attr]
    return Corpus(repo, root, files, sum(counter.count_many(list(files.values()))))


# -- systems ------------------------------------------------------------------


def score_row(
    system: str, task: dict[str, Any], budget: int, delivered: dict[str, list[tuple[int, int]]],
    tokens: int, corpus: Corpus, **extra: Any,
) -> dict[str, Any]:  # fmt: skip
    return {
        "system": system,
        "repo": task["repo"],
        "task": task["id"],
        "budget": budget,
        "name_leak": bool(task.get("name_leak")),
        "file_hit": file_hit(delivered, task["gold"]),
        "region_recall": region_recall(delivered, task.get("regions") or {}),
        "tokens": tokens,
        "overrun": tokens > budget,
        "savings": savings(tokens, corpus.tokens),
        **extra,
    }


def index_name(repo: str, settings: Settings, vectors: bool) -> str:
    """One index per repository and setting, so settings never mix in one index."""
    base = f"{repo}-t{settings.chunk_target_tokens}m{settings.chunk_max_tokens}"
    if not vectors:
        return f"{base}-fts"
    return f"{base}-s{settings.embed_max_seq_tokens}{'q' if settings.embed_quantize else 'f'}"


def build_service(settings: Settings, counter: TiktokenCounter, vectors: bool) -> ContextService:
    from ctxsvc.stores.lance import LanceStore

    store = LanceStore(settings.db_path)
    if not vectors:
        return ContextService(settings, store, counter)
    from indexers.embed import SentenceTransformerEmbedder

    embedder = SentenceTransformerEmbedder(
        settings.model,
        max_seq_tokens=settings.embed_max_seq_tokens,
        quantize=settings.embed_quantize,
        batch_size=settings.embed_batch_size,
        threads=settings.embed_threads,
    )
    return ContextService(settings, store, counter, embedder)


def run_ctxsvc(
    service: ContextService, corpus: Corpus, tasks: Sequence[dict[str, Any]], budgets: Sequence[int],
    counter: TokenCounter, vectors: bool,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:  # fmt: skip
    """Index once (incrementally), warm up with one query, then time every query."""
    name = index_name(corpus.repo, service.settings, vectors)
    t0 = time.perf_counter()
    summary = service.index(corpus.root, name, vectors=vectors)
    index_s = time.perf_counter() - t0
    service.context(name, tasks[0]["query"], budgets[0])  # warm-up: caches, lazy opens
    rows: list[dict[str, Any]] = []
    latencies: list[float] = []
    for task in tasks:
        for budget in budgets:
            t = time.perf_counter()
            pack = service.context(name, task["query"], budget)
            ms = (time.perf_counter() - t) * 1000
            latencies.append(ms)
            # A skeleton shows signatures, not every line of its range.
            spans = [(i.path, i.start_line, i.end_line) for i in pack.items if i.kind != "skeleton"]
            tokens = counter.count(pack.rendered)
            rows.append(
                score_row(
                    "ctxsvc", task, budget, delivered_lines(spans), tokens, corpus,
                    latency_ms=round(ms, 2), items=len(pack.items), degraded=list(pack.degraded),
                )
            )  # fmt: skip
    info = {
        "index": name,
        "index_seconds": round(index_s, 2),
        "files_indexed": summary.files_indexed,
        "chunks": summary.chunks,
        "vectors": summary.vectors,
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "queries": len(latencies),
        "latencies_ms": latencies,
    }
    return rows, info


def run_bm25(
    system: str, corpus: Corpus, tasks: Sequence[dict[str, Any]], budgets: Sequence[int],
    counter: TokenCounter,
) -> list[dict[str, Any]]:  # fmt: skip
    docs: list[Doc] = (
        file_docs(corpus.files) if system == "bm25-files" else window_docs(corpus.files)
    )
    sizes = counter.count_many([d.render() for d in docs])
    ranker = BM25Ranker(docs)
    rows = []
    for task in tasks:
        order = ranker.rank(task["query"])
        ranked = [docs[i] for i in order]
        ranked_sizes = [sizes[i] for i in order]
        for budget in budgets:
            packed = pack_ranked(ranked, budget, counter, sizes=ranked_sizes)
            rows.append(
                score_row(
                    system,
                    task,
                    budget,
                    packed.delivered,
                    packed.tokens,
                    corpus,
                    items=len(packed.docs),
                )
            )
    return rows


# -- reporting ----------------------------------------------------------------


def _fmt(v: object, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def print_tables(per_repo: dict[str, Any], overall: dict[str, Any], repos: Sequence[str],
                 budgets: Sequence[int], latency: dict[str, Any]) -> None:  # fmt: skip
    for budget in budgets:
        t = Table(title=f"@{budget} tokens: file hit / region recall (mean over tasks)")
        t.add_column("system")
        for repo in repos:
            t.add_column(repo, justify="right")
        t.add_column("mean", justify="right", style="bold")
        for system, by_budget in per_repo.items():
            cells = by_budget.get(str(budget), {})
            row = [f"{_fmt(c['file_hit'])} / {_fmt(c['region_recall'])}" if (c := cells.get(r)) else "-"
                   for r in repos]  # fmt: skip
            m = overall[system][str(budget)]
            t.add_row(system, *row, f"{_fmt(m['file_hit'])} / {_fmt(m['region_recall'])}")
        out.print(t)
    t = Table(title="mean over repositories")
    for col in ("system", "budget", "file hit", "region recall", "tokens", "savings", "overruns"):
        t.add_column(col, justify="left" if col == "system" else "right")
    for system, by_budget in overall.items():
        for budget in budgets:
            m = by_budget[str(budget)]
            t.add_row(system, str(budget), _fmt(m["file_hit"]), _fmt(m["region_recall"]),
                      _fmt(m["tokens"], 0), _fmt(m["savings"], 3), str(m["overruns"]))  # fmt: skip
    out.print(t)
    if latency:
        t = Table(title="ctxsvc warm query latency (ms) and indexing")
        for col in ("repo", "p50", "p95", "queries", "index s", "index"):
            t.add_column(col, justify="left" if col in ("repo", "index") else "right")
        for repo, info in latency["per_repo"].items():
            t.add_row(repo, _fmt(info["p50_ms"], 0), _fmt(info["p95_ms"], 0), str(info["queries"]),
                      _fmt(info["index_seconds"], 1), info["index"])  # fmt: skip
        t.add_row(
            "all",
            _fmt(latency["p50_ms"], 0),
            _fmt(latency["p95_ms"], 0),
            str(latency["queries"]),
            "",
            "",
        )
        out.print(t)


def plot(overall: dict[str, Any], budgets: Sequence[int], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
    for ax, metric, label in (
        (axes[0], "region_recall", "region recall"),
        (axes[1], "file_hit", "file hit"),
    ):
        for system, by_budget in overall.items():
            ys = [by_budget[str(b)][metric] for b in budgets]
            ax.plot(
                list(budgets),
                [y if y is not None else float("nan") for y in ys],
                marker="o",
                label=system,
            )
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(budgets), [f"{b // 1000}K" for b in budgets])
        ax.set_ylim(0, 1)
        ax.set_xlabel("budget (cl100k tokens)")
        ax.set_ylabel(f"{label} (mean over repos)")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="best")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- command line -------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repos", default=",".join(REPOS), help="comma-separated subset")
    p.add_argument("--tasks", type=int, default=None, help="first N tasks per repository")
    p.add_argument("--systems", default=",".join(SYSTEMS))
    p.add_argument("--budgets", default=",".join(map(str, BUDGETS)))
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--label", help="part of the output file names (default: from the settings)")
    p.add_argument("--tasks-dir", type=Path, default=TASKS_DIR)
    p.add_argument("--corpora", type=Path, default=Path("/tmp/corpora"))
    p.add_argument("--mirrors", type=Path, default=Path("/work/.mirror"))
    p.add_argument("--home", type=Path, default=Path(tempfile.gettempdir()) / "ctxsvc-bench",
                   help="ctxsvc data directory; indexes there are reused")  # fmt: skip
    p.add_argument("--no-vectors", action="store_true", help="ctxsvc without embeddings (FTS only)")
    p.add_argument("--chunk-target", type=int)
    p.add_argument("--chunk-max", type=int)
    p.add_argument("--embed-seq", type=int)
    p.add_argument("--no-quantize", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    for noisy in (
        "sentence_transformers",
        "transformers",
        "httpx",
        "urllib3",
        "lancedb",
        "ctxsvc.tokens",
    ):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        return _run(args)
    except BenchError as exc:
        err.print(f"[bold red]error[/]: {exc}")
        return 2


def _run(args: argparse.Namespace) -> int:
    repos = [r.strip() for r in args.repos.split(",") if r.strip()]
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    budgets = [int(b) for b in args.budgets.split(",")]
    unknown = [r for r in repos if r not in REPOS] + [s for s in systems if s not in SYSTEMS]
    if unknown:
        raise BenchError(f"unknown repos or systems: {', '.join(unknown)}")
    vectors = not args.no_vectors
    settings = Settings.from_env(
        home=args.home,
        chunk_target_tokens=args.chunk_target,
        chunk_max_tokens=args.chunk_max,
        embed_max_seq_tokens=args.embed_seq,
        embed_quantize=False if args.no_quantize else None,
    )
    label = args.label or (
        f"{'vec' if vectors else 'fts'}-t{settings.chunk_target_tokens}m{settings.chunk_max_tokens}"
        + (
            f"-s{settings.embed_max_seq_tokens}{'q' if settings.embed_quantize else 'f'}"
            if vectors
            else ""
        )
    )
    tasks = load_tasks(args.tasks_dir, repos, args.tasks)
    counter = TiktokenCounter(settings.encoding)
    service = build_service(settings, counter, vectors) if "ctxsvc" in systems else None

    rows: list[dict[str, Any]] = []
    latency: dict[str, Any] = {}
    repo_tokens: dict[str, int] = {}
    started = time.perf_counter()
    for repo in repos:
        root = ensure_corpus(repo, tasks[repo][0]["snapshot"], args.corpora, args.mirrors)
        corpus = load_corpus(repo, root, settings, counter)
        repo_tokens[repo] = corpus.tokens
        err.print(
            f"{repo}: {len(corpus.files)} files, {corpus.tokens} tokens, {len(tasks[repo])} tasks"
        )
        for system in systems:
            t = time.perf_counter()
            if system == "ctxsvc":
                assert service is not None
                got, info = run_ctxsvc(service, corpus, tasks[repo], budgets, counter, vectors)
                latency.setdefault("per_repo", {})[repo] = {
                    k: v for k, v in info.items() if k != "latencies_ms"
                }
                latency.setdefault("all_ms", []).extend(info["latencies_ms"])
            else:
                got = run_bm25(system, corpus, tasks[repo], budgets, counter)
            rows.extend(got)
            err.print(f"  {system}: {time.perf_counter() - t:.1f}s")
    if latency:
        all_ms = latency.pop("all_ms")
        latency.update(
            p50_ms=percentile(all_ms, 50), p95_ms=percentile(all_ms, 95), queries=len(all_ms)
        )

    per_repo, overall = aggregate(rows)
    print_tables(per_repo, overall, repos, budgets, latency)
    config = {
        "label": label,
        "repos": repos,
        "systems": systems,
        "budgets": budgets,
        "tasks_per_repo": {r: len(ts) for r, ts in tasks.items()},
        "vectors": vectors,
        "chunk_target_tokens": settings.chunk_target_tokens,
        "chunk_max_tokens": settings.chunk_max_tokens,
        "embed_max_seq_tokens": settings.embed_max_seq_tokens,
        "embed_quantize": settings.embed_quantize,
        "model": settings.model if vectors else None,
        "encoding": settings.encoding,
        "home": str(settings.home),
        "repo_tokens": repo_tokens,
        "seconds": round(time.perf_counter() - started, 1),
        "cpus": os.cpu_count(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"localization-{label}"
    result = {
        "config": config,
        "per_task": rows,
        "per_repo": per_repo,
        "mean": overall,
        "latency": latency,
    }
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(
        overall,
        budgets,
        args.out / f"{stem}.png",
        f"localization ({label}), {sum(map(len, tasks.values()))} tasks",
    )
    err.print(f"wrote {args.out / stem}.json and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
