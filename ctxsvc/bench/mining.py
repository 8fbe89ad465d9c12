"""Mine localization tasks from a repository's first-parent history.

A commit on the first-parent line (for a merged pull request: the merge,
diffed against its first parent) becomes a task when its message, cleaned of
pull-request numbers, URLs and trailers, still says something, and it touches
1 to ``MAX_FILES`` source files. Source files are code (a language ctxsvc
parses) outside tests, docs, examples, benchmarks, vendored and generated
code. Gold is the source files it modified; regions are the line ranges of
the parent's copies that its ``git diff -U0`` hunks rewrote (for a pure
insertion, the line before and after it). The snapshot is the parent: the
index never holds the change.

:func:`mine_window` mines the commits after one fixed snapshot instead, so one
index serves them all: gold is then what is present at the snapshot, and the
regions are carried from each task's parent back to the snapshot's lines.
"""

from __future__ import annotations

import re
from collections.abc import Generator, Iterable, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import PurePosixPath

from ctxsvc.bench.gitrepo import Blobs, GitRepo, run_git, stream_git
from ctxsvc.bench.tasks import Task
from ctxsvc.indexers.discover import BINARY_SNIFF_BYTES, GENERATED_HEADER_LINES, GENERATED_MARKERS
from ctxsvc.indexers.languages import language_for

MAX_FILES = 5  # source files a task may touch
MAX_QUERY_CHARS = 1500  # as in ../shared/bench: the rest of a long message is mostly boilerplate
MIN_WORDS = 3  # a message of fewer words does not say what changed

# Directories whose files are never source (a path with one of them as a segment).
EXCLUDED_DIRS = frozenset(
    {
        "test", "tests", "testing", "__tests__", "spec", "specs", "testdata", "test_data",
        "fixtures", "__fixtures__", "__mocks__", "e2e", "benches", "benchmarks",
        "doc", "docs", "documentation", "example", "examples", "sample", "samples", "demo",
        "demos", "vendor", "vendored", "third_party", "third-party", "thirdparty", "external",
        "node_modules", "bower_components", "dist", "build", "generated", "__generated__",
    }
)  # fmt: skip
_TEST_FILE = re.compile(r"^(test_.*|.*_test|.*_spec|conftest)\.[^.]+$|\.(test|spec)\.[a-z]+$")
_GENERATED_FILE = re.compile(
    r"(_pb2(_grpc)?\.pyi?|\.pb\.go|\.pb\.(cc|h)|[._]generated\.\w+|\.g\.dart|\.min\.js)$"
)

_MERGE_LINE = re.compile(
    r"^merge (pull request #\d+ from \S+|(remote-tracking )?branch\b.*|tag\b.*|commit\b.*|'[^']*'.*|[0-9a-f]{7,40}\b.*)$",
    re.I,
)
_TRAILER = re.compile(
    r"^(signed-off-by|co-authored-by|[a-z]+(-[a-z]+)*-by|change-id|cc|fixes|closes|resolves|"
    r"refs?|see-also|bug|issue|link|pr-url|reviewed-on|backport-of)\s*:",
    re.I,
)
_SHA_LINE = re.compile(
    r"^(this reverts commit [0-9a-f]{7,40}\.?|\(cherry picked from commit [0-9a-f]{7,40}\))$", re.I
)
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.S)
_MD_LINK = re.compile(r"\[([^\]]*)\]\((?:https?://|www\.)[^)]*\)")
_URL = re.compile(r"<?(?:https?://|www\.)[^\s>)\]]+>?")
# A pull-request or issue reference, with the closing keyword in front of it if any.
_REF = re.compile(
    r"(\b(fix(es|ed)?|close[sd]?|resolve[sd]?|refs?|see|related to|part of)\s*:?\s*)?"
    r"([\w.-]+/[\w.-]+)?#\d+\b|\bGH-\d+\b",
    re.I,
)
_CI_TAG = re.compile(r"\[(skip ci|ci skip|no ci|skip actions)\]", re.I)
# What a removed reference leaves behind; "()" alone is code, not a leftover.
_EMPTY_BRACKETS = re.compile(r"\((\s+|\s*[,;:]\s*)\)|\[\s+\]")
_LEFTOVER = re.compile(
    r"^[\s\-*:;,.]*((fix(es|ed)?|close[sd]?|resolve[sd]?|refs?|see)[\s:,.]*)?$", re.I
)
# After an optional "scope:" prefix: releases and version bumps say nothing about code.
_NOT_A_CHANGE = re.compile(
    r"^([\w./-]+:\s*)?(release|bump|version|changelog|wip|prepare\b.*\brelease)\b", re.I
)
_WORD = re.compile(r"[A-Za-z]{2,}")


