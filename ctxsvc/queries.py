"""The query side: context, expand, search, the repository map, symbols and file lines.

Context, expand, search and the map start with one prologue
(:meth:`Queries._start`): the request's bounds are checked, the index is
resolved with its freshness, and a query's vector is computed or its absence
noted. Symbols and file lines only look names and lines up in the index as it
is, with no freshness check. Packs are recorded in the session
ledger for the session that asked. A session of a workspace gets drift
warnings (code another session changed) first in its answer, within the same
budget; they come in through the small :class:`DriftSource` protocol.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ctxsvc.blocks import Block, body_runs
from ctxsvc.candidates import (
    DETAILS,
    candidates,
    candidates_of,
    check_patterns,
    expand_blocks,
    filter_hits,
    find_definitions,
    ranked_files,
    symbol_references,
)
from ctxsvc.catalog import Catalog, Current
from ctxsvc.diffs import working_diff
from ctxsvc.drift import DriftSource, Watch, drift, render_warnings
from ctxsvc.errors import CtxError, InvalidRequest, RankerUnavailable, StoreError
from ctxsvc.graph import personalized_pagerank
from ctxsvc.impact import (
    DIFF_WEIGHTS,
    DiffWeights,
    definition_at,
    diff_hits,
    diff_preface,
    impact,
    references,
)
from ctxsvc.limits import (
    MAX_LINE,
    MAX_QUERY_CHARS,
    MAX_RESULTS,
    MAX_SYMBOL_CHARS,
    check_budget,
    validate_session_id,
)
from ctxsvc.models import (
    ContextPack,
    DeliveredSpan,
    DriftWarning,
    FileLines,
    FileScore,
    Hit,
    Impact,
    IndexVersion,
    Links,
    SearchResult,
    SymbolScore,
    SymbolUses,
    span_hash,
)
from ctxsvc.multi import Part, distinct, merge_search, pack_many, repo_names
from ctxsvc.packing import pack
from ctxsvc.ranking import Ranker, model_path, shipped_ranker
from ctxsvc.retrieval import RetrievalConfig, path_prior, retrieve
from ctxsvc.sessions import split_already_sent
from ctxsvc.stores.ledger import SessionLedger
from ctxsvc.tokens import TokenCounter
from ctxsvc.vectors import QueryVectors
from ctxsvc.view import RepoView

DRIFT_ROUNDS = 3  # re-packs until the warnings an answer raises are those it carries


@dataclass(frozen=True)
class _Started:
    """What the prologue found: the index, and the vector signal for the query."""

    current: Current
    vector: npt.NDArray[np.float32] | None
    config: RetrievalConfig
    ranker: Ranker | None = None  # None: hand-weighted fusion orders the candidates


@dataclass(frozen=True)
class _Gathered:
    """One index's part of a context answer, before packing."""

    current: Current
    blocks: list[Block]
    already: list[DeliveredSpan]  # what the session holds, unchanged: referred to
    record: bool  # the session's ledger was read: what is sent is recorded
    lead: Callable[[TokenCounter, int], str] | None = None  # the diff, first


