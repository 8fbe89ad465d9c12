"""Packing ranked hits into a context that never exceeds its token budget.

Greedy in rank order: each hit becomes a block (a ``path:lines`` heading and
a fenced snippet); overlapping or adjacent hits of one file merge into one
block. The budget is enforced on the exact token count of the whole rendered
text, headings and separators included, because BPE counts of parts do not
add up exactly to the count of their concatenation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ctxsvc.models import ContextItem, ContextPack, Hit, IndexVersion, Omitted
from ctxsvc.tokens import TokenCounter

SEPARATOR = "\n"
MAX_OMITTED = 20


@dataclass
class _Block:
    path: str
    start: int
    end: int
    header: str
    lines: dict[int, str]  # line number -> text, so merged spans stay exact
    language: str | None
    symbol: str | None
    score: float
    why: list[str] = field(default_factory=list)

    def render(self) -> str:
        title = f"## {self.path}:{self.start}-{self.end}"
        if self.symbol:
            title += f" ({self.symbol})"
        body = "\n".join(self.lines.get(n, "") for n in range(self.start, self.end + 1))
        head = f"{self.header}\n" if self.header else ""
        return f"{title}\n```{self.language or ''}\n{head}{body}\n```\n"


def render(blocks: Sequence[_Block]) -> str:
    return SEPARATOR.join(b.render() for b in blocks)


def pack(
    repo: str,
    query: str,
    hits: Sequence[Hit],
    budget_tokens: int,
    counter: TokenCounter,
    *,
    index: IndexVersion | None = None,
    degraded: Sequence[str] = (),
) -> ContextPack:
    """The best hits that fit ``budget_tokens``, in rank order, and what was left out."""
    blocks: list[_Block] = []
    sizes: list[int] = []  # tokens of each block rendered alone
    omitted: list[Omitted] = []
    sep = counter.count(SEPARATOR)
    for hit in hits:
        trial, changed = _with(blocks, hit)
        trial_sizes = list(sizes)
        size = counter.count(trial[changed].render())
        if changed < len(trial_sizes):
            trial_sizes[changed] = size
        else:
            trial_sizes.append(size)
        if sum(trial_sizes) + sep * (len(trial_sizes) - 1) <= budget_tokens:
            blocks, sizes = trial, trial_sizes
        elif len(omitted) < MAX_OMITTED:
            c = hit.chunk
            omitted.append(
                Omitted(c.path, c.start_line, c.end_line, _symbol(hit), c.tokens, hit.score)
            )
    # The sum of parts is an estimate: enforce the budget on the exact count.
    while blocks and counter.count(render(blocks)) > budget_tokens:
        last = min(range(len(blocks)), key=lambda i: blocks[i].score)
        b = blocks.pop(last)
        sizes.pop(last)
        omitted.insert(
            0, Omitted(b.path, b.start, b.end, b.symbol, counter.count(b.render()), b.score)
        )
    rendered = render(blocks)
    items = tuple(
        ContextItem(
            path=b.path,
            start_line=b.start,
            end_line=b.end,
            symbol=b.symbol,
            kind="snippet",
            score=b.score,
            tokens=size,
            text=b.render(),
            why=tuple(b.why),
        )
        for b, size in zip(blocks, sizes, strict=True)
    )
    return ContextPack(
        repo=repo,
        query=query,
        items=items,
        tokens_used=counter.count(rendered),
        budget_tokens=budget_tokens,
        encoding=counter.name,
        rendered=rendered,
        omitted=tuple(omitted),
        index=index,
        degraded=tuple(degraded),
    )


def _with(blocks: list[_Block], hit: Hit) -> tuple[list[_Block], int]:
    """``blocks`` with ``hit`` added, and the index of the block that changed.

    A hit that overlaps or touches a block of its file merges into it.
    """
    c = hit.chunk
    new_lines = dict(enumerate(c.text.split("\n"), start=c.start_line))
    out = list(blocks)
    for i, b in enumerate(out):
        if b.path == c.path and c.start_line <= b.end + 1 and c.end_line >= b.start - 1:
            out[i] = _Block(
                path=b.path,
                start=min(b.start, c.start_line),
                end=max(b.end, c.end_line),
                header=b.header if b.start <= c.start_line else c.header,
                lines={**new_lines, **b.lines},
                language=b.language,
                symbol=b.symbol or _symbol(hit),
                score=max(b.score, hit.score),
                why=b.why + [w for w in hit.why if w not in b.why],
            )
            return out, i
    out.append(
        _Block(
            c.path,
            c.start_line,
            c.end_line,
            c.header,
            new_lines,
            c.language,
            _symbol(hit),
            hit.score,
            list(hit.why),
        )
    )
    return out, len(out) - 1


def _symbol(hit: Hit) -> str | None:
    return hit.chunk.symbols[0] if hit.chunk.symbols else None
