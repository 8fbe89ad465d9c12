"""Run localization tasks against ctxsvc and the baselines, snapshot by snapshot.

Tasks are grouped by snapshot, in the order given (mined tasks: oldest
first). For each snapshot the tree is checked out (or taken as prepared),
ctxsvc re-indexes it incrementally under one index name, so each step only
parses and embeds what changed since the previous snapshot, and every system
answers every task of that snapshot at every budget:

- ``ctxsvc``: ``ContextService.context`` (skeleton items count for no lines);
- ``bm25-files`` / ``bm25-windows``: BM25 over whole files or 60-line windows;
- ``grep-agent``: an agent without an index: the query's identifiers and words
  grepped as fixed strings, whole files read in match order (``GrepAgent``);
- ``oracle``: the gold regions with 10 lines either side, nothing else;
- ``whole-repo``: every file discovery keeps, i.e. whole-repository injection.

Every context is measured the same way: the lines it delivers, its exact
token count with the service's counter, and the wall time to build it. A
context over its budget is an overrun and scores zero (the shared rule).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from ctxsvc.bench.baselines import (
    BM25Ranker,
    Doc,
    GrepAgent,
    Packed,
    file_docs,
    oracle_docs,
    pack_ranked,
    pack_reads,
    tokenize,
    window_docs,
)
from ctxsvc.bench.gitrepo import SnapshotSource
from ctxsvc.bench.metrics import Delivered, delivered_lines, file_hit, region_recall, savings
from ctxsvc.bench.tasks import Task
from ctxsvc.errors import CtxError, InvalidRequest
from ctxsvc.indexers.discover import discover, read_text
from ctxsvc.indexing import NullReporter, Reporter
from ctxsvc.models import SkippedFile
from ctxsvc.queries import Queries
from ctxsvc.service import ContextService
from ctxsvc.settings import Settings
from ctxsvc.tokens import TokenCounter

SYSTEMS = ("ctxsvc", "bm25-files", "bm25-windows", "grep-agent", "oracle", "whole-repo")
# ctxsvc with one part switched off, to run beside the default (ablations; not run by default).
VARIANTS: dict[str, dict[str, object]] = {
    "ctxsvc-fusion": {"ranker": "fusion"},  # hand-weighted fusion instead of the learned ranker
    "ctxsvc-no-history": {"history": False},  # the ranker trained without git history
    "ctxsvc-fragments": {"whole_definitions": False},  # chunks as they are, no region completion
}
BUDGETS = (2000, 4000, 8000, 16000)
WARM_UP_QUERY = "where is the main entry point"  # not a task's query: its vector is not cached


class Progress(Reporter, Protocol):
    """Index stages (``Reporter``), a ``tasks`` stage, and a line saying what runs now."""

    def note(self, text: str) -> None: ...


class NullProgress(NullReporter):
    def note(self, text: str) -> None:
        pass


@dataclass(frozen=True)
class Score:
    """One system's context for one task at one budget, measured."""

    system: str
    repo: str
    task: str
    budget: int
    name_leak: bool
    file_hit: float | None  # None: the task has no gold files
    region_recall: float | None  # None: the task has no regions
    tokens: int
    overrun: bool
    savings: float
    latency_ms: float | None = None  # None where nothing is computed (whole-repo)
    items: int = 0
    degraded: tuple[str, ...] = ()


@dataclass(frozen=True)
class SnapshotRun:
    """What one snapshot cost: checkout, indexing, and the size of the repository."""

    commit: str
    tasks: int
    files: int
    repo_tokens: int  # whole-repository injection at this snapshot
    checkout_seconds: float
    index_seconds: float
    files_indexed: int = 0  # parsed in this step (the others were unchanged)
    chunks: int = 0
    chunks_embedded: int = 0
    chunks_reused: int = 0
    stages: dict[str, float] = field(default_factory=dict)  # index seconds per stage


