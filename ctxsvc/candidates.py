"""From ranked hits to packing candidates, at each level of detail.

- ``snippets`` (default): the ranked chunks themselves, the smallest spans
  that carry the relevant code;
- ``skeleton``: for the ranked files, the signatures and first docstring line
  of every definition, nested as in the file;
- ``map``: one line per ranked file with its most relevant symbols, a
  repository map for this query;
- ``full``: the ranked files whole.

``expand`` fetches one symbol or line range, and optionally what it calls and
what calls it: the way to go deeper after a map or skeleton.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

from ctxsvc.errors import InvalidRequest
from ctxsvc.limits import MAX_PATTERNS, validate_session_id
from ctxsvc.models import Chunk, DeliveredSpan, Hit, Symbol
from ctxsvc.packing import Block, snippet
from ctxsvc.sessions import split_already_sent
from ctxsvc.stores.ledger import SessionLedger
from ctxsvc.view import RepoView

DETAILS = ("snippets", "skeleton", "map", "full")
MAP_SYMBOLS = 8
MAX_RELATED = 24


def candidates(
    view: RepoView, hits: Sequence[Hit], detail: str, *, budget_tokens: int = 0, spread: float = 0.0
) -> list[Block]:
    """Packing candidates for ``hits`` at ``detail``, best first.

    With ``spread`` > 0, snippets are reordered so that the best chunk of each
    of the first files comes before the second-best chunks of any file, for
    about ``spread`` of the budget: a few lines of each likely file are worth
    more than a third chunk of the first.
    """
    if detail == "snippets":
        return [_chunk_block(view, h) for h in spread_files(hits, budget_tokens, spread)]
    files = ranked_files(hits)
    if detail == "full":
        return [b for p, score in files if (b := file_block(view, p, score)) is not None]
    if detail == "skeleton":
        return [b for p, score in files if (b := _skeleton(view, p, score)) is not None]
    if detail == "map":
        return [_map_line(view, p, score, hits) for p, score in files]
    raise InvalidRequest(f"unknown detail {detail!r}", hint=f"use one of {', '.join(DETAILS)}")


def spread_files(hits: Sequence[Hit], budget_tokens: int, spread: float) -> list[Hit]:
    """Hits with the best chunk of each file first, until ``spread`` of the budget."""
    if spread <= 0 or budget_tokens <= 0:
        return list(hits)
    first: list[Hit] = []
    rest: list[Hit] = []
    seen: set[str] = set()
    room = spread * budget_tokens
    for h in hits:
        if h.chunk.path not in seen and room > 0:
            seen.add(h.chunk.path)
            first.append(h)
            room -= h.chunk.tokens
        else:
            rest.append(h)
    return first + rest


def ranked_files(hits: Sequence[Hit]) -> list[tuple[str, float]]:
    """Files in the order of their best hit, scored by their two best hits."""
    best: dict[str, list[float]] = {}
    for h in hits:
        best.setdefault(h.chunk.path, []).append(h.score)
    scored = {p: s[0] + 0.5 * (s[1] if len(s) > 1 else 0.0) for p, s in best.items()}
    return sorted(scored.items(), key=lambda kv: -kv[1])


def _chunk_block(view: RepoView, h: Hit) -> Block:
    return chunk_snippet(view, h.chunk, h.score, h.why)


def chunk_snippet(view: RepoView, c: Chunk, score: float, why: Sequence[str]) -> Block:
    """A snippet block of a chunk."""
    # Chunks start and end on non-blank lines; take the blank lines up to the
    # next chunk along, so that neighbouring snippets touch and merge.
    end, text = c.end_line, c.text
    pos = view.chunk_index.get(c.id)
    if pos is not None and pos + 1 < len(view.chunks) and view.chunks[pos + 1].path == c.path:
        gap = view.chunks[pos + 1].start_line - 1 - c.end_line
        if gap > 0:
            end, text = c.end_line + gap, c.text + "\n" * gap
    return snippet(
        c.path,
        c.start_line,
        end,
        text,
        language=c.language,
        header=c.header,
        symbol=c.symbols[0] if c.symbols else None,
        score=score,
        why=why,
        tokens=c.tokens,
    )


def file_block(
    view: RepoView, path: str, score: float = 0.0, why: Sequence[str] = ()
) -> Block | None:
    lines = view.file_lines(path)
    if not lines:
        return None
    rec = view.files.get(path)
    body = {n: lines.get(n, "") for n in range(1, max(lines) + 1)}
    return Block(
        "file", path, 1, max(lines), body, rec.language if rec else None, score=score, why=list(why)
    )


def _skeleton(view: RepoView, path: str, score: float) -> Block | None:
    syms = sorted((s for s in view.symbols if s.path == path), key=lambda s: s.start_line)
    if not syms:
        return None
    depth = {s.qualname: (depth_of(s, syms)) for s in syms}
    out: list[str] = []
    for s in syms:
        pad = "    " * depth[s.qualname]
        out.append(f"{pad}{s.signature}  # L{s.start_line}-{s.end_line}")
        if s.docstring:
            out.append(f"{pad}    # {s.docstring.splitlines()[0][:160]}")
    rec = view.files.get(path)
    return Block(
        "skeleton",
        path,
        syms[0].start_line,
        max(s.end_line for s in syms),
        "\n".join(out),
        rec.language if rec else None,
        score=score,
    )


def depth_of(s: Symbol, syms: Sequence[Symbol]) -> int:
    names = {x.qualname for x in syms}
    depth, parent = 0, s.parent
    while parent and parent in names:
        depth += 1
        parent = next(x.parent for x in syms if x.qualname == parent)
    return depth


def _map_line(view: RepoView, path: str, score: float, hits: Sequence[Hit]) -> Block:
    named: list[str] = []
    for h in hits:
        if h.chunk.path == path:
            named.extend(q for q in h.chunk.symbols if q not in named)
    if len(named) < MAP_SYMBOLS:
        top = [s.qualname for s in view.symbols if s.path == path and s.parent is None]
        named.extend(q for q in top if q not in named)
    shown = ", ".join(named[:MAP_SYMBOLS]) + (" …" if len(named) > MAP_SYMBOLS else "")
    last = max(view.file_lines(path) or {1: ""})
    return Block(
        "map", path, 1, last, f"symbols: {shown}" if shown else "(no symbols)", score=score
    )


# -- expand -------------------------------------------------------------------


def find_symbols(view: RepoView, name: str) -> list[Symbol]:
    """Definitions whose qualified name, or else name, is ``name``."""
    exact = [s for s in view.symbols if s.qualname == name]
    if exact:
        return exact
    short = name.rsplit(".", 1)[-1]
    return [s for s in view.symbols if s.name == short] or [
        s for s in view.symbols if s.name.lower() == short.lower()
    ]


def symbol_block(view: RepoView, s: Symbol, score: float, why: str) -> Block | None:
    text = view.lines(s.path, s.start_line, s.end_line)
    if text is None:
        return None
    rec = view.files.get(s.path)
    return snippet(
        s.path,
        s.start_line,
        s.end_line,
        text,
        language=rec.language if rec else None,
        symbol=s.qualname,
        score=score,
        why=(why,),
    )


def expand_blocks(
    view: RepoView,
    *,
    symbol: str | None,
    path: str | None,
    start_line: int | None,
    end_line: int | None,
    callers: bool,
    callees: bool,
) -> list[Block]:
    """The target (a symbol, or a path and lines), then its callees, then its callers."""
    targets: list[Block] = []
    spans: list[tuple[str, int, int, str | None]] = []
    if symbol:
        for s in find_symbols(view, symbol):
            if (b := symbol_block(view, s, 1.0, "target")) is not None:
                targets.append(b)
                spans.append((s.path, s.start_line, s.end_line, s.name))
        if not targets:
            raise InvalidRequest(f"no definition named {symbol!r} in {view.meta.name!r}")
    elif path:
        if path not in view.by_path:
            raise InvalidRequest(f"{path!r} is not an indexed file of {view.meta.name!r}")
        lines = view.file_lines(path)
        start, end = start_line or 1, end_line or max(lines)
        if not 1 <= start <= end:
            raise InvalidRequest(f"invalid line range {start}-{end}")
        end = min(end, max(lines))
        text = view.lines(path, start, end) or ""
        rec = view.files.get(path)
        targets.append(
            snippet(
                path,
                start,
                end,
                text,
                language=rec.language if rec else None,
                score=1.0,
                why=("target",),
            )
        )
        spans.append((path, start, end, None))
    else:
        raise InvalidRequest("expand needs a symbol, or a path (with optional lines)")
    related: list[Block] = []
    if callees:
        related.extend(_callees(view, spans))
    if callers:
        related.extend(_callers(view, spans))
    return targets + related[:MAX_RELATED]


def _callees(view: RepoView, spans: Sequence[tuple[str, int, int, str | None]]) -> list[Block]:
    out: list[Block] = []
    seen: set[str] = set()
    for path, start, end, _ in spans:
        for r in view.refs_by_path.get(path, []):
            if r.kind != "call" or not start <= r.line <= end or r.name in seen:
                continue
            seen.add(r.name)
            defs = [
                view.symbols[i]
                for i in view.defs_by_name.get(r.name.lower(), [])
                if view.symbols[i].name == r.name
            ]
            if 0 < len(defs) <= 3:
                out.extend(
                    b
                    for d in defs
                    if (b := symbol_block(view, d, 0.5, f"callee of line {r.line}")) is not None
                )
    return out


def _callers(view: RepoView, spans: Sequence[tuple[str, int, int, str | None]]) -> list[Block]:
    out: list[Block] = []
    seen: set[int] = set()
    for _, _, _, name in spans:
        if not name:
            continue
        for r in view.refs_by_name.get(name, []):
            pos = view.chunk_at(r.path, r.line)
            if pos is None or pos in seen:
                continue
            seen.add(pos)
            out.append(
                chunk_snippet(view, view.chunks[pos], 0.25, (f"calls {name} at line {r.line}",))
            )
    return out


def candidates_of(
    view: RepoView,
    hits: list[Hit],
    detail: str,
    session_id: str | None,
    ledger: SessionLedger | None,
    budget_tokens: int = 0,
    spread: float = 0.0,
) -> tuple[list[Block], list[DeliveredSpan]]:
    """Packing candidates, minus what the session already holds unchanged."""
    already: list[DeliveredSpan] = []
    if session_id is not None:
        validate_session_id(session_id)
        if ledger is None:
            raise InvalidRequest("sessions are not enabled in this service")
        hits, already = split_already_sent(
            hits, ledger.delivered(session_id, view.meta.name), view.lines
        )
    return candidates(view, hits, detail, budget_tokens=budget_tokens, spread=spread), already


def check_patterns(include: Sequence[str] | None, exclude: Sequence[str] | None) -> None:
    """Refuse too many or too long include/exclude globs."""
    for patterns in (include, exclude):
        if patterns is not None and (
            len(patterns) > MAX_PATTERNS or any(len(p) > 256 for p in patterns)
        ):
            raise InvalidRequest(
                f"at most {MAX_PATTERNS} include/exclude patterns of 256 characters"
            )


def filter_hits(
    hits: list[Hit], include: Sequence[str] | None, exclude: Sequence[str] | None
) -> list[Hit]:
    """Hits whose path matches an include glob (if any) and no exclude glob."""
    if include:
        hits = [h for h in hits if any(fnmatch.fnmatchcase(h.chunk.path, p) for p in include)]
    if exclude:
        hits = [h for h in hits if not any(fnmatch.fnmatchcase(h.chunk.path, p) for p in exclude)]
    return hits
