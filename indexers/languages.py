"""Languages and their tree-sitter grammars: the one owner of ``tree_sitter``.

Grammars come from the official per-language wheels, loaded lazily on first
use; nothing is downloaded at run time.
"""

from __future__ import annotations

from pathlib import PurePosixPath

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
