"""Packing ranked candidates into a context that never exceeds its budget.

Greedy in rank order. A candidate is a block (``ctxsvc.blocks``): a snippet
of a file's lines, a whole file, a file's skeleton (signatures and
docstrings) or a map line (a file and its top symbols). The rendered text
gives each file's path once.

Snippets of one file merge into one block when they overlap or touch, and
also when the lines between them lie inside one body of code (a function, a
method, a multi-line constant: the innermost definition holding both): half
a method, a silent hole, then its end would mislead. Snippets of two sibling
methods stay two blocks, their class shown above each. A hole left between
a block's runs is marked in place and listed in the manifest with reason
"gap", unless it costs about what its mark does, or the room left once every
ranked candidate that fits is in pays for it (cheapest holes first):
unranked lines never push out a ranked candidate. Separate blocks of one
file therefore never share a body, and no block repeats a header another
block of its file shows.

A piece of a definition too small to be useful alone (a lone signature) is
not offered at all: ``candidates`` grows it or leaves it out.

Token counts: a block is counted exactly once it may fit; a merge is
estimated (the blocks it joins plus its new lines, each line counted once,
and its new elisions), and the budget is then enforced on the exact count of
the whole rendered text: headings, titles, fences, elisions, the
already-sent note and the warnings included. Over it, the lowest-scored
blocks go first, then the note and the warnings shrink, down to empty text.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from ctxsvc.blocks import FENCE_OVERHEAD, Block, Run, body_runs, heading, is_body
from ctxsvc.models import (
    ContextItem,
    ContextPack,
    DeliveredSpan,
    DriftWarning,
    IndexVersion,
    Omitted,
    span_hash,
)
from ctxsvc.tokens import TokenCounter

MAX_OMITTED = 20
_ELISION_TOKENS = 20  # of an elision line with its cost and what to expand, about
_TITLE_NAME_TOKENS = 6  # a merged block's title may name one more definition
_TINY_HOLE = 2 * _ELISION_TOKENS  # a hole filled at once: it costs about its mark

Preface = Callable[[int], tuple[str, Sequence[DriftWarning]]]
"""``preface(cap)``: the text that comes first in a pack, within ``cap`` tokens
(empty when nothing fits), and the drift warnings it delivers in full."""


def render(blocks: Sequence[Block]) -> str:
    """The pack's text: blocks grouped under one heading per file, in rank order."""
    order: list[tuple[str, str]] = []
    groups: dict[tuple[str, str], list[Block]] = {}
    for b in blocks:
        key = (b.repo, b.path)
        if key not in groups:
            order.append(key)
            groups[key] = []
        groups[key].append(b)
    parts: list[str] = []
    for key in order:
        parts.append(heading(*key))
        parts.extend(b.render() for b in sorted(groups[key], key=lambda b: (b.start, b.kind)))
    return "\n".join(parts)


