"""Fidelity benchmark: is what a context delivers the code on disk, whole, and within budget?

Runs the localization tasks of ``../shared/bench/tasks/*.jsonl`` through
``ContextService.context`` (full text only, no model) at each budget and
detail, once without a session and once as a session that asked the same
question before, and counts, per answer:

- overruns: the cl100k count of the rendered text above the budget;
- unfaithful items: an item whose quoted lines are not the file's lines byte
  for byte (CRLF, tabs, trailing blanks), or whose fence holds a line that is
  neither a quoted line nor an elision comment of the file's language;
- holed blocks: items that deliver part of a function or method (or a
  constant over several lines: of the index's symbols) whose own lines between
  two delivered parts are missing, with no "omitted" marker in place (two
  methods of a class sent as two blocks are not a hole in the class);
- tiny blocks: snippets of one or two non-blank lines that hold no whole
  definition;
- tokens, in total.

The lines an item quotes are ``ContextItem.lines`` (runs of verbatim lines)
where the pack has them; before that field, a snippet or whole file claimed
its range and a skeleton none. Prints a table per repository and per setting,
and writes ``fidelity-<label>.json``.

    python -m benchmarks.fidelity --label before
    python -m benchmarks.fidelity --repos click,cobra --tasks 10 --label try

Corpora are read from ``--corpora/<repo>``; a missing one is written from the
bare mirror ``--mirrors/<owner>+<name>/repo`` at the task's snapshot commit.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console
from rich.table import Table

import ctxsvc
from benchmarks.localization import REPOS, BenchError, ensure_corpus, guarded, read_tasks
from benchmarks.paths import CORPORA, MIRRORS, TASKS_DIR
from ctxsvc.bench.repository import check_budgets, index_name
from ctxsvc.bench.tasks import Task
from ctxsvc.bench.terminal import RichProgress
from ctxsvc.compose import build_service
from ctxsvc.models import ContextItem, ContextPack, Symbol
from ctxsvc.service import ContextService
from ctxsvc.settings import Settings
from ctxsvc.tokens import TiktokenCounter

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
BUDGETS = (500, 2000, 8000)
DETAILS = ("snippets", "skeleton")
SESSIONS = ("none", "asked")  # "asked": a session that asked the same question once before
COUNTS = ("overruns", "items", "unfaithful", "holed", "tiny", "tokens")
MAX_EXAMPLES = 10  # of each defect, per repository, in the JSON

# Comment leaders by fence language: an elision is a comment of the file's language.
_LEADER = {
    **dict.fromkeys(("python", "ruby", "bash"), "#"),
    **dict.fromkeys(
        ("go", "rust", "javascript", "typescript", "tsx", "java", "c", "cpp", "csharp", "php",
         "kotlin"),
        "//",
    ),
    "markdown": "<!--",
}  # fmt: skip
_FENCE = re.compile(r"^(`{3,})([\w+-]*)$")  # a longer fence may quote a ``` line
_OMITTED = re.compile(r"… lines? (\d+)(?:-(\d+))?")

out = Console(highlight=False, width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True, highlight=False)


# -- reading a pack back ----------------------------------------------------------------


def fence(text: str) -> tuple[str, list[str]]:
    """The language and lines of the first code fence of ``text`` (("", []) without one)."""
    lines = iter(text.split("\n"))
    for line in lines:
        if m := _FENCE.match(line):
            body = []
            for inner in lines:
                if inner == m.group(1):
                    break
                body.append(inner)
            return m.group(2), body
    return "", []


def is_elision(line: str, language: str) -> bool:
    lead = _LEADER.get(language, "#")
    return line.lstrip(" \t").startswith(f"{lead} …")


def quoted_runs(item: ContextItem) -> tuple[tuple[int, int], ...]:
    """The runs of file lines ``item`` says it quotes verbatim, in order."""
    runs: Sequence[tuple[int, int]] | None = getattr(item, "lines", None)
    if runs is not None:
        return tuple((int(a), int(b)) for a, b in runs)
    return ((item.start_line, item.end_line),) if item.kind in ("snippet", "file") else ()


def marked(item: ContextItem) -> set[int]:
    """Lines the item says, in place, that it leaves out (elisions and gaps)."""
    lines: set[int] = set()
    for a, b in getattr(item, "gaps", ()):
        lines.update(range(a, b + 1))
    language, body = fence(item.text)
    for line in body:
        if is_elision(line, language) and (m := _OMITTED.search(line)):
            first = int(m.group(1))
            lines.update(range(first, int(m.group(2) or first) + 1))
    return lines


CAUSES = ("whitespace", "rewritten", "missing", "range")


def unfaithful(item: ContextItem, file: list[str]) -> tuple[str, str] | None:
    """Why the item's text is not the file's lines, as (cause, detail); None when it is.

    Causes: ``whitespace`` (a quoted line differs from the file's only in
    whitespace: CRLF, tabs, trailing blanks), ``rewritten`` (a line in the fence
    that is not the file's, nor an elision comment), ``missing`` (a line claimed
    but not quoted), ``range`` (lines claimed past the end of the file).
    """
    expected: list[tuple[int, str]] = []
    for a, b in quoted_runs(item):
        if not 1 <= a <= b <= len(file):
            return "range", f"claims lines {a}-{b} of a {len(file)}-line file"
        expected += [(n, file[n - 1]) for n in range(a, b + 1)]
    language, body = fence(item.text)
    at = 0
    for line in body:
        if at < len(expected) and line == expected[at][1]:
            at += 1
        elif not is_elision(line, language):
            if at >= len(expected):
                return "rewritten", f"{line[:120]!r} is not a line of the file"
            n, want = expected[at]
            cause = "whitespace" if line.split() == want.split() else "rewritten"
            return cause, f"{line[:120]!r} is not a line of the file; line {n} is {want[:120]!r}"
    if at < len(expected):
        n, want = expected[at]
        return "missing", f"line {n} ({want[:120]!r}) is claimed but not quoted"
    return None


# -- the files and definitions of a corpus ----------------------------------------------


class Disk:
    """A corpus's files as on disk, and the index's definitions of each."""

    def __init__(self, root: Path, symbols: Sequence[Symbol]) -> None:
        self.root = root
        self._lines: dict[str, list[str] | None] = {}
        self._symbols: dict[str, list[Symbol]] = defaultdict(list)
        for s in symbols:
            self._symbols[s.path].append(s)
        self._innermost: dict[str, list[int]] = {}

    def lines(self, path: str) -> list[str] | None:
        """The file's lines byte for byte; None when it is not UTF-8 (indexed lossily)."""
        if path not in self._lines:
            try:
                self._lines[path] = (self.root / path).read_bytes().decode().split("\n")
            except (OSError, UnicodeDecodeError):
                self._lines[path] = None
        return self._lines[path]

    def symbols(self, path: str) -> list[Symbol]:
        return self._symbols.get(path, [])

    def innermost(self, path: str) -> list[int]:
        """Per line (0-based list, 1-based lines), the innermost definition holding it (-1: none)."""
        if path not in self._innermost:
            file = self.lines(path) or []
            owner = [-1] * (len(file) + 2)
            syms = self.symbols(path)
            for i in sorted(range(len(syms)), key=lambda i: syms[i].start_line - syms[i].end_line):
                s = syms[i]
                for n in range(max(s.start_line, 1), min(s.end_line, len(file)) + 1):
                    owner[n] = i  # widest first: narrower definitions paint over
            self._innermost[path] = owner
        return self._innermost[path]