@dataclass
class RepoRun:
    """Every score of one repository's tasks, and what producing them cost."""

    repo: str
    index: str | None
    tasks: list[Task]
    scores: list[Score] = field(default_factory=list)
    snapshots: list[SnapshotRun] = field(default_factory=list)
    seconds: float = 0.0
    system_seconds: dict[str, float] = field(default_factory=dict)
    embed_ms: list[float] = field(default_factory=list)  # one query embedding per task


# -- the corpus of a snapshot --------------------------------------------------


@dataclass(frozen=True)
class Corpus:
    root: Path
    files: dict[str, str]  # path -> text, every file discovery and read_text keep
    hashes: dict[str, str]  # path -> sha256 of its bytes
    tokens: int  # of all of them: the whole-repository injection


class Corpora:
    """Snapshots' files, with per-file work (token counts, BM25 documents) cached
    by content hash, so a new snapshot costs only its changed files."""

    def __init__(self, settings: Settings, counter: TokenCounter) -> None:
        self.settings = settings
        self.counter = counter
        self._tokens: dict[str, int] = {}
        self._docs: dict[tuple[str, str, str], tuple[list[Doc], list[int], list[list[str]]]] = {}

    def load(self, root: Path) -> Corpus:
        s = self.settings
        files: dict[str, str] = {}
        hashes: dict[str, str] = {}
        for f in discover(root, max_file_bytes=s.max_file_bytes).files:
            got = read_text(
                root, f, max_file_bytes=s.max_file_bytes, max_line_chars=s.max_line_chars
            )
            if not isinstance(got, SkippedFile):
                files[f.path], hashes[f.path] = got.text, got.sha256
        todo = {h: files[p] for p, h in hashes.items() if h not in self._tokens}
        self._tokens.update(zip(todo, self.counter.count_many(list(todo.values())), strict=True))
        return Corpus(root, files, hashes, sum(self._tokens[h] for h in hashes.values()))

    def documents(self, corpus: Corpus, kind: str) -> tuple[list[Doc], list[int], list[list[str]]]:
        """BM25 documents of a corpus (``files`` or ``windows``), their sizes and terms."""
        docs: list[Doc] = []
        sizes: list[int] = []
        terms: list[list[str]] = []
        for path in sorted(corpus.files):
            key = (kind, path, corpus.hashes[path])
            got = self._docs.get(key)
            if got is None:
                one = {path: corpus.files[path]}
                made = file_docs(one) if kind == "files" else window_docs(one)
                got = (
                    made,
                    self.counter.count_many([d.render() for d in made]),
                    [tokenize(d.path, d.text) for d in made],
                )
                self._docs[key] = got
            docs.extend(got[0])
            sizes.extend(got[1])
            terms.extend(got[2])
        return docs, sizes, terms


# -- running -------------------------------------------------------------------


def check_systems(systems: Iterable[str]) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(systems))
    unknown = [s for s in chosen if s not in SYSTEMS and s not in VARIANTS]
    if unknown or not chosen:
        raise InvalidRequest(
            f"unknown systems: {', '.join(unknown) or '(none given)'}",
            hint=f"choose among {', '.join((*SYSTEMS, *VARIANTS))}",
        )
    return chosen


