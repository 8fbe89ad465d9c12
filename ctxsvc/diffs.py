"""The working tree's diff against a base: what an agent is changing, read from git.

``git diff BASE`` (staged and unstaged changes against a commit, a branch or
``HEAD``) plus the untracked files git does not ignore, parsed into the lines
each file adds or changes in the working tree's numbering and the places where
lines were removed. The base must look like a ref or commit (never an option)
and is resolved to a commit before the diff runs on that commit's id. git runs
with the user's settings that would change its output turned off (prefixes,
text conversion, external diff drivers), bounded in time and in output: a diff
over ``MAX_DIFF_BYTES`` is refused, never cut. Untracked files are read only
when they are regular files (a symlink, to anywhere, or a pipe is listed, not
read), at most ``MAX_UNTRACKED`` of them.
"""

from __future__ import annotations

import codecs
import os
import re
import stat
import subprocess
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

from ctxsvc.errors import DeadlineExceeded, GitFailed, InvalidRequest
from ctxsvc.indexers.content import decode_source, refuse_by_name
from ctxsvc.indexers.reach import IndexedPaths
from ctxsvc.limits import selected
from ctxsvc.models import SkippedFile
from ctxsvc.tokens import TokenCounter

MAX_DIFF_BYTES = 4 * 1024 * 1024  # the diff and the untracked files read, together
MAX_UNTRACKED = 200  # untracked files read (more are listed by name only)
MAX_HUNK_LINES = 200  # lines of one hunk shown in the answer (the rest are counted)
MAX_BASE_CHARS = 256
GIT_TIMEOUT_S = 30
_BASE = re.compile(r"[^\s\-:?*\[\\~^][^\s:?*\[\\]*\Z")
_HUNK = re.compile(r"@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_DEFINES = re.compile(
    r"\s*(?:export\s+)?(?:pub(?:\([^)]*\))?\s+)?(?:async\s+)?(?:static\s+)?"
    r"(?:def|class|function|func(?:\s*\([^)]*\))?|fn|struct|interface|trait|enum|type)\s+"
    r"([A-Za-z_][A-Za-z0-9_]*)"
)
_GIT_CONFIG = (
    "-c", "core.quotePath=false", "-c", "diff.noprefix=false", "-c", "diff.mnemonicPrefix=false",
    "-c", "diff.external=", "-c", "color.ui=false",
)  # fmt: skip
_DIFF_ARGS = (
    "diff", "--no-color", "--no-ext-diff", "--no-textconv", "--no-renames", "--relative",
    "--src-prefix=a/", "--dst-prefix=b/", "-U3",
)  # fmt: skip
_GIT_LOCATION_ENV = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR")
_HEADER_LINES = ("--- ", "+++ ", "new file mode", "deleted file mode", "old mode", "new mode")


@dataclass(frozen=True)
class Hunk:
    """One hunk: its text as git prints it, and its lines in the working tree's numbers."""

    text: str
    added: tuple[int, ...]  # lines added or changed
    removed_at: tuple[int, ...]  # the lines either side of where lines were removed
    removed: tuple[str, ...] = ()  # the text of the lines removed


@dataclass(frozen=True)
class FileDiff:
    path: str  # in the working tree ("" for a deleted file: see ``old_path``)
    old_path: str
    status: str  # "modified", "added", "deleted", "mode", "binary" or "untracked"
    header: str
    hunks: tuple[Hunk, ...] = ()

    def touched(self) -> set[int]:
        """Lines of the working tree's file the change added, changed or removed beside."""
        return {n for h in self.hunks for n in (*h.added, *h.removed_at)}


