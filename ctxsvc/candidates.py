"""From ranked hits to packing candidates, at each level of detail.

- ``snippets`` (default): the ranked chunks themselves, the smallest spans
  that carry the relevant code (a scrap of a definition, such as a lone
  signature, grows into the next chunk of it or is left out), and where a
  chunk is a piece of a longer definition, the whole definition when it is
  cheap enough, else the rest of it later, for what room is left;
- ``skeleton``: for the ranked files, the signatures and first docstring line
  of every definition, nested as in the file;
- ``map``: one line per ranked file with its most relevant symbols, a
  repository map for this query;
- ``full``: the ranked files whole.

``expand`` fetches one symbol or line range, and optionally what it calls and
what calls it: the way to go deeper after a map or skeleton.
"""

from __future__ import annotations

from collections.abc import Sequence

from ctxsvc.blocks import Block, Source, is_body, snippet
from ctxsvc.errors import AmbiguousSymbol, InvalidRequest
from ctxsvc.indexers.symbols import is_name
from ctxsvc.limits import MAX_PATTERNS, selected, validate_session_id
from ctxsvc.models import Chunk, DeliveredSpan, Hit, Reference, Symbol
from ctxsvc.sessions import split_already_sent
from ctxsvc.skeleton import skeleton
from ctxsvc.stores.ledger import SessionLedger
from ctxsvc.view import RepoView

DETAILS = ("snippets", "skeleton", "map", "full")
MAP_SYMBOLS = 8
MIN_LINES = 3  # non-blank lines a piece of a definition needs to be sent alone
MAX_RELATED = 24
# A whole definition stands in for a hit inside it when it costs at most a
# quarter of the budget (a pack still holds four regions or more) and at most
# WHOLE_MAX_TOKENS (about 120 lines: beyond that one definition crowds out
# other files, and an agent reads such a function by parts anyway).
WHOLE_SHARE = 0.25
WHOLE_MAX_TOKENS = 1500
# The rest of a longer definition is offered later only while it costs at most this share.
REST_SHARE = 0.5


def candidates(
    view: RepoView,
    hits: Sequence[Hit],
    detail: str,
    *,
    budget_tokens: int = 0,
    spread: float = 0.0,
    whole_definitions: bool = True,
) -> list[Block]:
    """Packing candidates for ``hits`` at ``detail``, best first.

    With ``spread`` > 0, snippets are reordered so that the best chunk of each
    of the first files comes before the second-best chunks of any file, for
    about ``spread`` of the budget: a few lines of each likely file are worth
    more than a third chunk of the first. With ``whole_definitions`` (and a
    budget), a chunk that is a piece of a longer definition brings the whole
    of it (see ``region_complete``).
    """
    if detail == "snippets":
        ordered = spread_files(hits, budget_tokens, spread)
        if whole_definitions and budget_tokens > 0:
            return region_complete(view, ordered, budget_tokens)
        sources: dict[str, Source] = {}
        picked = (_chunk_block(view, h, sources) for h in ordered)
        return [b for b in picked if b is not None]
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


def source_of(view: RepoView, path: str, cache: dict[str, Source] | None = None) -> Source:
    """What a snippet of ``path`` quotes: its lines and definitions (kept in ``cache``)."""
    got = cache.get(path) if cache is not None else None
    if got is None:
        rec = view.files.get(path)
        language = rec.language if rec else None
        got = Source(path, language, view.file_lines(path), view.symbols_of(path))
        if cache is not None:
            cache[path] = got
    return got