def is_source(path: str) -> bool:
    """Whether ``path`` names source code: a parsed language, not a test, doc or example."""
    if language_for(path) is None:
        return False
    parts = path.lower().split("/")
    if any(p in EXCLUDED_DIRS for p in parts[:-1]):
        return False
    return not (_TEST_FILE.search(parts[-1]) or _GENERATED_FILE.search(parts[-1]))


def clean_message(message: str) -> str:
    """The message without PR numbers, URLs, trailers and merge lines, on one line."""
    kept: list[str] = []
    for raw in _HTML_COMMENT.sub(" ", message).splitlines():
        line = raw.strip()
        if _MERGE_LINE.match(line) or _TRAILER.match(line) or _SHA_LINE.match(line):
            continue
        line = _MD_LINK.sub(r"\1", line)
        line = _URL.sub(" ", line)
        line = _REF.sub(" ", line)
        line = _CI_TAG.sub(" ", line)
        line = _EMPTY_BRACKETS.sub(" ", line)
        line = re.sub(r"\s+([,.;:])", r"\1", re.sub(r"\s+", " ", line)).strip()
        if not _LEFTOVER.match(line):
            kept.append(line.rstrip(" :;,"))
    text = " ".join(kept)
    if len(text) > MAX_QUERY_CHARS:
        text = text[:MAX_QUERY_CHARS].rsplit(" ", 1)[0]
    return text


def says_what_changed(query: str) -> bool:
    """A cleaned message worth asking: enough words, not a release or version bump."""
    return len(_WORD.findall(query)) >= MIN_WORDS and not _NOT_A_CHANGE.match(query)


def names_a_gold_file(query: str, gold: Sequence[str]) -> bool:
    """Whether the query names a gold file's stem (``core`` for ``click/core.py``) as a word."""
    for path in gold:
        stem = PurePosixPath(path).stem
        if stem and re.search(rf"(?<![A-Za-z0-9_]){re.escape(stem)}(?![A-Za-z0-9_])", query, re.I):
            return True
    return False


@dataclass(frozen=True)
class Commit:
    """A first-parent commit and the files its first-parent diff touches."""

    sha: str
    parent: str | None
    timestamp: int
    message: str
    changes: tuple[tuple[str, str], ...]  # (status letter, path)


def first_parent_log(
    repo: GitRepo, since: str | None = None, *, after: str | None = None
) -> Generator[Commit, None, None]:
    """The first-parent history of HEAD (back to ``after``, exclusive), newest first."""
    args = [
        "log", "--first-parent", "--diff-merges=first-parent", "--no-renames", "--name-status",
        "-z", "--format=%x1e%H%x1f%P%x1f%ct%x1f%B%x1f",
    ]  # fmt: skip
    if since:
        args.append(f"--since={since}")
    revision = f"{after}..HEAD" if after else "HEAD"
    records = stream_git([*args, revision], git_dir=repo.git_dir, separator=b"\x1e")
    try:
        for record in records:
            fields = record.decode("utf-8", "replace").split("\x1f")
            if len(fields) < 5:
                continue
            sha, parents, ts, message, tail = fields[:5]
            items = [x.strip("\n") for x in tail.split("\x00") if x.strip("\n")]
            changes = tuple((items[i][:1], items[i + 1]) for i in range(0, len(items) - 1, 2))
            first = parents.split()[0] if parents.split() else None
            yield Commit(sha, first, int(ts), message, changes)
    finally:
        records.close()


