"""Match paths against one ``.gitignore`` with git's rules, in bounded time.

``IgnoreFile.parse`` reads a ``.gitignore`` as git does (gitignore(5), git's
``dir.c``): blank lines and ``#`` comments are skipped, ``\\#`` and ``\\!``
escape a leading ``#`` or ``!``, trailing spaces are trimmed unless escaped
with ``\\``, a leading ``!`` negates, a trailing ``/`` restricts the pattern to
directories, and a ``/`` at the start or in the middle anchors it to the file's
directory (otherwise it matches a name at any depth). The wildcards are
``ctxsvc.indexers.wildmatch``'s (git's ``wildmatch``), matched on the UTF-8 bytes,
case-sensitively (``core.ignoreCase`` is not read), as git does on Linux.

``IgnoreFile.decide`` answers for one path. It does not apply git's rule that a
file under an excluded directory cannot be re-included: that rule belongs to
the walk, which never descends into a directory decided ignored. Within one
file the last matching pattern wins; across nested files the deepest file with
a matching pattern decides (``ignored``).

Bounded time: each pattern is matched in O(len(pattern) * len(path)).
Literal patterns are looked up in a dict, and a file with many wildcard
patterns runs them all side by side in one ``GlobSet``, so a decision costs
O(len(path) * size of the file's wildcard patterns / word size). Refused and
named in ``notes`` (git would apply them): a pattern over ``MAX_PATTERN_CHARS``
characters or ``MAX_PATTERN_WILDCARDS`` wildcards, and wildcard patterns past
``MAX_FILE_WILDCARD_CHARS`` characters in one file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ctxsvc.indexers.wildmatch import Glob, GlobSet, NeverMatches, compile_glob, encode, is_literal

MAX_PATTERN_CHARS = 1024
MAX_PATTERN_WILDCARDS = 256
MAX_FILE_WILDCARD_CHARS = 32768
_SCAN_MAX = 16  # wildcard patterns tried one by one; more run as one automaton


def _trim_trailing_spaces(line: str) -> str:
    """git's trim_trailing_spaces: drop unescaped trailing spaces (not tabs)."""
    last_space: int | None = None
    i, n = 0, len(line)
    while i < n:
        c = line[i]
        if c == " ":
            if last_space is None:
                last_space = i
        elif c == "\\":
            i += 1
            if i == n:
                return line
            last_space = None
        else:
            last_space = None
        i += 1
    return line if last_space is None else line[:last_space]


@dataclass(frozen=True)
class IgnoreRule:
    """One pattern of a ``.gitignore``, compiled."""

    pattern: str  # the line as git reads it: "\r" and unescaped trailing spaces gone
    line: int  # 1-based
    negated: bool  # "!": re-includes what an earlier pattern ignored
    dir_only: bool  # trailing "/": matches directories only
    basename: bool  # no "/" inside: matches the last component at any depth
    glob: Glob = field(repr=False, compare=False)


@dataclass(frozen=True)
class _Scan:
    """A few wildcard patterns, tried last first."""

    checks: tuple[tuple[int, Callable[[bytes], bool]], ...]  # (rule index, test)

    def last(self, text: bytes, floor: int) -> int:
        for index, test in self.checks:
            if index <= floor:
                break
            if test(text):
                return index
        return floor


@dataclass(frozen=True)
class _Union:
    """Many wildcard patterns run as one automaton."""

    globs: GlobSet
    indexes: tuple[int, ...]  # glob -> rule index, ascending

    def last(self, text: bytes, floor: int) -> int:
        if self.indexes[-1] <= floor:
            return floor
        hit = self.globs.last(text)
        return max(floor, self.indexes[hit]) if hit >= 0 else floor


def _group(rules: list[tuple[int, IgnoreRule]]) -> _Scan | _Union:
    if len(rules) <= _SCAN_MAX:
        return _Scan(tuple((i, r.glob.tester(r.basename)) for i, r in reversed(rules)))
    return _Union(GlobSet.of([r.glob for _, r in rules]), tuple(i for i, _ in rules))


@dataclass(frozen=True)
class _View:
    """The rules that apply to files, or to directories, ready to match."""

    names: dict[bytes, int]  # literal name -> index of its last rule
    paths: dict[bytes, int]  # literal path -> index of its last rule
    by_name: _Scan | _Union
    by_path: _Scan | _Union

    @classmethod
    def of(cls, rules: Sequence[IgnoreRule], dirs: bool) -> _View:
        names: dict[bytes, int] = {}
        paths: dict[bytes, int] = {}
        by_name: list[tuple[int, IgnoreRule]] = []
        by_path: list[tuple[int, IgnoreRule]] = []
        for index, rule in enumerate(rules):
            if rule.dir_only and not dirs:
                continue
            exact = rule.glob.exact
            if exact is not None:
                (names if rule.basename else paths)[exact] = index
            else:
                (by_name if rule.basename else by_path).append((index, rule))
        return cls(names, paths, _group(by_name), _group(by_path))