@dataclass(frozen=True)
class WorkingDiff:
    base: str  # as asked
    commit: str  # the commit it names
    files: tuple[FileDiff, ...] = field(default=())
    unread: int = 0  # untracked files beyond MAX_UNTRACKED: listed by name, not read
    left_out: int = 0  # changed files outside the request's include/exclude globs

    @property
    def paths(self) -> list[str]:
        return [f.path for f in self.files if f.path]

    def served(
        self,
        root: Path,
        indexed: Mapping[str, str],
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        *,
        max_file_bytes: int,
        max_line_chars: int,
    ) -> WorkingDiff:
        """This diff as the index of ``root`` may show it: a file the index refuses
        (``indexed`` maps each path it knows to "indexed" or the reason it skipped it; a
        path it does not know lies where it does not look) keeps its name, not its lines.
        A deleted file is judged as the index would have judged it: by the walk's rules for
        its place (``IndexedPaths``) and by its last text. Files outside the
        ``include``/``exclude`` globs are left out, and counted."""
        reach = IndexedPaths(root)
        kept: list[FileDiff] = []
        for f in self.files:
            path = f.path or f.old_path
            if not selected(path, include, exclude):
                continue
            if f.path:
                status = indexed.get(path, "not where the index looks")
                why = None if status == "indexed" else status.replace("_", " ")
            else:
                why = _refused(f, reach, max_file_bytes, max_line_chars)
            if why is not None and f.hunks:
                f = replace(
                    f, header=f"{f.header}\n(not indexed: {why}; lines not shown)", hunks=()
                )
            kept.append(f)
        return replace(self, files=tuple(kept), left_out=len(self.files) - len(kept))

    def removed_names(self) -> list[str]:
        """Names the removed lines defined (``def f``, ``function f``, ``func f``, ``class
        C``...): a definition deleted or renamed leaves its users to change."""
        found = (
            m.group(1)
            for f in self.files for h in f.hunks for line in h.removed
            if (m := _DEFINES.match(line))
        )  # fmt: skip
        return list(dict.fromkeys(found))

    @cached_property
    def _entries(self) -> list[str]:
        """One entry per hunk (a file's first carries its header), long hunks cut."""
        entries: list[str] = []
        for f in self.files:
            if not f.hunks:
                entries.append(f"{f.header}\n")
            for n, h in enumerate(f.hunks):
                rows = h.text.split("\n")
                if len(rows) > MAX_HUNK_LINES + 1:
                    cut = len(rows) - 1 - MAX_HUNK_LINES
                    rows = [*rows[: MAX_HUNK_LINES + 1], f"… {cut} more lines of this hunk"]
                text = "\n".join(rows)
                entries.append(f"{f.header}\n{text}\n" if n == 0 else f"{text}\n")
        return entries

    def render(self, counter: TokenCounter, cap: int) -> str:
        """The diff as an agent reads it first, within ``cap`` tokens: the hunks that fit,
        in order (a hunk too large is skipped, not the ones after it), and a count of the
        rest."""
        entries = self._entries
        if not entries:
            return ""
        added = sum(len(h.added) for f in self.files for h in f.hunks)
        n = len(self.files)
        outside = f"; {self.left_out} outside the include/exclude globs" if self.left_out else ""
        head = (
            f"## Your changes against {self.base} ({self.commit[:12]}): "
            f"{n} file{'s' if n != 1 else ''}, {added} lines added or changed{outside}\n"
        )
        counts = self._counts.get(id(counter))
        if counts is None:  # counted once per diff (a pack asks for its preface again)
            counts = self._counts[id(counter)] = counter.count_many(entries)
        used = counter.count(head)
        reserve = counter.count(self._tail(len(entries)))  # no fewer digits than the rest's
        if used + sum(counts) <= cap:
            return head + "".join(entries)
        if used + reserve > cap:
            return ""
        kept: list[str] = []
        for entry, count in zip(entries, counts, strict=True):
            if used + count + reserve <= cap:
                kept.append(entry)
                used += count
        return head + "".join(kept) + self._tail(len(entries) - len(kept))

    def _tail(self, left: int) -> str:
        return f"- … and {left} more hunks (see `git diff {self.base}` and `git status`)\n"

    @cached_property
    def _counts(self) -> dict[int, list[int]]:
        """The entries' token counts, by the id of the counter that counted them."""
        return {}