def body_of_code(s: Symbol) -> bool:
    """A function or method, or a constant over several lines: a definition that
    reads wrong with lines missing (a class or struct is a container of them)."""
    return s.kind in ("function", "method") or (
        s.kind in ("constant", "macro") and s.end_line > s.start_line
    )


def holed(pack: ContextPack, disk: Disk) -> list[tuple[ContextItem, Symbol, int]]:
    """Items that deliver part of a definition with an unmarked gap of its own lines,
    with the definition and the first missing line."""
    by_path: dict[str, list[ContextItem]] = defaultdict(list)
    for item in pack.items:
        by_path[item.path].append(item)
    found: list[tuple[ContextItem, Symbol, int]] = []
    for path, items in by_path.items():
        file = disk.lines(path)
        if file is None:
            continue
        got = {n for i in items for a, b in quoted_runs(i) for n in range(a, b + 1)}
        told = set().union(*(marked(i) for i in items))
        owner = disk.innermost(path)
        for k, s in enumerate(disk.symbols(path)):
            if not body_of_code(s):
                continue  # two methods of a class sent apart leave its other lines out
            inside = sorted(n for n in got if s.start_line <= n <= s.end_line)
            if len(inside) < 2:
                continue
            missing = next(
                (
                    n
                    for n in range(inside[0] + 1, inside[-1])
                    if n not in got and n not in told and owner[n] == k and file[n - 1].strip()
                ),
                None,
            )
            if missing is not None:
                found.extend(
                    (i, s, missing)
                    for i in items
                    if any(a <= s.end_line and b >= s.start_line for a, b in quoted_runs(i))
                )
    unique = {id(i): (i, s, n) for i, s, n in found}  # a block counts once
    return list(unique.values())


