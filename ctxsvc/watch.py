"""Keep an index current while its files change: ``ctxsvc watch``.

``Watcher`` watches an indexed repository's root with watchfiles and runs the
service's incremental index after each batch of changes, so that the next
query answers from the new code. Writes close together are coalesced into one
batch (watchfiles' ``step`` and ``debounce``), and changes made while a run is
under way wait, gathered, for the next one. ``IndexedPaths`` drops changes the
indexer would never read: pruned directories (``.git/``, ``node_modules/``, a
virtualenv, ...), the data directory, and paths the ``.gitignore`` files
ignore, decided by the walk's own matcher (``ctxsvc.indexers.ignore``).

A run that finds the repository locked by another process (``IndexBusy``) is
retried after a short wait; any other ``CtxError`` is logged and the watcher
goes on. A run re-indexes only the index there is (``existing``, checked under
the repository's lock): once it is dropped, or its name re-pointed at another
directory, no change builds it again, and the watcher stops. It stops too when
the ``threading.Event`` given to :meth:`Watcher.run` is set (the CLI sets it on
SIGINT and SIGTERM).

``Watching`` runs a watcher per index in a server (``ctxsvc serve --watch``),
started and stopped in the app's lifespan, and says how each fares
(``WatchStatus``, in the index's status).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from ctxsvc.errors import CtxError, IndexBusy, RepoNotFound
from ctxsvc.indexers.reach import IndexedPaths
from ctxsvc.models import IndexSummary, WatchStatus
from ctxsvc.settings import Settings
from ctxsvc.stores.lance_schema import IndexMeta

log = logging.getLogger("ctxsvc.watch")

STEP_MS = 100  # a batch ends once no change came for this long...
DEBOUNCE_MS = 800  # ...or this long after its first change
BUSY_RETRY_S = 1.0  # wait before retrying a run that found the repository locked
# How long watchfiles waits in Rust before yielding an empty batch: the first one
# says the watch is set up (``Watcher.ready``); later ones let ``run`` see ``stop``.
TIMEOUT_MS = 300
RUNS_KEPT = 100
POLL_S = 2.0  # how often a server's watches look for indexes added, dropped or moved
RETRY_S = 30.0  # wait before starting again a watch that broke
STOP_TIMEOUT_S = 10.0  # how long stopping waits for a run under way
CHANGED_SHOWN = 20  # changed paths a status lists of the last run


class Indexes(Protocol):
    """What a ``Watcher`` needs of the service (``ContextService`` has it)."""

    @property
    def settings(self) -> Settings: ...

    def resolve(self, name_or_path: str) -> IndexMeta: ...

    def index(
        self, path: str | Path, name: str | None = None, *, vectors: bool = ...,
        wait: bool = ..., existing: bool = ...,
    ) -> IndexSummary: ...  # fmt: skip


@dataclass(frozen=True)
class WatchRun:
    """One re-index the watcher ran: what set it off and what it did."""

    changed: tuple[str, ...]  # paths relative to the root, sorted; empty for the catch-up run
    seconds: float
    summary: IndexSummary
    ended: float = 0.0  # when it committed (time.time())


@dataclass(frozen=True)
class WatchFailure:
    """A re-index the watcher ran that failed (the watch went on)."""

    error: CtxError
    ended: float  # time.time()


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
        # The last runs that completed, oldest first (a server watches for days).
        self.runs: deque[WatchRun] = deque(maxlen=RUNS_KEPT)
        self.count = 0  # every run that completed
        self.failure: WatchFailure | None = None  # the last run that failed
        self.ready = threading.Event()  # set once watching (and caught up)
        self.gone = False  # the index was dropped (or re-pointed): the watch has ended

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
                if stop.is_set() or self.gone:
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
                    self.root, self.name, vectors=self.vectors, wait=self.wait, existing=True
                )
            except RepoNotFound:  # dropped or re-pointed, maybe while the run waited for the lock
                log.info("%s is no longer an index of %s (dropped or re-pointed)", self.name,
                         self.root)  # fmt: skip
                self.gone = True
                return
            except IndexBusy as exc:
                log.warning("%s; retrying in %.0f s", exc.message, self.busy_retry_s)
                stop.wait(self.busy_retry_s)
                continue
            except CtxError as exc:  # the watch goes on: the next change tries again
                self.failure = WatchFailure(exc, time.time())
                hint = f" (hint: {exc.hint})" if exc.hint else ""
                log.error("re-indexing %s failed: %s%s", self.name, exc.message, hint)
                return
            seconds = time.perf_counter() - t0
            self.runs.append(WatchRun(changed, seconds, summary, time.time()))
            self.count += 1
            what = f"{len(changed)} files changed" if changed else "caught up"
            log.info(
                "re-indexed %s: %s, %d parsed, %d deleted in %.2f s",
                self.name, what, summary.files_indexed, summary.files_deleted, seconds,
            )  # fmt: skip
            return


class Served(Indexes, Protocol):
    """What :class:`Watching` needs of the service besides a watcher's needs."""

    def repos(self) -> list[IndexMeta]: ...