def pack(
    repo: str,
    query: str,
    candidates: Sequence[Block],
    budget_tokens: int,
    counter: TokenCounter,
    *,
    detail: str = "snippets",
    index: IndexVersion | None = None,
    degraded: Sequence[str] = (),
    session_id: str | None = None,
    already_sent: Sequence[DeliveredSpan] = (),
    preface: Preface | None = None,
) -> ContextPack:
    """The best candidates that fit ``budget_tokens``, in rank order, and what was left out.

    ``preface`` (the drift warnings) comes first in the text, then the note
    of what the session already holds; each gets at most a quarter of the
    budget, and both count against it like everything else. The pack's
    ``warnings`` are those the preface delivered in full. A negative budget
    is taken as 0. The manifest lists the candidates left out for the budget
    first (reason "budget"), then the holes marked in the items ("gap"), at
    most ``MAX_OMITTED`` of each.

    Candidates of several indexes (``Block.repo`` set) share the room fairly:
    each of the n indexes among them is guaranteed room // n (headings
    included) if it has candidates to fill it, taken in the candidates' order;
    what an index leaves of its share goes to the others' candidates left
    over, in the candidates' order again. Over the budget after exact
    counting, blocks of the index taking the most room go first.
    """
    budget_tokens = max(budget_tokens, 0)
    caps = [budget_tokens // 4] * 2
    note, given = _notes(preface, already_sent, counter, caps)
    room = budget_tokens - (counter.count(note) + 1 if note else 0)
    shares = _shares(candidates, room)
    blocks, used, skipped = _greedy([], candidates, counter, room, shares)
    if shares:  # what an index left of its share goes to the others, in the given order
        blocks, _, skipped = _greedy(blocks, skipped, counter, room - used)
    text = _final(note, blocks)
    exact = counter.count(text)  # the whole text is counted as few times as can be
    if skipped and exact < budget_tokens:  # estimates run high: the rest gets another pass
        placed, _, skipped = _greedy(blocks, skipped, counter, budget_tokens - exact)
        if placed is not blocks:
            blocks, text = placed, _final(note, placed)
            exact = counter.count(text)
    filled = _fill(blocks, counter, budget_tokens - exact)
    if filled is not blocks:
        with_holes_filled = _final(note, filled)
        count = counter.count(with_holes_filled)
        if count <= budget_tokens:  # else the estimate fell short: the holes stay marked
            blocks, text, exact = filled, with_holes_filled, count
    left = [_omitted(b, repo) for b in skipped[:MAX_OMITTED]]
    while exact > budget_tokens:
        if blocks:
            left.insert(0, _omitted(blocks.pop(_worst(blocks, shares)), repo))
        else:  # the note and the warnings alone overrun: shrink them, down to nothing
            caps = [c // 2 for c in caps]
            note, given = _notes(preface, already_sent, counter, caps)
        text = _final(note, blocks)
        exact = counter.count(text)
    items = tuple(_item(b, counter, repo) for b in blocks)
    holes = [
        Omitted(b.path, a, z, b.hole_owner(a, z), tokens or 0, b.score, "gap", b.repo or repo)
        for b in blocks
        for (a, z), tokens in zip(b.plan().gaps, b.plan().gap_tokens, strict=True)
    ]
    return ContextPack(
        repo=repo,
        query=query,
        items=items,
        tokens_used=exact,
        budget_tokens=budget_tokens,
        encoding=counter.name,
        rendered=text,
        detail=detail,
        omitted=(*left[:MAX_OMITTED], *holes[:MAX_OMITTED]),
        index=index,
        degraded=tuple(degraded),
        session_id=session_id,
        already_sent=tuple(replace(s, repo=s.repo or repo) for s in already_sent),
        warnings=tuple(given),
        repos=(repo,),
        indexes={repo: index} if index else {},
    )


def _notes(
    preface: Preface | None,
    already_sent: Sequence[DeliveredSpan],
    counter: TokenCounter,
    caps: Sequence[int],
) -> tuple[str, Sequence[DriftWarning]]:
    """The text before the code, within ``caps`` (preface, note), and the warnings it gives."""
    warned, given = preface(caps[0]) if preface is not None else ("", ())
    held = _already_sent_note(already_sent, counter, caps[1])
    return "\n".join(part for part in (warned, held) if part), given


def _final(note: str, blocks: Sequence[Block]) -> str:
    body = render(blocks)
    return f"{note}\n{body}" if note and body else (note or body)


def _already_sent_note(spans: Sequence[DeliveredSpan], counter: TokenCounter, cap: int) -> str:
    """A list of what the session holds, so the agent knows it was not forgotten."""
    text, _ = capped_list(
        "## Already sent in this session (unchanged, not repeated)\n",
        [f"- {s.repo + ': ' if s.repo else ''}{s.path}:{s.start_line}-{s.end_line}\n" for s in spans],
        counter, cap, "",
    )  # fmt: skip
    return text


def capped_list(
    head: str, lines: Sequence[str], counter: TokenCounter, cap: int, more: str
) -> tuple[str, int]:
    """``head`` and as many of ``lines`` as fit ``cap`` tokens, and how many that is.

    When not all fit, a last line says how many are left (``more`` says where
    to find them), within the cap too. Empty (and 0) when there are no lines,
    or not even the head and that last line fit.
    """
    if not lines:
        return "", 0
    counts = counter.count_many(list(lines))
    used = counter.count(head)
    if used + sum(counts) <= cap:
        return head + "".join(lines), len(lines)
    reserve = counter.count(f"- … and {len(lines)} more{more}\n")
    kept = 0
    while kept < len(lines) and used + counts[kept] + reserve <= cap:
        used += counts[kept]
        kept += 1
    if used + reserve > cap:
        return "", 0
    return f"{head}{''.join(lines[:kept])}- … and {len(lines) - kept} more{more}\n", kept


def _greedy(
    blocks: list[Block],
    candidates: Sequence[Block],
    counter: TokenCounter,
    room: int,
    shares: Mapping[str, int] | None = None,
) -> tuple[list[Block], int, list[Block]]:
    """``blocks`` with the ``candidates`` that fit ``room`` in, in order, the tokens
    that took (estimated), and the candidates that did not fit: with ``shares``, a
    candidate fits only within what its index has left of its share."""
    used = 0
    spent: dict[str, int] = {}
    skipped: list[Block] = []
    for cand in candidates:
        left = room - used
        if shares:
            left = min(left, shares[cand.repo] - spent.get(cand.repo, 0))
        placed = _place(blocks, cand, counter, left)
        if placed is None:
            skipped.append(cand)
        else:
            blocks, used = placed[0], used + placed[1]
            spent[cand.repo] = spent.get(cand.repo, 0) + placed[1]
    return blocks, used, skipped


def _shares(candidates: Sequence[Block], room: int) -> dict[str, int]:
    """Each index's guaranteed room, when the candidates come from several (else none)."""
    repos = {b.repo for b in candidates}
    return dict.fromkeys(repos, room // len(repos)) if len(repos) > 1 else {}


def _worst(blocks: Sequence[Block], shares: Mapping[str, int]) -> int:
    """The block to drop over the budget: the lowest-scored one, of the index that takes
    the most room when several share it (a trim must not undo a share)."""
    pool = list(range(len(blocks)))
    if shares:
        spent: dict[str, int] = {}
        for b in blocks:
            spent[b.repo] = spent.get(b.repo, 0) + b.tokens
        most = max(spent, key=spent.__getitem__)
        pool = [i for i in pool if blocks[i].repo == most]
    return min(pool, key=lambda i: blocks[i].score)


def _place(
    blocks: list[Block], cand: Block, counter: TokenCounter, room: int
) -> tuple[list[Block], int] | None:
    """``blocks`` with ``cand`` in, and what that costs; None when it does not fit ``room``.

    A snippet joins every snippet block of its file it overlaps, touches or
    shares a body of code with across the lines between; a hole left between
    runs is filled when it costs about what marking it does, else marked.
    """
    joined = _joining(blocks, cand)
    if not joined:
        head = 0
        if all((b.repo, b.path) != (cand.repo, cand.path) for b in blocks):
            head = counter.count(heading(cand.repo, cand.path)) + 1
        if not cand.tokens or 0.8 * cand.tokens + head <= room:
            cand.tokens = counter.count(cand.render())  # exact, once it may fit
        cost = cand.tokens + head
        return ([*blocks, cand], cost) if cost <= room else None
    parts = [blocks[i] for i in joined]
    had = _union(_all_runs(parts))
    fresh = _minus(cand.runs, had)
    if not fresh and len(parts) == 1:
        return blocks, 0  # wholly inside a block: nothing new
    # A cheap bound first: the candidate's estimate, for the share of its lines that is new.
    share = sum(z - a + 1 for a, z in fresh) / max(1, sum(z - a + 1 for a, z in cand.runs))
    if 0.7 * share * (cand.tokens - FENCE_OVERHEAD) > room:
        return None
    before = sum(b.tokens for b in parts)
    m, filled = _merge(parts, cand, counter, _TINY_HOLE)
    if filled and m.tokens - before > room:
        m, _ = _merge(parts, cand, counter, 0)  # the holes marked rather than filled
    cost = m.tokens - before
    if cost > room:
        return None
    return [m if i == joined[0] else b for i, b in enumerate(blocks) if i not in joined[1:]], cost


def _fill(blocks: list[Block], counter: TokenCounter, room: int) -> list[Block]:
    """``blocks`` with their marked holes filled, cheapest first, as far as ``room``
    goes (``blocks`` itself when none is): once every ranked candidate that fits
    is in, what is left pays for whole definitions, never before."""
    holes = sorted(
        (tokens, i, gap)
        for i, b in enumerate(blocks)
        for gap, tokens in zip(b.plan().gaps, b.plan().gap_tokens, strict=True)
        if tokens is not None
    )
    closed: dict[int, list[tuple[Run, int]]] = {}
    for tokens, i, gap in holes:
        if tokens - _ELISION_TOKENS > room:
            break
        room -= tokens - _ELISION_TOKENS
        closed.setdefault(i, []).append((gap, tokens))
    if not closed:
        return blocks
    out = list(blocks)
    for i, gaps in closed.items():
        b = blocks[i]
        out[i] = replace(b, runs=_union([*b.runs, *(g for g, _ in gaps)]))
        out[i].tokens = b.tokens + sum(t - _ELISION_TOKENS for _, t in gaps)
    return out


def _minus(runs: Sequence[Run], taken: Sequence[Run]) -> list[Run]:
    """The lines of ``runs`` outside ``taken`` (both sorted, disjoint), as runs."""
    out: list[Run] = []
    k = 0
    for a, z in runs:
        while k < len(taken) and taken[k][1] < a:
            k += 1
        j = k
        while j < len(taken) and taken[j][0] <= z:
            x, y = taken[j]
            if x > a:
                out.append((a, x - 1))
            a = max(a, y + 1)
            j += 1
        if a <= z:
            out.append((a, z))
    return out


def _all_runs(blocks: Sequence[Block]) -> list[Run]:
    return [r for b in blocks for r in b.runs]


def _joining(blocks: Sequence[Block], cand: Block) -> list[int]:
    """The blocks snippet ``cand`` belongs in: those of its file it overlaps or
    touches, and those it shares a body of code with across the lines between
    (the innermost definition holding both is a function, not its class)."""
    if cand.kind != "snippet" or not isinstance(cand.body, dict):
        return []
    lo, hi = cand.start, cand.end
    first, last = cand.solid(lo, hi)
    here = (cand.repo, cand.path)
    src = cand.source or next((b.source for b in blocks if (b.repo, b.path) == here), None)
    # What holds the lines from a block before up to cand (or from cand down to one
    # after): the definitions holding cand's first line that start before it.
    up = [s for s in src.holding(first, first) if s.start_line < first] if src else []
    down = [s for s in src.holding(last, last) if s.end_line > last] if src else []
    up_body, down_body = any(map(is_body, up)), any(map(is_body, down))
    out: list[int] = []
    for i, b in enumerate(blocks):
        if b.kind != "snippet" or (b.repo, b.path) != here or not isinstance(b.body, dict):
            continue
        near = lo <= b.end + 1 and hi >= b.start - 1
        if near and any(lo <= z + 1 and hi >= a - 1 for a, z in b.runs):
            out.append(i)
            continue
        if up_body and b.start < lo:
            end = b.solid(*max(r for r in b.runs if r[1] < lo))[1]
            inner = next((s for s in up if s.start_line <= end), None)
            if inner is not None and is_body(inner):
                out.append(i)
                continue
        if down_body and b.end > hi:
            start = b.solid(*min(r for r in b.runs if r[0] > hi))[0]
            inner = next((s for s in down if s.end_line >= start), None)
            if inner is not None and is_body(inner):
                out.append(i)
    return out


def _union(runs: Sequence[Run]) -> list[Run]:
    out: list[Run] = []
    for a, z in sorted(runs):
        if out and a <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(z, out[-1][1]))
        else:
            out.append((a, z))
    return out


def _merge(
    parts: Sequence[Block], cand: Block, counter: TokenCounter, fill: int
) -> tuple[Block, int]:
    """One block of ``parts`` and ``cand``, its tokens estimated (those of ``parts`` and
    of the lines and elisions it adds: exact counts wait for the whole text), and how
    many holes it filled: those of at most ``fill`` tokens."""
    first = parts[0]
    src = next((b.source for b in (*parts, cand) if b.source is not None), None)
    body: dict[int, str] = {}
    if src is None:  # else the lines come from the file, as the blocks' own do
        for b in (cand, *parts):
            assert isinstance(b.body, dict)
            body.update(b.body)
    runs = _union([*_all_runs(parts), *cand.runs])
    filled = 0
    if src is not None and fill > 0 and len(runs) > 1:
        closed = {
            i
            for i, ((_, z), (a, _)) in enumerate(itertools.pairwise(runs))
            if src.estimate(counter, z + 1, a - 1) <= fill
        }
        filled = len(closed)
        out = [runs[0]]
        for i, run in enumerate(runs[1:]):
            out[-1:] = [(out[-1][0], run[1])] if i in closed else [out[-1], run]
        runs = out
    why = list(first.why)
    for b in (*parts[1:], cand):
        why.extend(w for w in b.why if w not in why)
    m = Block(
        kind="snippet", path=first.path, start=runs[0][0], end=runs[-1][1], body=body,
        language=first.language, symbol=first.symbol or cand.symbol,
        score=max(b.score for b in (*parts, cand)), why=why, source=src, runs=runs,
        counter=counter, repo=first.repo,
    )  # fmt: skip
    if src is None:
        m.tokens = counter.count(m.render())
        return m, filled
    quoted = m.plan().quoted
    new = _minus(quoted, _union([r for b in parts for r in b.plan().quoted]))
    elisions = len(quoted) - sum(len(b.plan().quoted) for b in parts)
    m.tokens = (
        sum(b.tokens for b in parts)
        + sum(src.estimate(counter, a, z) for a, z in new)
        + _ELISION_TOKENS * max(elisions, 0)
        + _TITLE_NAME_TOKENS
    )
    return m, filled


def _omitted(b: Block, repo: str) -> Omitted:
    return Omitted(b.path, b.start, b.end, _symbol(b), b.tokens, b.score, repo=b.repo or repo)


def _symbol(b: Block) -> str | None:
    """The block's own definition if it names it (a merged block keeps its best
    part's), else the first it names."""
    names = b.plan().names if b.kind == "snippet" else ()
    return b.symbol if not names or b.symbol in names else names[0]


def _item(b: Block, counter: TokenCounter, repo: str) -> ContextItem:
    text = b.render()
    plan = b.plan()
    quoted = plan.quoted if b.kind in ("snippet", "file") else tuple(b.runs)
    body = ""
    if b.kind in ("snippet", "file"):
        inside = body_runs(quoted, b.start, b.end)
        body = "\n".join(b.line(n) for a, z in inside for n in range(a, z + 1))
    return ContextItem(
        path=b.path,
        start_line=b.start,
        end_line=b.end,
        symbol=_symbol(b),
        kind=b.kind,
        score=b.score,
        tokens=counter.count(text),
        text=text,
        why=tuple(b.why),
        content_hash=span_hash(body) if body else "",
        lines=quoted,
        gaps=plan.gaps,
        repo=b.repo or repo,
    )