def tiny(item: ContextItem, disk: Disk) -> bool:
    """A snippet of at most two non-blank lines that holds no whole definition."""
    file = disk.lines(item.path)
    if item.kind != "snippet" or file is None:
        return False
    text = [file[n - 1] for n in range(item.start_line, min(item.end_line, len(file)) + 1)]
    if sum(1 for line in text if line.strip()) > 2:
        return False
    return not any(
        item.start_line <= s.start_line and s.end_line <= item.end_line
        for s in disk.symbols(item.path)
    )


# -- measuring ----------------------------------------------------------------------------


@dataclass
class Row:
    """One answer, measured."""

    repo: str
    task: str
    budget: int
    detail: str
    session: str
    tokens: int
    overruns: int
    items: int
    unfaithful: int
    holed: int
    tiny: int


@dataclass
class RepoResult:
    repo: str
    rows: list[Row] = field(default_factory=list)
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    causes: Counter[str] = field(default_factory=Counter)  # of unfaithful items
    index_seconds: float = 0.0
    seconds: float = 0.0

    def example(self, defect: str, **what: Any) -> None:
        if len(self.examples[defect]) < MAX_EXAMPLES:
            self.examples[defect].append(what)


def measure(
    pack: ContextPack, budget: int, disk: Disk, counter: TiktokenCounter, result: RepoResult,
    where: dict[str, Any],
) -> dict[str, int]:  # fmt: skip
    """The counts of one answer; the first defects of each kind go to ``result.examples``."""
    tokens = counter.count(pack.rendered)
    if tokens > budget:
        result.example("overruns", **where, tokens=tokens, tail=pack.rendered[-300:])
    bad = 0
    for item in pack.items:
        file = disk.lines(item.path)
        found = unfaithful(item, file) if file is not None else None
        if found:
            bad += 1
            cause, why = found
            result.causes[cause] += 1
            result.example(f"unfaithful {cause}", **where, path=item.path, kind=item.kind, why=why)
    holes = holed(pack, disk)
    for item, s, missing in holes[:1]:
        result.example(
            "holed", **where, path=item.path, symbol=s.qualname,
            definition=[s.start_line, s.end_line], block=[item.start_line, item.end_line],
            missing=missing,
        )  # fmt: skip
    small = [i for i in pack.items if tiny(i, disk)]
    for item in small[:1]:
        result.example("tiny", **where, path=item.path, block=[item.start_line, item.end_line])
    return {
        "tokens": tokens, "overruns": int(tokens > budget), "items": len(pack.items),
        "unfaithful": bad, "holed": len(holes), "tiny": len(small),
    }  # fmt: skip


def answers(
    service: ContextService, index: str, task: Task, budget: int, detail: str
) -> Iterator[tuple[str, ContextPack]]:
    """The answer without a session, and that of a session's second ask of the same."""
    yield "none", service.context(index, task.query, budget, detail=detail)
    session = service.start_session(index, f"fidelity {task.id}")
    service.context(index, task.query, budget, detail=detail, session_id=session.id)
    yield "asked", service.context(index, task.query, budget, detail=detail, session_id=session.id)


def run_repo(
    service: ContextService, repo: str, tasks: Sequence[Task], root: Path, index: str,
    budgets: Sequence[int], details: Sequence[str], progress: RichProgress,
) -> RepoResult:  # fmt: skip
    started = time.perf_counter()
    result = RepoResult(repo)
    progress.note(f"{repo}: indexing")
    service.index(root, index, vectors=False, reporter=progress)
    result.index_seconds = round(time.perf_counter() - started, 2)
    disk = Disk(root, service.view(service.resolve(index)).symbols)
    counter = TiktokenCounter(service.tokens.name)
    for task in tasks:
        progress.note(f"{repo}: {task.id}")
        for budget in budgets:
            for detail in details:
                for session, pack in answers(service, index, task, budget, detail):
                    where = {
                        "task": task.id,
                        "budget": budget,
                        "detail": detail,
                        "session": session,
                    }
                    counts = measure(pack, budget, disk, counter, result, where)
                    result.rows.append(Row(repo, task.id, budget, detail, session, **counts))
        progress.advance("tasks")
    result.seconds = round(time.perf_counter() - started, 2)
    return result


# -- reporting ----------------------------------------------------------------------------


def totals(rows: Sequence[Row]) -> dict[str, int]:
    sums: Counter[str] = Counter()
    for r in rows:
        for name in COUNTS:
            sums[name] += getattr(r, name)
    return {"answers": len(rows), **{name: sums[name] for name in COUNTS}}