def _chunk_block(view: RepoView, h: Hit, sources: dict[str, Source]) -> Block | None:
    """A hit's chunk as a snippet of a useful size, or None.

    A piece of a definition (a chunk overlapping one that is not wholly
    inside it) with fewer than ``MIN_LINES`` non-blank lines, say a lone
    signature or a closing line, takes in the following chunks of that
    definition until it has them, else the preceding ones; one that cannot
    (its definition has no more) is left out. A chunk outside every
    definition (a line of prose, a lone ``'use strict'``) takes in the
    neighbouring chunks of its file that are outside every definition too,
    and is left out when they are not enough, unless it is the whole file. A
    chunk holding a whole definition goes as it is.
    """
    c = h.chunk
    pos = view.chunk_index.get(c.id)
    src = source_of(view, c.path, sources)
    count = _solid(c.text)
    if pos is None or count >= MIN_LINES:
        return chunk_snippet(view, c, h.score, h.why, source=src)
    lo, hi = c.start_line, c.end_line
    if any(lo <= s.start_line and s.end_line <= hi for s in src.symbols):
        return chunk_snippet(view, c, h.score, h.why, source=src)
    around = [s for s in src.symbols if s.start_line <= hi and s.end_line >= lo]
    owner = around[-1] if around else None  # the innermost: an inner one comes later

    def fits(other: Chunk) -> bool:  # in the owner, or like this one outside them all
        if other.path != c.path:
            return False
        if owner is not None:
            return other.start_line <= owner.end_line and other.end_line >= owner.start_line
        a, z = other.start_line, other.end_line
        return not any(s.start_line <= z and s.end_line >= a for s in src.symbols)

    first = last = pos
    chunks = view.chunks
    while count < MIN_LINES and last + 1 < len(chunks) and fits(chunks[last + 1]):
        last, count = last + 1, count + _solid(chunks[last + 1].text)
    while count < MIN_LINES and first > 0 and fits(chunks[first - 1]):
        first, count = first - 1, count + _solid(chunks[first - 1].text)
    if count < MIN_LINES and (owner is not None or len(view.by_path.get(c.path, ())) > 1):
        return None
    return _span_snippet(view, chunks[first], chunks[last], h.score, h.why, src)


def whole_cap(budget_tokens: int) -> int:
    """The most tokens a whole definition may cost to stand in for a hit inside it."""
    return min(int(WHOLE_SHARE * budget_tokens), WHOLE_MAX_TOKENS)


def region_complete(view: RepoView, hits: Sequence[Hit], budget_tokens: int) -> list[Block]:
    """Snippet candidates that spend the budget on whole definitions, best first.

    A hit whose chunk is a piece of a longer definition (the innermost one
    holding it: a function or method, or a definition of no parts such as a
    long enum) is offered as that whole definition, with the hit's score and
    reasons, when it costs at most ``whole_cap(budget_tokens)``; its own
    snippet follows, which costs nothing once the definition is in and
    takes its place when the room left is too small for it. A longer one
    sends the chunk as it is, and the whole definition comes later: after the
    hits of the next ``whole_cap`` tokens, so that the packer completes the
    region with what room is left rather than before better-ranked code.
    Token counts are the chunks' (an estimate: the packer counts each
    candidate exactly before it places it, and the whole text at the end).
    """
    cap = whole_cap(budget_tokens)
    sources: dict[str, Source] = {}
    out: list[Block] = []
    whole: list[tuple[str, int, int]] = []  # definitions offered whole
    later: list[tuple[int, Block]] = []  # (the hit tokens it waits for, the rest of one)
    deferred: set[tuple[str, int, int]] = set()  # by place: overloads share an id
    spent = 0  # tokens of the hits' chunks so far
    for h in hits:
        while later and later[0][0] <= spent:
            out.append(later.pop(0)[1])
        c = h.chunk
        spent += c.tokens
        own = _chunk_block(view, h, sources)
        src = source_of(view, c.path, sources)
        owner = _owner(src, c)
        if owner is not None and (
            (c.path, owner.start_line, owner.end_line) in deferred
            or any(p == c.path and a <= c.start_line and c.end_line <= z for p, a, z in whole)
        ):
            owner = None  # already offered: the chunk goes as it is
        if owner is not None:
            block = _definition_block(view, owner, h, src)
            if block.tokens <= cap:
                whole.append((c.path, owner.start_line, owner.end_line))
                out.append(block)
            elif block.tokens <= REST_SHARE * budget_tokens:
                deferred.add((c.path, owner.start_line, owner.end_line))
                block.why.append(f"rest of {owner.qualname}")
                later.append((spent + cap, block))
        if own is not None:
            out.append(own)
    out.extend(b for _, b in later)
    return out