def run_repo(
    service: ContextService,
    repo: str,
    tasks: Sequence[Task],
    source: SnapshotSource,
    *,
    index: str,
    budgets: Sequence[int] = BUDGETS,
    systems: Sequence[str] = SYSTEMS,
    vectors: bool = True,
    progress: Progress | None = None,
) -> RepoRun:
    """Every task of one repository through every system at every budget.

    ``index`` names the ctxsvc index that follows the snapshots; it is
    re-indexed incrementally at each one. The index must never hold a task's
    own change: with an exact ``source`` the indexed commit is checked.
    """
    progress = progress or NullProgress()
    systems = check_systems(systems)
    started = time.perf_counter()
    uses_index = any(s == "ctxsvc" or s in VARIANTS for s in systems)
    run = RepoRun(repo, index if uses_index else None, list(tasks))
    corpora = Corpora(service.settings, service.tokens)
    groups: dict[str, list[Task]] = {}
    for task in tasks:
        groups.setdefault(task.snapshot, []).append(task)
    for snapshot, group in groups.items():
        progress.note(f"{repo} @ {snapshot[:10]}: checkout")
        t0 = time.perf_counter()
        root = source.checkout(snapshot)
        checkout_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        summary = None
        if uses_index:
            progress.note(f"{repo} @ {snapshot[:10]}: indexing")
            summary = service.index(root, index, vectors=vectors, reporter=progress)
            if source.exact and summary.commit != snapshot:
                raise CtxError(
                    f"the index of {repo} holds commit {summary.commit}, not the snapshot "
                    f"{snapshot}: refusing to score tasks against the wrong tree"
                )
            service.context(index, WARM_UP_QUERY, budgets[0])  # view load, lazy opens
        index_s = time.perf_counter() - t0
        corpus = corpora.load(root)
        scorer = _Scorer(service, corpora, corpus, index, budgets, run, vectors)
        for task in group:
            progress.note(f"{repo} @ {snapshot[:10]}: {task.id}")
            for system in systems:
                t0 = time.perf_counter()
                run.scores.extend(scorer.score(system, task))
                run.system_seconds[system] = (
                    run.system_seconds.get(system, 0.0) + time.perf_counter() - t0
                )
            progress.advance("tasks")
        run.snapshots.append(
            SnapshotRun(
                commit=snapshot, tasks=len(group), files=len(corpus.files),
                repo_tokens=corpus.tokens, checkout_seconds=round(checkout_s, 3),
                index_seconds=round(index_s, 3),
                files_indexed=summary.files_indexed if summary else 0,
                chunks=summary.chunks if summary else 0,
                chunks_embedded=summary.chunks_embedded if summary else 0,
                chunks_reused=summary.chunks_reused if summary else 0,
                stages={t.stage: round(t.seconds, 3) for t in summary.timings} if summary else {},
            )
        )  # fmt: skip
    run.seconds = time.perf_counter() - started
    return run


