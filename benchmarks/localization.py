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

Corpora are read from ``--corpora/<repo>``: a ``git clone --shared`` of the
bare mirror ``--mirrors/<owner>+<name>/repo`` checked out at the task's
snapshot commit (history present), made when missing. Other repositories than
the six come in through ``--repos-file`` (name -> GitHub name) and ``--tasks-dir``:

    python -m benchmarks.localization --repos-file /tmp/ctxsvc-train/repos.json \\
        --tasks-dir /tmp/ctxsvc-train/unseen --corpora /tmp/ctxsvc-train/corpora \\
        --repos starlette,chi --systems ctxsvc
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


def load_repos(path: Path | None) -> dict[str, str]:
    """Short name -> GitHub ``owner/name``: the six, or those of a JSON file.

    The file maps a name to ``"owner/name"`` or to an object with a ``github``
    field (the ``repos.json`` of ``benchmarks.training_set``).
    """
    if path is None:
        return dict(REPOS)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {
            str(name): str(v["github"] if isinstance(v, dict) else v) for name, v in data.items()
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BenchError(
            f"cannot read the repository list {path}: {exc}; "
            'give a JSON object such as {"click": "pallets/click"}'
        ) from None


def _git(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)


def ensure_corpus(
    repo: str, snapshot: str, corpora: Path, mirrors: Path, github: str | None = None
) -> Path:
    """``corpora/repo``: a shared clone of the mirror checked out at ``snapshot``, history present.

    Made when missing; a clone at another commit is moved to the snapshot. A
    directory that is not a clone of the mirror is left alone: an error says
    to move it aside.
    """
    target = corpora / repo
    owner_name = (github or REPOS[repo]).replace("/", "+")
    git_dir = mirrors / owner_name / "repo"
    if target.is_dir() and any(target.iterdir()):
        alternates = target / ".git" / "objects" / "info" / "alternates"
        shared = alternates.is_file() and any(
            Path(line).resolve() == (git_dir / "objects").resolve()
            for line in alternates.read_text().splitlines()
            if line.strip()
        )
        if not shared:
            raise BenchError(
                f"{target} is not a clone of {git_dir} (an older corpus written by git archive?); "
                "move it aside and run again to make the clone, history included"
            )
        head = _git("rev-parse", "HEAD", cwd=target).stdout.strip()
        wanted = _git("rev-parse", "--verify", "-q", f"{snapshot}^{{commit}}", cwd=target)
        if head and head == wanted.stdout.strip():
            return target
        err.print(f"moving {target} from {head[:10] or 'nothing'} to {snapshot[:10]}")
        _checkout(target, snapshot, repo)
        return target
    has_commit = git_dir.is_dir() and (
        _git(f"--git-dir={git_dir}", "cat-file", "-e", f"{snapshot}^{{commit}}").returncode == 0
    )
    if not has_commit:
        raise BenchError(
            f"no corpus for {repo}: {target} is missing or empty, and {git_dir} "
            f"{'lacks commit ' + snapshot[:10] if git_dir.is_dir() else 'does not exist'}. "
            f"Fetch github:{github or REPOS[repo]} into the mirrors, or pass --corpora/--mirrors."
        )
    err.print(f"cloning {git_dir} to {target} at {snapshot[:10]}")
    if target.is_dir():
        target.rmdir()  # empty, checked above
    target.parent.mkdir(parents=True, exist_ok=True)
    done = _git("clone", "-q", "--shared", "--no-checkout", str(git_dir), str(target))
    if done.returncode != 0:
        raise BenchError(f"git clone of {git_dir} failed: {done.stderr.strip()}")
    _checkout(target, snapshot, repo)
    return target


def _checkout(target: Path, snapshot: str, repo: str) -> None:
    done = _git("-c", "advice.detachedHead=false", "checkout", "-q", "--detach", "--force",
                snapshot, cwd=target)  # fmt: skip
    if done.returncode != 0:
        raise BenchError(
            f"checking out {repo} at {snapshot[:10]} in {target} failed: {done.stderr.strip()}; "
            "remove it and run again"
        )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repos", help="comma-separated subset (default: all of --repos-file)")
    p.add_argument("--repos-file", type=Path,
                   help="JSON: name -> owner/name (or -> {github: ...}, as training_set's "
                   "repos.json); default: the six benchmark repositories")  # fmt: skip
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
    p.add_argument("--plain-index-names", action="store_true",
                   help="index NAME as NAME, not NAME-<settings> (the training set's home)")  # fmt: skip
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
    known = load_repos(args.repos_file)
    repos = [r.strip() for r in (args.repos or ",".join(known)).split(",") if r.strip()]
    unknown = [r for r in repos if r not in known]
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
            root = ensure_corpus(
                repo, tasks[repo][0].snapshot, args.corpora, args.mirrors, known[repo]
            )
            runs.append(
                run_repo(
                    service, repo, tasks[repo], PreparedTree(root),
                    index=repo if args.plain_index_names else index_name(repo, settings, vectors),
                    budgets=budgets,
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
