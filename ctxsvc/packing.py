"""Packing ranked candidates into a context that never exceeds its budget.

Greedy in rank order. A candidate is a block: a snippet of a file's lines,
a whole file, a file's skeleton (signatures and docstrings) or a map line
(a file and its top symbols). Snippets of one file that overlap or touch
merge into one block. The rendered text gives each file's path once, and a
snippet's enclosing signatures only when they differ from the previous
snippet's of that file.

Token counts: block sizes are estimated from the stored chunk counts while
packing, and the budget is then enforced on the exact count of the whole
rendered text (headings, fences and separators included), dropping the
lowest-scored blocks until it fits: BPE counts of parts do not add up exactly
to the count of their concatenation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

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
_FENCE_OVERHEAD = 12  # tokens of a block's title line and fences, before exact counting


@dataclass
class Block:
    """A candidate for the pack."""

    kind: str  # "snippet", "file", "skeleton" or "map"
    path: str
    start: int
    end: int
    body: dict[int, str] | str  # line number -> text (snippet, file), or prepared text
    language: str | None = None
    header: str = ""
    symbol: str | None = None
    score: float = 0.0
    why: list[str] = field(default_factory=list)
    tokens: int = 0  # estimate, or exact once counted

    def lines_text(self) -> str:
        if isinstance(self.body, str):
            return self.body
        return "\n".join(self.body.get(n, "") for n in range(self.start, self.end + 1))

    def render(self, header: str | None = None) -> str:
        """The block under its file's heading; ``header`` overrides the scope header."""
        head = self.header if header is None else header
        if self.kind == "map":
            return f"{self.lines_text()}\n"
        if self.kind == "skeleton":
            return f"skeleton:\n```{self.language or ''}\n{self.lines_text()}\n```\n"
        title = "whole file" if self.kind == "file" else f"lines {self.start}-{self.end}"
        if self.symbol and self.kind == "snippet":
            title += f" ({self.symbol})"
        code = f"{head}\n{self.lines_text()}" if head else self.lines_text()
        return f"{title}:\n```{self.language or ''}\n{code}\n```\n"


