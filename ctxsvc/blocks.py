"""Blocks: the candidates a pack is made of, and how each lays out its lines.

A block is a snippet of a file's lines, a whole file, a file's skeleton
(signatures and docstrings) or a map line (a file and its top symbols), with
the path, score and reasons it was ranked by and its token count (estimated,
or exact once counted).

A snippet quotes the file's lines verbatim, as runs: its body (one run unless
merged across holes). Above its code come the header lines of the definitions
that enclose it (quoted from the file too), and where header and code do not
touch, a comment line of the file's language says which lines were left out.
A hole between two runs is marked in place (``… lines 1159-1196 omitted (412
tokens): expand Flask.url_for``), naming the innermost body of code holding
it (a function, a method, a multi-line constant: never the class or module
around it, which would cost too much to expand).
"""

from __future__ import annotations

import bisect
import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ctxsvc.models import Symbol
from ctxsvc.quoting import comment, elision, indent_of
from ctxsvc.tokens import TokenCounter

_BACKTICKS = re.compile(r"`{3,}")
MAX_TITLE_NAMES = 4
FENCE_OVERHEAD = 12  # tokens of a block's title line and fences, before exact counting
_SPAN = 64  # lines per span of kept token sums
_BODY_KINDS = frozenset({"function", "method"})
_VALUE_KINDS = frozenset({"constant", "macro"})  # a body of code when on several lines

Run = tuple[int, int]  # first and last line, inclusive


def is_body(s: Symbol) -> bool:
    """Whether a definition is a body of code (a function, a method, a constant
    over several lines) rather than a container of definitions (a class, struct,
    interface, trait, impl, enum, module, type)."""
    return s.kind in _BODY_KINDS or (s.kind in _VALUE_KINDS and s.end_line > s.start_line)


