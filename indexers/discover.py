"""Find a repository's source files and read them safely.

``discover`` lists the files worth indexing under a root: in a git work tree
the tracked files plus untracked, non-ignored ones (``git ls-files``); anywhere
else an iterative walk honouring every ``.gitignore``. Both modes prune the
directories in ``PRUNED_DIRS`` silently and record every file they refuse, with
a reason, as a ``SkippedFile``. ``read_text`` then reads one file's bytes once
and applies the content checks of ``ctxsvc.indexers.content`` (binary, empty,
generated, minified).

Everything under the root is listed, stat'ed and opened through directory
descriptors, one component at a time (``ctxsvc.indexers.fsroot``): a directory
swapped for a symlink at any moment is reported (UNREADABLE, "changed while
indexing"), never followed. Given ``expect``, the (st_dev, st_ino) recorded by
``root_identity``, a root that is now another directory or a link to one is
refused with ``RootChanged`` before anything under it is listed or read.

Symlinks: a link to a file inside the root is indexed under its own path; its
target is resolved lexically within the root, and one that leaves the root,
passes through a symlinked directory or lies in a pruned directory is recorded
as SYMLINK_OUTSIDE and never opened. Symlinked directories are never followed:
a link to a directory inside the root is passed over silently (its files are
found under their real path), one pointing outside is recorded.

File names that are not valid UTF-8 are decoded with ``os.fsdecode``
(surrogateescape): ``root / path`` still opens the file, but such a path must
be encoded with ``errors="surrogateescape"`` before it is written anywhere.
"""

from __future__ import annotations

import os
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ctxsvc.errors import InvalidPath

# Three constants first defined here, still imported from here by ctxsvc.bench.
from ctxsvc.indexers.content import BINARY_SNIFF_BYTES as BINARY_SNIFF_BYTES
from ctxsvc.indexers.content import GENERATED_HEADER_LINES as GENERATED_HEADER_LINES
from ctxsvc.indexers.content import GENERATED_MARKERS as GENERATED_MARKERS
from ctxsvc.indexers.content import decode_source, refuse_by_name
from ctxsvc.indexers.fsroot import Changed, Refused, RootDir
from ctxsvc.indexers.fsroot import root_identity as root_identity  # part of this module's API
from ctxsvc.indexers.ignore import IgnoreFile, ignored
from ctxsvc.indexers.languages import language_for
from ctxsvc.models import FileText, SkippedFile, SkipReason, SourceFile

DEFAULT_MAX_FILE_BYTES = 1024 * 1024

# Directories that never hold the user's source: VCS metadata, dependencies,
# virtualenvs, build output, caches and editor state. Pruned silently in both
# modes, even when tracked. Any directory holding a ``pyvenv.cfg`` is a
# virtualenv whatever its name (``venv`` and ``env`` are pruned only then, as
# they can be real packages).
PRUNED_DIRS: frozenset[str] = frozenset(
    {
        ".git", ".hg", ".svn", "node_modules", "bower_components", ".venv",
        "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis",
        ".tox", ".nox", ".eggs", ".direnv", "dist", "build", "target", ".next",
        ".nuxt", ".gradle", ".terraform", ".idea", ".vscode",
    }
)  # fmt: skip
PRUNED_DIR_SUFFIXES: tuple[str, ...] = (".egg-info",)
VENV_MARKER = "pyvenv.cfg"

# Variables that would point git at another repository than the root's.
_GIT_LOCATION_ENV = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR")
_GIT_TIMEOUT_S = 120


@dataclass(frozen=True)
class Discovery:
    """What ``discover`` found under a root."""

    root: Path  # resolved, absolute
    files: tuple[SourceFile, ...]  # sorted by path
    skipped: tuple[SkippedFile, ...]  # sorted by path
    git: bool  # listed by git rather than walked
    commit: str | None  # HEAD sha; None outside git or on an unborn branch
    notes: tuple[str, ...] = ()  # why git was not used, unreadable .gitignore files
    identity: tuple[int, int] = (0, 0)  # (st_dev, st_ino) of the root walked
    branch: str | None = None  # HEAD's branch; None when detached or outside git