def render(blocks: Sequence[Block]) -> str:
    """The pack's text: blocks grouped under one heading per file, in rank order."""
    order: list[str] = []
    groups: dict[str, list[Block]] = {}
    for b in blocks:
        if b.path not in groups:
            order.append(b.path)
            groups[b.path] = []
        groups[b.path].append(b)
    parts: list[str] = []
    for path in order:
        parts.append(f"## {path}\n")
        last_header: str | None = None
        for b in sorted(groups[path], key=lambda b: (b.start, b.kind)):
            header = "" if b.header and b.header == last_header else None
            parts.append(b.render(header))
            last_header = b.header or last_header
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
    preface: str = "",
    warnings: Sequence[DriftWarning] = (),
) -> ContextPack:
    """The best candidates that fit ``budget_tokens``, in rank order, and what was left out.

    ``preface`` (e.g. the rendered ``warnings``) comes first in the text, and
    its tokens count against the budget like everything else.
    """
    held = _already_sent_note(already_sent, counter, budget_tokens // 4)
    note = "\n".join(part for part in (preface, held) if part)
    room = budget_tokens - (counter.count(note) + 1 if note else 0)
    blocks: list[Block] = []
    omitted: list[Omitted] = []
    paths: set[str] = set()
    used = 0
    for cand in candidates:
        merged, changed = _with(blocks, cand, counter)
        new_path = cand.path not in paths
        cost = merged[changed].tokens - (blocks[changed].tokens if changed < len(blocks) else 0)
        cost += counter.count(f"## {cand.path}\n") + 1 if new_path else 0
        if used + cost <= room:
            blocks, used = merged, used + cost
            paths.add(cand.path)
        elif len(omitted) < MAX_OMITTED:
            omitted.append(_omitted(cand))
    text = _final(note, blocks)
    while blocks and counter.count(text) > budget_tokens:
        worst = min(range(len(blocks)), key=lambda i: blocks[i].score)
        omitted.insert(0, _omitted(blocks.pop(worst)))
        text = _final(note, blocks)
    items = tuple(_item(b, counter) for b in blocks)
    return ContextPack(
        repo=repo,
        query=query,
        items=items,
        tokens_used=counter.count(text),
        budget_tokens=budget_tokens,
        encoding=counter.name,
        rendered=text,
        detail=detail,
        omitted=tuple(omitted[:MAX_OMITTED]),
        index=index,
        degraded=tuple(degraded),
        session_id=session_id,
        already_sent=tuple(already_sent),
        warnings=tuple(warnings),
    )


def _final(note: str, blocks: Sequence[Block]) -> str:
    body = render(blocks)
    return f"{note}\n{body}" if note and body else (note or body)


def _already_sent_note(spans: Sequence[DeliveredSpan], counter: TokenCounter, cap: int) -> str:
    """A list of what the session holds, so the agent knows it was not forgotten."""
    return capped_list(
        "## Already sent in this session (unchanged, not repeated)\n",
        [f"- {s.path}:{s.start_line}-{s.end_line}\n" for s in spans],
        counter, cap, "",
    )  # fmt: skip


def capped_list(head: str, lines: Sequence[str], counter: TokenCounter, cap: int, more: str) -> str:
    """``head`` and as many of ``lines`` as fit ``cap`` tokens, then how many are left
    (``more`` says where to find them); empty when there are no lines."""
    if not lines:
        return ""
    kept: list[str] = []
    used = counter.count(head)
    for i, line in enumerate(lines):
        used += counter.count(line)
        if used > cap:
            kept.append(f"- … and {len(lines) - i} more{more}\n")
            break
        kept.append(line)
    return head + "".join(kept)


def _with(blocks: list[Block], cand: Block, counter: TokenCounter) -> tuple[list[Block], int]:
    """``blocks`` with ``cand`` added, and the position of the block that changed.

    A snippet that overlaps or touches a snippet of its file merges into it.
    """
    out = list(blocks)
    if cand.kind == "snippet" and isinstance(cand.body, dict):
        for i, b in enumerate(out):
            if (
                b.kind == "snippet"
                and b.path == cand.path
                and isinstance(b.body, dict)
                and cand.start <= b.end + 1
                and cand.end >= b.start - 1
            ):
                m = Block(
                    kind="snippet",
                    path=b.path,
                    start=min(b.start, cand.start),
                    end=max(b.end, cand.end),
                    body={**cand.body, **b.body},
                    language=b.language,
                    header=b.header if b.start <= cand.start else cand.header,
                    symbol=b.symbol or cand.symbol,
                    score=max(b.score, cand.score),
                    why=b.why + [w for w in cand.why if w not in b.why],
                )
                if m.start == b.start and m.end == b.end:
                    m.tokens = b.tokens  # wholly inside: nothing new
                else:
                    m.tokens = counter.count(m.render())
                out[i] = m
                return out, i
    if not cand.tokens:
        cand.tokens = counter.count(cand.render())
    out.append(cand)
    return out, len(out) - 1


def _omitted(b: Block) -> Omitted:
    return Omitted(b.path, b.start, b.end, b.symbol, b.tokens, b.score)


def _item(b: Block, counter: TokenCounter) -> ContextItem:
    text = b.render()
    lines = b.lines_text() if b.kind in ("snippet", "file") else ""
    return ContextItem(
        path=b.path,
        start_line=b.start,
        end_line=b.end,
        symbol=b.symbol,
        kind=b.kind,
        score=b.score,
        tokens=counter.count(text),
        text=text,
        why=tuple(b.why),
        content_hash=span_hash(lines) if lines else "",
    )


def snippet(
    path: str,
    start: int,
    end: int,
    text: str,
    *,
    language: str | None,
    header: str = "",
    symbol: str | None = None,
    score: float = 0.0,
    why: Sequence[str] = (),
    tokens: int = 0,
) -> Block:
    """A snippet block of ``text``, the file's lines ``start..end``.

    ``tokens``, when known (a chunk's stored count), seeds the estimate.
    """
    body = dict(enumerate(text.split("\n"), start=start))
    block = Block("snippet", path, start, end, body, language, header, symbol, score, list(why))
    if tokens:
        block.tokens = tokens + _FENCE_OVERHEAD
    return block