def mine(
    repo: GitRepo,
    *,
    limit: int,
    since: str | None = None,
    max_file_bytes: int = 1024 * 1024,
    name: str | None = None,
) -> list[Task]:
    """The ``limit`` most recent tasks of ``repo``'s history, oldest first."""
    name = name or repo.name
    found: list[Task] = []
    log = first_parent_log(repo, since)
    with Blobs(repo) as blobs, closing(log):  # closing stops git: history is read as needed
        for commit in log:
            if len(found) >= limit:
                break
            task = _task(repo, commit, blobs, max_file_bytes, name)
            if task is not None:
                found.append(task)
    found.reverse()
    return [replace(t, id=f"{name}-{i:03d}") for i, t in enumerate(found)]  # ids in date order


def mine_window(
    repo: GitRepo,
    snapshot: str,
    *,
    limit: int,
    name: str | None = None,
    max_file_bytes: int = 1024 * 1024,
) -> list[Task]:
    """Up to ``limit`` tasks of the first-parent commits after ``snapshot``, oldest first.

    Every task is evaluated on ``snapshot`` (one index for them all): gold is
    the modified source files present there, and regions are in its lines.
    ``snapshot`` must be on HEAD's first-parent line.
    """
    name = name or repo.name
    resolved = run_git(["rev-parse", "--verify", f"{snapshot}^{{commit}}"], git_dir=repo.git_dir)
    base = resolved.stdout.decode().strip()
    found: list[Task] = []
    log = first_parent_log(repo, after=base)
    with Blobs(repo) as blobs, closing(log):
        commits = list(log)
        for commit in reversed(commits):
            if len(found) >= limit:
                break
            task = _task(repo, commit, blobs, max_file_bytes, name, base)
            if task is not None:
                found.append(task)
    return [replace(t, id=f"{name}-{i:03d}") for i, t in enumerate(found)]


def _task(
    repo: GitRepo,
    commit: Commit,
    blobs: Blobs,
    max_file_bytes: int,
    name: str,
    snapshot: str | None = None,
) -> Task | None:
    if commit.parent is None:  # a root commit has no snapshot before it
        return None
    touched = [path for _, path in commit.changes if is_source(path)]
    if not 1 <= len(set(touched)) <= MAX_FILES:
        return None
    query = clean_message(commit.message)
    if not says_what_changed(query):
        return None
    lengths: dict[str, int] = {}  # in the parent's copy
    at_snapshot: dict[str, int] = {}  # in the snapshot's, when it is not the parent
    for status, path in commit.changes:
        if status != "M" or not is_source(path) or path in lengths:
            continue
        data = blobs.read(commit.parent, path)
        if data is None or not _looks_like_source(data, max_file_bytes):
            continue
        if snapshot is not None and snapshot != commit.parent:
            old = blobs.read(snapshot, path)
            if old is None or not _looks_like_source(old, max_file_bytes):
                continue  # added (or still generated) after the snapshot: not in its index
            at_snapshot[path] = _line_count(old)
        lengths[path] = _line_count(data)
    if not lengths:  # only added, deleted or generated files: nothing to find
        return None
    gold = tuple(sorted(lengths))
    regions = changed_regions(repo, commit.parent, commit.sha, lengths)
    if at_snapshot and snapshot is not None:
        regions = carried_back(repo, snapshot, commit.parent, regions, at_snapshot)
    return Task(
        id=commit.sha[:12],
        repo=name,
        snapshot=snapshot or commit.parent,
        commit=commit.sha,
        query=query,
        gold=gold,
        regions=regions,
        name_leak=names_a_gold_file(query, gold),
        date=datetime.fromtimestamp(commit.timestamp, UTC).isoformat(timespec="seconds"),
    )


def _line_count(data: bytes) -> int:
    return data.count(b"\n") + (0 if data.endswith(b"\n") else 1)


def _looks_like_source(data: bytes, max_file_bytes: int) -> bool:
    """What discovery would index as code: not too large, not binary, not generated."""
    if not data or len(data) > max_file_bytes or b"\x00" in data[:BINARY_SNIFF_BYTES]:
        return False
    head = data.split(b"\n", GENERATED_HEADER_LINES)[:GENERATED_HEADER_LINES]
    text = b"\n".join(head).decode("utf-8", "replace")
    return not any(marker in text for marker in GENERATED_MARKERS)


_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
Hunk = tuple[int, int, int, int]  # -a,b +c,d of a ``-U0`` hunk


