"""Quoting source faithfully: what is not the file's own text is a comment of its language.

A context quotes a file's lines verbatim. Where it leaves lines out (between
a scope's header and a snippet, inside a definition, in a skeleton) it says so
on a line of its own, written as a comment of the file's language and indented
like the code it stands for, so the fence still reads as that language.
"""

from __future__ import annotations

# Line-comment leaders; languages without one get a block comment (open, close).
_LINE = {
    "python": "#",
    "ruby": "#",
    "bash": "#",
    "go": "//",
    "rust": "//",
    "javascript": "//",
    "typescript": "//",
    "tsx": "//",
    "java": "//",
    "c": "//",
    "cpp": "//",
    "csharp": "//",
    "php": "//",
    "kotlin": "//",
    "markdown": "<!--",
}
_CLOSE = {"<!--": " -->"}


def comment(language: str | None, text: str, indent: str = "") -> str:
    """``text`` as one comment line of ``language`` (``#`` for plain text), after ``indent``."""
    lead = _LINE.get(language or "", "#")
    return f"{indent}{lead} {text}{_CLOSE.get(lead, '')}"


def indent_of(line: str) -> str:
    """The leading whitespace of ``line``, exactly (tabs stay tabs)."""
    return line[: len(line) - len(line.lstrip(" \t"))]


def elision(language: str | None, first: int, last: int, next_line: str, why: str = "") -> str:
    """The line that stands for the omitted lines ``first..last``, indented like ``next_line``."""
    span = f"line {first}" if first == last else f"lines {first}-{last}"
    return comment(language, f"… {span} omitted{': ' + why if why else ''}", indent_of(next_line))
