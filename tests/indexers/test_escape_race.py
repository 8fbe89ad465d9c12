"""No swap at any moment leads discover or read_text outside the root.

The race test runs a separate process that exchanges a directory inside the
root with a symlink to a directory outside it (renameat2 RENAME_EXCHANGE, or
a pair of renames where the kernel lacks it) as fast as it can, while
discover and read_text run again and again. Its loop is bounded in wall-clock
time; nothing is asserted about timing.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import ctxsvc.indexers.discover as disc
from ctxsvc.errors import CtxError, InvalidPath, RootChanged
from ctxsvc.models import FileText, SkippedFile, SourceFile

SECRET = "SECRET_OUTSIDE_THE_ROOT"
OUTSIDE_ONLY = "outside_only.py"
RACE_SECONDS = 2.0

# Exchanges two paths until a stop file appears, checked every 500 exchanges
# so that it stops on an even count, with both paths back where they were.
SWAPPER = textwrap.dedent(
    """
    import ctypes, os, sys

    a, b, stop = sys.argv[1:4]
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    AT_FDCWD, RENAME_EXCHANGE = -100, 2

    def exchange():
        global renameat2
        if renameat2 is not None:
            if renameat2(AT_FDCWD, a.encode(), AT_FDCWD, b.encode(), RENAME_EXCHANGE) == 0:
                return
            renameat2 = None  # not supported here: fall back to renames
        os.rename(a, a + ".swap")
        os.rename(b, a)
        os.rename(a + ".swap", b)

    count = 0
    while not os.path.exists(stop):
        for _ in range(500):
            exchange()
        count += 500
    print(count)
    """
)


def git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.email=t@t", "-c", "user.name=t", "-c", "commit.gpgsign=false", *args],
        cwd=root,
        check=True,
        capture_output=True,
    )


@pytest.fixture
def raced(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A root whose ``pkg`` the swapper keeps exchanging with a link to outside."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "data.py").write_text("INSIDE = 1\n")
    (root / "main.py").write_text("MAIN = 1\n")
    outside.mkdir()
    (outside / "data.py").write_text(f"{SECRET} = 1\n")
    (outside / OUTSIDE_ONLY).write_text(f"{SECRET} = 2\n")
    os.symlink(outside, tmp_path / "swap")
    yield root, tmp_path


def check_discovery(found: disc.Discovery, outside: Path) -> None:
    names = [f.path for f in found.files] + [s.path for s in found.skipped]
    assert not [n for n in names if OUTSIDE_ONLY in n], names
    assert {f.path for f in found.files} <= {"main.py", "pkg/data.py"}
    for s in found.skipped:
        assert OUTSIDE_ONLY not in s.detail


def check_read(got: FileText | SkippedFile) -> None:
    if isinstance(got, FileText):
        assert SECRET not in got.text
        assert got.text in ("INSIDE = 1\n", "MAIN = 1\n")


@pytest.mark.parametrize("mode", ["walk", "git"])
def test_a_directory_swapped_for_a_link_never_leads_outside(
    raced: tuple[Path, Path], mode: str
) -> None:
    root, tmp = raced
    if mode == "git":
        if shutil.which("git") is None:
            pytest.skip("git is not installed")
        git(root, "init", "-q")
        git(root, "add", "-A")
        git(root, "commit", "-q", "-m", "init")
    stop = tmp / "stop"
    target = SourceFile("pkg/data.py", 11, 0, "python")
    swapper = subprocess.Popen(
        [sys.executable, "-c", SWAPPER, str(root / "pkg"), str(tmp / "swap"), str(stop)],
        stdout=subprocess.PIPE,
        text=True,
    )
    rounds = 0
    try:
        deadline = time.monotonic() + RACE_SECONDS
        while time.monotonic() < deadline:
            rounds += 1
            try:
                found = disc.discover(root)
            except CtxError:
                continue  # a typed refusal is an acceptable answer; a traceback is not
            check_discovery(found, tmp / "outside")
            for file in (*found.files, target):
                for _ in range(20):
                    check_read(disc.read_text(found.root, file, max_file_bytes=1024))
    finally:
        stop.touch()
        out, _ = swapper.communicate(timeout=30)
    assert swapper.returncode == 0
    assert int(out) > 0 and rounds > 0
    # Back where it started: the swap count is even.
    assert (root / "pkg").is_dir() and not (root / "pkg").is_symlink()


def test_a_directory_replaced_by_a_link_is_named_not_entered(raced: tuple[Path, Path]) -> None:
    """The race frozen at its worst moment: found as a directory, read as a link."""
    root, tmp = raced
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "init")  # git still lists pkg/data.py from its index
    (file,) = [f for f in disc.discover(root).files if f.path == "pkg/data.py"]
    (root / "pkg").rename(tmp / "pkg.moved")
    os.symlink(tmp / "outside", root / "pkg")

    got = disc.read_text(root, file, max_file_bytes=1024)
    assert isinstance(got, SkippedFile) and "changed while indexing" in got.detail
    found = disc.discover(root)
    assert [f.path for f in found.files] == ["main.py"]
    assert [s.path for s in found.skipped] == ["pkg"]


def test_links_inside_the_root_keep_working(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "src").mkdir(parents=True)
    (root / "src" / "app.py").write_text("APP = 1\n")
    os.symlink(root / "src" / "app.py", root / "absolute.py")  # absolute, inside
    os.symlink("src/../src/app.py", root / "dotted.py")
    os.symlink("absolute.py", root / "chained.py")
    os.symlink("src", root / "srcdir")
    os.symlink("srcdir/app.py", root / "through_dir_link.py")  # via a symlinked directory
    found = disc.discover(root)
    assert [f.path for f in found.files] == ["absolute.py", "chained.py", "dotted.py", "src/app.py"]
    for file in found.files:
        got = disc.read_text(root, file, max_file_bytes=1024)
        assert isinstance(got, FileText) and got.text == "APP = 1\n"
    (skip,) = found.skipped
    assert skip.path == "through_dir_link.py" and "srcdir" in skip.detail


@pytest.mark.parametrize("replacement", ["link", "other-dir", "link-to-etc"])
def test_a_root_replaced_after_indexing_is_refused(tmp_path: Path, replacement: str) -> None:
    root, other = tmp_path / "repo", tmp_path / "other"
    root.mkdir()
    (root / "a.py").write_text("A = 1\n")
    other.mkdir()
    (other / "passwd").write_text("root:x:0:0\n")
    identity = disc.root_identity(root)
    found = disc.discover(root, expect=identity)
    (file,) = found.files
    assert isinstance(disc.read_text(root, file, max_file_bytes=1024, expect=identity), FileText)

    root.rename(tmp_path / "repo.moved")
    if replacement == "link":
        os.symlink(other, root)
        now = "symlink"
    elif replacement == "link-to-etc":
        os.symlink("/etc", root)
        now = "symlink"
    else:
        other.rename(root)
        now = "different directory"

    with pytest.raises(RootChanged) as caught:
        disc.discover(root, expect=identity)
    assert str(root) in caught.value.message and now in caught.value.message
    assert "--rebuild" in caught.value.hint
    with pytest.raises(RootChanged):
        disc.read_text(root, file, max_file_bytes=1024, expect=identity)
    # Without an expectation the path is indexed as it is now.
    assert disc.discover(root).root == root.resolve()


def test_a_root_that_is_gone_is_an_invalid_path(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    identity = disc.root_identity(root)
    root.rmdir()
    with pytest.raises(InvalidPath):
        disc.discover(root, expect=identity)
    with pytest.raises(InvalidPath):
        disc.root_identity(root)


def test_root_identity_is_the_directorys_device_and_inode(tmp_path: Path) -> None:
    st = os.stat(tmp_path)
    assert disc.root_identity(tmp_path) == (st.st_dev, st.st_ino)
    os.symlink(tmp_path, tmp_path.parent / (tmp_path.name + ".link"))
    assert disc.root_identity(tmp_path.parent / (tmp_path.name + ".link")) == (
        st.st_dev,
        st.st_ino,
    )


DEPTH = 300
LEVEL = "level_of_a_deep_tree"  # 300 of these make a path past PATH_MAX (4096)


def make_deep(root: Path) -> str:
    """A chain of DEPTH directories with one file at the bottom; its relative path."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(DEPTH):
            os.mkdir(LEVEL, dir_fd=fd)
            child = os.open(LEVEL, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        out = os.open("bottom.py", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(out, b"BOTTOM = 1\n")
        os.close(out)
    finally:
        os.close(fd)
    return "/".join([LEVEL] * DEPTH) + "/bottom.py"


@pytest.fixture
def few_fds() -> Iterator[None]:
    """Allow fewer new descriptors than the deep tree has levels (counted from those this
    process holds already, which depend on the tests run before)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    held = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 64
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, held + DEPTH // 4), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc")
def test_a_deep_tree_walks_without_running_out_of_descriptors(
    tmp_path: Path, few_fds: None
) -> None:
    root = tmp_path / "deep"
    root.mkdir()
    (root / "top.py").write_text("TOP = 1\n")
    rel = make_deep(root)
    assert len(str(root)) + len(rel) > 4096
    before = len(os.listdir("/proc/self/fd"))
    found = disc.discover(root)
    assert [f.path for f in found.files] == sorted(["top.py", rel])
    assert found.skipped == ()
    (bottom,) = [f for f in found.files if f.path == rel]
    got = disc.read_text(root, bottom, max_file_bytes=1024)
    assert isinstance(got, FileText) and got.text == "BOTTOM = 1\n"
    assert len(os.listdir("/proc/self/fd")) == before  # every descriptor closed