def _owner(src: Source, c: Chunk) -> Symbol | None:
    """The definition ``c`` is a piece of, if any: the innermost one holding it that is
    longer than it, when that is a body of code, or a definition ``c`` holds no
    whole definition of (a class's chunk of whole methods is no piece of it)."""
    lo, hi = c.start_line, c.end_line
    owner = next((s for s in src.holding(lo, hi) if (s.start_line, s.end_line) != (lo, hi)), None)
    if owner is None or is_body(owner):
        return owner
    # A container (class, impl, struct) grows whole only when it has no definitions
    # inside: a piece of a class is not worth all its methods.
    inner = any(
        owner.start_line <= s.start_line and s.end_line <= owner.end_line and s is not owner
        for s in src.symbols
    )
    return None if inner else owner


def _definition_block(view: RepoView, s: Symbol, h: Hit, src: Source) -> Block:
    """A snippet of the whole of definition ``s`` (and the blank lines up to the next
    chunk), with the score and reasons of hit ``h``, its tokens those of the chunks
    it spans (a file's chunks are neighbours in ``view.chunks``: only those are read)."""
    chunks, pos = view.chunks, view.chunk_index.get(h.chunk.id)
    if pos is None:  # not the view's own chunk: count the lines' characters
        return _definition_snippet(
            s, s.end_line, len(src.text(s.start_line, s.end_line)) // 3, h, src
        )

    def inside(i: int) -> bool:
        c = chunks[i] if 0 <= i < len(chunks) else None
        return (
            c is not None
            and c.path == s.path
            and c.end_line >= s.start_line
            and c.start_line <= s.end_line
        )

    first = last = pos
    while inside(first - 1):
        first -= 1
    while inside(last + 1):
        last += 1
    end = s.end_line
    if last + 1 < len(chunks) and chunks[last + 1].path == s.path:  # the blank lines up to it
        while end + 1 < chunks[last + 1].start_line and not src.lines.get(end + 1, "x").strip():
            end += 1
    return _definition_snippet(
        s, end, sum(chunks[i].tokens for i in range(first, last + 1)), h, src
    )


def _definition_snippet(s: Symbol, end: int, tokens: int, h: Hit, src: Source) -> Block:
    return snippet(
        s.path, s.start_line, end, src.text(s.start_line, end), language=src.language,
        symbol=s.qualname, score=h.score, why=h.why, tokens=tokens, source=src,
    )  # fmt: skip


def _solid(text: str) -> int:
    """The number of non-blank lines of ``text``."""
    return sum(1 for line in text.split("\n") if line.strip())


def chunk_snippet(
    view: RepoView, c: Chunk, score: float, why: Sequence[str], *, source: Source
) -> Block:
    """A snippet block of a chunk of the file ``source``."""
    return _span_snippet(view, c, c, score, why, source)


def _span_snippet(
    view: RepoView, first: Chunk, last: Chunk, score: float, why: Sequence[str], src: Source
) -> Block:
    """A snippet of the chunks ``first`` to ``last`` of one file."""
    # Chunks start and end on non-blank lines; take the blank lines up to the
    # next chunk along, so that neighbouring snippets touch and merge.
    end = last.end_line
    pos = view.chunk_index.get(last.id)
    if pos is not None and pos + 1 < len(view.chunks) and view.chunks[pos + 1].path == last.path:
        end = max(end, view.chunks[pos + 1].start_line - 1)
    if first is last:
        text, tokens = first.text + "\n" * (end - last.end_line), first.tokens
    else:
        lo, hi = view.chunk_index.get(first.id, 0), pos or 0
        text = src.text(first.start_line, end)
        tokens = sum(view.chunks[i].tokens for i in range(lo, hi + 1))
    return snippet(
        first.path, first.start_line, end, text, language=first.language,
        symbol=first.symbols[0] if first.symbols else None, score=score, why=why, tokens=tokens,
        source=src,
    )  # fmt: skip


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
    rec = view.files.get(path)
    language = rec.language if rec else None
    sk = skeleton(view.file_lines(path), view.symbols_of(path), language)
    if not sk.runs:
        return None
    return Block(
        "skeleton", path, sk.start, sk.end, sk.text, language, score=score, runs=list(sk.runs)
    )


def _map_line(view: RepoView, path: str, score: float, hits: Sequence[Hit]) -> Block:
    named: list[str] = []
    for h in hits:
        if h.chunk.path == path:
            named.extend(q for q in h.chunk.symbols if q not in named and is_name(q))
    if len(named) < MAP_SYMBOLS:
        top = [s.qualname for s in view.symbols_of(path) if s.parent is None]
        named.extend(q for q in top if q not in named and is_name(q))
    shown = ", ".join(named[:MAP_SYMBOLS]) + (" …" if len(named) > MAP_SYMBOLS else "")
    last = max(view.file_lines(path) or {1: ""})
    return Block(
        "map", path, 1, last, f"symbols: {shown}" if shown else "(no symbols)", score=score
    )


