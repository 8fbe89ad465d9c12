"""Match one wildcard pattern, or many at once, against a path in bounded time.

``compile_glob`` reads a ``.gitignore``-style pattern once (its syntax is
``ctxsvc.indexers.wildsyntax``'s, git's ``wildmatch`` with ``WM_PATHNAME``);
``Glob.match`` tests one path, and ``GlobSet`` runs many patterns over a path
at once and names the last that matches. Matching is on bytes,
case-sensitively, as git does on Linux; ``encode`` turns a path or pattern read
as text back into the bytes it came from.

Bounded time: a pattern compiles to a position automaton run on bit sets (each
path byte updates every reachable pattern position at once), so a test costs
O(len(pattern) * len(path)) whatever the pattern, and a ``GlobSet`` costs
O(len(path) * total pattern size / word size); nothing backtracks. Literal
prefixes and suffixes, and a core that is one star or one ``**/``, are checked
with bytes methods and need no automaton.

``foo**/bar`` matches ``foo/bar`` but not ``foobar``, as documented and as git
does since 2.52; earlier versions also matched ``foobar`` (a bug git fixed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import groupby
from operator import methodcaller

from ctxsvc.indexers.wildsyntax import Dirs, One, Star, Token, tokenize
from ctxsvc.indexers.wildsyntax import NeverMatches as NeverMatches  # raised by compile_glob
from ctxsvc.indexers.wildsyntax import is_literal as is_literal  # part of this module's API

_SLASH = 0x2F
_ALL = (1 << 256) - 1


def _bits(positions: Iterable[int], size: int) -> int:
    """The int with exactly ``positions`` set, built in O(size)."""
    buf = bytearray(size // 8 + 1)
    for p in positions:
        buf[p >> 3] |= 1 << (p & 7)
    return int.from_bytes(buf, "little")


def _members(mask: int) -> list[int]:
    return [b for b in range(256) if mask >> b & 1]


def _closure(state: int, forward: int, skips: int) -> int:
    """``state`` with every position reachable from it without reading a byte."""
    reach = state & forward
    if reach:
        state |= (forward + reach) ^ forward
    jump = state & skips
    if jump:
        # A jump lands after a "/", never on another "**/", so once is enough.
        state |= jump << 3
        reach = state & forward
        if reach:
            state |= (forward + reach) ^ forward
    return state


@dataclass(frozen=True, slots=True)
class _Automaton:
    """Patterns run side by side as one position automaton on bit sets.

    Each pattern owns a block of positions: one per token (three for a
    ``**/``: its entry, a crossing star, its slash) and one that accepts. Bit
    ``j`` of the state means "the tokens before ``j`` are matched". Stars and
    the entry of a ``**/`` are ``forward`` (left without reading a byte), so
    the closure of a state is an addition whose carry runs through each block
    of forward bits, plus a jump of three over a ``**/`` that matches nothing.
    A pattern is started only if its first and last tokens take the text's
    first and last bytes.
    """

    sets: tuple[int, ...]  # byte -> positions of one-byte tokens that take it
    stars: int  # positions of stars, which stay on any byte but "/"
    crossing: int  # positions of stars that stay on "/" too
    forward: int
    skips: int  # entries of "**/"
    starts: tuple[int, ...]  # first byte -> start state of the patterns that may begin so
    ends: tuple[int, ...]  # last byte -> blocks of the patterns that may end so
    empty: int  # start state for an empty text
    accepts: tuple[int, ...]  # the accepting position of each pattern
    accepting: int  # all of them

    @classmethod
    def build(cls, patterns: Sequence[Sequence[Token]]) -> _Automaton:
        one: dict[int, list[int]] = {}
        stars: list[int] = []
        crossing: list[int] = []
        forward: list[int] = []
        skips: list[int] = []
        accepts: list[int] = []
        firsts: dict[int, list[int]] = {}
        lasts: dict[int, list[range]] = {}
        pos = 0
        for tokens in patterns:
            begin = pos
            for token in tokens:
                if isinstance(token, One):
                    one.setdefault(token.members, []).append(pos)
                elif isinstance(token, Star):
                    stars.append(pos)
                    forward.append(pos)
                    if token.crosses:
                        crossing.append(pos)
                else:
                    skips.append(pos)
                    forward += (pos, pos + 1)
                    stars.append(pos + 1)
                    crossing.append(pos + 1)
                    one.setdefault(1 << _SLASH, []).append(pos + 2)
                    pos += 2
                pos += 1
            accepts.append(pos)
            pos += 1
            first = tokens[0].members if tokens and isinstance(tokens[0], One) else _ALL
            last = tokens[-1].members if tokens and isinstance(tokens[-1], One) else _ALL
            firsts.setdefault(first, []).append(begin)
            lasts.setdefault(last, []).append(range(begin, pos))
        fwd, skip = _bits(forward, pos), _bits(skips, pos)
        sets, starts, ends = [0] * 256, [0] * 256, [0] * 256
        for members, at in one.items():
            bits = _bits(at, pos)
            for b in _members(members):
                sets[b] |= bits
        empty = 0
        for members, at in firsts.items():
            bits = _closure(_bits(at, pos), fwd, skip)
            empty |= bits
            for b in _members(members):
                starts[b] |= bits
        for members, blocks in lasts.items():
            bits = _bits((p for block in blocks for p in block), pos)
            for b in _members(members):
                ends[b] |= bits
        return cls(
            tuple(sets),
            _bits(stars, pos),
            _bits(crossing, pos),
            fwd,
            skip,
            tuple(starts),
            tuple(ends),
            empty,
            tuple(accepts),
            _bits(accepts, pos),
        )

    def run(self, text: bytes) -> int:
        """The accepting bits of the patterns that match all of ``text``.

        Blocks are in pattern order, so the highest bit is the last pattern."""
        if not text:
            state = self.empty
        else:
            state = self.starts[text[0]] & self.ends[text[-1]]
            sets, stars, crossing = self.sets, self.stars, self.crossing
            forward, skips = self.forward, self.skips
            for c in text:
                if not state:
                    return 0
                state = ((state & sets[c]) << 1) | (state & (crossing if c == _SLASH else stars))
                reach = state & forward
                if reach:
                    state |= (forward + reach) ^ forward
                if state & skips:
                    state = _closure(state, forward, skips)
        return state & self.accepting


_EXACT, _STAR, _ANY, _DIRS, _AUTOMATON = range(5)


def encode(text: str) -> bytes:
    """The bytes a path or pattern decoded with ``os.fsdecode`` came from."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that no file name decodes to
        return text.encode("utf-8", "surrogatepass")