def discover(
    root: Path,
    *,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    expect: tuple[int, int] | None = None,
) -> Discovery:
    """List the files worth indexing under ``root``, and those refused and why.

    ``expect`` is the root's identity as indexed (``root_identity``, or a
    previous ``Discovery.identity``). Raises ``InvalidPath`` when ``root`` is
    missing or not a directory, ``RootChanged`` when it is no longer the
    directory ``expect`` names.
    """
    notes: list[str] = []
    skipped: list[SkippedFile] = []
    files: list[SourceFile] = []
    with RootDir(root, expect=expect) as fs:
        pruner = _Pruner(fs)
        listed = _git_listing(fs.path, notes)
        branch = None
        if listed is None:
            candidates, commit = _walk(fs, pruner, skipped, notes), None
        else:
            paths, commit, branch = listed
            candidates = [p for p in paths if not pruner.path_pruned(p)]
        for rel in candidates:
            found = _check(fs, rel, max_file_bytes, pruner, walked=listed is None)
            if isinstance(found, SourceFile):
                files.append(found)
            elif found is not None:
                skipped.append(found)
        identity = fs.identity
    # One record per path: many files under a directory that changed name it once.
    kept = {f.path for f in files}
    refused = {s.path: s for s in reversed(skipped) if s.path not in kept}
    return Discovery(
        root=Path(fs.path),
        files=tuple(sorted(files, key=lambda f: f.path)),
        skipped=tuple(sorted(refused.values(), key=lambda s: s.path)),
        git=listed is not None,
        commit=commit,
        notes=tuple(notes),
        identity=identity,
        branch=branch,
    )


def read_text(
    root: Path,
    file: SourceFile,
    *,
    max_file_bytes: int,
    max_line_chars: int = 1000,
    expect: tuple[int, int] | None = None,
) -> FileText | SkippedFile:
    """Read ``file`` once and decode it, or say why it is not worth indexing.

    Nothing is normalised: the text is the file's bytes decoded, so a CRLF
    line keeps its ``\\r`` and ``text.split("\\n")`` are the file's lines
    byte for byte. ``sha256`` is of the raw bytes. Text that is not valid
    UTF-8 is decoded with replacement characters (``lossy=True``); UTF-16
    and UTF-32 are decoded when they carry a BOM.

    The file is opened component by component under the root, as ``discover``
    lists. With ``expect`` (as for ``discover``), a root that is no longer
    that directory raises ``RootChanged``; without, a root that cannot be
    opened makes the file UNREADABLE.
    """
    path = file.path
    refused = refuse_by_name(path)
    if refused is not None:
        return refused

    try:
        with RootDir(root, expect=expect) as fs:
            data = fs.read_bytes(path, max_file_bytes + 1)
    except InvalidPath as exc:
        if expect is not None:
            raise
        return SkippedFile(path, SkipReason.UNREADABLE, f"cannot open the root: {exc.message}")
    except Refused as exc:
        return SkippedFile(path, exc.reason, exc.detail)
    except Changed as exc:
        return SkippedFile(path, SkipReason.UNREADABLE, str(exc))
    except OSError as exc:
        return SkippedFile(path, SkipReason.UNREADABLE, f"cannot read: {exc.strerror or exc}")

    if len(data) > max_file_bytes:
        return SkippedFile(path, SkipReason.TOO_LARGE, f"grew past the {max_file_bytes}-byte limit")
    return decode_source(path, data, max_line_chars=max_line_chars)


class _Pruner:
    """Decides, with a cache per directory, whether a path lies in a pruned one."""

    def __init__(self, fs: RootDir) -> None:
        self._fs = fs
        self._dirs: dict[str, bool] = {"": False}

    def dir_pruned(self, rel_dir: str) -> bool:
        # Iterative: a path may be nested deeper than the recursion limit.
        pending: list[str] = []
        while rel_dir not in self._dirs:
            pending.append(rel_dir)
            rel_dir = rel_dir.rpartition("/")[0]
        pruned = self._dirs[rel_dir]
        for rel in reversed(pending):
            name = rel.rpartition("/")[2]
            pruned = (
                pruned
                or name in PRUNED_DIRS
                or name.endswith(PRUNED_DIR_SUFFIXES)
                or self._fs.exists(f"{rel}/{VENV_MARKER}")
            )
            self._dirs[rel] = pruned
        return pruned

    def path_pruned(self, rel: str) -> bool:
        return self.dir_pruned(rel.rpartition("/")[0])


class _GitFailed(Exception):
    pass


class _NotARepo(_GitFailed):
    pass


def _git(root: str, *args: str) -> bytes:
    env = {k: v for k, v in os.environ.items() if k not in _GIT_LOCATION_ENV}
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=root,
            env=env,
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=_GIT_TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError as exc:
        raise _GitFailed("git is not installed") from exc
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise _GitFailed(f"git {args[0]} failed: {exc}") from exc
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace").strip()
        if "not a git repository" in err:
            raise _NotARepo(err)
        raise _GitFailed(f"git {args[0]} exited {done.returncode}: {err}")
    return done.stdout


