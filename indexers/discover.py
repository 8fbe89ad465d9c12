"""Find a repository's source files and read them safely.

``discover`` lists the files worth indexing under a root: in a git work tree
the tracked files plus untracked, non-ignored ones (``git ls-files``); anywhere
else an iterative walk honouring every ``.gitignore``. Both modes prune the
directories in ``PRUNED_DIRS`` silently and record every file they refuse, with
a reason, as a ``SkippedFile``. ``read_text`` then reads one file's bytes once
and applies the content checks (binary, empty, generated, minified).

Symlinks: a link resolving to a file inside the root is indexed under its own
path. A link resolving outside the root (or into a pruned directory) is recorded
as SYMLINK_OUTSIDE and never opened. Symlinked directories are never followed:
a link to a directory inside the root is passed over silently (its files are
found under their real path), one pointing outside is recorded.

File names that are not valid UTF-8 are decoded with ``os.fsdecode``
(surrogateescape): ``root / path`` still opens the file, but such a path must
be encoded with ``errors="surrogateescape"`` before it is written anywhere.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pathspec

from ctxsvc.errors import InvalidPath
from ctxsvc.models import FileText, SkippedFile, SkipReason, SourceFile
from indexers.languages import language_for

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


def discover(root: Path, *, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> Discovery:
    """List the files worth indexing under ``root``, and those refused and why.

    Raises ``InvalidPath`` when ``root`` is missing or not a directory.
    """
    try:
        real_root = root.resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        raise InvalidPath(f"cannot index {root}: {exc}", hint="pass an existing directory") from exc
    if not real_root.is_dir():
        raise InvalidPath(f"cannot index {root}: not a directory", hint="pass a directory")
    base = str(real_root)
    notes: list[str] = []
    skipped: list[SkippedFile] = []
    pruner = _Pruner(base)

    listed = _git_listing(base, notes)
    if listed is None:
        candidates, commit = _walk(base, pruner, skipped, notes), None
    else:
        paths, commit = listed
        candidates = [p for p in paths if not pruner.path_pruned(p)]

    files: list[SourceFile] = []
    for rel in candidates:
        found = _check(base, rel, max_file_bytes, pruner)
        if isinstance(found, SourceFile):
            files.append(found)
        elif found is not None:
            skipped.append(found)
    return Discovery(
        root=real_root,
        files=tuple(sorted(files, key=lambda f: f.path)),
        skipped=tuple(sorted(skipped, key=lambda s: s.path)),
        git=listed is not None,
        commit=commit,
        notes=tuple(notes),
    )


def read_text(
    root: Path, file: SourceFile, *, max_file_bytes: int, max_line_chars: int = 1000
) -> FileText | SkippedFile:
    """Read ``file`` once and decode it, or say why it is not worth indexing.

    Nothing is normalised: the text is the file's bytes decoded, so a CRLF
    line keeps its ``\\r`` and ``text.split("\\n")`` are the file's lines
    byte for byte. ``sha256`` is of the raw bytes. Text that is not valid
    UTF-8 is decoded with replacement characters (``lossy=True``); UTF-16
    and UTF-32 are decoded when they carry a BOM.
    """
    path = file.path
    name = path.rsplit("/", 1)[-1]
    if name in LOCK_FILES:
        return SkippedFile(path, SkipReason.GENERATED, "lock file")
    if name.lower().endswith(MINIFIED_SUFFIXES):
        return SkippedFile(path, SkipReason.MINIFIED, "minified by its name")
    if name.lower().endswith(ASSET_SUFFIXES):
        return SkippedFile(path, SkipReason.ASSET, "design, document or source-map format")

    # Re-resolve: the tree may have changed since discovery, and nothing outside
    # the root is ever opened.
    base = os.path.realpath(root)
    target = os.path.realpath(os.path.join(base, path))
    if not _inside(base, target):
        return SkippedFile(path, SkipReason.SYMLINK_OUTSIDE, f"now resolves to {target}")
    try:
        # O_NONBLOCK: opening a FIFO that replaced the file must not hang.
        flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
        with open(os.open(target, flags), "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                return SkippedFile(path, SkipReason.NOT_A_FILE, "no longer a regular file")
            data = fh.read(max_file_bytes + 1)
    except OSError as exc:
        return SkippedFile(path, SkipReason.UNREADABLE, f"cannot read: {exc.strerror or exc}")

    if len(data) > max_file_bytes:
        return SkippedFile(path, SkipReason.TOO_LARGE, f"grew past the {max_file_bytes}-byte limit")
    if not data:
        return SkippedFile(path, SkipReason.EMPTY, "0 bytes")
    digest = hashlib.sha256(data).hexdigest()
    decoded = _decode(data)
    if decoded is None:
        return SkippedFile(path, SkipReason.BINARY, "NUL byte in the first 8 KiB")
    text, lossy = decoded

    marker = _generated_marker(text)
    if marker:
        return SkippedFile(path, SkipReason.GENERATED, f"header says {marker!r}")
    if not name.lower().endswith(PROSE_SUFFIXES):
        why = _minified(text, max_line_chars)
        if why and "\n" not in text and "\r" in text:
            # Lines end at "\n" only: one of lone "\r" endings is a single line.
            why += '; its lines end in a lone "\\r", which is not a line break here'
        if why:
            return SkippedFile(path, SkipReason.MINIFIED, why)
    return FileText(text=text, sha256=digest, lossy=lossy)


class _Pruner:
    """Decides, with a cache per directory, whether a path lies in a pruned one."""

    def __init__(self, root: str) -> None:
        self.root = root
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
                or os.path.lexists(os.path.join(self.root, rel, VENV_MARKER))
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


def _git_listing(root: str, notes: list[str]) -> tuple[list[str], str | None] | None:
    """Paths (relative to root) git tracks or would track, and HEAD; None if not git."""
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
    # A set: unmerged paths are listed once per stage. A trailing "/" marks an
    # untracked nested repository.
    paths = {os.fsdecode(raw).rstrip("/") for raw in out.split(b"\0") if raw}
    return sorted(paths), commit


def _walk(root: str, pruner: _Pruner, skipped: list[SkippedFile], notes: list[str]) -> list[str]:
    """Non-directory paths under root, honouring nested .gitignore files."""
    found: list[str] = []
    stack: list[tuple[str, tuple[tuple[str, pathspec.GitIgnoreSpec], ...]]] = [("", ())]
    while stack:
        rel_dir, ignores = stack.pop()
        try:
            with os.scandir(os.path.join(root, rel_dir)) as it:
                entries = list(it)
        except OSError as exc:
            detail = f"cannot list directory: {exc.strerror or exc}"
            skipped.append(SkippedFile(rel_dir or ".", SkipReason.UNREADABLE, detail))
            continue
        for entry in entries:
            if entry.name == ".gitignore" and entry.is_file(follow_symlinks=False):
                spec = _load_gitignore(entry.path, notes)
                if spec is not None:
                    ignores = (*ignores, (rel_dir, spec))
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = False  # _check reports what stat says
            if is_dir:
                if not pruner.dir_pruned(rel) and not _ignored(ignores, rel + "/"):
                    stack.append((rel, ignores))
            elif not _ignored(ignores, rel):
                found.append(rel)
    return found


def _load_gitignore(path: str, notes: list[str]) -> pathspec.GitIgnoreSpec | None:
    try:
        with open(path, "rb") as fh:
            lines = fh.read(DEFAULT_MAX_FILE_BYTES).decode(errors="surrogateescape").splitlines()
        return pathspec.GitIgnoreSpec.from_lines(lines)
    except (OSError, ValueError) as exc:
        notes.append(f"ignored {path}: {exc}")
        return None


def _ignored(ignores: tuple[tuple[str, pathspec.GitIgnoreSpec], ...], rel: str) -> bool:
    # The deepest .gitignore with a matching pattern decides, as in git.
    for base, spec in reversed(ignores):
        result = spec.check_file(rel[len(base) + 1 :] if base else rel)
        if result.include is not None:
            # pathspec lets "a/**" match the directory "a/" itself; git does not,
            # so a later "!a/keep" can still re-include a file inside it.
            if result.include and rel.endswith("/") and result.index is not None:
                return not str(spec.patterns[result.index].pattern).rstrip().endswith("/**")
            return bool(result.include)
    return False


def _check(root: str, rel: str, max_bytes: int, pruner: _Pruner) -> SourceFile | SkippedFile | None:
    """Stat-level checks; None for what is passed over silently."""
    full = os.path.join(root, rel)
    try:
        st = os.lstat(full)
    except FileNotFoundError:
        return None  # tracked but deleted, or gone since listing
    except OSError as exc:
        return SkippedFile(rel, SkipReason.UNREADABLE, f"cannot stat: {exc.strerror or exc}")

    if stat.S_ISLNK(st.st_mode):
        target = os.path.realpath(full)
        if not _inside(root, target):
            return SkippedFile(rel, SkipReason.SYMLINK_OUTSIDE, f"points to {target}")
        try:
            st = os.stat(full)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return SkippedFile(rel, SkipReason.SYMLINK_LOOP, "symlink loop")
            if exc.errno == errno.ENOENT:
                return SkippedFile(rel, SkipReason.UNREADABLE, f"dangling symlink to {target}")
            return SkippedFile(rel, SkipReason.UNREADABLE, f"cannot stat: {exc.strerror or exc}")
        if stat.S_ISDIR(st.st_mode):
            return None  # symlinked directories are not followed
        if pruner.path_pruned(os.path.relpath(target, root).replace(os.sep, "/")):
            return SkippedFile(
                rel, SkipReason.SYMLINK_OUTSIDE, f"points into a pruned directory: {target}"
            )
    elif stat.S_ISDIR(st.st_mode):
        detail = "a directory (git submodule or nested repository); index it on its own"
        return SkippedFile(rel, SkipReason.NOT_A_FILE, detail)

    if not stat.S_ISREG(st.st_mode):
        return SkippedFile(rel, SkipReason.NOT_A_FILE, _kind(st.st_mode))
    if st.st_size > max_bytes:
        detail = f"{st.st_size} bytes, over the {max_bytes}-byte limit"
        return SkippedFile(rel, SkipReason.TOO_LARGE, detail)
    return SourceFile(
        path=rel, size=st.st_size, mtime_ns=st.st_mtime_ns, language=language_for(rel)
    )


def _inside(root: str, target: str) -> bool:
    return target == root or target.startswith(root.rstrip(os.sep) + os.sep)


def _kind(mode: int) -> str:
    kinds = {stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a device"}
    return kinds.get(stat.S_IFMT(mode), "not a regular file")


def _decode(data: bytes) -> tuple[str, bool] | None:
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


def _generated_marker(text: str) -> str | None:
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


def _minified(text: str, max_line_chars: int) -> str | None:
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
