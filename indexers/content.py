"""Decide from a file's name and bytes whether it is source worth indexing.

``refuse_by_name`` turns away what its name gives away (lock files, minified
bundles, design and document formats) before the file is read;
``decode_source`` takes the bytes read once and either decodes them or says
why not: empty, binary (a NUL byte in the first 8 KiB, as git decides, unless
a UTF-16 or UTF-32 BOM says otherwise), generated (a marker in a comment of the
first lines) or minified (the rule at ``MINIFIED_LONG_SHARE``). Prose files
are never judged minified: their long lines are paragraphs.

Nothing is normalised: the text is the bytes decoded, so a CRLF line keeps its
``\\r``, and ``sha256`` is of the raw bytes. Bytes that are not valid UTF-8 are
decoded with replacement characters and flagged ``lossy``.
"""

from __future__ import annotations

import hashlib
import re

from ctxsvc.models import FileText, SkippedFile, SkipReason

LOCK_FILES: frozenset[str] = frozenset(
    {
        "package-lock.json", "npm-shrinkwrap.json", "yarn.lock", "pnpm-lock.yaml",
        "bun.lockb", "Cargo.lock", "poetry.lock", "uv.lock", "Pipfile.lock",
        "Gemfile.lock", "composer.lock", "go.sum", "flake.lock",
    }
)  # fmt: skip
MINIFIED_SUFFIXES: tuple[str, ...] = (".min.js", ".min.mjs", ".min.css")
# Text-encoded design and document formats: large, and no help to a coding agent.
ASSET_SUFFIXES: tuple[str, ...] = (".ai", ".eps", ".ps", ".pdf", ".psd", ".sketch", ".map")
# Long lines in prose are paragraphs, not minified code.
PROSE_SUFFIXES: tuple[str, ...] = (".md", ".markdown", ".rst", ".txt", ".adoc")

BINARY_SNIFF_BYTES = 8192  # git's heuristic: a NUL byte in the first 8 KiB
GENERATED_HEADER_LINES = 10
GENERATED_MARKERS: tuple[str, ...] = ("@generated", "DO NOT EDIT")  # covers Go's "Code generated"
_ANY_NEWLINE = re.compile(r"\r\n?|\n")
_COMMENT_LEADERS = ("#", "//", "/*", "*", "--", "<!--", ";", "%", "{-", "(*")

# Minified rule, (a) or (b):
#   (a) some line exceeds max_line_chars and lines that long hold >= 80% of the
#       characters (a 20,000-character bundle; not a module with one long string);
#   (b) the text is >= 1 KiB, the median non-empty line is >= 200 characters and
#       under 10% of the characters are spaces or tabs (minifiers that wrap).
MINIFIED_LONG_SHARE = 0.8
MINIFIED_MEDIAN_LINE = 200
MINIFIED_MAX_WHITESPACE = 0.1

_BOMS: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xfe\x00\x00", "utf-32"),  # before UTF-16-LE, whose BOM is its prefix
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)


def refuse_by_name(path: str) -> SkippedFile | None:
    """Why the file at ``path`` (root-relative, "/"-separated) is not worth
    reading, judging by its name alone; None if it may be."""
    name = path.rsplit("/", 1)[-1]
    if name in LOCK_FILES:
        return SkippedFile(path, SkipReason.GENERATED, "lock file")
    if name.lower().endswith(MINIFIED_SUFFIXES):
        return SkippedFile(path, SkipReason.MINIFIED, "minified by its name")
    if name.lower().endswith(ASSET_SUFFIXES):
        return SkippedFile(path, SkipReason.ASSET, "design, document or source-map format")
    return None


def decode_source(path: str, data: bytes, *, max_line_chars: int) -> FileText | SkippedFile:
    """``data``, the whole of the file at ``path``, decoded; or why it is not
    source worth indexing (EMPTY, BINARY, GENERATED or MINIFIED)."""
    if not data:
        return SkippedFile(path, SkipReason.EMPTY, "0 bytes")
    digest = hashlib.sha256(data).hexdigest()
    decoded = decode(data)
    if decoded is None:
        return SkippedFile(path, SkipReason.BINARY, "NUL byte in the first 8 KiB")
    text, lossy = decoded

    marker = generated_marker(text)
    if marker:
        return SkippedFile(path, SkipReason.GENERATED, f"header says {marker!r}")
    if not path.rsplit("/", 1)[-1].lower().endswith(PROSE_SUFFIXES):
        why = minified(text, max_line_chars)
        if why and "\n" not in text and "\r" in text:
            # Lines end at "\n" only: one of lone "\r" endings is a single line.
            why += '; its lines end in a lone "\\r", which is not a line break here'
        if why:
            return SkippedFile(path, SkipReason.MINIFIED, why)
    return FileText(text=text, sha256=digest, lossy=lossy)


def decode(data: bytes) -> tuple[str, bool] | None:
    """(text, lossy), or None for binary content."""
    codec = next((c for bom, c in _BOMS if data.startswith(bom)), None)
    if codec is None:
        if b"\0" in data[:BINARY_SNIFF_BYTES]:
            return None
        codec = "utf-8-sig"
    try:
        return data.decode(codec), False
    except UnicodeDecodeError:
        return data.decode(codec, errors="replace"), True


def generated_marker(text: str) -> str | None:
    """The generated-code marker in a comment of the first lines, or None."""
    # Any newline convention ends a header line here: old Mac "\r" endings
    # must not hide a generated header.
    head = _ANY_NEWLINE.split(text, GENERATED_HEADER_LINES)[:GENERATED_HEADER_LINES]
    for line in head:
        stripped = line.lstrip()
        if stripped.startswith(_COMMENT_LEADERS):
            for marker in GENERATED_MARKERS:
                if marker in stripped:
                    return marker
    return None


def minified(text: str, max_line_chars: int) -> str | None:
    """Why ``text`` looks minified (the rule above), or None."""
    lengths = [len(line) for line in text.split("\n")]
    total = sum(lengths) or 1
    longest = max(lengths)
    if longest > max_line_chars:
        long_chars = sum(n for n in lengths if n > max_line_chars)
        if long_chars >= MINIFIED_LONG_SHARE * total:
            return (
                f"longest line {longest} characters; {long_chars * 100 // total}% of the"
                f" text is in lines over {max_line_chars}"
            )
    nonempty = [n for n in lengths if n]
    # The median is at most twice the mean: most files are decided without sorting.
    if total >= 1024 and total >= len(nonempty) * MINIFIED_MEDIAN_LINE // 2:
        median = sorted(nonempty)[len(nonempty) // 2]
        blanks = (text.count(" ") + text.count("\t")) / total
        if median >= MINIFIED_MEDIAN_LINE and blanks < MINIFIED_MAX_WHITESPACE:
            return f"median line {median} characters with {blanks:.0%} whitespace"
    return None