def working_diff(root: Path, base: str = "HEAD") -> WorkingDiff:
    """The working tree of ``root`` against ``base``, and its untracked files."""
    if not base or len(base) > MAX_BASE_CHARS or not _BASE.match(base) or ".." in base:
        raise InvalidRequest(
            f"{base[:80]!r} is not a commit, branch or tag name",
            hint="give a branch, a tag, a commit id or HEAD (ranges are not diffs of the tree)",
        )
    top = _git(root, "rev-parse", "--show-toplevel")
    if top.returncode != 0:
        raise InvalidRequest(f"{root.name!r} is not in a git working tree: there is no diff")
    found = _git(root, "rev-parse", "--verify", "--quiet", f"{base}^{{commit}}")
    if found.returncode == 1:
        raise InvalidRequest(
            f"{base!r} names no commit of {root.name!r}", hint="see `git log` or `git branch`"
        )
    _check(found, "rev-parse")
    commit = found.stdout.decode().strip()
    done = _check(_git(root, *_DIFF_ARGS, commit, "--"), "diff")
    files = parse_diff(done.stdout.decode("utf-8", errors="replace"))
    others = _check(_git(root, "ls-files", "--others", "--exclude-standard", "-z"), "ls-files")
    budget = MAX_DIFF_BYTES - len(done.stdout)
    names = [n for n in os.fsdecode(others.stdout).split("\0") if n]
    for name in names[:MAX_UNTRACKED]:
        entry, size = _untracked(root, name, budget)
        budget -= size
        files.append(entry)
    return WorkingDiff(base, commit, tuple(files), max(0, len(names) - MAX_UNTRACKED))


def _refused(
    deleted: FileDiff, reach: IndexedPaths, max_file_bytes: int, max_line_chars: int
) -> str | None:
    """Why the index would not have served the last text of a ``deleted`` file: its
    name, its place or its content (rebuilt from the removed lines); None if it would."""
    path = deleted.old_path
    if not reach.wanted(path):
        return "where the index does not look"
    # The removed lines and the line ends between them: at most one byte under the file.
    data = "\n".join(line for h in deleted.hunks for line in h.removed).encode()
    if len(data) > max_file_bytes:
        return "too large"
    refused = refuse_by_name(path) or decode_source(path, data, max_line_chars=max_line_chars)
    if isinstance(refused, SkippedFile):
        return refused.reason.value.replace("_", " ")
    return None


def parse_diff(text: str) -> list[FileDiff]:
    """The files of a ``git diff`` output, with their hunks' lines."""
    files: list[FileDiff] = []
    for section in re.split(r"^(?=diff --git )", text, flags=re.M):
        if not section.startswith("diff --git "):
            continue
        head, _, body = section.partition("\n@@")
        body = "@@" + body if body else ""
        rows = head.splitlines()
        old = new = None
        binary = False
        for line in rows:
            if line.startswith("--- "):
                old = "" if line == "--- /dev/null" else _name(line[4:], "a/")
            elif line.startswith("+++ "):
                new = "" if line == "+++ /dev/null" else _name(line[4:], "b/")
            elif line.startswith("Binary files "):
                binary = True
        first = _first_line_path(rows[0])
        if old is None and new is None:  # no ---/+++: a mode change, a binary or empty file
            deleted = any(r.startswith("deleted file mode") for r in rows)
            added = any(r.startswith("new file mode") for r in rows)
            old = "" if added else first
            new = "" if deleted else first
        old, new = old or "", new or ""
        status = (
            "binary" if binary else "added" if not old else "deleted" if not new
            else "modified" if body else "mode"
        )  # fmt: skip
        header = "\n".join(ln for ln in rows if ln.startswith(_HEADER_LINES)) or rows[0]
        if binary:
            header += "\n" + next(ln for ln in rows if ln.startswith("Binary files "))
        files.append(FileDiff(new, old, status, header, tuple(_hunks(body))))
    return files


def _name(raw: str, side: str) -> str:
    """A ---/+++ name: C-quoted by git when it holds quotes, backslashes or control
    characters; else as it is, with the tab git puts after a name with a space."""
    if raw.startswith('"') and raw.endswith('"') and len(raw) > 1:
        raw = codecs.escape_decode(raw[1:-1].encode("utf-8"))[0].decode("utf-8", "replace")
    else:
        raw = raw.removesuffix("\t")
    return raw[len(side) :] if raw.startswith(side) else raw