@dataclass
class _Watch:
    """One index's watch, as :class:`Watching` keeps it (under its lock)."""

    state: str
    since: float
    stop: threading.Event
    watcher: Watcher | None = None
    thread: threading.Thread | None = None
    error: str | None = None  # why the watch itself broke ("failed")
    retry_at: float = 0.0  # time.monotonic() after which a failed watch starts again
    runs: int = 0  # runs of the watchers before this one (a watch restarts after a failure)
    last_run: WatchRun | None = None
    failure: WatchFailure | None = None
    # The threads of the watches this one replaced, told to stop but maybe still in a run.
    ending: tuple[threading.Thread, ...] = ()

    def threads(self) -> list[threading.Thread]:
        """Its thread and those of the watches it replaced, while they are alive."""
        every = [*self.ending, *([self.thread] if self.thread is not None else [])]
        return [t for t in every if t.is_alive()]


class Watching:
    """The watches of a server (``ctxsvc serve --watch``): a :class:`Watcher` per index,
    each in a thread of its own, started and stopped with the app (:meth:`running`).

    ``names``: only these indexes, resolved now (an unknown one raises
    ``RepoNotFound`` before anything is served); None: every index, also those
    indexed after the start (the list is read again every ``poll_s``). Runs go
    through the service's own ``index``, under the repository's lock, so
    readers keep the committed version until a run's commit swaps it; they do
    not wait for vectors, which the server fills in behind. A root that is
    missing is logged and skipped until it is back; a dropped index stops its
    watch, and one re-pointed at another directory is watched there instead;
    a watch that breaks is logged and started again after ``retry_s``. A watch
    starts again only once the thread of the one it replaces has stopped, so
    that two never run on one index. :meth:`status` says how each one fares.
    """

    def __init__(
        self,
        service: Served,
        names: Sequence[str] | None = None,
        *,
        poll_s: float = POLL_S,
        retry_s: float = RETRY_S,
        stop_timeout: float = STOP_TIMEOUT_S,
        step_ms: int = STEP_MS,
        debounce_ms: int = DEBOUNCE_MS,
    ) -> None:
        self.service = service
        self.names = None if names is None else {service.resolve(n).name for n in names}
        self.poll_s = poll_s
        self.retry_s = retry_s
        self.stop_timeout = stop_timeout
        self.step_ms = step_ms
        self.debounce_ms = debounce_ms
        self._watches: dict[str, _Watch] = {}
        self._dropped: list[threading.Thread] = []  # threads of dropped indexes' watches
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Watch while the context is open (the HTTP app's lifespan)."""
        self.start()
        try:
            yield
        finally:  # joining blocks: off the event loop, which finishes the shutdown
            await asyncio.to_thread(self.stop, self.stop_timeout)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._supervise, name="watch", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> bool:
        """Stop every watch; False if a run was still under way after ``timeout`` seconds
        (its thread is a daemon: the last committed index stays intact if the process exits)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._stop.set()  # under the lock: no watch starts after this
        if self._thread is not None:  # first: its last look may still drop or replace a watch
            self._thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            watches = list(self._watches.items())
            dropped = list(self._dropped)
        for _, w in watches:
            w.stop.set()
        for t in [*dropped, *(t for _, w in watches for t in w.threads())]:
            t.join(max(0.0, deadline - time.monotonic()))
        busy = [name for name, w in watches if w.threads()]
        if any(t.is_alive() for t in dropped):
            busy.append("dropped indexes")
        if busy:
            log.warning("still re-indexing %s at shutdown; the last commit stays", ", ".join(busy))
        return not busy

    def status(self, name: str) -> WatchStatus | None:
        """How the watch of ``name`` fares; None when it is not watched."""
        with self._lock:
            w = self._watches.get(name)
            if w is None:
                return None
            state, since, error, runs = w.state, w.since, w.error, w.runs
            run, failure, watcher = w.last_run, w.failure, w.watcher
        if watcher is not None:
            run = watcher.runs[-1] if watcher.runs else run
            failure = watcher.failure or failure
            runs += watcher.count
        last_error, last_error_at = None, None
        if state == "failed":  # the watch itself broke, when this state began
            last_error, last_error_at = error, _iso(since)
        elif failure is not None:
            last_error, last_error_at = failure.error.message, _iso(failure.ended)
        return WatchStatus(
            state=state, since=_iso(since), runs=runs,
            last_run_at=_iso(run.ended) if run else None,
            last_run_seconds=round(run.seconds, 3) if run else None,
            last_run_changed=run.changed[:CHANGED_SHOWN] if run else (),
            last_error=last_error, last_error_at=last_error_at,
        )  # fmt: skip

    def _supervise(self) -> None:
        while not self._stop.is_set():
            try:
                self._sync()
            except CtxError as exc:  # the store failing now may answer at the next look
                log.warning("cannot list the indexes to watch: %s", exc.message)
            self._stop.wait(self.poll_s)

    def _sync(self) -> None:
        """Start, skip and stop watches to match the indexes there are now."""
        metas = {
            m.name: m for m in self.service.repos() if self.names is None or m.name in self.names
        }
        with self._lock:
            watches = dict(self._watches)
        for name, gone in watches.items():
            if name not in metas:
                gone.stop.set()
                with self._lock:
                    self._watches.pop(name, None)
                    # Joined by stop(): a run under way goes on until its commit.
                    self._dropped = [*(t for t in self._dropped if t.is_alive()), *gone.threads()]
                log.info("stopped watching %s: the index is gone", name)
        for name, meta in metas.items():
            w = watches.get(name)
            alive = w is not None and w.thread is not None and w.thread.is_alive()
            moved = w is not None and w.watcher is not None and w.watcher.root != Path(meta.root)
            if not Path(meta.root).is_dir():
                if w is None or w.state != "root_missing":
                    log.warning(
                        "not watching %s: its root %s is missing (watched again once it is back)",
                        name, meta.root,
                    )  # fmt: skip
                    self._set(name, "root_missing", w)
                if w is not None:
                    w.stop.set()
            elif moved:  # re-pointed (`index --rebuild`): the old root is no longer its
                assert w is not None and w.watcher is not None
                log.info("watching %s at %s now, not %s", name, meta.root, w.watcher.root)
                self._start(name, w)
            elif not alive and (w is None or w.state != "failed" or time.monotonic() >= w.retry_at):
                self._start(name, w)

    def _set(self, name: str, state: str, old: _Watch | None, **fields: Any) -> _Watch:
        """A new watch record for ``name`` in ``state``, keeping ``old``'s history."""
        w = _Watch(state, time.time(), threading.Event(), **fields)
        if old is not None:
            w.runs, w.last_run, w.failure = old.runs, old.last_run, old.failure
            w.ending = tuple(old.threads())
            if old.watcher is not None:
                w.runs += old.watcher.count
                w.last_run = old.watcher.runs[-1] if old.watcher.runs else w.last_run
                w.failure = old.watcher.failure or w.failure
        with self._lock:
            if not self._stop.is_set():
                self._watches[name] = w
        return w

    def _start(self, name: str, old: _Watch | None) -> None:
        if old is not None:  # never two watches of one index: a run under way ends first
            old.stop.set()
            for t in old.threads():
                t.join(self.poll_s)  # bounded: else the next look tries again
            if old.threads():
                log.info("not watching %s again yet: its last run is under way", name)
                return
        try:
            watcher = Watcher(
                self.service, name, wait=False, step_ms=self.step_ms,
                debounce_ms=self.debounce_ms,
            )  # fmt: skip
        except CtxError as exc:  # dropped, or damaged, since it was listed
            log.warning("not watching %s: %s", name, exc.message)
            return
        w = self._set(name, "watching", old, watcher=watcher)
        w.thread = threading.Thread(
            target=self._watch, args=(name, w), name=f"watch-{name}", daemon=True
        )
        with self._lock:
            if self._watches.get(name) is not w:  # stopping
                return
            w.thread.start()

    def _watch(self, name: str, w: _Watch) -> None:
        assert w.watcher is not None
        try:
            w.watcher.run(w.stop)
        except Exception as exc:  # a thread's edge: a broken watch must not end the server
            log.error("watching %s failed: %s: %s; retrying in %.0f s",
                      name, type(exc).__name__, exc, self.retry_s)  # fmt: skip
            error = f"{type(exc).__name__}: {exc}"
        else:
            if w.stop.is_set() or w.watcher.gone:  # gone: the next look stops or moves it
                return
            error = "the watch ended"  # watchfiles stops when its root goes away
        with self._lock:
            replaced = self._watches.get(name) is not w  # its root went, say
        if not replaced:
            self._set(name, "failed", w, error=error, retry_at=time.monotonic() + self.retry_s)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")
