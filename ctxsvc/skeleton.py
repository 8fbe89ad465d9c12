"""A file's skeleton: the header of each definition, quoted from the file.

For every definition, in line order: its decorator or attribute lines and its
header lines (keyword or name to the line its body begins on), exactly as
they are in the file, tabs, trailing spaces and "\\r" included; and its
docstring, quoted too where it is one line that is a whole string or comment,
else summed up in a comment marked as ctxsvc's (``# … doc: `` and its first
paragraph, cut between words with " …"). Whatever lies between two quoted lines is one elision line in the
file's language (``// … lines 17-20 omitted`` in Go); a short line between two
is quoted instead. Nesting is the file's own: quoted lines keep their
indentation, so a Go method stands at the top level wherever its receiver
type is defined, and a scope that is no definition (``impl Counter {``, a
namespace) is quoted above its members.

A pure function of the file's lines and its symbols; the caller reads them.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ctxsvc.models import Symbol
from ctxsvc.quoting import comment, elision, indent_of

MAX_HEAD_LINES = 12  # a longer header keeps its first lines and its last
MAX_DECORATION_LINES = 6
DOC_CHARS = 160  # of a docstring summary written as a comment
_SCAN = 40  # lines looked at for the indentation of what an elision stands for

_STRING_LINE = re.compile(r"""[rRuUbBfF]{0,2}("{3}|'{3}|"|')(.*)\1,?""")
_HASH_COMMENTS = frozenset({"python", "ruby", "bash"})


@dataclass(frozen=True)
class Skeleton:
    """The skeleton's text and the runs of file lines it quotes verbatim."""

    text: str
    runs: tuple[tuple[int, int], ...]  # (first, last) file lines, in order
    start: int  # the lines of the file the skeleton covers
    end: int


def skeleton(lines: Mapping[int, str], symbols: Sequence[Symbol], language: str | None) -> Skeleton:
    """The skeleton of a file given by its ``lines`` (line number -> text, as
    ``RepoView.file_lines`` returns them) and its ``symbols``."""
    last = max(lines, default=0)
    syms = sorted(
        (s for s in symbols if 1 <= s.start_line <= last), key=lambda s: (s.start_line, -s.end_line)
    )
    if not syms:
        return Skeleton("", (), 0, 0)
    quoted: set[int] = set()
    # Comment lines written before or after a quoted line.
    before: dict[int, list[str]] = {}
    after: dict[int, list[str]] = {}
    starts = sorted({s.start_line for s in syms})
    quoted.update(_openers(lines, syms, last, language))
    for s in syms:
        head_start, head_end = _head(s, last, starts)
        quoted.update(_capped(s.start_line, head_start - 1, MAX_DECORATION_LINES))
        if head_end < s.end_line and _opens_string(lines, head_start, head_end):
            # ``SQL = """`` and the rest: quote it whole when short, else elide it,
            # as a quoted opening would leave the string open over what follows.
            if s.end_line - head_start < MAX_HEAD_LINES:
                quoted.update(range(head_start, s.end_line + 1))
            continue
        quoted.update(_capped(head_start, head_end, MAX_HEAD_LINES))
        doc = s.docstring.strip().split("\n", 1)[0].strip()
        if not doc or _doc_quoted(lines, head_start, head_end, doc):
            continue
        line = _doc_line(lines, s, head_end, doc, language)
        if line is not None:
            quoted.add(line)
            continue
        summary = f"… doc: {_summary(s.docstring)}"  # ctxsvc's words, marked as such
        if language == "python":  # in the body, under the header
            note = comment(language, summary, _body_indent(lines, s, head_end))
            after.setdefault(head_end, []).append(note)
        else:  # above the definition, where its doc comment is
            note = comment(language, summary, indent_of(lines.get(head_start, "")))
            before.setdefault(s.start_line, []).append(note)
    for n in sorted(quoted):  # a short line between two quoted ones costs no more than its elision
        if n + 2 in quoted and n + 1 not in quoted and len(lines.get(n + 1, "").strip()) <= 40:
            quoted.add(n + 1)
    return _render(lines, sorted(quoted), before, after, language, syms)


def _head(s: Symbol, last: int, starts: Sequence[int]) -> tuple[int, int]:
    """A symbol's header lines; a definition nested in them ends them before it."""
    head_start = _head_line(s, last)
    head_end = min(max(s.head_end, head_start), s.end_line, last)
    k = bisect.bisect_right(starts, head_start)
    if k < len(starts) and starts[k] <= head_end:
        return head_start, starts[k] - 1
    return head_start, head_end


def _openers(
    lines: Mapping[int, str], syms: Sequence[Symbol], last: int, language: str | None
) -> set[int]:
    """The lines that open a scope around a definition without being one: Rust's
    ``impl Counter {``, a namespace, Go's ``var (``, ``if TYPE_CHECKING:``.

    Found by indentation: the nearest line above a definition's header that is
    indented less, outside the definitions before it and below the header of
    the one around it.
    """
    out: set[int] = set()
    found: dict[int, list[int]] = {}  # a header line -> the openers above it
    ending: dict[int, Symbol] = {}  # an end line -> the outermost definition ending there
    stack: list[Symbol] = []
    for s in syms:
        while stack and stack[-1].end_line < s.end_line:
            stack.pop()
        outer = stack[-1] if stack else None
        stack.append(s)
        head = _head_line(s, last)
        bound = _head(outer, last, ())[1] if outer is not None else 0
        width = _width(lines.get(head, ""))
        floor = _width(lines.get(bound, "")) if outer is not None else -1
        chain: list[int] = []
        n = s.start_line - 1
        while width > floor + 1 and n > bound and len(chain) < 8:
            before = ending.get(n)
            if before is not None and before.start_line > bound:
                if _width(lines.get(_head_line(before, last), "")) == width:
                    chain.extend(found.get(_head_line(before, last), ()))
                    break
                n = before.start_line - 1  # past the definition before this one
                continue
            text = lines.get(n, "")
            if text.strip() and _width(text) < width and not _is_comment(text, language):
                chain.append(n)
                width = _width(text)
                if text.strip() in ("{", "(", "[") and n - 1 > bound:
                    chain.append(n - 1)  # a bracket on a line of its own: the header above
            n -= 1
        found[head] = chain
        ending.setdefault(s.end_line, s)
        out.update(chain)
    return out


def _head_line(s: Symbol, last: int) -> int:
    return min(max(s.head_start or s.start_line, s.start_line), last)


def _width(line: str) -> int:
    return len(indent_of(line))


def _is_comment(line: str, language: str | None) -> bool:
    text = line.strip()
    if language in _HASH_COMMENTS:
        return text.startswith("#")
    return text.startswith(("//", "/*", "*"))


def _opens_string(lines: Mapping[int, str], first: int, last: int) -> bool:
    """Whether lines ``first..last`` leave a multi-line string open (an odd number of
    triple quotes or backticks)."""
    text = "\n".join(lines.get(n, "") for n in range(first, last + 1))
    return any(text.count(q) % 2 for q in ('"""', "'''", "`"))


def _capped(first: int, last: int, cap: int) -> list[int]:
    """Lines ``first..last``, or, past ``cap`` lines and one, the first ``cap - 1``
    of them and the last."""
    if last - first <= cap:  # an elision would stand for one line: quote it
        return list(range(first, last + 1))
    return [*range(first, first + cap - 1), last]


def _doc_quoted(lines: Mapping[int, str], first: int, last: int, doc: str) -> bool:
    """Whether the docstring is on a header line already (``def f(): "Doc."``)."""
    return any(doc in lines.get(n, "") for n in range(first, last + 1))


def _doc_line(
    lines: Mapping[int, str], s: Symbol, head_end: int, doc: str, language: str | None
) -> int | None:
    """The file line that holds the whole docstring, if there is one to quote.

    Only a line that is a complete string or comment by itself is quoted: the
    first line of a longer docstring would leave a string or comment open.
    """
    if "\n" in s.docstring.strip():
        return None
    if language == "python":  # the first statement of the body
        for n in range(head_end + 1, min(s.end_line, head_end + 3) + 1):
            text = lines.get(n, "").strip()
            if text:
                return n if _STRING_LINE.fullmatch(text) and doc in text else None
        return None
    n = s.start_line - 1  # a comment written right above the definition
    text = lines.get(n, "").strip()
    if language in _HASH_COMMENTS:
        whole = text.startswith("#")
    else:
        whole = text.startswith("//") or (text.startswith("/*") and text.endswith("*/"))
    return n if whole and doc in text else None


def _body_indent(lines: Mapping[int, str], s: Symbol, head_end: int) -> str:
    for n in range(head_end + 1, min(s.end_line, head_end + _SCAN) + 1):
        text = lines.get(n, "")
        if text.strip():
            return indent_of(text)
    head = indent_of(lines.get(head_end, ""))
    return head + ("\t" if "\t" in head else "    ")


def _summary(docstring: str) -> str:
    """The first paragraph of a docstring on one line, cut between words with " …"."""
    paragraph = " ".join(docstring.strip().split("\n\n", 1)[0].split())
    if len(paragraph) <= DOC_CHARS:
        return paragraph
    cut = paragraph[: DOC_CHARS - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > DOC_CHARS // 2 else cut).rstrip() + " …"


def _render(
    lines: Mapping[int, str],
    quoted: Sequence[int],
    before: Mapping[int, Sequence[str]],
    after: Mapping[int, Sequence[str]],
    language: str | None,
    syms: Sequence[Symbol],
) -> Skeleton:
    out: list[str] = []
    runs: list[tuple[int, int]] = []
    prev = 0
    for n in quoted:
        if prev and n > prev + 1:
            out.append(elision(language, prev + 1, n - 1, _omitted_indent(lines, prev + 1, n)))
        out.extend(before.get(n, ()))
        out.append(lines.get(n, ""))
        if runs and runs[-1][1] == n - 1 and not after.get(n - 1) and not before.get(n):
            runs[-1] = (runs[-1][0], n)
        else:
            runs.append((n, n))
        out.extend(after.get(n, ()))
        prev = n
    end = max(s.end_line for s in syms)
    if prev and prev < end:  # the rest of the last definition
        out.append(elision(language, prev + 1, end, _omitted_indent(lines, prev + 1, end + 1)))
    return Skeleton("\n".join(out), tuple(runs), syms[0].start_line, end)


def _omitted_indent(lines: Mapping[int, str], first: int, after: int) -> str:
    """A line indented like the first omitted line with code (else like the next line)."""
    for n in range(first, min(after, first + _SCAN)):
        text = lines.get(n, "")
        if text.strip():
            return text
    return lines.get(after, "")
