"""Where HEAD is, read from the files under ``.git``: cheap enough for every query.

No subprocess: ``HEAD`` (through a worktree's ``gitdir:`` file), then the ref
it names, loose or in ``packed-refs``. What this cannot read for sure (a
reftable store, an odd file) is ``UNKNOWN``, never a guess; the index run
itself asks git (``ctxsvc.indexers.discover``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ctxsvc.indexers.discover import Discovery
from ctxsvc.models import place

_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_REF_DEPTH = 5  # symbolic refs followed before giving up


@dataclass(frozen=True)
class Head:
    """HEAD of a working tree: its branch (None when detached or outside git) and commit
    (None on an unborn branch or outside git)."""

    branch: str | None
    commit: str | None
    known: bool = True  # False: could not be read for sure (branch and commit say nothing)
    busy: bool = False  # a git command holds the index lock (a checkout may be under way)

    def moved_from(self, branch: str | None, commit: str | None) -> bool:
        """Whether this HEAD is known to be elsewhere than ``branch`` at ``commit``."""
        return self.known and (self.branch, self.commit) != (branch, commit)


UNKNOWN = Head(None, None, known=False)


def read_head(root: Path) -> Head:
    """HEAD of the working tree at ``root`` (or of the repository above it)."""
    try:
        gitdir = _gitdir(root)
        if gitdir is None:
            return Head(None, None)  # outside git
        common = gitdir
        if (gitdir / "commondir").is_file():
            common = (gitdir / (gitdir / "commondir").read_text().strip()).resolve()
        if (common / "reftable").exists():
            return UNKNOWN
        busy = (gitdir / "index.lock").exists()
        text = (gitdir / "HEAD").read_text().strip()
        if _SHA.fullmatch(text):
            return Head(None, text, busy=busy)
        if not text.startswith("ref: refs/heads/"):
            return UNKNOWN
        ref = text[5:]
        commit = _resolve(common, ref)
        if commit == "?":
            return UNKNOWN
        return Head(ref.removeprefix("refs/heads/"), commit, busy=busy)
    except (OSError, UnicodeError):
        return UNKNOWN


def _gitdir(root: Path) -> Path | None:
    """The git directory of the working tree at or above ``root``; None outside git."""
    for d in (root, *root.parents):
        dotgit = d / ".git"
        if dotgit.is_dir():
            return dotgit
        if dotgit.is_file():
            text = dotgit.read_text().strip()
            if not text.startswith("gitdir:"):
                raise OSError(f"{dotgit} is not a gitdir file")
            return (d / text[7:].strip()).resolve()
    return None


def _resolve(common: Path, ref: str) -> str | None:
    """The commit ``ref`` names; None when it names none yet (unborn), "?" when unsure."""
    for _ in range(_REF_DEPTH):
        loose = common / ref
        if loose.is_file():
            text = loose.read_text().strip()
            if _SHA.fullmatch(text):
                return text
            if not text.startswith("ref: "):
                return "?"
            ref = text[5:]
            continue
        packed = common / "packed-refs"
        if packed.is_file():
            for line in packed.read_text().splitlines():
                sha, _, name = line.partition(" ")
                if name == ref and _SHA.fullmatch(sha):
                    return sha
        return None
    return "?"


def settle(found: Discovery, start: Head, end: Head) -> tuple[str | None, str | None, str | None]:
    """The branch and commit an index run's row is labelled with, and, when HEAD did not
    stay put from the run's start (``start``, and what ``found`` read) to its commit
    (``end``), the warning that says so (then the row is HEAD's at the end)."""
    if not found.git or not end.known:
        return found.branch, found.commit, None
    if not (
        start.busy
        or start.moved_from(end.branch, end.commit)
        or end.moved_from(found.branch, found.commit)
    ):
        return found.branch, found.commit, None
    was = place(found.branch, found.commit)
    why = f"a git command held the index lock (at {was})" if start.busy else f"from {was}"
    return (
        end.branch,
        end.commit,
        (
            f"HEAD moved while indexing: {why}, now {place(end.branch, end.commit)}; this "
            "version is kept as no branch's snapshot (its files may mix two commits)"
        ),
    )