def _git_listing(root: str, notes: list[str]) -> tuple[list[str], str | None, str | None] | None:
    """Paths (relative to root) git tracks or would track, HEAD and its branch; None if
    not git."""
    try:
        if _git(root, "rev-parse", "--is-inside-work-tree").strip() != b"true":
            return None
        out = _git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    except _NotARepo:
        return None
    except _GitFailed as exc:
        notes.append(f"{exc}; walked the directory instead, honouring .gitignore files")
        return None
    try:
        head = _git(root, "rev-parse", "--verify", "--quiet", "HEAD^{commit}")
        commit = head.decode("ascii").strip() or None
    except (_GitFailed, UnicodeDecodeError):
        commit = None  # unborn branch: no commit yet
    try:
        # git itself resolves HEAD (a worktree's .git is a file); it exits 1 when detached.
        ref = _git(root, "symbolic-ref", "-q", "--short", "HEAD")
        branch = ref.decode("utf-8", "replace").strip() or None
    except _GitFailed:
        branch = None
    # A set: unmerged paths are listed once per stage. A trailing "/" marks an
    # untracked nested repository.
    paths = {os.fsdecode(raw).rstrip("/") for raw in out.split(b"\0") if raw}
    return sorted(paths), commit, branch


def _walk(fs: RootDir, pruner: _Pruner, skipped: list[SkippedFile], notes: list[str]) -> list[str]:
    """Non-directory paths under the root, honouring nested .gitignore files."""
    found: list[str] = []
    stack: list[tuple[str, tuple[tuple[str, IgnoreFile], ...]]] = [("", ())]
    while stack:
        rel_dir, ignores = stack.pop()
        try:
            entries = fs.listdir(rel_dir)
        except Changed as exc:
            skipped.append(SkippedFile(exc.rel, SkipReason.UNREADABLE, str(exc)))
            continue
        except (OSError, Refused) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            detail = f"cannot list directory: {why}"
            skipped.append(SkippedFile(rel_dir or ".", SkipReason.UNREADABLE, detail))
            continue
        for entry in entries:
            if entry.name == ".gitignore" and entry.is_file:
                rel = f"{rel_dir}/.gitignore" if rel_dir else ".gitignore"
                spec = _load_gitignore(fs, rel, notes)
                if spec is not None:
                    ignores = (*ignores, (rel_dir, spec))
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            if entry.is_dir:
                if not pruner.dir_pruned(rel) and not ignored(ignores, rel, True):
                    stack.append((rel, ignores))
            elif not ignored(ignores, rel, False):
                found.append(rel)
    return found


def _load_gitignore(fs: RootDir, rel: str, notes: list[str]) -> IgnoreFile | None:
    try:
        data = fs.read_bytes(rel, DEFAULT_MAX_FILE_BYTES, follow=False)
    except (OSError, Changed, Refused) as exc:
        notes.append(f"ignored {fs.display(rel)}: {exc}")
        return None
    # The whole text: git splits lines at "\n" only, not at "\v", "\f" or U+2028.
    rules = IgnoreFile.parse(data.decode(errors="surrogateescape"), fs.display(rel))
    notes.extend(rules.notes)
    return rules


def _check(
    fs: RootDir, rel: str, max_bytes: int, pruner: _Pruner, *, walked: bool
) -> SourceFile | SkippedFile | None:
    """Stat-level checks; None for what is passed over silently."""
    try:
        st = fs.lstat(rel)
        if stat.S_ISLNK(st.st_mode):
            target, st = fs.follow(rel)
            if stat.S_ISDIR(st.st_mode):
                return None  # symlinked directories are not followed
            if pruner.path_pruned(target):
                detail = f"points into a pruned directory: {fs.display(target)}"
                return SkippedFile(rel, SkipReason.SYMLINK_OUTSIDE, detail)
        elif stat.S_ISDIR(st.st_mode) and walked:
            # The walk listed it as no directory a moment ago.
            detail = f"changed while indexing: {rel} became a directory; not listed"
            return SkippedFile(rel, SkipReason.UNREADABLE, detail)
        elif stat.S_ISDIR(st.st_mode):
            detail = "a directory (git submodule or nested repository); index it on its own"
            return SkippedFile(rel, SkipReason.NOT_A_FILE, detail)
    except (FileNotFoundError, NotADirectoryError):
        return None  # tracked but deleted, or gone since listing
    except Refused as exc:
        return SkippedFile(rel, exc.reason, exc.detail)
    except Changed as exc:
        return SkippedFile(exc.rel, SkipReason.UNREADABLE, str(exc))
    except OSError as exc:
        return SkippedFile(rel, SkipReason.UNREADABLE, f"cannot stat: {exc.strerror or exc}")

    if not stat.S_ISREG(st.st_mode):
        return SkippedFile(rel, SkipReason.NOT_A_FILE, _kind(st.st_mode))
    if st.st_size > max_bytes:
        detail = f"{st.st_size} bytes, over the {max_bytes}-byte limit"
        return SkippedFile(rel, SkipReason.TOO_LARGE, detail)
    return SourceFile(
        path=rel, size=st.st_size, mtime_ns=st.st_mtime_ns, language=language_for(rel)
    )


def _kind(mode: int) -> str:
    kinds = {stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a device"}
    return kinds.get(stat.S_IFMT(mode), "not a regular file")
