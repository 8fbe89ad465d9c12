"""Code-aware terms for full-text search.

Identifiers are split at camelCase, snake_case, digits and path separators
and lower-cased; the whole identifier is kept too, so both ``getUser`` and
``get user`` match. The same function serves the index and the query side.
"""

from __future__ import annotations

import re

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]+")
_PARTS = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")


def code_terms(text: str) -> list[str]:
    """Lower-cased words of ``text``: identifiers and their parts, in order."""
    out: list[str] = []
    for ident in _IDENT.findall(text):
        parts = _PARTS.findall(ident)
        low = ident.lower().strip("_")
        if len(parts) > 1 and low:
            out.append(low)
        out.extend(p.lower() for p in parts)
    return out


def path_terms(path: str) -> list[str]:
    """Terms of a repository path: directories, stem and extension, split."""
    return code_terms(re.sub(r"[/\\.\-]", " ", path))
