"""Reach paths under a root through directory descriptors, never a path string.

``RootDir`` opens the root once (``O_DIRECTORY|O_NOFOLLOW``, after resolving
the path given once) and reaches everything below it one component at a time
with ``openat(name, O_NOFOLLOW, dir_fd=parent)``. No rename or symlink swapped
in at any moment can then lead outside the root: a directory on a path that
has become a symlink fails to open and is reported as ``Changed``, never
followed. (``openat2(RESOLVE_BENEATH)`` would do the same in one call; Python's
``os`` does not offer it.)

Symlinks are followed only where asked (``follow``), and only within the
root: the target is resolved lexically against the link's directory, refused
if it leaves the root or passes through a symlinked directory, then opened
again component by component from the root's descriptor.

Descriptors: the directories of the path last reached stay open as a chain,
so that a walk or a sorted list of paths opens each directory about once; at
most ``MAX_OPEN_DIRS`` of them are kept open, whatever the tree's depth.
"""

from __future__ import annotations

import errno
import os
import shlex
import stat
from pathlib import Path
from types import TracebackType
from typing import NamedTuple

from ctxsvc.errors import InvalidPath, RootChanged
from ctxsvc.models import SkipReason

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO that replaced a file must not hang.
FILE_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_OPEN_DIRS = 32
MAX_SYMLINKS = 40  # as the kernel's MAXSYMLINKS
_READ_CHUNK = 1 << 20


class Changed(Exception):
    """A path under the root changed kind while it was being reached.

    ``rel`` is the path (relative to the root) that changed, e.g. a directory
    that is a symlink now; nothing below it was opened.
    """

    def __init__(self, rel: str, now: str) -> None:
        super().__init__(f"changed while indexing: {rel} {now}; not followed")
        self.rel = rel


