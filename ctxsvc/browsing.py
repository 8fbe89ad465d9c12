"""Browsing an index without packing a task's context: ranked search, the
repository map, a symbol's definitions and uses, a file's lines.

A mixin of ``ContextService``; the HTTP API and the MCP tools serve these.
"""

from __future__ import annotations

from dataclasses import replace

from ctxsvc.context import candidates, find_symbols, ranked_files
from ctxsvc.core import ServiceCore
from ctxsvc.errors import InvalidRequest
from ctxsvc.graph import personalized_pagerank
from ctxsvc.limits import MAX_QUERY_CHARS, check_budget
from ctxsvc.models import ContextItem, ContextPack, Hit, Reference, Symbol, span_hash
from ctxsvc.retrieval import retrieve


class Browsing(ServiceCore):
    """Search, map, symbols and files of an index."""

    def search(
        self, name_or_path: str, query: str, limit: int = 20
    ) -> tuple[list[tuple[str, float]], list[tuple[Symbol, float]], tuple[str, ...]]:
        """Ranked files and symbols for ``query``, with scores, without packing.

        Runs the same retrieval as :meth:`context`. A file scores by its two
        best chunks (as for the ``map`` and ``full`` details); a symbol by the
        best chunk that defines it. Returns ``(files, symbols, degraded)``,
        at most ``limit`` of each.
        """

        if not query.strip():
            raise InvalidRequest("the query is empty", hint="describe the task in words")
        if len(query) > MAX_QUERY_CHARS:
            raise InvalidRequest(f"the query is longer than {MAX_QUERY_CHARS} characters")
        if not 1 <= limit <= 200:
            raise InvalidRequest(f"limit must be between 1 and 200, got {limit}")
        meta, _, degraded = self._current(name_or_path, refresh=False)
        view = self.view(meta)
        qvec, why_not = self._query_vector(meta, query)
        degraded.extend(why_not)
        config = self.retrieval if qvec is not None else replace(self.retrieval, vector=False)
        hits = retrieve(view, query, qvec, config, limit=max(60, 3 * limit))
        best: dict[tuple[str, str], float] = {}
        for h in hits:
            for q in h.chunk.symbols:
                key = (h.chunk.path, q)
                best[key] = max(best.get(key, h.score), h.score)
        paths = {p for p, _ in best}
        defs = {(s.path, s.qualname): s for s in view.symbols if s.path in paths}
        symbols = sorted(
            ((defs[k], score) for k, score in best.items() if k in defs), key=lambda x: -x[1]
        )
        return ranked_files(hits)[:limit], symbols[:limit], tuple(degraded)

    def repo_map(self, name_or_path: str, budget_tokens: int = 2000) -> ContextPack:
        """A map of the repository without a query, within ``budget_tokens``.

        Files rank by PageRank over the whole code graph (uniform restart: the
        code most referenced, directly or not, comes first); each line names the
        file's most central symbols. Files outside the graph come last.
        """

        check_budget(budget_tokens)
        meta, fresh, degraded = self._current(name_or_path, refresh=False)
        view = self.view(meta)
        rank = personalized_pagerank(view.graph, dict.fromkeys(range(len(view.graph)), 1.0))
        hits = [
            Hit(c, float(sum(rank[n] for n in nodes)), ("pagerank",))
            for c, nodes in zip(view.chunks, view.chunk_nodes, strict=True)
        ]
        hits.sort(key=lambda h: -h.score)
        # Map lines are a few dozen tokens: more candidates than this never fit.
        hits = hits[: max(200, budget_tokens // 4)]
        blocks = candidates(view, hits, "map")
        return self._pack(
            view, f"map of {meta.name}", (blocks, []), budget_tokens, detail="map",
            fresh=fresh, degraded=degraded, session_id=None,
        )  # fmt: skip

    def symbol_uses(self, name_or_path: str, name: str) -> tuple[list[Symbol], list[Reference]]:
        """Definitions whose qualified name (or else name) is ``name``, and references to it."""

        if not name.strip() or len(name) > 512:
            raise InvalidRequest("a symbol name of 1 to 512 characters is required")
        view = self.view(self.resolve(name_or_path))
        short = name.rsplit(".", 1)[-1]
        return find_symbols(view, name), list(view.refs_by_name.get(short, []))

    def file_lines(
        self, name_or_path: str, path: str, start: int | None = None, end: int | None = None
    ) -> tuple[ContextItem, int] | None:
        """Lines ``start..end`` of an indexed file, as indexed, and its line count.

        Only the index is read, never the disk, so nothing outside what was
        indexed can be returned. None when ``path`` is not an indexed file.
        """

        view = self.view(self.resolve(name_or_path))
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
        item = ContextItem(
            path=path, start_line=first, end_line=last,
            symbol=None, kind="file", score=0.0, tokens=self.tokens.count(text), text=text,
            content_hash=span_hash(text),
        )  # fmt: skip
        return item, total
