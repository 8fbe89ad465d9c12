"""Bench one git repository: mine (or load) its tasks, run them, report.

The ctxsvc index of a bench lives in the service's home like any other,
named ``bench-<name>-<settings>``, and its snapshots are checked out into
``<home>/bench/<index name>/``. Both are kept, so a second run re-indexes
only what differs between the previous run's last snapshot and its first.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from ctxsvc.bench.baselines import require_bm25s
from ctxsvc.bench.gitrepo import CheckoutSnapshots, GitRepo
from ctxsvc.bench.mining import MAX_FILES, mine
from ctxsvc.bench.report import Report, build_report
from ctxsvc.bench.runner import BUDGETS, SYSTEMS, NullProgress, Progress, check_systems, run_repo
from ctxsvc.bench.tasks import Task, load_tasks
from ctxsvc.catalog import repo_name_for
from ctxsvc.errors import InvalidRequest, NoTasks
from ctxsvc.limits import MAX_BUDGET
from ctxsvc.service import ContextService
from ctxsvc.settings import Settings
from ctxsvc.stores.locks import FileLock

DEFAULT_TASKS = 50


def index_name(base: str, settings: Settings, vectors: bool) -> str:
    """One index per repository and setting, so settings never mix in one index."""
    name = f"{base[:40]}-t{settings.chunk_target_tokens}m{settings.chunk_max_tokens}"
    if not vectors:
        return f"{name}-fts"
    return f"{name}-s{settings.embed_max_seq_tokens}{'q' if settings.embed_quantize else 'f'}"


def check_budgets(budgets: Iterable[int]) -> tuple[int, ...]:
    chosen = tuple(sorted(set(budgets)))
    if not chosen or not all(1 <= b <= MAX_BUDGET for b in chosen):
        raise InvalidRequest(
            f"budgets must be between 1 and {MAX_BUDGET} tokens, got {list(budgets) or 'none'}",
            hint="e.g. --budgets 2000,4000,8000,16000",
        )
    return chosen


def bench_name(repo: GitRepo, name: str | None = None) -> str:
    """The repository's name in reports and index names (letters, digits, ``.-_``)."""
    return repo_name_for(Path(name or repo.name))


def bench_repository(
    service: ContextService,
    repo: GitRepo,
    *,
    name: str | None = None,
    tasks: int = DEFAULT_TASKS,
    since: str | None = None,
    tasks_file: Path | None = None,
    budgets: Sequence[int] = BUDGETS,
    systems: Sequence[str] = SYSTEMS,
    vectors: bool = True,
    progress: Progress | None = None,
) -> Report:
    """Mine ``tasks`` tasks from ``repo`` (or load ``tasks_file``), run them, report.

    Raises ``NoTasks`` when nothing qualifies, ``InvalidRequest`` for a task
    file whose snapshots are not commits of ``repo``.
    """
    started = time.perf_counter()
    progress = progress or NullProgress()
    budgets = check_budgets(budgets)
    systems = check_systems(systems)
    if tasks < 1:
        raise InvalidRequest(f"--tasks must be at least 1, got {tasks}")
    if {"bm25-files", "bm25-windows"} & set(systems):
        require_bm25s()  # fail now, not after indexing
    settings = service.settings
    name = bench_name(repo, name)
    progress.note(f"{name}: reading history")
    if tasks_file is not None:
        found = _load(repo, tasks_file, tasks)
        source = f"tasks from {tasks_file}"
    else:
        found = mine(
            repo, limit=tasks, since=since, max_file_bytes=settings.max_file_bytes, name=name
        )
        span = f" between {found[0].date} and {found[-1].date}" if found else ""
        source = (
            f"mined from the first-parent history of {repo.root} at {repo.head[:10]}{span}; "
            "each task runs on its parent commit"
        )
    if not found:
        window = f" since {since}" if since else ""
        raise NoTasks(
            f"no commit of {name}{window} qualifies as a task: none has a message that says what "
            f"changed and touches 1 to {MAX_FILES} source files (tests, docs and examples aside)",
            hint="widen --since, or give tasks with --tasks-file",
        )
    mining_s = time.perf_counter() - started
    index = index_name(f"bench-{name}", settings, vectors)
    workdir = settings.home / "bench" / index
    with FileLock(settings.locks_path / f"{index}.bench.lock", f"the bench of {name!r}"):
        progress.start("tasks", len(found))
        run = run_repo(
            service, name, found, CheckoutSnapshots(repo, workdir), index=index,
            budgets=budgets, systems=systems, vectors=vectors, progress=progress,
        )  # fmt: skip
        progress.finish("tasks")
    config = {
        "repo": name,
        "path": str(repo.root),
        "head": repo.head,
        "source": source,
        "since": since,
        "tasks_file": str(tasks_file) if tasks_file else None,
        "budgets": list(budgets),
        "systems": list(systems),
        "vectors": vectors and service.embedder is not None,
        "model": service.embedder.name if vectors and service.embedder else None,
        "embedder_error": service.embedder_error if vectors else None,
        "encoding": service.tokens.name,
        "chunk_target_tokens": settings.chunk_target_tokens,
        "chunk_max_tokens": settings.chunk_max_tokens,
        "home": str(settings.home),
        "index": index,
        "snapshot_dir": str(workdir),
        "mining_seconds": round(mining_s, 2),
        "cpus": os.cpu_count(),
    }
    return build_report([run], config, time.perf_counter() - started)


def _load(repo: GitRepo, path: Path, limit: int) -> list[Task]:
    found = load_tasks(path, limit)
    missing = sorted({t.snapshot for t in found if not repo.has_commit(t.snapshot)})
    if missing:
        raise InvalidRequest(
            f"{len(missing)} snapshot commit(s) of {path} are not in {repo.root}, "
            f"e.g. {missing[0][:12]}",
            hint="give the repository the tasks were mined from (a clone with that history)",
        )
    return found