def report_tables(results: Sequence[RepoResult]) -> list[Table]:
    columns = ("answers", "overruns", "items", "unfaithful", "holed", "tiny", "tokens")
    by_repo = Table(title="fidelity per repository (all budgets, details, sessions)")
    by_repo.add_column("repository")
    for col in columns:
        by_repo.add_column(col, justify="right")
    every = [r for res in results for r in res.rows]
    for res in results:
        by_repo.add_row(res.repo, *(f"{v:,}" for v in totals(res.rows).values()))
    by_repo.add_section()
    by_repo.add_row("all", *(f"{v:,}" for v in totals(every).values()), style="bold")
    by_setting = Table(title="fidelity per setting (all repositories)")
    for col in ("detail", "session", "budget"):
        by_setting.add_column(col)
    for col in columns:
        by_setting.add_column(col, justify="right")
    groups: dict[tuple[str, str, int], list[Row]] = defaultdict(list)
    for r in every:
        groups[(r.detail, r.session, r.budget)].append(r)
    last = None
    for (detail, session, budget), rows in sorted(groups.items()):
        if last is not None and detail != last:
            by_setting.add_section()
        last = detail
        by_setting.add_row(
            detail, session, f"{budget:,}", *(f"{v:,}" for v in totals(rows).values())
        )
    causes = Table(title="unfaithful items by cause")
    causes.add_column("repository")
    for col in CAUSES:
        causes.add_column(col, justify="right")
    for res in results:
        causes.add_row(res.repo, *(f"{res.causes[c]:,}" for c in CAUSES))
    return [by_repo, by_setting, causes]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repos", default=",".join(REPOS), help="comma-separated subset")
    p.add_argument("--tasks", type=int, default=None, help="first N tasks per repository")
    p.add_argument("--budgets", default=",".join(map(str, BUDGETS)))
    p.add_argument("--details", default=",".join(DETAILS))
    p.add_argument("--label", default="fts", help="the output is fidelity-<label>.json")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--tasks-dir", type=Path, default=TASKS_DIR)
    p.add_argument("--corpora", type=Path, default=CORPORA)
    p.add_argument("--mirrors", type=Path, default=MIRRORS)
    p.add_argument("--home", type=Path, default=Path(tempfile.gettempdir()) / "ctxsvc-fidelity",
                   help="ctxsvc data directory; indexes there are reused")  # fmt: skip
    return p


def main(argv: Sequence[str] | None = None) -> int:
    return guarded(_run, _parser().parse_args(argv))


def _run(args: argparse.Namespace) -> int:
    repos = [r.strip() for r in args.repos.split(",") if r.strip()]
    unknown = [r for r in repos if r not in REPOS]
    if unknown:
        raise BenchError(f"unknown repos: {', '.join(unknown)} (choose among {', '.join(REPOS)})")
    details = [d.strip() for d in args.details.split(",") if d.strip()]
    if not details or not set(details) <= {"snippets", "skeleton", "map", "full"}:
        raise BenchError(f"unknown details {args.details!r}: use snippets, skeleton, map, full")
    budgets = check_budgets(int(b) for b in args.budgets.split(","))
    settings = Settings.from_env(home=args.home)
    counter = TiktokenCounter(settings.encoding)
    service = build_service(settings, tokens=counter, vectors=False)
    tasks = read_tasks(args.tasks_dir, repos, args.tasks)
    started = time.perf_counter()
    results = []
    with RichProgress(err) as progress:
        progress.start("tasks", sum(map(len, tasks.values())))
        for repo in repos:
            root = ensure_corpus(repo, tasks[repo][0].snapshot, args.corpora, args.mirrors)
            index = index_name(repo, settings, False)
            results.append(
                run_repo(service, repo, tasks[repo], root, index, budgets, details, progress)
            )
    for table in report_tables(results):
        out.print(table)
    every = [r for res in results for r in res.rows]
    report = {
        "config": {
            "label": args.label, "tasks_dir": str(args.tasks_dir), "corpora": str(args.corpora),
            "repos": repos, "budgets": list(budgets), "details": details,
            "sessions": list(SESSIONS), "encoding": counter.name,
            "chunk_target_tokens": settings.chunk_target_tokens,
            "chunk_max_tokens": settings.chunk_max_tokens, "home": str(settings.home),
            "code": str(Path(ctxsvc.__file__).resolve().parent.parent), "cpus": os.cpu_count(),
        },
        "seconds": round(time.perf_counter() - started, 1),
        "total": totals(every),
        "per_repo": {
            res.repo: {**totals(res.rows), "causes": {c: res.causes[c] for c in CAUSES},
                       "index_seconds": res.index_seconds, "seconds": res.seconds}
            for res in results
        },
        "per_setting": [
            {"detail": d, "session": s, "budget": b,
             **totals([r for r in every if (r.detail, r.session, r.budget) == (d, s, b)])}
            for d in details for s in SESSIONS for b in budgets
        ],
        "examples": {res.repo: dict(res.examples) for res in results},
        "rows": [asdict(r) for r in every],
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"fidelity-{args.label}.json"
    path.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    err.print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