def _first_line_path(line: str) -> str:
    """The path of ``diff --git a/P b/P`` (renames are off: both sides are one path)."""
    rest = line[len("diff --git ") :]
    if rest.startswith('"'):
        return _name(rest[: (len(rest) - 1) // 2], "a/")
    n = (len(rest) - 5) // 2
    return _name(rest[: n + 2], "a/") if n > 0 else rest


def _hunks(body: str) -> list[Hunk]:
    out: list[Hunk] = []
    for part in re.split(r"^(?=@@ )", body, flags=re.M):
        m = _HUNK.match(part)
        if m is None:
            continue
        line = int(m.group(3))
        added: list[int] = []
        removed: list[int] = []
        gone: list[str] = []
        text = part.rstrip("\n")
        for row in text.split("\n")[1:]:
            if row.startswith("+"):
                added.append(line)
                line += 1
            elif row.startswith("-"):
                removed += [n for n in (line - 1, line) if n >= 1]  # either side of the gap
                gone.append(row[1:])
            elif not row.startswith("\\"):
                line += 1
        out.append(Hunk(text, tuple(added), tuple(dict.fromkeys(removed)), tuple(gone)))
    return out


def _untracked(root: Path, name: str, budget: int) -> tuple[FileDiff, int]:
    """An untracked file as an added one, and the bytes read: only a regular file (never
    through a symlink), within ``budget`` bytes; else its name alone."""
    header = f"--- /dev/null\n+++ b/{name} (untracked)"
    bare = FileDiff(name, "", "untracked", header)
    path = root / name
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return bare, 0
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return bare, 0
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            return bare, 0
        data = fh.read(max(budget, 0) + 1)
    if len(data) > budget:
        raise InvalidRequest(
            f"the diff with its untracked files is larger than {MAX_DIFF_BYTES // 2**20} MiB",
            hint="diff against a nearer base, ignore generated files, or ask without --diff",
        )
    if b"\0" in data[:8192]:
        return FileDiff(name, "", "untracked", header + "\nBinary file"), len(data)
    lines = data.decode("utf-8", errors="replace").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    text = f"@@ -0,0 +1,{len(lines)} @@\n" + "\n".join("+" + ln for ln in lines)
    added = tuple(range(1, len(lines) + 1))
    return FileDiff(name, "", "untracked", header, (Hunk(text, added, ()),)), len(data)


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """``git ARGS`` in ``root``, its output read up to ``MAX_DIFF_BYTES`` (then stopped)."""
    env = {k: v for k, v in os.environ.items() if k not in _GIT_LOCATION_ENV}
    env["GIT_TERMINAL_PROMPT"] = "0"
    cmd = ["git", *_GIT_CONFIG, "-C", str(root), *args]
    try:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
    except FileNotFoundError:
        raise GitFailed("git is not installed: a diff cannot be read") from None
    assert proc.stdout is not None and proc.stderr is not None
    late = threading.Event()

    def stop() -> None:  # a read that never ends, stopped
        late.set()
        proc.kill()

    timer = threading.Timer(GIT_TIMEOUT_S, stop)
    timer.start()
    try:
        out = proc.stdout.read(MAX_DIFF_BYTES + 1)
        if len(out) > MAX_DIFF_BYTES:
            raise InvalidRequest(
                f"the diff is larger than {MAX_DIFF_BYTES // 2**20} MiB",
                hint="diff against a nearer base, or ask by query without --diff",
            )
        err = proc.stderr.read(64 * 1024)
        code = proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    if late.is_set():
        raise DeadlineExceeded(f"git {args[0]} took longer than {GIT_TIMEOUT_S} s")
    return subprocess.CompletedProcess(cmd, code, out, err)


def _check(
    done: subprocess.CompletedProcess[bytes], what: str
) -> subprocess.CompletedProcess[bytes]:
    if done.returncode != 0:
        detail = done.stderr.decode(errors="replace").strip().splitlines()
        raise GitFailed(f"git {what} failed: {detail[-1] if detail else 'no output'}")
    return done
