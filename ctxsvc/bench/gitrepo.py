"""Git for the benchmark: open a repository, read its objects, check out snapshots.

The user's repository is only ever read. Snapshots are checked out into a
private clone (``git clone --shared``: it borrows the repository's objects
instead of copying them), always into the same directory, so moving from one
snapshot to the next rewrites only the files that differ and the incremental
indexer re-reads only those.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ctxsvc.errors import ConfigError, CtxError, InvalidPath, NoTasks

# Variables that would point git at another repository than the one asked for.
_GIT_LOCATION_ENV = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR")
# User settings that would change the output parsed here.
_GIT_CONFIG = (
    "-c", "core.quotePath=false", "-c", "log.showSignature=false",
    "-c", "diff.noprefix=false", "-c", "diff.mnemonicPrefix=false",
    "-c", "advice.detachedHead=false",
)  # fmt: skip
_TIMEOUT_S = 600


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _GIT_LOCATION_ENV}
    env["GIT_TERMINAL_PROMPT"] = "0"
    return env


def run_git(
    args: Sequence[str], *, git_dir: Path | None = None, cwd: Path | None = None,
    stdin: bytes | None = None, check: bool = True,
) -> subprocess.CompletedProcess[bytes]:  # fmt: skip
    """``git ARGS`` on ``git_dir`` (or in ``cwd``); raises CtxError when it fails."""
    cmd = ["git", *_GIT_CONFIG, *([f"--git-dir={git_dir}"] if git_dir else []), *args]
    try:
        done = subprocess.run(
            cmd, cwd=cwd, input=stdin, capture_output=True, env=_env(), timeout=_TIMEOUT_S
        )
    except FileNotFoundError:
        raise ConfigError(
            "git is not installed", hint="install git: `ctxsvc bench` reads history"
        ) from None
    except subprocess.TimeoutExpired:
        raise CtxError(f"git {args[0]} took longer than {_TIMEOUT_S} s") from None
    if check and done.returncode != 0:
        detail = done.stderr.decode(errors="replace").strip().splitlines()
        raise CtxError(f"git {' '.join(args[:2])} failed: {detail[-1] if detail else 'no output'}")
    return done


def stream_git(
    args: Sequence[str], *, git_dir: Path, separator: bytes
) -> Generator[bytes, None, None]:
    """The output of ``git ARGS`` as records split at ``separator``, read as it comes.

    Closing the iterator early stops git, so a long history is read only as far
    as it is needed.
    """
    cmd = ["git", *_GIT_CONFIG, f"--git-dir={git_dir}", *args]
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
    except FileNotFoundError:
        raise ConfigError(
            "git is not installed", hint="install git: `ctxsvc bench` reads history"
        ) from None
    stdout, stderr = proc.stdout, proc.stderr
    assert stdout is not None and stderr is not None
    finished = False
    try:
        pending = b""
        for block in iter(lambda: stdout.read(1 << 16), b""):
            *records, pending = (pending + block).split(separator)
            yield from (r for r in records if r)
        if pending:
            yield pending
        finished = True
    finally:
        if not finished:
            proc.kill()
        detail = stderr.read().decode(errors="replace").strip().splitlines()
        stdout.close()
        stderr.close()
        if proc.wait() != 0 and finished:
            raise CtxError(f"git {args[0]} failed: {detail[-1] if detail else 'no output'}")


@dataclass(frozen=True)
class GitRepo:
    """A repository opened for reading."""

    git_dir: Path  # its git directory: a linked work tree's own, which knows its HEAD
    common_dir: Path  # where the objects are (the same as git_dir but in linked work trees)
    root: Path  # the top of the work tree, or the bare repository's directory
    name: str
    head: str  # the full sha of HEAD

    def has_commit(self, sha: str) -> bool:
        done = run_git(["cat-file", "-e", f"{sha}^{{commit}}"], git_dir=self.git_dir, check=False)
        return done.returncode == 0


def open_repo(path: Path) -> GitRepo:
    """The git repository at ``path`` (a work tree, any directory in it, or a bare one)."""
    if not path.exists():
        raise InvalidPath(f"{path} does not exist", hint="give a git repository's directory")
    if not path.is_dir():
        raise InvalidPath(f"{path} is not a directory", hint="give a git repository's directory")
    done = run_git(
        ["rev-parse", "--path-format=absolute", "--git-dir", "--git-common-dir",
         "--is-bare-repository"],
        cwd=path,
        check=False,
    )  # fmt: skip
    lines = done.stdout.decode(errors="surrogateescape").splitlines()
    if done.returncode != 0 or len(lines) != 3:
        raise InvalidPath(
            f"{path} is not a git repository",
            hint="`ctxsvc bench` mines the history of a git clone: give its directory",
        )
    git_dir, common_dir = Path(lines[0]), Path(lines[1])
    if lines[2] == "false":  # a work tree is named after its top directory
        top = run_git(["rev-parse", "--show-toplevel"], cwd=path)
        root = Path(top.stdout.decode(errors="surrogateescape").strip())
        name = root.name
    else:  # a bare one after its directory, or its parent's when that is just "repo"
        root = git_dir
        name = git_dir.name.removesuffix(".git")
        if name in ("", "repo"):
            name = git_dir.parent.name
    head = run_git(["rev-parse", "--verify", "-q", "HEAD^{commit}"], git_dir=git_dir, check=False)
    if head.returncode != 0:
        raise NoTasks(f"{path} has no commits yet", hint="commit some history first, then bench it")
    return GitRepo(git_dir, common_dir, root, name, head.stdout.decode().strip())


class Blobs:
    """File contents at any commit, through one ``git cat-file --batch`` process."""

    def __init__(self, repo: GitRepo) -> None:
        cmd = ["git", *_GIT_CONFIG, f"--git-dir={repo.git_dir}", "cat-file", "--batch"]
        self._proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=_env()
        )

    def read(self, commit: str, path: str) -> bytes | None:
        """The bytes of ``path`` at ``commit``; None when it is not a file there."""
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(f"{commit}:{path}\n".encode(errors="surrogateescape"))
        self._proc.stdin.flush()
        header = self._proc.stdout.readline().split()
        if len(header) != 3:  # "<spec> missing" (or ambiguous)
            return None
        data = self._proc.stdout.read(int(header[2]))
        self._proc.stdout.read(1)  # the newline after the contents
        return data if header[1] == b"blob" else None

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        self._proc.wait()

    def __enter__(self) -> Blobs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SnapshotSource(Protocol):
    """Where the tree of a task's snapshot commit comes from."""

    # True when the tree is checked out at exactly that commit (so the index
    # can be checked to hold it); False for a prepared copy of the tree.
    exact: bool

    def checkout(self, commit: str) -> Path: ...


