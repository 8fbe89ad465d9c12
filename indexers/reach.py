"""Whether the walk of ``ctxsvc.indexers.discover`` would reach a path: ``IndexedPaths``.

A watcher (``ctxsvc.watch``) is told of every change under a root; it should
re-index only for those the indexer would read. The decision is the walk's
own: pruned directories, the data directory, and the ``.gitignore`` files
above the path, matched by ``ctxsvc.indexers.ignore``.
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

from ctxsvc.indexers.discover import (
    DEFAULT_MAX_FILE_BYTES,
    PRUNED_DIR_SUFFIXES,
    PRUNED_DIRS,
    VENV_MARKER,
)
from ctxsvc.indexers.ignore import IgnoreFile, ignored


class IndexedPaths:
    """A watchfiles ``watch_filter``: True for a change to a path the indexer may read.

    Outside ``root``, under ``data_dir``, in a pruned directory (``PRUNED_DIRS``,
    ``*.egg-info``, a directory holding ``pyvenv.cfg``) or ignored by the
    ``.gitignore`` files above it is False. Each ``.gitignore`` is parsed once
    per version (its stat), so an edited one applies to the next change.
    """

    def __init__(self, root: Path, data_dir: Path | None = None) -> None:
        self.root = root.resolve()
        self.data_dir = data_dir.resolve() if data_dir is not None else None
        self._specs: dict[str, tuple[tuple[int, int, int], IgnoreFile | None]] = {}
        self._lock = threading.Lock()  # watchfiles may call from any thread

    def __call__(self, change: object, path: str) -> bool:
        rel = self.relative(path)
        return rel is not None and self.wanted(rel)

    def relative(self, path: str) -> str | None:
        """``path`` relative to the root, ``/``-separated; None outside it or in the data dir."""
        p = Path(path)
        if self.data_dir is not None and p.is_relative_to(self.data_dir):
            return None
        if not p.is_relative_to(self.root) or p == self.root:
            return None
        return p.relative_to(self.root).as_posix()

    def wanted(self, rel: str) -> bool:
        """Whether the walk of ``ctxsvc.indexers.discover`` would reach ``rel`` (relative to the root)."""
        parts = rel.split("/")
        stack: list[tuple[str, IgnoreFile]] = []
        for i, name in enumerate(parts):
            parent = "/".join(parts[:i])
            spec = self._gitignore(parent)
            if spec is not None:
                stack.append((parent, spec))
            child = f"{parent}/{name}" if parent else name
            last = i == len(parts) - 1
            # A deleted path is taken for a file: its name alone may still prune it.
            is_dir = not last or (self.root / child).is_dir()
            if self._pruned(child, name, is_dir):
                return False
            if ignored(stack, child, is_dir):
                return False
        return True

    def _pruned(self, rel: str, name: str, is_dir: bool) -> bool:
        if name in PRUNED_DIRS or name.endswith(PRUNED_DIR_SUFFIXES):
            return is_dir or not (self.root / rel).exists()
        return is_dir and (self.root / rel / VENV_MARKER).exists()

    def _gitignore(self, rel_dir: str) -> IgnoreFile | None:
        rel = f"{rel_dir}/.gitignore" if rel_dir else ".gitignore"
        path = self.root / rel
        try:
            st = os.lstat(path)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):  # the walk reads no link either
            return None
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        with self._lock:
            cached = self._specs.get(rel)
        if cached is not None and cached[0] == key:
            return cached[1]
        try:
            with open(path, "rb") as fh:
                data = fh.read(DEFAULT_MAX_FILE_BYTES)
        except OSError:
            spec = None
        else:
            spec = IgnoreFile.parse(data.decode(errors="surrogateescape"), rel)
        with self._lock:
            self._specs[rel] = (key, spec)
        return spec
