"""Languages and their tree-sitter grammars: the one owner of ``tree_sitter``.

Grammars come from the official per-language wheels, loaded lazily on first
use; nothing is downloaded at run time.
"""

from __future__ import annotations

import importlib
import threading
from pathlib import PurePosixPath
from typing import Any

from ctxsvc.errors import ConfigError

# extension -> language name. Files with no entry are indexed as plain text.
EXTENSIONS: dict[str, str] = {
    ".py": "python",
    ".pyi": "python",
    ".js": "javascript",
    ".jsx": "javascript",
    ".mjs": "javascript",
    ".cjs": "javascript",
    ".ts": "typescript",
    ".mts": "typescript",
    ".cts": "typescript",
    ".tsx": "tsx",
    ".go": "go",
    ".rs": "rust",
    ".java": "java",
    ".c": "c",
    ".h": "c",
    ".cc": "cpp",
    ".cpp": "cpp",
    ".cxx": "cpp",
    ".hh": "cpp",
    ".hpp": "cpp",
    ".hxx": "cpp",
    ".cs": "csharp",
    ".rb": "ruby",
    ".php": "php",
    ".kt": "kotlin",
    ".kts": "kotlin",
    ".sh": "bash",
    ".bash": "bash",
}

# Names without a telling extension.
FILENAMES: dict[str, str] = {
    "Rakefile": "ruby",
    "Gemfile": "ruby",
    ".bashrc": "bash",
    ".bash_profile": "bash",
}


def language_for(path: str) -> str | None:
    """The tree-sitter language of a repository path, or None for plain text."""
    p = PurePosixPath(path)
    return FILENAMES.get(p.name) or EXTENSIONS.get(p.suffix.lower())


# language name -> (grammar module, function returning the language pointer)
_GRAMMARS: dict[str, tuple[str, str]] = {
    "python": ("tree_sitter_python", "language"),
    "javascript": ("tree_sitter_javascript", "language"),
    "typescript": ("tree_sitter_typescript", "language_typescript"),
    "tsx": ("tree_sitter_typescript", "language_tsx"),
    "go": ("tree_sitter_go", "language"),
    "rust": ("tree_sitter_rust", "language"),
    "java": ("tree_sitter_java", "language"),
    "c": ("tree_sitter_c", "language"),
    "cpp": ("tree_sitter_cpp", "language"),
    "csharp": ("tree_sitter_c_sharp", "language"),
    "ruby": ("tree_sitter_ruby", "language"),
    "php": ("tree_sitter_php", "language_php"),
    "kotlin": ("tree_sitter_kotlin", "language"),
    "bash": ("tree_sitter_bash", "language"),
}

LANGUAGES: tuple[str, ...] = tuple(_GRAMMARS)

_languages: dict[str, Any] = {}
_local = threading.local()  # parsers are not thread-safe: one set per thread


def get_language(name: str) -> Any:
    """The ``tree_sitter.Language`` for a language name, loaded once.

    Raises ConfigError for a name that is not in ``LANGUAGES``.
    """
    lang = _languages.get(name)
    if lang is None:
        spec = _GRAMMARS.get(name)
        if spec is None:
            raise ConfigError(
                f"unknown language {name!r}",
                hint=f"use one of: {', '.join(sorted(_GRAMMARS))}",
            )
        import tree_sitter

        module = importlib.import_module(spec[0])
        lang = tree_sitter.Language(getattr(module, spec[1])())
        _languages[name] = lang
    return lang


def get_parser(name: str) -> Any:
    """A cached ``tree_sitter.Parser`` for a language name.

    Parsers are not thread-safe, so the cache is per thread.
    """
    parsers: dict[str, Any] | None = getattr(_local, "parsers", None)
    if parsers is None:
        parsers = _local.parsers = {}
    parser = parsers.get(name)
    if parser is None:
        import tree_sitter

        parser = tree_sitter.Parser(get_language(name))
        parsers[name] = parser
    return parser


def parse(text: str | bytes, language: str) -> Any:
    """Parse source text (str, or UTF-8 bytes) and return the ``tree_sitter.Tree``.

    Never raises on a syntax error: the tree then holds ERROR/MISSING nodes.
    """
    src = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    return get_parser(language).parse(src)