# -- expand -------------------------------------------------------------------


def find_definitions(view: RepoView, name: str) -> list[int]:
    """Positions (in ``view.symbols``) of the definitions ``name`` can mean.

    ``name`` is an id (``path::Qualified.name``), a qualified name (its
    definitions, or else those whose qualified name ends with it), or a bare
    name (every definition of that name: a method, a function, a class).
    Case is ignored only when nothing matches as written. By path and line.
    """
    path, sep, qual = name.partition("::")
    if sep and path in view.files:
        near = view.defs_by_name.get(qual.rsplit(".", 1)[-1].lower(), [])
        return _by_place(view, [i for i in near if view.symbols[i].id == name])
    dotted = name.replace("::", ".")
    short = dotted.rsplit(".", 1)[-1]
    near = view.defs_by_name.get(short.lower(), [])
    if "." in dotted:
        exact = [i for i in near if view.symbols[i].qualname == dotted]
        found = exact or [i for i in near if view.symbols[i].qualname.endswith("." + dotted)]
        if not found:
            low = dotted.lower()
            found = [i for i in near if view.symbols[i].qualname.lower() == low]
    else:
        found = [i for i in near if view.symbols[i].name == short] or near
    return _by_place(view, found)


def _by_place(view: RepoView, positions: Sequence[int]) -> list[int]:
    return sorted(positions, key=lambda i: (view.symbols[i].path, view.symbols[i].start_line))


def target_definitions(view: RepoView, name: str) -> list[int]:
    """The one definition ``name`` means (overloads of one qualified name together).

    Raises AmbiguousSymbol listing the candidates when several definitions
    have that name, InvalidRequest when none has.
    """
    found = find_definitions(view, name)
    ids = dict.fromkeys(view.symbols[i].id for i in found)
    if len(ids) > 1:
        first = {view.symbols[i].id: view.symbols[i] for i in reversed(found)}
        listed = [(sid, first[sid].kind, first[sid].start_line) for sid in ids]
        raise AmbiguousSymbol.listing(name, view.meta.name, listed)
    if not found:
        short = name.replace("::", ".").rsplit(".", 1)[-1].lower()
        like = [
            s.id
            for s in view.symbols
            if short in s.name.lower() or (len(s.name) > 2 and s.name.lower() in short)
        ][:5]
        raise InvalidRequest(
            f"no definition named {name!r} in {view.meta.name!r}",
            hint=f"did you mean: {'; '.join(like)}" if like else "search for it by words first",
        )
    return found


def symbol_block(
    view: RepoView, s: Symbol, score: float, why: str, sources: dict[str, Source] | None = None
) -> Block | None:
    text = view.lines(s.path, s.start_line, s.end_line)
    if text is None:
        return None
    rec = view.files.get(s.path)
    return snippet(
        s.path, s.start_line, s.end_line, text, language=rec.language if rec else None,
        symbol=s.qualname, score=score, why=(why,), source=source_of(view, s.path, sources),
    )  # fmt: skip


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
    """The target (a symbol, or a path and lines), then its callees, then its callers.

    A symbol must name one definition: an ambiguous name raises
    AmbiguousSymbol with the candidates' ids rather than pick one.
    """
    targets: list[Block] = []
    spans: list[tuple[str, int, int]] = []
    chosen: list[int] = []
    sources: dict[str, Source] = {}
    if symbol:
        chosen = target_definitions(view, symbol)
        for i in chosen:
            s = view.symbols[i]
            if (b := symbol_block(view, s, 1.0, f"target {s.id}", sources)) is not None:
                targets.append(b)
                spans.append((s.path, s.start_line, s.end_line))
        if not targets:
            raise InvalidRequest(f"the lines of {symbol!r} are not in the index {view.meta.name!r}")
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
        block = snippet(
            path, start, end, text, language=rec.language if rec else None, score=1.0,
            why=("target",), source=source_of(view, path, sources),
        )  # fmt: skip
        targets.append(block)
        spans.append((path, start, end))
    else:
        raise InvalidRequest("expand needs a symbol, or a path (with optional lines)")
    related: list[Block] = []
    if callees:
        related.extend(_callees(view, spans, sources))
    if callers and chosen:
        related.extend(_callers(view, chosen, spans, sources))
    return targets + related[:MAX_RELATED]