class _Scorer:
    """The systems on one snapshot; BM25 indexes and the grep agent are built on first use."""

    def __init__(
        self, service: ContextService, corpora: Corpora, corpus: Corpus, index: str,
        budgets: Sequence[int], run: RepoRun, vectors: bool,
    ) -> None:  # fmt: skip
        self.service = service
        self.counter = service.tokens
        self.corpora = corpora
        self.corpus = corpus
        self.index = index
        self.budgets = budgets
        self.repo = run.repo
        self.run = run
        self.vectors = vectors
        self._rankers: dict[str, tuple[BM25Ranker, list[int]]] = {}
        self._grep: tuple[GrepAgent, list[int]] | None = None
        self._everything: Delivered | None = None

    def score(self, system: str, task: Task) -> list[Score]:
        if system == "ctxsvc":
            return self._ctxsvc(task, system, self.service.queries)
        if system in VARIANTS:
            queries = self.service.queries
            config = replace(queries.retrieval, **VARIANTS[system])  # type: ignore[arg-type]
            return self._ctxsvc(task, system, replace(queries, retrieval=config))
        if system == "whole-repo":
            return self._whole_repo(task)
        if system == "oracle":
            docs = oracle_docs(self.corpus.files, task.gold, task.regions)
            return self._packed(system, task, docs, None, 0.0)
        if system == "grep-agent":
            return self._grep_agent(task)
        kind = "files" if system == "bm25-files" else "windows"
        if kind not in self._rankers:
            docs, sizes, terms = self.corpora.documents(self.corpus, kind)
            self._rankers[kind] = (BM25Ranker(docs, terms), sizes)
        ranker, sizes = self._rankers[kind]
        t0 = time.perf_counter()
        order = ranker.rank(task.query)
        rank_ms = (time.perf_counter() - t0) * 1000
        return self._packed(
            system, task, [ranker.docs[i] for i in order], [sizes[i] for i in order], rank_ms
        )

    def _row(
        self, system: str, task: Task, budget: int, delivered: Delivered, tokens: int,
        latency_ms: float | None, items: int = 0, degraded: tuple[str, ...] = (),
    ) -> Score:  # fmt: skip
        overrun = tokens > budget
        hit = file_hit(delivered, task.gold)
        recall = region_recall(delivered, task.regions)
        return Score(
            system=system, repo=self.repo, task=task.id, budget=budget, name_leak=task.name_leak,
            file_hit=0.0 if overrun and hit is not None else hit,
            region_recall=0.0 if overrun and recall is not None else recall,
            tokens=tokens, overrun=overrun, savings=savings(tokens, self.corpus.tokens),
            latency_ms=None if latency_ms is None else round(latency_ms, 2),
            items=items, degraded=degraded,
        )  # fmt: skip

    def _ctxsvc(self, task: Task, system: str, queries: Queries) -> list[Score]:
        # The query is embedded once per task, whatever the budget: time that apart,
        # then time each budget's context() with the query vector cached (the first
        # call caches it), so that no budget carries the embedding for the others.
        embedder = self.service.embedder
        if embedder is not None and self.vectors and system == "ctxsvc":
            t0 = time.perf_counter()
            embedder.embed([task.query])
            self.run.embed_ms.append(round((time.perf_counter() - t0) * 1000, 2))
        queries.context(self.index, task.query, self.budgets[0])
        rows = []
        for budget in self.budgets:
            t0 = time.perf_counter()
            pack = queries.context(self.index, task.query, budget)
            ms = (time.perf_counter() - t0) * 1000
            # The lines quoted verbatim: not a marked hole inside an item, nor the
            # signatures-only range of a skeleton.
            spans = [
                (i.path, a, z)
                for i in pack.items
                if i.kind != "skeleton"
                for a, z in (i.lines or ((i.start_line, i.end_line),))
            ]
            rows.append(
                self._row(
                    system, task, budget, delivered_lines(spans), self.counter.count(pack.rendered),
                    ms, len(pack.items), tuple(pack.degraded),
                )
            )  # fmt: skip
        return rows

    def _grep_agent(self, task: Task) -> list[Score]:
        if self._grep is None:
            docs, sizes, _ = self.corpora.documents(self.corpus, "files")
            self._grep = (GrepAgent(docs), sizes)
        agent, sizes = self._grep
        t0 = time.perf_counter()
        order = agent.rank(task.query)
        rank_ms = (time.perf_counter() - t0) * 1000
        ranked = [agent.docs[i] for i in order]
        return self._packed(
            "grep-agent", task, ranked, [sizes[i] for i in order], rank_ms, pack=pack_reads
        )

    def _packed(
        self, system: str, task: Task, ranked: list[Doc], sizes: list[int] | None, rank_ms: float,
        pack: Callable[..., Packed] = pack_ranked,
    ) -> list[Score]:  # fmt: skip
        rows = []
        for budget in self.budgets:
            t0 = time.perf_counter()
            packed = pack(ranked, budget, self.counter, sizes=sizes)
            ms = rank_ms + (time.perf_counter() - t0) * 1000
            rows.append(
                self._row(
                    system, task, budget, packed.delivered, packed.tokens, ms, len(packed.docs)
                )
            )
        return rows

    def _whole_repo(self, task: Task) -> list[Score]:
        if self._everything is None:
            self._everything = {
                p: [(1, max(text.count("\n") + (not text.endswith("\n")), 1))]
                for p, text in self.corpus.files.items()
            }
        n = len(self.corpus.files)
        return [
            self._row("whole-repo", task, b, self._everything, self.corpus.tokens, None, n)
            for b in self.budgets
        ]