@dataclass(frozen=True, eq=False)
class Source:
    """What a snippet quotes from: one file's lines, as indexed, and its definitions.

    Definitions nest (they come from the syntax tree), so those holding a line
    are a chain: found by bisecting their start lines and climbing to parents,
    never by scanning the file's definitions. A line is counted when a range
    first needs it (one counter per source), and the sums of whole spans of
    ``_SPAN`` lines are kept: a long range's estimate costs a few additions.
    """

    path: str
    language: str | None
    lines: Mapping[int, str]
    symbols: Sequence[Symbol]  # by start line, an outer definition before an inner one
    _starts: list[int] = field(default_factory=list, init=False, repr=False)
    _parents: list[int] = field(default_factory=list, init=False, repr=False)
    _counts: dict[int, int] = field(default_factory=dict, init=False, repr=False)
    _spans: dict[int, int] = field(default_factory=dict, init=False, repr=False)
    _ranges: dict[Run, int] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        syms = sorted(self.symbols, key=lambda s: (s.start_line, -s.end_line))
        object.__setattr__(self, "symbols", syms)
        stack: list[int] = []
        for i, s in enumerate(syms):
            while stack and syms[stack[-1]].end_line < s.end_line:
                stack.pop()
            self._parents.append(stack[-1] if stack else -1)
            self._starts.append(s.start_line)
            stack.append(i)

    def text(self, start: int, end: int) -> str:
        return "\n".join(self.lines.get(n, "") for n in range(start, end + 1))

    def estimate(self, counter: TokenCounter, start: int, end: int) -> int:
        """About the token count of lines ``start..end``: the sum of their lines' counts."""
        start = max(start, 1)
        got = self._ranges.get((start, end))
        if got is not None:  # a hole is weighed again at each merge of its block
            return got
        if end - start < 2 * _SPAN:
            got = self._count(counter, start, end)
        else:
            lo, hi = -(-(start - 1) // _SPAN), end // _SPAN  # the whole spans inside
            got = self._count(counter, start, lo * _SPAN) + self._count(
                counter, hi * _SPAN + 1, end
            )
            got += sum(self._span(counter, k) for k in range(lo, hi))
        self._ranges[start, end] = got
        return got

    def _count(self, counter: TokenCounter, start: int, end: int) -> int:
        known = self._counts
        missing = [n for n in range(start, end + 1) if n not in known]
        if missing:
            counts = counter.count_many([self.lines.get(n, "") + "\n" for n in missing])
            known.update(zip(missing, counts, strict=True))
        return sum(known[n] for n in range(start, end + 1))

    def _span(self, counter: TokenCounter, k: int) -> int:
        """The tokens of lines ``k * _SPAN + 1 .. (k + 1) * _SPAN``."""
        got = self._spans.get(k)
        if got is None:
            got = self._spans[k] = self._count(counter, k * _SPAN + 1, (k + 1) * _SPAN)
        return got

    def holding(self, start: int, end: int) -> list[Symbol]:
        """Definitions whose lines contain ``start..end`` (or are them), innermost first."""
        out: list[Symbol] = []
        k = bisect.bisect_right(self._starts, start) - 1
        while k >= 0:
            s = self.symbols[k]
            if s.end_line >= end:
                out.append(s)
            k = self._parents[k]
        return out

    def enclosing(self, start: int, end: int) -> list[Symbol]:
        """Definitions whose lines contain ``start..end`` (not equal to it), outermost first."""
        chain = self.holding(start, end)
        return [s for s in reversed(chain) if (s.start_line, s.end_line) != (start, end)]

    def innermost(self, start: int, end: int) -> Symbol | None:
        """The innermost definition whose lines contain ``start..end`` (or are them)."""
        chain = self.holding(start, end)
        return chain[0] if chain else None

    def body_of(self, start: int, end: int) -> Symbol | None:
        """The innermost body of code (``is_body``) holding ``start..end``, if any: a
        function holding a class is the answer for lines inside the class."""
        return next((s for s in self.holding(start, end) if is_body(s)), None)

    def starting(self, start: int, end: int) -> Sequence[Symbol]:
        """Definitions that start on lines ``start..end``, by start line."""
        lo = bisect.bisect_left(self._starts, start)
        return self.symbols[lo : bisect.bisect_right(self._starts, end, lo)]


def header_lines(s: Symbol) -> range:
    """The lines of a definition's own header (its first line when unknown)."""
    first = s.head_start or s.start_line
    return range(first, max(s.head_end, first) + 1)


@dataclass(frozen=True)
class _Plan:
    """How a block lays out: the runs it quotes, its holes and their tokens, its title names.

    The fenced lines are built from it when the block renders."""

    quoted: tuple[Run, ...]
    gaps: tuple[Run, ...]
    gap_tokens: tuple[int | None, ...]  # of each hole, when its block was given a counter
    names: tuple[str, ...]


@dataclass
class Block:
    """A candidate for the pack.

    ``runs`` are the file lines the block delivers verbatim, in order: a
    snippet's body (one run unless merged across holes), a skeleton's quoted
    lines when its builder sets them. With a ``source``, a snippet also
    quotes its scope headers and marks its holes (with their tokens, by
    ``counter``, when set). Lines not in ``body`` come from the source.
    """

    kind: str  # "snippet", "file", "skeleton" or "map"
    path: str
    start: int
    end: int
    body: dict[int, str] | str  # line number -> text (snippet, file), or prepared text
    language: str | None = None
    symbol: str | None = None
    score: float = 0.0
    why: list[str] = field(default_factory=list)
    tokens: int = 0  # estimate, or exact once counted
    source: Source | None = None
    runs: list[Run] = field(default_factory=list)
    counter: TokenCounter | None = field(default=None, repr=False, compare=False)
    repo: str = ""  # its index, set when a pack spans several (its heading then names it)
    _plan: _Plan | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.runs and self.kind in ("snippet", "file"):
            self.runs = [(self.start, self.end)]

    def lines_text(self) -> str:
        """The body: prepared text, or the delivered lines (holes left out)."""
        if isinstance(self.body, str):
            return self.body
        return "\n".join(self.line(n) for a, z in self.runs for n in range(a, z + 1))

    def line(self, n: int) -> str:
        """Line ``n`` of the file, from the body or else the source."""
        got = self.body.get(n) if isinstance(self.body, dict) else None
        if got is None and self.source is not None:
            got = self.source.lines.get(n)
        return got or ""

    def solid(self, start: int, end: int) -> Run:
        """Lines ``start..end`` without the blank lines at either end (as is if all blank)."""
        lo, hi = start, end
        while lo < hi and not self.line(lo).strip():
            lo += 1
        while hi > lo and not self.line(hi).strip():
            hi -= 1
        return (lo, hi) if self.line(lo).strip() else (start, end)

    def plan(self) -> _Plan:
        if self._plan is None:
            self._plan = self._layout()
        return self._plan

    def title(self) -> str:
        if self.kind == "file":
            return "whole file"
        title = f"lines {self.start}-{self.end}"
        names = self.plan().names
        if names:
            more = ", …" if len(names) > MAX_TITLE_NAMES else ""
            title += f" ({', '.join(names[:MAX_TITLE_NAMES])}{more})"
        return title

    def render(self) -> str:
        """The block as it appears under its file's heading."""
        if self.kind == "map":
            return f"{self.lines_text()}\n"
        if self.kind == "skeleton":
            return fenced("skeleton", self.language, self.lines_text())
        return fenced(self.title(), self.language, "\n".join(self._code()))

    def _layout(self) -> _Plan:
        if isinstance(self.body, str):
            return _Plan(tuple(self.runs), (), (), (self.symbol,) if self.symbol else ())
        src, runs = self.source, self.runs
        starts = [a for a, _ in runs]

        def in_body(n: int) -> bool:
            k = bisect.bisect_right(starts, n) - 1
            return k >= 0 and n <= runs[k][1]

        heads: set[int] = set()
        names: list[str] = []
        if src is not None and self.kind == "snippet":
            for a, z in runs:
                # The blank lines a snippet takes up to the next chunk may lie past
                # its definition's end: they say nothing of where the code sits.
                around = src.enclosing(*self.solid(a, z))
                for s in around:
                    heads.update(n for n in header_lines(s) if n < a and not in_body(n))
                starting = [s.qualname for s in src.starting(a, z)]
                if not starting and around:
                    starting = [around[-1].qualname]
                names.extend(q for q in starting if q not in names)
        elif self.symbol:
            names.append(self.symbol)
        segments = sorted([*runs, *((n, n) for n in heads)])
        quoted: list[Run] = []
        for a, z in segments:
            # Blank lines between two runs are quoted: cheaper than saying they are not.
            if quoted and all(not self.line(n).strip() for n in range(quoted[-1][1] + 1, a)):
                quoted[-1] = (quoted[-1][0], max(z, quoted[-1][1]))
            else:
                quoted.append((a, z))
        # A hole is lines left out after the code began (before it: scope headers).
        gaps = [
            (x + 1, y - 1) for (_, x), (y, _) in itertools.pairwise(quoted) if x + 1 > runs[0][0]
        ]
        costs = [
            src.estimate(self.counter, a, z) if src and self.counter else None for a, z in gaps
        ]
        return _Plan(tuple(quoted), tuple(gaps), tuple(costs), tuple(names))

    def _code(self) -> list[str]:
        """The fenced lines: the quoted runs, an elision or a marked hole between two."""
        plan = self.plan()
        holes = dict(zip(plan.gaps, plan.gap_tokens, strict=True))
        code: list[str] = []
        for i, (a, z) in enumerate(plan.quoted):
            if i:
                first, last = plan.quoted[i - 1][1] + 1, a - 1
                nxt = next((t for n in range(a, z + 1) if (t := self.line(n)).strip()), "")
                if (first, last) in holes:
                    code.append(self._hole(first, last, holes[first, last], nxt))
                else:
                    code.append(elision(self.language, first, last, nxt))
            code.extend(self.line(n) for n in range(a, z + 1))
        return code

    def _hole(self, first: int, last: int, tokens: int | None, next_line: str) -> str:
        span = f"line {first}" if first == last else f"lines {first}-{last}"
        cost = f" ({tokens} tokens)" if tokens is not None else ""
        what = self.hole_owner(first, last) or f"{self.path}:{first}-{last}"
        return comment(
            self.language, f"… {span} omitted{cost}: expand {what}", indent_of(next_line)
        )

    def hole_owner(self, first: int, last: int) -> str | None:
        """The innermost body of code holding lines ``first..last``: what to expand
        (a class or module holding it is no answer: expanding it costs too much)."""
        inner = self.source.body_of(first, last) if self.source else None
        return inner.qualname if inner else None


def heading(repo: str, path: str) -> str:
    """The line above a file's blocks in a pack: its path, after its index when set."""
    return f"## {repo}: {path}\n" if repo else f"## {path}\n"


def fenced(title: str, language: str | None, code: str) -> str:
    """``code`` under ``title`` in a fence longer than any run of backticks in it
    (Markdown's rule), so a quoted fence line of the file cannot close it early."""
    longest = max((len(run) for run in _BACKTICKS.findall(code)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{title}:\n{fence}{language or ''}\n{code}\n{fence}\n"


def body_runs(lines: Sequence[Run], start: int, end: int) -> list[Run]:
    """The runs of ``lines`` within ``start..end``: what an item delivers, its scope
    headers above ``start`` cut off."""
    return [(max(a, start), min(z, end)) for a, z in lines if a <= end and z >= start]


def snippet(
    path: str,
    start: int,
    end: int,
    text: str,
    *,
    language: str | None,
    symbol: str | None = None,
    score: float = 0.0,
    why: Sequence[str] = (),
    tokens: int = 0,
    source: Source | None = None,
) -> Block:
    """A snippet block of ``text``, the file's lines ``start..end``.

    ``tokens``, when known (a chunk's stored count), seeds the estimate;
    ``source`` gives the block its scope headers and lets it join others.
    """
    body = dict(enumerate(text.split("\n"), start=start))
    block = Block(
        "snippet", path, start, end, body, language, symbol, score, list(why), source=source
    )
    if tokens:
        block.tokens = tokens + FENCE_OVERHEAD
    return block
