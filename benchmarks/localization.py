"""Localization benchmark: does the context hold the code a real change touched?

Runs the mined tasks of ``../shared/bench/tasks/*.jsonl`` through the
runner of ``ctxsvc bench`` (``ctxsvc.bench``): ctxsvc, BM25 over whole files
and over line windows, the oracle and whole-repository injection, on the same
corpora, files and token counter. Reports file hit, region recall, tokens,
savings, overruns and latency per budget; prints rich tables and writes
``localization-<label>.json``, ``.md`` and ``-recall.png`` / ``-tokens.png``.

    python -m benchmarks.localization --no-vectors
    python -m benchmarks.localization --no-vectors --systems ctxsvc \\
        --chunk-target 128 --chunk-max 256 --label fts-t128

Corpora are read from ``--corpora/<repo>``; a missing one is written from the
bare mirror ``--mirrors/<owner>+<name>/repo`` at the task's snapshot commit.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console

from benchmarks.paths import CORPORA, MIRRORS, TASKS_DIR
from ctxsvc.bench.gitrepo import PreparedTree
from ctxsvc.bench.report import build_report, require_plotting, write_report
from ctxsvc.bench.repository import check_budgets, index_name
from ctxsvc.bench.runner import BUDGETS, SYSTEMS, RepoRun, check_systems, run_repo
from ctxsvc.bench.tasks import Task, load_tasks
from ctxsvc.bench.terminal import RichProgress, tables
from ctxsvc.compose import build_service
from ctxsvc.errors import CtxError
from ctxsvc.settings import Settings
from ctxsvc.tokens import TiktokenCounter

REPOS: dict[str, str] = {
    "requests": "psf/requests",
    "click": "pallets/click",
    "pytest": "pytest-dev/pytest",
    "cobra": "spf13/cobra",
    "axios": "axios/axios",
    "tokio": "tokio-rs/tokio",
}
DEFAULT_OUT = Path(__file__).resolve().parent / "results"

# Redirected output keeps the tables whole rather than wrapping at 80 columns.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True, highlight=False)


class BenchError(Exception):
    """A setup problem the user must fix: printed as one line, exit code 2."""


def read_tasks(tasks_dir: Path, repos: Sequence[str], limit: int | None) -> dict[str, list[Task]]:
    """The first ``limit`` tasks of each repository, in file order."""
    tasks: dict[str, list[Task]] = {}
    for repo in repos:
        path = tasks_dir / f"{repo}.jsonl"
        if not path.is_file():
            raise BenchError(f"no task file {path}; pass --tasks-dir or drop {repo} from --repos")
        tasks[repo] = load_tasks(path, limit)
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


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repos", default=",".join(REPOS), help="comma-separated subset")
    p.add_argument("--tasks", type=int, default=None, help="first N tasks per repository")
    p.add_argument("--systems", default=",".join(SYSTEMS))
    p.add_argument("--budgets", default=",".join(map(str, BUDGETS)))
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--label", help="part of the output file names (default: from the settings)")
    p.add_argument("--tasks-dir", type=Path, default=TASKS_DIR)
    p.add_argument("--corpora", type=Path, default=CORPORA)
    p.add_argument("--mirrors", type=Path, default=MIRRORS)
    p.add_argument("--home", type=Path, default=Path(tempfile.gettempdir()) / "ctxsvc-bench",
                   help="ctxsvc data directory; indexes there are reused")  # fmt: skip
    p.add_argument("--no-vectors", action="store_true", help="ctxsvc without embeddings (FTS only)")
    p.add_argument("--chunk-target", type=int)
    p.add_argument("--chunk-max", type=int)
    p.add_argument("--embed-seq", type=int)
    p.add_argument("--no-quantize", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    return guarded(_run, _parser().parse_args(argv))


def guarded(run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """``run(args)`` with the libraries' chatter quiet, and an error as a line and an exit code."""
    for noisy in ("sentence_transformers", "transformers", "httpx", "urllib3", "lancedb"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        return run(args)
    except BenchError as exc:
        err.print(f"[bold red]error[/]: {exc}")
        return 2
    except CtxError as exc:
        err.print(f"[bold red]error[/] ({exc.code}): {exc}")
        return exc.exit_code


def _run(args: argparse.Namespace) -> int:
    repos = [r.strip() for r in args.repos.split(",") if r.strip()]
    unknown = [r for r in repos if r not in REPOS]
    if unknown:
        raise BenchError(f"unknown repos: {', '.join(unknown)}")
    systems = check_systems(s.strip() for s in args.systems.split(",") if s.strip())
    budgets = check_budgets(int(b) for b in args.budgets.split(","))
    require_plotting()
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
    tasks = read_tasks(args.tasks_dir, repos, args.tasks)
    counter = TiktokenCounter(settings.encoding)
    embed = vectors and "ctxsvc" in systems
    service = build_service(settings, tokens=counter, vectors=embed)
    if embed and service.embedder is None:  # a benchmark must not measure a degraded service
        raise SystemExit(f"the embedding model did not load: {service.embedder_error}")

    started = time.perf_counter()
    runs: list[RepoRun] = []
    with RichProgress(err) as progress:
        progress.start("tasks", sum(map(len, tasks.values())))
        for repo in repos:
            root = ensure_corpus(repo, tasks[repo][0].snapshot, args.corpora, args.mirrors)
            runs.append(
                run_repo(
                    service, repo, tasks[repo], PreparedTree(root),
                    index=index_name(repo, settings, vectors), budgets=budgets,
                    systems=systems, vectors=vectors, progress=progress,
                )
            )  # fmt: skip
    config = {
        "label": label,
        "source": f"from {args.tasks_dir}, on the corpora in {args.corpora}",
        "repos": repos,
        "systems": list(systems),
        "budgets": list(budgets),
        "vectors": vectors,
        "chunk_target_tokens": settings.chunk_target_tokens,
        "chunk_max_tokens": settings.chunk_max_tokens,
        "embed_max_seq_tokens": settings.embed_max_seq_tokens,
        "embed_quantize": settings.embed_quantize,
        "model": settings.model if vectors else None,
        "encoding": settings.encoding,
        "home": str(settings.home),
        "cpus": os.cpu_count(),
    }
    report = build_report(runs, config, time.perf_counter() - started)
    for table in tables(report):
        out.print(table)
    paths = write_report(report, args.out, f"localization-{label}")
    err.print(f"wrote {', '.join(str(p) for p in paths)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