def changed_regions(
    repo: GitRepo, parent: str, commit: str, lengths: dict[str, int]
) -> dict[str, tuple[tuple[int, int], ...]]:
    """Per file, the 1-based line ranges of the parent's copy that the change rewrote.

    From the ``-U0`` hunks: ``-a,b`` with ``b > 0`` rewrote lines ``a..a+b-1``;
    ``-a,0`` inserted after line ``a``, so the lines around it, ``a..a+1``
    (clipped to the file) stand for it. ``lengths`` gives each file's line count.
    """
    regions: dict[str, list[tuple[int, int]]] = {}
    for path, hunks in _hunks(repo, parent, commit, lengths).items():
        if path not in lengths:
            continue
        n = lengths[path]
        for start, count, _, _ in hunks:
            if count > 0:
                span = (start, min(start + count - 1, n))
            else:
                span = (max(start, 1), min(start + 1, n))
            if 1 <= span[0] <= span[1]:
                regions.setdefault(path, []).append(span)
    return {p: tuple(rs) for p, rs in regions.items()}


def carried_back(
    repo: GitRepo,
    snapshot: str,
    parent: str,
    regions: Mapping[str, Sequence[tuple[int, int]]],
    lengths: Mapping[str, int],
) -> dict[str, tuple[tuple[int, int], ...]]:
    """``regions`` of the parent's copies in the snapshot's lines (``lengths`` are its counts).

    Through the ``git diff -U0 snapshot parent`` hunks: a line the commits in
    between left alone moves by their insertions and deletions; a line they
    wrote stands for the snapshot's lines it replaced (for an insertion, the
    lines around it).
    """
    hunks = _hunks(repo, snapshot, parent, [p for p in regions if p in lengths])
    out: dict[str, tuple[tuple[int, int], ...]] = {}
    for path, spans in regions.items():
        if path not in lengths:
            continue
        n, moved = lengths[path], []
        for start, end in spans:
            lo, hi = _back(start, hunks.get(path, []))[0], _back(end, hunks.get(path, []))[1]
            lo, hi = max(lo, 1), min(hi, n)
            if lo <= hi:
                moved.append((lo, hi))
        if moved:
            out[path] = tuple(moved)
    return out


def _back(line: int, hunks: Sequence[Hunk]) -> tuple[int, int]:
    """The snapshot's lines for ``line`` of the newer copy, given the hunks between them."""
    offset = 0
    for a, b, c, d in hunks:  # in file order
        if d > 0 and c <= line <= c + d - 1:  # written in between
            return (a, a + b - 1) if b > 0 else (a, a + 1)
        if line < c or (d == 0 and line <= c):
            break
        # The first untouched lines after the hunk, old and new (git numbers an
        # empty side by the line before it).
        offset = (a + b if b > 0 else a + 1) - (c + d if d > 0 else c + 1)
    return line + offset, line + offset


def _hunks(repo: GitRepo, old: str, new: str, paths: Iterable[str]) -> dict[str, list[Hunk]]:
    """Per file, the ``-U0`` hunks of ``git diff old new``, in file order."""
    paths = list(paths)
    if not paths:
        return {}
    out = run_git(
        ["diff", "-U0", "--no-color", "--no-ext-diff", "--no-textconv", "--no-renames",
         "--src-prefix=a/", "--dst-prefix=b/", old, new, "--", *paths],
        git_dir=repo.git_dir,
    ).stdout.decode("utf-8", "replace")  # fmt: skip
    hunks: dict[str, list[Hunk]] = {}
    path: str | None = None
    for line in out.splitlines():
        if line.startswith("--- "):
            name = _unquote(line[4:])
            path = name[2:] if name.startswith("a/") else None
            continue
        m = _HUNK.match(line)
        if m and path is not None:
            a, b, c, d = (int(g) if g is not None else 1 for g in m.groups())
            hunks.setdefault(path, []).append((a, b, c, d))
    return hunks


def _unquote(name: str) -> str:
    """A diff header path, without git's C-style quotes (special characters only)."""
    name = name.rstrip("\t")
    if len(name) >= 2 and name[0] == name[-1] == '"':
        body = name[1:-1]
        return re.sub(r'\\(["\\tn])', lambda m: {"t": "\t", "n": "\n"}.get(m[1], m[1]), body)
    return name
