"""Advisory file locks that serialize writers across processes."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from types import TracebackType

from ctxsvc.errors import IndexBusy, StoreError


class FileLock:
    """An exclusive ``flock`` on a file; the holder's pid is written into it.

    The kernel drops the lock when the holder dies, even on kill -9, so a
    crashed run never leaves a stale lock behind.
    """

    def __init__(self, path: Path, what: str, *, wait: bool = False, patience: float = 0.0) -> None:
        """``wait``: block until the lock is free; else try for ``patience`` seconds
        (a holder that only needs it for a moment, as the vector filler's commits) and
        raise ``IndexBusy``."""
        self.path = path
        self.what = what
        self.wait = wait
        self.patience = patience
        self._fd: int | None = None

    def __enter__(self) -> FileLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot open lock file {self.path}: {exc}") from exc
        try:
            self._take(fd)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise IndexBusy(
                f"{self.what} is locked by another ctxsvc process (pid {holder})",
                hint="wait for that run to finish, then retry",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def _take(self, fd: int) -> None:
        if self.wait:
            fcntl.flock(fd, fcntl.LOCK_EX)
            return
        give_up = time.monotonic() + self.patience
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= give_up:
                    raise
                time.sleep(0.05)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def held(path: Path) -> bool:
    """Whether some process (this one too) holds the lock at ``path`` now."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False  # never taken
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock taken here
    return False
