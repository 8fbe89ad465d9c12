"""Read a wildcard pattern into tokens, as git's ``wildmatch`` reads it.

The syntax of ``.gitignore`` patterns (gitignore(5), git's ``wildmatch.c`` with
``WM_PATHNAME``), read from bytes: ``*`` and ``?`` never match ``/``; ``\\``
makes the next byte literal; ``[...]`` takes ranges, ``!``/``^`` negation and
the POSIX classes git knows (``[[:alpha:]]``), with wildmatch's quirks; ``**/``
at the start, ``/**`` at the end and ``/**/`` in the middle match any number of
directories, and any other run of stars is one ``*``. A pattern git accepts but
can never match (an unclosed ``[``, an unknown ``[:class:]``, a trailing lone
``\\``) raises ``NeverMatches``. ``ctxsvc.indexers.wildmatch`` runs the tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

_SLASH = 0x2F
_SPECIAL = b"*?[\\"  # what makes a pattern more than a literal, as git's is_glob_special
_ALL = (1 << 256) - 1
_NOT_SLASH = _ALL & ~(1 << _SLASH)


def _span(lo: int, hi: int) -> int:
    """The byte set lo..hi inclusive, as a 256-bit mask."""
    return ((1 << (hi + 1)) - 1) & ~((1 << lo) - 1) if lo <= hi else 0


def _chars(text: bytes) -> int:
    mask = 0
    for b in text:
        mask |= 1 << b
    return mask


# git's own ctype (git-compat-util.h): ASCII only, and "space" is \t \n \r and ' '.
_DIGIT = _span(0x30, 0x39)
_UPPER = _span(0x41, 0x5A)
_LOWER = _span(0x61, 0x7A)
_GRAPH = _span(0x21, 0x7E)
_CLASSES: dict[bytes, int] = {
    b"alnum": _DIGIT | _UPPER | _LOWER,
    b"alpha": _UPPER | _LOWER,
    b"blank": _chars(b" \t"),
    b"cntrl": _span(0, 0x1F) | 1 << 0x7F,
    b"digit": _DIGIT,
    b"graph": _GRAPH,
    b"lower": _LOWER,
    b"print": _span(0x20, 0x7E),
    b"punct": _GRAPH & ~(_DIGIT | _UPPER | _LOWER),
    b"space": _chars(b" \t\n\r"),
    b"upper": _UPPER,
    b"xdigit": _DIGIT | _chars(b"abcdefABCDEF"),
}


class NeverMatches(Exception):
    """The pattern can match nothing (git accepts it and never matches it)."""


@dataclass(frozen=True, slots=True)
class One:
    """Consumes one byte from ``members``, a 256-bit mask."""

    members: int

    def literal(self) -> int | None:
        m = self.members
        return m.bit_length() - 1 if m and not m & (m - 1) else None


@dataclass(frozen=True, slots=True)
class Star:
    """Any run of bytes; ``/`` only if ``crosses``."""

    crosses: bool


@dataclass(frozen=True, slots=True)
class Dirs:
    """``**/`` between slashes: no bytes at all, or any bytes ending in ``/``."""


Token = One | Star | Dirs


def tokenize(p: bytes) -> list[Token]:
    """wildmatch's reading of a pattern (WM_PATHNAME), one token per element.

    Raises ``NeverMatches`` for a pattern that can match nothing.
    """
    out: list[Token] = []
    i, n = 0, len(p)
    while i < n:
        c = p[i]
        if c == 0x5C:  # backslash: the next byte is literal
            if i + 1 == n:
                raise NeverMatches("ends in a lone backslash")
            out.append(One(1 << p[i + 1]))
            i += 2
        elif c == 0x3F:  # ?
            out.append(One(_NOT_SLASH))
            i += 1
        elif c == 0x2A:  # *
            j = i
            while j < n and p[j] == 0x2A:
                j += 1
            boundary = j - i >= 2 and (i == 0 or p[i - 1] == _SLASH)
            if boundary and j < n and p[j] == _SLASH:
                if not (out and isinstance(out[-1], Dirs)):  # "**/**/" is "**/"
                    out.append(Dirs())
                i = j + 1
                continue
            crosses = boundary and (j == n or (p[j] == 0x5C and j + 1 < n and p[j + 1] == _SLASH))
            out.append(Star(crosses))
            i = j
        elif c == 0x5B:  # [
            members, i = _bracket(p, i + 1)
            if not members & _NOT_SLASH:
                raise NeverMatches("a bracket that matches no byte")
            out.append(One(members & _NOT_SLASH))
        else:
            out.append(One(1 << c))
            i += 1
    return out


def _bracket(p: bytes, i: int) -> tuple[int, int]:
    """The members of the class opened just before ``i``, and the index after its ``]``.

    A port of wildmatch's loop, quirks included: a ``]`` first is a member, ``-``
    first or last is literal, ``[:`` without ``:]`` is a literal ``[``.
    """
    n = len(p)
    negated = i < n and p[i] in (0x21, 0x5E)  # ! or ^
    if negated:
        i += 1
    members, prev = 0, 0
    while True:
        if i >= n:
            raise NeverMatches("a '[' that is not closed")
        c = p[i]
        if c == 0x5C:
            i += 1
            if i >= n:
                raise NeverMatches("a '[' that is not closed")
            c = p[i]
            members |= 1 << c
        elif c == 0x2D and prev and i + 1 < n and p[i + 1] != 0x5D:  # a range
            i += 1
            hi = p[i]
            if hi == 0x5C:
                i += 1
                if i >= n:
                    raise NeverMatches("a '[' that is not closed")
                hi = p[i]
            members |= _span(prev, hi)
            c = 0  # a range cannot start another
        elif c == 0x5B and i + 1 < n and p[i + 1] == 0x3A:  # [:
            start = k = i + 2
            while k < n and p[k] != 0x5D:
                k += 1
            if k >= n:
                raise NeverMatches("a '[' that is not closed")
            if k - start < 1 or p[k - 1] != 0x3A:
                members |= 1 << c  # not a class: a literal '[', then read on from ':'
            else:
                name = p[start : k - 1]
                if name not in _CLASSES:
                    raise NeverMatches(f"unknown class [:{name.decode(errors='replace')}:]")
                members |= _CLASSES[name]
                i, c = k, 0
        else:
            members |= 1 << c
        prev = c
        i += 1
        if i < n and p[i] == 0x5D:
            return (_ALL & ~members if negated else members), i + 1


def is_literal(pattern: bytes) -> bool:
    """Whether ``pattern`` has no wildcard or escape, as git's ``is_glob_special``."""
    return len(pattern.translate(None, _SPECIAL)) == len(pattern)