def _confidence(sure: bool) -> str:
    return "resolved" if sure else "name match"


def _callees(
    view: RepoView, spans: Sequence[tuple[str, int, int]], sources: dict[str, Source]
) -> list[Block]:
    """What the spans call, resolved; matched by name (a few) only when nothing resolves."""
    found: dict[int, tuple[bool, int]] = {}  # position -> (resolved, line)
    resolver = view.resolver()
    for path, start, end in spans:
        for r in view.refs_by_path.get(path, []):
            if r.kind != "call" or not start <= r.line <= end:
                continue
            meant = resolver.resolve(r)
            if not any(meant.values()) and len(meant) > 3:
                continue  # a common name, nothing resolved: noise
            for i, sure in meant.items():
                if i not in found or (sure and not found[i][0]):
                    found[i] = (sure, r.line)
    outside = {
        i: v
        for i, v in found.items()
        if not any(  # defined inside the target: already sent
            view.symbols[i].path == p and s <= view.symbols[i].start_line <= e for p, s, e in spans
        )
    }
    best = any(sure for sure, _ in outside.values())
    out: list[Block] = []
    for i, (sure, line) in sorted(outside.items(), key=lambda kv: kv[1][1]):
        if best and not sure:
            continue
        d = view.symbols[i]
        why = f"called at line {line} ({_confidence(sure)})"
        if (b := symbol_block(view, d, 0.5 if sure else 0.4, why, sources)) is not None:
            out.append(b)
    return out


def symbol_references(view: RepoView, targets: Sequence[int]) -> list[tuple[Reference, bool]]:
    """References that resolve (True), or could by name (False), to any of ``targets``.

    Resolved ones first; a reference that resolves elsewhere is none of them.
    """
    resolver = view.resolver()
    want = set(targets)
    sure: list[tuple[Reference, bool]] = []
    guess: list[tuple[Reference, bool]] = []
    for name in dict.fromkeys(view.symbols[i].name for i in targets):
        for r in view.refs_by_name.get(name, []):
            meant = resolver.resolve(r)
            hit = [meant[i] for i in want if i in meant]
            if hit:
                (sure if any(hit) else guess).append((r, any(hit)))
    return sure + guess


def _callers(
    view: RepoView,
    targets: Sequence[int],
    spans: Sequence[tuple[str, int, int]],
    sources: dict[str, Source],
) -> list[Block]:
    """The code that uses the targets, resolved; matched by name only when nothing resolves."""
    names = ", ".join(dict.fromkeys(view.symbols[i].qualname for i in targets))
    uses = [
        (r, sure)
        for r, sure in symbol_references(view, targets)
        if not any(r.path == p and s <= r.line <= e for p, s, e in spans)  # the target's own
    ]
    best = any(sure for _, sure in uses)
    out: list[Block] = []
    seen: set[int] = set()
    for r, sure in uses:
        if best and not sure:
            continue
        pos = view.chunk_at(r.path, r.line)
        if pos is None or pos in seen:
            continue
        seen.add(pos)
        verb = "calls" if r.kind == "call" else "uses"
        why = (f"{verb} {names} at line {r.line} ({_confidence(sure)})",)
        src = source_of(view, r.path, sources)
        out.append(chunk_snippet(view, view.chunks[pos], 0.25 if sure else 0.2, why, source=src))
    return out


def candidates_of(
    view: RepoView,
    hits: list[Hit],
    detail: str,
    session_id: str | None,
    ledger: SessionLedger | None,
    budget_tokens: int = 0,
    spread: float = 0.0,
    whole_definitions: bool = True,
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
    blocks = candidates(
        view, hits, detail, budget_tokens=budget_tokens, spread=spread,
        whole_definitions=whole_definitions,
    )  # fmt: skip
    return blocks, already


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
    if not include and not exclude:
        return hits
    return [h for h in hits if selected(h.chunk.path, include, exclude)]