class CheckoutSnapshots:
    """Snapshots checked out one after another into one private clone at ``workdir``."""

    exact = True

    def __init__(self, repo: GitRepo, workdir: Path) -> None:
        self.repo = repo
        self.workdir = workdir
        self._ready = False

    def checkout(self, commit: str) -> Path:
        if not self._ready:
            self._clone()
        run_git(["checkout", "-q", "--detach", "--force", commit], cwd=self.workdir)
        # Leftovers of an interrupted run or of another snapshot's ignored files.
        run_git(["clean", "-q", "-d", "-x", "--force"], cwd=self.workdir)
        return self.workdir

    def _clone(self) -> None:
        alternates = self.workdir / ".git" / "objects" / "info" / "alternates"
        source = str(self.repo.common_dir / "objects")
        if not (alternates.is_file() and source in alternates.read_text().splitlines()):
            # Missing, or a clone of another repository: start again.
            if self.workdir.exists():
                shutil.rmtree(self.workdir)
            self.workdir.parent.mkdir(parents=True, exist_ok=True)
            run_git(
                [
                    "clone",
                    "-q",
                    "--shared",
                    "--no-checkout",
                    str(self.repo.common_dir),
                    str(self.workdir),
                ]
            )
        self._ready = True


class PreparedTree:
    """A directory already holding the snapshot's tree (a corpus written beforehand)."""

    exact = False

    def __init__(self, root: Path) -> None:
        self.root = root

    def checkout(self, commit: str) -> Path:
        return self.root