def compile_glob(pattern: bytes) -> Glob:
    """``pattern`` read once, ready to match whole paths.

    Raises ``NeverMatches`` for a pattern git keeps but that matches nothing.
    """
    if is_literal(pattern):
        return Glob((), pattern, b"", _EXACT)
    return _compile(tokenize(pattern))


@dataclass(frozen=True)
class Glob:
    """One compiled pattern (from ``compile_glob``): literal ``prefix`` and
    ``suffix`` around a core, which is checked by its shape when it is one star
    or one ``**/``, else by an automaton (built on first use)."""

    tokens: tuple[Token, ...]  # empty for a literal pattern
    prefix: bytes
    suffix: bytes
    kind: int
    least: int = 0  # the fewest bytes the core matches
    needs: bytes = b""  # the longest literal run inside the core

    @property
    def exact(self) -> bytes | None:
        """The one text the pattern matches when it has no wildcard, else None."""
        return self.prefix if self.kind == _EXACT else None

    @property
    def wildcards(self) -> int:
        """How many tokens match more than one byte (stars, ``?``, classes)."""
        return sum(1 for t in self.tokens if not isinstance(t, One) or t.members & (t.members - 1))

    @cached_property
    def _core(self) -> _Automaton:
        end = len(self.tokens) - len(self.suffix)
        return _Automaton.build([self.tokens[len(self.prefix) : end]])

    def match(self, text: bytes) -> bool:
        """Whether the pattern matches all of ``text``."""
        prefix, suffix = self.prefix, self.suffix
        fixed = len(prefix) + len(suffix)
        if len(text) < fixed or not text.startswith(prefix) or not text.endswith(suffix):
            return False
        kind = self.kind
        if kind == _EXACT:
            return len(text) == fixed
        if kind == _ANY:
            return True
        core = text[len(prefix) : len(text) - len(suffix)]
        if kind == _STAR:
            return b"/" not in core
        if kind == _DIRS:
            return not core or core.endswith(b"/")
        if len(core) < self.least or (self.needs and self.needs not in core):
            return False  # cheap refusals first: most paths fail here
        return bool(self._core.run(core))

    def tester(self, basename: bool) -> Callable[[bytes], bool]:
        """``match``, or a bytes method doing the same at C speed.

        ``basename``: the texts tested are names, which hold no ``/``.
        """
        prefix, suffix, kind = self.prefix, self.suffix, self.kind
        # A name has no "/" in it, so a star is any run of bytes there.
        if kind == _ANY or (kind == _STAR and basename):
            if not suffix:
                return methodcaller("startswith", prefix)
            if not prefix:
                return methodcaller("endswith", suffix)
        return self.match


def _compile(tokens: list[Token]) -> Glob:
    lits = [t.literal() if isinstance(t, One) else None for t in tokens]
    lo = 0
    while lo < len(tokens) and lits[lo] is not None:
        lo += 1
    hi = len(tokens)
    while hi > lo and lits[hi - 1] is not None:
        hi -= 1
    prefix = bytes(b for b in lits[:lo] if b is not None)
    suffix = bytes(b for b in lits[hi:] if b is not None)
    core = tokens[lo:hi]
    kind = _AUTOMATON
    if not core:
        kind = _EXACT
    elif len(core) == 1 and isinstance(core[0], Dirs):
        kind = _DIRS
    elif len(core) == 1 and isinstance(core[0], Star):
        kind = _ANY if core[0].crosses else _STAR
    runs = (
        bytes(b for b in run if b is not None) for lit, run in groupby(lits[lo:hi], _is_byte) if lit
    )
    return Glob(
        tuple(tokens),
        prefix,
        suffix,
        kind,
        least=sum(1 for t in core if isinstance(t, One)),
        needs=max(runs, key=len, default=b""),
    )


def _is_byte(b: int | None) -> bool:
    return b is not None


@dataclass(frozen=True)
class GlobSet:
    """Many globs run side by side as one automaton."""

    automaton: _Automaton
    order: dict[int, int]  # accepting position -> index of its glob

    @classmethod
    def of(cls, globs: Sequence[Glob]) -> GlobSet:
        """The set of ``globs``, in order (built in their total size)."""
        patterns = [g.tokens or tuple(One(1 << b) for b in g.prefix) for g in globs]
        automaton = _Automaton.build(patterns)
        return cls(automaton, {a: i for i, a in enumerate(automaton.accepts)})

    def last(self, text: bytes) -> int:
        """The index of the last glob matching all of ``text``, or -1."""
        hits = self.automaton.run(text)
        return self.order[hits.bit_length() - 1] if hits else -1