@dataclass(frozen=True)
class IgnoreFile:
    """The patterns of one ``.gitignore``, in file order."""

    source: str
    rules: tuple[IgnoreRule, ...]
    notes: tuple[str, ...] = ()  # patterns refused: file, line and why
    _views: tuple[_View, _View] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        views = (_View.of(self.rules, dirs=False), _View.of(self.rules, dirs=True))
        object.__setattr__(self, "_views", views)

    @classmethod
    def parse(cls, text: str, source: str) -> IgnoreFile:
        """Read ``text``, the contents of the ``.gitignore`` at ``source``.

        Never raises: patterns past the size bounds are left out and named in
        ``notes``; one git can never match (an unclosed ``[``, an unknown
        ``[:class:]``, a trailing lone ``\\``) is left out silently, as git
        keeps it without effect.
        """
        rules: list[IgnoreRule] = []
        notes: list[str] = []
        spent, over, over_from = 0, 0, 0  # wildcard characters; patterns past the limit
        for number, raw in enumerate(text.removeprefix("\ufeff").split("\n"), start=1):
            if not raw or raw[0] == "#":
                continue
            line = _trim_trailing_spaces(raw.removesuffix("\r").partition("\0")[0])
            if not line:
                continue
            if spent > MAX_FILE_WILDCARD_CHARS and not is_literal(encode(line)):
                over += 1  # not even compiled: past the limit, the file costs no more
                continue
            try:
                rule = _rule(line, number)
            except NeverMatches:
                continue
            except _TooBig as exc:
                notes.append(
                    f"gave up on pattern {_clip(line)!r} (line {number} of {source}): {exc};"
                    " the pattern is not applied, so what it names is indexed; shorten it"
                )
                continue
            if rule.glob.exact is None:
                spent += len(line)
                if spent > MAX_FILE_WILDCARD_CHARS:
                    over, over_from = over + 1, over_from or number
                    continue
            rules.append(rule)
        if over:
            notes.append(
                f"gave up on {over} wildcard pattern(s) from line {over_from} of {source} on:"
                f" the file's wildcard patterns pass {MAX_FILE_WILDCARD_CHARS} characters;"
                " they are not applied, so what they name is indexed; split the file"
            )
        return cls(source=source, rules=tuple(rules), notes=tuple(notes))

    def match(self, rel: str, is_dir: bool) -> IgnoreRule | None:
        """The last pattern matching ``rel``, or None.

        ``rel`` is relative to this file's directory, "/"-separated, without a
        trailing "/"; ``is_dir`` says whether it names a directory (a symlink
        to one is not).
        """
        path = encode(rel)
        name = path[path.rfind(b"/") + 1 :]
        view = self._views[is_dir]
        best = max(view.names.get(name, -1), view.paths.get(path, -1))
        best = view.by_path.last(path, view.by_name.last(name, best))
        return self.rules[best] if best >= 0 else None

    def decide(self, rel: str, is_dir: bool) -> bool | None:
        """True if ``rel`` is ignored, False if a "!" pattern re-includes it,
        None if no pattern matches; see ``match`` for ``rel`` and ``is_dir``.

        The parent-directory rule is the walk's: a path under an ignored
        directory may still be decided False here.
        """
        rule = self.match(rel, is_dir)
        return None if rule is None else not rule.negated


def ignored(stack: Sequence[tuple[str, IgnoreFile]], rel: str, is_dir: bool) -> bool:
    """Whether the ``.gitignore`` files above ``rel`` ignore it.

    ``stack`` holds (directory relative to the root, "" for the root; its
    file) for ``rel``'s ancestors, outermost first; ``rel`` is relative to the
    root. The deepest file with a matching pattern decides, as in git.
    """
    for base, ignore in reversed(stack):
        verdict = ignore.decide(rel[len(base) + 1 :] if base else rel, is_dir)
        if verdict is not None:
            return verdict
    return False


class _TooBig(Exception):
    pass


def _rule(line: str, number: int) -> IgnoreRule:
    """Compile one trimmed line; raises NeverMatches for a pattern that matches nothing."""
    if len(line) > MAX_PATTERN_CHARS:
        raise _TooBig(f"{len(line)} characters, over the limit of {MAX_PATTERN_CHARS}")
    negated = line.startswith("!")
    p = encode(line[1:] if negated else line)
    dir_only = p.endswith(b"/")
    if dir_only:
        p = p[:-1]
    basename = b"/" not in p
    if not basename and p.startswith(b"/"):
        p = p[1:]
    if not p:
        raise NeverMatches("empty")
    glob = compile_glob(p)
    if glob.wildcards > MAX_PATTERN_WILDCARDS:
        raise _TooBig(f"{glob.wildcards} wildcards, over the limit of {MAX_PATTERN_WILDCARDS}")
    return IgnoreRule(line, number, negated, dir_only, basename, glob)


def _clip(line: str, keep: int = 80) -> str:
    return line if len(line) <= keep else line[:keep] + "…"