@dataclass(frozen=True, eq=False)
class Queries:
    """Answers queries over the catalog's indexes; records packs in ``ledger``."""

    catalog: Catalog
    tokens: TokenCounter
    vectors: QueryVectors
    _: KW_ONLY
    ledger: SessionLedger | None = None
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    drift: DriftSource | None = None
    ranker_model: Path | None = None  # the learned ranker's file (None: the shipped one)
    diff_weights: DiffWeights = DIFF_WEIGHTS  # how ``context(diff=...)`` ranks and shares

    def context(
        self,
        name_or_path: str | None,
        query: str,
        budget_tokens: int,
        *,
        detail: str = "snippets",
        session_id: str | None = None,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        refresh: bool = False,
        diff: str | None = None,
        branch: str | None = None,
        repos: Sequence[str] | None = None,
    ) -> ContextPack:
        """The code most relevant to ``query``, within ``budget_tokens``.

        With ``diff`` (a base: ``HEAD``, a branch, a commit), the answer is for
        the working tree's change against it: the diff itself first (an eighth
        of the budget at most), then code ranked by what the query finds and
        how near the change it is: the definitions it changed (up to an eighth
        of the budget: the agent has those files), their callers and callees,
        their callers' callers, tests and files that change with them, by
        distance and resolution (``ctxsvc.impact.DiffWeights``). The changed
        files are re-indexed first.

        With ``branch`` (a branch, or the commit of a detached HEAD) that the
        working tree has left, the answer comes from the version the index kept
        of it, as stored then (no refresh; ``degraded`` says so);
        ``BranchNotIndexed`` when none is kept.

        With ``session_id``, what the session already holds (unchanged) is
        referred to rather than sent again, and what is sent is recorded. A
        state database that cannot be read (damaged, locked too long) does not
        stop the answer: everything is sent again, unrecorded, and
        ``degraded`` says so. With ``refresh``, files changed on disk are
        re-indexed first.

        With ``repos``, the answer spans those indexes too (``name_or_path``
        first, when given; up to eight): scores made comparable and the budget
        shared as :mod:`ctxsvc.multi` says, each item naming its index.
        """
        if diff is not None and branch is not None:
            raise InvalidRequest(
                "diff and branch cannot be combined: a diff is of the working tree",
                hint="ask for the diff without branch, or for the branch without diff",
            )
        names = repo_names(name_or_path, repos)
        opts: dict[str, Any] = {"detail": detail, "session_id": session_id, "include": include,
                "exclude": exclude, "refresh": refresh, "diff": diff, "branch": branch}  # fmt: skip
        if len(names) > 1:
            return self._many(names, query, budget_tokens, **opts)
        g = self._gather(names[0], query, budget_tokens, **opts)
        source = self.drift
        watch = None
        if source is not None and session_id is not None:
            try:
                watch = source.watch(session_id, g.current.view.meta.name)
            except StoreError as exc:
                g.current.degraded.append(
                    f"workspace log unavailable: no warnings of what other sessions changed"
                    f" ({exc.message})"
                )
        if source is None or watch is None or session_id is None:
            return self._pack(
                g.current, query, g.blocks, budget_tokens, detail, session_id, g.already,
                record=g.record, lead=g.lead,
            )  # fmt: skip
        return self._pack_with_drift(
            source, watch, g.current, query, g.blocks, g.already, budget_tokens, detail,
            session_id, record=g.record, lead=g.lead,
        )  # fmt: skip

    def _many(
        self, names: Sequence[str], query: str, budget_tokens: int, **opts: Any
    ) -> ContextPack:
        """The answer over several indexes, each asked as alone, then merged and shared."""
        for one in ("diff", "branch"):
            if opts[one] is not None:
                raise InvalidRequest(
                    f"{one} works with one repository only", hint="ask without repos"
                )
        got = [
            self._gather(n, query, budget_tokens, **opts)
            for n in distinct(names, lambda n: self.catalog.resolve(n).name)
        ]
        result = pack_many(
            [Part(g.current.view.meta.name, g.blocks, _version(g.current), g.current.degraded,
                  g.already) for g in got],
            query, budget_tokens, self.tokens, detail=opts["detail"],
            session_id=opts["session_id"],
        )  # fmt: skip
        for g in got:  # the ledger keys spans by index: each records its own
            result = self._record(result, g.current.view) if g.record else result
        source, session_id = self.drift, opts["session_id"]
        # Drift warnings follow a workspace session on its one repository: not merged here.
        with contextlib.suppress(StoreError):  # (then no warnings are given either)
            if (
                source is not None
                and session_id is not None
                and any(source.watch(session_id, g.current.view.meta.name) for g in got)
            ):
                note = "workspace warnings: not given in an answer over several repositories"
                result = replace(result, degraded=(*result.degraded, note))
        return result

    def _gather(
        self,
        name_or_path: str,
        query: str,
        budget_tokens: int,
        *,
        detail: str,
        session_id: str | None,
        include: Sequence[str] | None,
        exclude: Sequence[str] | None,
        refresh: bool,
        diff: str | None,
        branch: str | None,
    ) -> _Gathered:
        """One index's candidates for ``query``, minus what the session holds of it."""
        s = self._start(
            name_or_path, query, budget_tokens, detail=detail, include=include, exclude=exclude,
            refresh=refresh or diff is not None, branch=branch,
        )  # fmt: skip
        view = s.current.view
        # Enough candidates to fill the budget with chunks of the target size, twice over.
        limit = max(60, 2 * budget_tokens // self.catalog.settings.chunk_target_tokens)
        hits = retrieve(view, query, s.vector, s.config, limit=limit, ranker=s.ranker)
        lead = None
        if diff is not None:
            settings = self.catalog.settings
            root = Path(view.meta.root)
            change = working_diff(root, diff).served(
                root,
                {p: r.status if r.status == "indexed" else r.reason for p, r in view.files.items()},
                include, exclude, max_file_bytes=settings.max_file_bytes,
                max_line_chars=settings.max_line_chars,
            )  # fmt: skip
            hits = diff_hits(view, change, hits, self.diff_weights, budget_tokens)
            lead = diff_preface(change, budget_tokens, self.diff_weights)
        hits = filter_hits(hits, include, exclude)
        already: list[DeliveredSpan] = []
        held = self._held(session_id, view.meta.name, s.current.degraded)
        if held:
            hits, already = split_already_sent(hits, held, view.lines)
        blocks, _ = candidates_of(
            view, hits, detail, None, None, budget_tokens, s.config.spread,
            s.config.whole_definitions,
        )  # fmt: skip
        return _Gathered(s.current, blocks, already, held is not None, lead)

    def expand(
        self,
        name_or_path: str,
        *,
        symbol: str | None = None,
        path: str | None = None,
        start_line: int | None = None,
        end_line: int | None = None,
        budget_tokens: int = 4000,
        callers: bool = False,
        callees: bool = False,
        session_id: str | None = None,
        branch: str | None = None,
    ) -> ContextPack:
        """One symbol or line range, optionally with its callees and callers, within a budget;
        ``branch`` as for :meth:`context` (from the snapshot kept of it)."""
        s = self._start(name_or_path, None, budget_tokens, branch=branch)
        blocks = expand_blocks(
            s.current.view, symbol=symbol, path=path, start_line=start_line, end_line=end_line,
            callers=callers, callees=callees,
        )  # fmt: skip
        query = symbol or f"{path}:{start_line or 1}-{end_line or ''}"
        return self._pack(s.current, query, blocks, budget_tokens, "snippets", session_id)

    def search(
        self,
        name_or_path: str | None,
        query: str,
        limit: int = 20,
        *,
        branch: str | None = None,
        repos: Sequence[str] | None = None,
    ) -> SearchResult:
        """Ranked files and symbols for ``query``, with scores, without packing.

        Runs the same retrieval as :meth:`context`. A file scores by its two
        best chunks (as for the ``map`` and ``full`` details); a symbol by the
        best chunk that defines it. At most ``limit`` of each. ``branch`` as
        for :meth:`context`. With ``repos``, over those indexes too (not with
        ``branch``), merged as :mod:`ctxsvc.multi` says.
        """
        names = repo_names(name_or_path, repos)
        if len(names) > 1:
            if branch is not None:
                raise InvalidRequest(
                    "branch works with one repository only", hint="ask without repos"
                )
            found = distinct(names, lambda n: self.catalog.resolve(n).name)
            return merge_search([self.search(n, query, limit) for n in found], limit)
        name_or_path = names[0]
        s = self._start(name_or_path, query, limit=limit, branch=branch)
        view = s.current.view
        hits = retrieve(view, query, s.vector, s.config, limit=max(60, 3 * limit), ranker=s.ranker)
        best: dict[tuple[str, str], float] = {}
        for h in hits:
            for q in h.chunk.symbols:
                key = (h.chunk.path, q)
                best[key] = max(best.get(key, h.score), h.score)
        paths = {p for p, _ in best}
        defs = {(sym.path, sym.qualname): sym for sym in view.symbols if sym.path in paths}
        name = view.meta.name
        symbols = sorted(
            (SymbolScore(defs[k], score, repo=name) for k, score in best.items() if k in defs),
            key=lambda x: -x.score,
        )
        return SearchResult(
            repo=name_or_path, query=query,
            files=tuple(FileScore(p, score, name) for p, score in ranked_files(hits)[:limit]),
            symbols=tuple(symbols[:limit]), degraded=tuple(s.current.degraded), repos=(name,),
            index=(version := _version(s.current)), indexes={name: version},
        )  # fmt: skip

    def repo_map(self, name_or_path: str, budget_tokens: int = 2000) -> ContextPack:
        """A map of the repository without a query, within ``budget_tokens``.

        Files rank by PageRank over the whole code graph: the code most
        referenced, directly or not, comes first. Retrieval's path priors weigh
        both where the walk restarts and the files' scores, so that source
        ranks over tests, examples and prose, even over test helpers that every
        test calls. Each line names the file's most central symbols; files
        outside the graph come last.
        """
        s = self._start(name_or_path, None, budget_tokens)
        view = s.current.view
        prior: dict[str, float] = {}
        for path, rec in view.files.items():
            prior[path] = path_prior(path, rec.language, self.retrieval)
        seeds = {n: prior.get(k.split("::", 1)[0], 1.0) for n, k in enumerate(view.graph.keys)}
        rank = personalized_pagerank(view.graph, seeds)
        hits = [
            Hit(c, float(sum(rank[n] for n in nodes)) * prior.get(c.path, 1.0), ("pagerank",))
            for c, nodes in zip(view.chunks, view.chunk_nodes, strict=True)
        ]
        hits.sort(key=lambda h: -h.score)
        # Map lines are a few dozen tokens: more candidates than this never fit.
        blocks = candidates(view, hits[: max(200, budget_tokens // 4)], "map")
        return self._pack(s.current, f"map of {view.meta.name}", blocks, budget_tokens, "map")

    def symbol_uses(self, name_or_path: str, name: str, limit: int = 100) -> SymbolUses:
        """The definitions ``name`` can mean, and the references to them.

        ``name`` is an id (``path::Qualified.name``), a qualified name or a
        name; every definition it can mean is listed (a lookup, unlike expand).
        References are those that resolve to one of them, then those that
        match by name only; a name defined nowhere lists all its uses. The
        first ``limit`` of each, and how many there are.
        """
        if not name.strip() or len(name) > MAX_SYMBOL_CHARS:
            raise InvalidRequest(f"a symbol of 1 to {MAX_SYMBOL_CHARS} characters is required")
        if not 1 <= limit <= MAX_RESULTS:
            raise InvalidRequest(f"limit must be between 1 and {MAX_RESULTS}, got {limit}")
        view = self.catalog.view(self.catalog.resolve(name_or_path))
        found = find_definitions(view, name)
        defs = [view.symbols[i] for i in found][:limit]
        if found:
            uses = symbol_references(view, found)
        else:
            short = name.rpartition("::")[2].rsplit(".", 1)[-1]
            uses = [(r, False) for r in view.refs_by_name.get(short, [])]
        return SymbolUses(
            name_or_path, name, tuple(defs), tuple(r for r, _ in uses[:limit]), len(found),
            len(uses), ids=tuple(d.id for d in defs),
            resolved_references=sum(1 for _, sure in uses if sure),
        )  # fmt: skip

    def impact(self, name_or_path: str, name: str, depth: int = 2, limit: int = 100) -> Impact:
        """Who depends on the definitions ``name`` can mean, grouped by depth (1 to 5),
        each link marked resolved or matched by name (a guess)."""
        if not name.strip() or len(name) > MAX_SYMBOL_CHARS:
            raise InvalidRequest(f"a symbol of 1 to {MAX_SYMBOL_CHARS} characters is required")
        view = self.catalog.view(self.catalog.resolve(name_or_path))
        return impact(view, name, depth, limit)

    def references(self, name_or_path: str, name: str, limit: int = 100) -> Links:
        """The uses of the definitions ``name`` can mean, each with the definition it sits
        in and how it was resolved (through receivers, imports and scopes, or by name)."""
        if not name.strip() or len(name) > MAX_SYMBOL_CHARS:
            raise InvalidRequest(f"a symbol of 1 to {MAX_SYMBOL_CHARS} characters is required")
        if not 1 <= limit <= MAX_RESULTS:
            raise InvalidRequest(f"limit must be between 1 and {MAX_RESULTS}, got {limit}")
        return references(self.catalog.view(self.catalog.resolve(name_or_path)), name, limit)

    def definition(
        self, name_or_path: str, name: str, path: str | None = None, line: int | None = None
    ) -> Links:
        """What ``name`` means where it is used at ``path:line`` (go to definition); every
        definition of the name, marked as matched by name, without a place."""
        if not name.strip() or len(name) > MAX_SYMBOL_CHARS:
            raise InvalidRequest(f"a symbol of 1 to {MAX_SYMBOL_CHARS} characters is required")
        if line is not None and not 1 <= line <= MAX_LINE:
            raise InvalidRequest(f"line must be between 1 and {MAX_LINE}, got {line}")
        view = self.catalog.view(self.catalog.resolve(name_or_path))
        return definition_at(view, name, path, line)

    def file_lines(
        self, name_or_path: str, path: str, start: int | None = None, end: int | None = None
    ) -> FileLines | None:
        """Lines ``start..end`` of an indexed file, as indexed, and its line count.

        Only the index is read, never the disk, so nothing outside what was
        indexed can be returned. None when ``path`` is not an indexed file.
        """
        view = self.catalog.view(self.catalog.resolve(name_or_path))
        lines = view.file_lines(path)
        if not lines:
            return None
        total = max(lines)
        first, last = start or 1, min(end or total, total)
        if not 1 <= first <= total or last < first:
            raise InvalidRequest(
                f"invalid line range {start or 1}-{end or total} for {path} ({total} lines)"
            )
        text = "\n".join(lines.get(n, "") for n in range(first, last + 1))
        return FileLines(
            repo=name_or_path, path=path, start_line=first, end_line=last, total_lines=total,
            tokens=self.tokens.count(text), content_hash=span_hash(text), text=text,
        )  # fmt: skip

    # -- the prologue, packing and the ledger -------------------------------------------

    def _held(
        self, session_id: str | None, repo: str, degraded: list[str]
    ) -> list[DeliveredSpan] | None:
        """What ``session_id`` received from ``repo``; None (and a note in ``degraded``) when
        the ledger cannot be read, and for no session."""
        if session_id is None:
            return None
        validate_session_id(session_id)
        if self.ledger is None:
            raise InvalidRequest("sessions are not enabled in this service")
        try:
            return self.ledger.delivered(session_id, repo)
        except StoreError as exc:
            degraded.append(f"session ledger unavailable: everything sent again ({exc.message})")
            return None

    def _start(
        self,
        name_or_path: str,
        query: str | None,
        budget_tokens: int | None = None,
        *,
        detail: str | None = None,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        limit: int | None = None,
        refresh: bool = False,
        branch: str | None = None,
    ) -> _Started:
        """Check the request's bounds, load the index, and embed the query (if any)."""
        if query is not None:
            if not query.strip():
                raise InvalidRequest("the query is empty", hint="describe the task in words")
            if len(query) > MAX_QUERY_CHARS:
                raise InvalidRequest(f"the query is longer than {MAX_QUERY_CHARS} characters")
        if limit is not None and not 1 <= limit <= MAX_RESULTS:
            raise InvalidRequest(f"limit must be between 1 and {MAX_RESULTS}, got {limit}")
        if budget_tokens is not None:
            check_budget(budget_tokens)
        if detail is not None and detail not in DETAILS:
            raise InvalidRequest(
                f"unknown detail {detail!r}", hint=f"use one of {', '.join(DETAILS)}"
            )
        check_patterns(include, exclude)
        current = self.catalog.current(name_or_path, refresh=refresh, branch=branch)
        vector = None
        if query is not None and self.retrieval.vector:
            # The view's row: the vectors ranked with (a fill may have committed since resolve).
            vector, why_not = self.vectors.vector(current.view.meta, query)
            current.degraded.extend(why_not)
        config = self.retrieval if vector is not None else replace(self.retrieval, vector=False)
        ranker = None
        if query is not None and config.ranker == "learned":
            if vector is None:  # the model was trained with the vector signal's features
                current.degraded.append("ranking: hand-weighted fusion (no query vector)")
            else:
                history = config.history and current.view.history.commits > 0
                try:
                    ranker = shipped_ranker(self.ranker_model or model_path(history), history)
                except RankerUnavailable as exc:
                    current.degraded.append(
                        f"ranking: hand-weighted fusion ({exc.message}; reinstall ctxsvc, "
                        "or set CTXSVC_RANKER=fusion to choose it)"
                    )
        return _Started(current, vector, config, ranker)

    def _pack(
        self,
        current: Current,
        query: str,
        blocks: list[Block],
        budget_tokens: int,
        detail: str,
        session_id: str | None = None,
        already: Sequence[DeliveredSpan] = (),
        *,
        warnings: Sequence[DriftWarning] = (),
        record: bool = True,
        lead: Callable[[TokenCounter, int], str] | None = None,
    ) -> ContextPack:
        view = current.view
        meta = view.meta
        version = _version(current)

        def preface(cap: int) -> tuple[str, Sequence[DriftWarning]]:
            # The diff first (half the room when warnings come too), then the warnings.
            head = lead(self.tokens, cap // 2 if warnings else cap) if lead else ""
            if not warnings:
                return head, ()
            text, given = render_warnings(warnings, self.tokens, cap - self.tokens.count(head))
            return head + text, given

        result = pack(
            meta.name, query, blocks, budget_tokens, self.tokens, detail=detail, index=version,
            degraded=current.degraded, session_id=session_id, already_sent=already,
            preface=preface if warnings or lead else None,
        )  # fmt: skip
        return self._record(result, view) if record else result

    def _record(self, result: ContextPack, view: RepoView) -> ContextPack:
        """Record in the ledger what ``result`` delivers to its session, if any.

        One span per run of file lines an item delivers (its scope headers left
        out, its holes not claimed), hashed as the session can check it later.
        """
        if result.session_id is None or self.ledger is None:
            return result
        files: dict[str, Mapping[int, str]] = {}
        spans: list[DeliveredSpan] = []
        for i in result.items:
            if not i.content_hash or i.repo != view.meta.name:
                continue
            lines = files.get(i.path)
            if lines is None:
                lines = files[i.path] = view.file_lines(i.path)
            for a, z in body_runs(i.lines, i.start_line, i.end_line):
                text = "\n".join(lines.get(n, "") for n in range(a, z + 1))
                spans.append(DeliveredSpan(i.path, a, z, span_hash(text), self.tokens.count(text)))
        try:
            self.ledger.record(result.session_id, view.meta.name, spans)
        except CtxError as exc:  # the answer is still good; say it was not recorded
            result = replace(result, degraded=(*result.degraded, f"session: not recorded ({exc})"))
        return result

    def _pack_with_drift(
        self,
        source: DriftSource,
        watch: Watch,
        current: Current,
        query: str,
        blocks: list[Block],
        already: Sequence[DeliveredSpan],
        budget_tokens: int,
        detail: str,
        session_id: str,
        *,
        record: bool = True,
        lead: Callable[[TokenCounter, int], str] | None = None,
    ) -> ContextPack:
        """The pack for a workspace session: drift warnings first, all within the budget.

        Only the warnings the text gives in full count as given: those folded
        into "… and N more", or left out for the budget, come again next time.
        """
        # Warnings come first in the text, within the budget: reserve room for
        # those the candidates would raise, then keep those the answer raises.
        held = {s.path for s in already}
        when = current.view.meta.indexed_at

        def raised(paths: set[str], texts: list[str]) -> list[DriftWarning]:
            text = "\n".join([query, *texts])
            return drift(
                watch.seen, watch.events, paths | held, text, delivered=paths, indexed_at=when
            )

        warnings = raised({b.path for b in blocks}, [b.lines_text() for b in blocks])
        for _ in range(DRIFT_ROUNDS):
            result = self._pack(
                current, query, blocks, budget_tokens, detail, None, already, warnings=warnings,
                lead=lead,
            )  # fmt: skip
            now = raised({i.path for i in result.items}, [i.text for i in result.items])
            if {w.event.seq for w in now} == {w.event.seq for w in warnings}:
                break
            warnings = now
        result = replace(result, session_id=session_id)
        if record:
            result = self._record(result, current.view)
        try:
            source.mark_warned(session_id, (w.event.seq for w in result.warnings))
        except StoreError as exc:  # the answer stands; its warnings come again next time
            note = f"workspace log: warnings not remembered, they come again ({exc.message})"
            result = replace(result, degraded=(*result.degraded, note))
        return result


def _version(current: Current) -> IndexVersion:
    """The index version an answer comes from: its commit, branch and generation."""
    meta = current.view.meta
    return IndexVersion(
        commit=meta.commit, indexed_at=meta.indexed_at, generation=meta.generation,
        changed_since=current.fresh.all, branch=meta.branch,
    )  # fmt: skip
