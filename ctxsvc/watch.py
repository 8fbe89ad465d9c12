"""Keep an index current while its files change: ``ctxsvc watch``.

``Watcher`` watches an indexed repository's root with watchfiles and runs the
service's incremental index after each batch of changes, so that the next
query answers from the new code. Writes close together are coalesced into one
batch (watchfiles' ``step`` and ``debounce``), and changes made while a run is
under way wait, gathered, for the next one. ``IndexedPaths`` drops changes the
indexer would never read: pruned directories (``.git/``, ``node_modules/``, a
virtualenv, ...), the data directory, and paths the ``.gitignore`` files
ignore, decided by the walk's own matcher (``indexers.ignore``).

A run that finds the repository locked by another process (``IndexBusy``) is
retried after a short wait; any other ``CtxError`` is logged and the watcher
goes on. It stops when the ``threading.Event`` given to :meth:`Watcher.run` is
set (the CLI sets it on SIGINT and SIGTERM).
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ctxsvc.errors import CtxError, IndexBusy
from ctxsvc.models import IndexSummary
from ctxsvc.settings import Settings
from ctxsvc.stores.lance_schema import IndexMeta
from indexers.discover import DEFAULT_MAX_FILE_BYTES, PRUNED_DIR_SUFFIXES, PRUNED_DIRS, VENV_MARKER
from indexers.ignore import IgnoreFile, ignored

log = logging.getLogger("ctxsvc.watch")

STEP_MS = 100  # a batch ends once no change came for this long...
DEBOUNCE_MS = 800  # ...or this long after its first change
BUSY_RETRY_S = 1.0  # wait before retrying a run that found the repository locked
# How long watchfiles waits in Rust before yielding an empty batch: the first one
# says the watch is set up (``Watcher.ready``); later ones let ``run`` see ``stop``.
TIMEOUT_MS = 300


class Indexes(Protocol):
    """What a ``Watcher`` needs of the service (``ContextService`` has it)."""

    @property
    def settings(self) -> Settings: ...

    def resolve(self, name_or_path: str) -> IndexMeta: ...

    def index(
        self, path: str | Path, name: str | None = None, *, vectors: bool = ..., wait: bool = ...
    ) -> IndexSummary: ...


@dataclass(frozen=True)
class WatchRun:
    """One re-index the watcher ran: what set it off and what it did."""

    changed: tuple[str, ...]  # paths relative to the root, sorted; empty for the catch-up run
    seconds: float
    summary: IndexSummary


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
        """Whether the walk of ``indexers.discover`` would reach ``rel`` (relative to the root)."""
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


class Watcher:
    """Re-indexes one index whenever files under its root change.

    ``name_or_path`` names an index (or its root) already built; it is
    resolved now, so an unknown one raises ``RepoNotFound`` before anything is
    watched. Each run indexes with vectors as the index was built, and with
    ``wait`` embeds the chunks it changed before it returns (the index answers
    from the run's commit, before embedding). ``catch_up`` runs once as soon as
    the watch is set up, for what changed while nothing watched.
    """

    def __init__(
        self,
        service: Indexes,
        name_or_path: str,
        *,
        catch_up: bool = True,
        wait: bool = True,
        step_ms: int = STEP_MS,
        debounce_ms: int = DEBOUNCE_MS,
        busy_retry_s: float = BUSY_RETRY_S,
    ) -> None:
        self.service = service
        meta = service.resolve(name_or_path)
        self.name = meta.name
        self.root = Path(meta.root)
        self.vectors = meta.vectors != "disabled"
        self.catch_up = catch_up
        self.wait = wait
        self.step_ms = step_ms
        self.debounce_ms = debounce_ms
        self.busy_retry_s = busy_retry_s
        self.filter = IndexedPaths(self.root, service.settings.home)
        self.runs: list[WatchRun] = []  # every run that completed, oldest first
        self.ready = threading.Event()  # set once watching (and caught up)

    def run(self, stop: threading.Event) -> None:
        """Watch until ``stop`` is set; each batch of changes is one index run."""
        import watchfiles  # imported here: only this command needs it

        batches = watchfiles.watch(
            self.root,
            watch_filter=self.filter,
            debounce=self.debounce_ms,
            step=self.step_ms,
            stop_event=stop,
            rust_timeout=TIMEOUT_MS,
            yield_on_timeout=True,
            raise_interrupt=False,
        )
        log.info("watching %s (%s)", self.name, self.root)
        try:
            for batch in batches:
                if stop.is_set():
                    break
                first = not self.ready.is_set()
                if batch or (first and self.catch_up):
                    rels = {self.filter.relative(path) for _, path in batch}
                    self._index(tuple(sorted(r for r in rels if r is not None)), stop)
                if first:
                    self.ready.set()
        finally:
            batches.close()  # lets go of the inotify watches now, not at collection
        log.info("stopped watching %s", self.name)

    def _index(self, changed: tuple[str, ...], stop: threading.Event) -> None:
        """One run for ``changed``, retried while another process holds the lock."""
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                summary = self.service.index(
                    self.root, self.name, vectors=self.vectors, wait=self.wait
                )
            except IndexBusy as exc:
                log.warning("%s; retrying in %.0f s", exc.message, self.busy_retry_s)
                stop.wait(self.busy_retry_s)
                continue
            except CtxError as exc:  # the watch goes on: the next change tries again
                hint = f" (hint: {exc.hint})" if exc.hint else ""
                log.error("re-indexing %s failed: %s%s", self.name, exc.message, hint)
                return
            seconds = time.perf_counter() - t0
            self.runs.append(WatchRun(changed, seconds, summary))
            what = f"{len(changed)} files changed" if changed else "caught up"
            log.info(
                "re-indexed %s: %s, %d parsed, %d deleted in %.2f s",
                self.name, what, summary.files_indexed, summary.files_deleted, seconds,
            )  # fmt: skip
            return