class Refused(Exception):
    """A path that is not opened: a symlink leading outside, a loop, a dangling link."""

    def __init__(self, reason: SkipReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class Entry(NamedTuple):
    """One name in a directory, its kind taken without following a symlink."""

    name: str
    is_dir: bool
    is_file: bool


def root_identity(root: Path) -> tuple[int, int]:
    """``(st_dev, st_ino)`` of the directory at ``root`` (a symlink is resolved).

    Record it when indexing and pass it back as ``expect`` to ``discover`` and
    ``read_text``. Raises ``InvalidPath`` when ``root`` is not a directory.
    """
    with RootDir(root) as fs:
        return fs.identity


class RootDir:
    """An open root directory; paths below it are reached component by component.

    Raises ``InvalidPath`` when ``root`` is missing or not a directory, and
    ``RootChanged`` when ``expect`` is given and the directory there now is
    another one (or ``root`` is a file now). Use it as a context manager: it
    holds descriptors until closed.
    """

    def __init__(self, root: Path, *, expect: tuple[int, int] | None = None) -> None:
        try:
            real = root.resolve(strict=True)
        except (OSError, RuntimeError) as exc:
            raise InvalidPath(
                f"cannot index {root}: {exc}", hint="pass an existing directory"
            ) from exc
        try:
            self.fd = os.open(real, DIR_FLAGS)
        except OSError as exc:
            if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                if expect is not None or exc.errno == errno.ELOOP:
                    raise _changed(root, expect) from exc
                raise InvalidPath(
                    f"cannot index {root}: not a directory", hint="pass a directory"
                ) from exc
            raise InvalidPath(
                f"cannot index {root}: {exc.strerror or exc}", hint="pass an existing directory"
            ) from exc
        st = os.fstat(self.fd)
        self.identity = (st.st_dev, st.st_ino)
        if expect is not None and self.identity != tuple(expect):
            os.close(self.fd)
            raise _changed(root, expect, self.identity)
        self.path = str(real)
        # Absolute link targets may name the root as resolved or as given.
        given = os.path.abspath(root)
        bases = {self.path.rstrip("/") + "/", given.rstrip("/") + "/"}
        self._bases = sorted(bases, key=len, reverse=True)  # the longest prefix first
        self._chain: list[tuple[str, int]] = []  # (name, fd or -1 once let go)

    def __enter__(self) -> RootDir:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close every descriptor held; the object is unusable afterwards."""
        self._truncate(0)
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def display(self, rel: str) -> str:
        """``rel`` as an absolute path, for messages only (never opened)."""
        return os.path.join(self.path, rel) if rel else self.path

    def listdir(self, rel_dir: str) -> list[Entry]:
        """The entries of directory ``rel_dir`` ("" is the root)."""
        with os.scandir(self._dir(rel_dir)) as it:
            # Kinds now: a DirEntry's lazy stat would use a descriptor closed by then.
            return [Entry(e.name, _is_dir(e), _is_file(e)) for e in it]

    def lstat(self, rel: str) -> os.stat_result:
        """The status of ``rel`` itself (a symlink is not followed)."""
        parent, name = _split(rel)
        return os.stat(name, dir_fd=self._dir(parent), follow_symlinks=False)

    def exists(self, rel: str) -> bool:
        """Whether ``rel`` exists (as anything, a dangling symlink included)."""
        try:
            self.lstat(rel)
        except (OSError, Changed, Refused):
            return False
        return True

    def follow(self, rel: str) -> tuple[str, os.stat_result]:
        """Where the symlink at ``rel`` leads inside the root, and the status there.

        A chain of symlinks is followed to its end. Raises ``Refused`` for a
        target outside the root, through a symlinked directory, dangling or in
        a loop, and ``Changed`` when ``rel`` is no longer a symlink.
        """
        seen = {rel}
        current = rel
        for _ in range(MAX_SYMLINKS):
            parent, name = _split(current)
            try:
                target = os.readlink(name, dir_fd=self._dir(parent))
            except OSError as exc:
                if exc.errno == errno.EINVAL:
                    raise Changed(current, "is no longer a symlink") from exc
                raise
            inner, shown = self._lexical(parent, target)
            if not inner:
                return "", os.fstat(self.fd)
            try:
                st = self.lstat(inner)
            except Changed as exc:
                raise Refused(
                    SkipReason.SYMLINK_OUTSIDE,
                    f"points to {shown}, through the symlinked directory {exc.rel},"
                    " which is not followed",
                ) from exc
            except (FileNotFoundError, NotADirectoryError) as exc:
                raise Refused(SkipReason.UNREADABLE, f"dangling symlink to {shown}") from exc
            if not stat.S_ISLNK(st.st_mode):
                return inner, st
            if inner in seen:
                raise Refused(SkipReason.SYMLINK_LOOP, "symlink loop")
            seen.add(inner)
            current = inner
        raise Refused(SkipReason.SYMLINK_LOOP, f"more than {MAX_SYMLINKS} symlinks in a row")

    def read_bytes(self, rel: str, limit: int, *, follow: bool = True) -> bytes:
        """Up to ``limit`` bytes of the regular file at ``rel``.

        With ``follow``, a symlink is followed within the root (see ``follow``);
        without, a symlink is an ``OSError`` (ELOOP). Raises ``Refused``
        (NOT_A_FILE) when ``rel`` is no regular file.
        """
        fd = self._open_file(rel, follow)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise Refused(SkipReason.NOT_A_FILE, "no longer a regular file")
            chunks: list[bytes] = []
            left = limit
            while left > 0:
                chunk = os.read(fd, min(left, _READ_CHUNK))
                if not chunk:
                    break
                chunks.append(chunk)
                left -= len(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def _open_file(self, rel: str, follow: bool) -> int:
        parent, name = _split(rel)
        try:
            return os.open(name, FILE_FLAGS, dir_fd=self._dir(parent))
        except OSError as exc:
            if exc.errno != errno.ELOOP or not follow:
                raise
        inner, _ = self.follow(rel)
        parent, name = inner.rpartition("/")[::2]
        try:
            return os.open(name or ".", FILE_FLAGS, dir_fd=self._dir(parent))
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise Changed(inner, "became a symlink") from exc
            raise

    def _lexical(self, parent: str, target: str) -> tuple[str, str]:
        """(path relative to the root, absolute path for messages) of a link target."""
        if target.startswith("/"):
            shown = os.path.normpath(target)
            base = next((b for b in self._bases if (target + "/").startswith(b)), None)
            if base is None:
                raise Refused(SkipReason.SYMLINK_OUTSIDE, f"points to {shown}")
            parts = target[len(base) :].split("/")
        else:
            shown = os.path.normpath(os.path.join(self.path, parent, target))
            parts = [*parent.split("/"), *target.split("/")]
        out: list[str] = []
        for part in parts:
            if part == "..":
                if not out:
                    raise Refused(SkipReason.SYMLINK_OUTSIDE, f"points to {shown}")
                out.pop()
            elif part and part != ".":
                out.append(part)
        return "/".join(out), shown

    def _dir(self, rel_dir: str) -> int:
        """A descriptor of directory ``rel_dir``, borrowed: valid until the next call."""
        parts = rel_dir.split("/") if rel_dir else []
        chain = self._chain
        keep, most = 0, min(len(parts), len(chain))
        while keep < most and chain[keep][0] == parts[keep]:
            keep += 1
        if keep and chain[keep - 1][1] < 0:
            keep = 0  # let go to bound the descriptors held: reach it again from the root
        self._truncate(keep)
        fd = chain[-1][1] if chain else self.fd
        for i in range(keep, len(parts)):
            fd = self._open_dir(fd, parts, i)
            chain.append((parts[i], fd))
            if len(chain) > MAX_OPEN_DIRS:
                name, old = chain[-MAX_OPEN_DIRS - 1]
                if old >= 0:
                    os.close(old)
                    chain[-MAX_OPEN_DIRS - 1] = (name, -1)
        return fd

    def _open_dir(self, parent_fd: int, parts: list[str], i: int) -> int:
        name = parts[i]
        if name in ("", ".", ".."):
            raise Refused(SkipReason.UNREADABLE, "not a plain path under the root")
        try:
            return os.open(name, DIR_FLAGS, dir_fd=parent_fd)
        except OSError as exc:
            if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
                raise
            try:
                mode = os.stat(name, dir_fd=parent_fd, follow_symlinks=False).st_mode
            except OSError:
                mode = 0
            if exc.errno == errno.ENOTDIR and not (stat.S_ISLNK(mode) or stat.S_ISDIR(mode)):
                raise  # a file where a directory was: the path is simply not there
            now = "became a symlink" if stat.S_ISLNK(mode) or not mode else "was replaced"
            raise Changed("/".join(parts[: i + 1]), now) from exc

    def _truncate(self, keep: int) -> None:
        while len(self._chain) > keep:
            _, fd = self._chain.pop()
            if fd >= 0:
                os.close(fd)


def _split(rel: str) -> tuple[str, str]:
    parent, _, name = rel.rpartition("/")
    if name in ("", ".", ".."):
        raise Refused(SkipReason.UNREADABLE, "not a plain path under the root")
    return parent, name


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def _is_file(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_file(follow_symlinks=False)
    except OSError:
        return False


def _changed(
    root: Path, expect: tuple[int, int] | None, now: tuple[int, int] | None = None
) -> RootChanged:
    try:
        st = os.lstat(root)
    except OSError:
        st = None
    if st is not None and stat.S_ISLNK(st.st_mode):
        try:
            what = f"a symlink to {os.readlink(root)}"
        except OSError:
            what = "a symlink"
    elif st is not None and not stat.S_ISDIR(st.st_mode):
        what = "a file" if stat.S_ISREG(st.st_mode) else "not a directory"
    elif now is not None and expect is not None:
        what = (
            f"a different directory (device {now[0]}, inode {now[1]}; indexed:"
            f" device {expect[0]}, inode {expect[1]})"
        )
    else:
        what = "a different directory"
    return RootChanged(
        f"{root} is not the directory that was indexed: it is now {what}; nothing under it"
        " was read",
        hint="if the directory was moved or replaced on purpose, index it again with"
        f" `ctxsvc index {shlex.quote(str(root))} --rebuild`",
    )
