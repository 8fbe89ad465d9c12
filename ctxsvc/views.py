"""The views one process holds of its indexes: each loaded once per index generation.

A view is loaded when a request first meets a generation that an index run
committed (in this process or another). Loading a large repository's view
takes a second or more: every chunk, symbol and reference is read and the
code graph built. A request that may be answered from the generation before
(a query: ``wait=False``) waits for it only ``grace`` seconds
(``CTXSVC_VIEW_WAIT_MS``): the load runs in a thread of its own, one per
index, and the view held answers after the grace until it is done (the
caller flags such an answer). A small index loads within the grace, so a
query after an index job sees what the job wrote. A request that must see
the newest waits for it: an index run's listeners, a query that refreshed,
checkpoint facts, a status.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import threading

from ctxsvc.errors import CtxError, StoreError
from ctxsvc.stores.lance import IndexMeta, LanceStore
from ctxsvc.view import RepoView

log = logging.getLogger(__name__)
VIEW_ATTEMPTS = 3  # view loads a run committing meanwhile may restart


class Views:
    """The loaded view of each index, by name. Safe to share between threads."""

    def __init__(self, store: LanceStore, grace: float = 0.25) -> None:
        self.store = store
        self.grace = grace
        self._views: dict[str, RepoView] = {}
        self._lock = threading.Lock()  # guards the dicts, never held across a load
        self._loads: dict[str, threading.Lock] = {}  # held by the load of an index's view
        # Indexes whose next view loads in the background, each with an event set when done.
        self._behind: dict[str, threading.Event] = {}
        self._failed: dict[str, IndexMeta] = {}  # the row a background load failed on

    def get(self, meta: IndexMeta, *, wait: bool = True) -> RepoView:
        """The view of ``meta``'s generation, loaded once.

        Loaded from the row committed now (``meta`` or a later one). If a read
        found its pinned files gone because a run committed meanwhile, the view
        is loaded again from the new row; damage raises ``StoreCorrupt``.
        Without ``wait``, the new view is loaded in the background and waited
        for ``grace`` seconds; after that, the view held of an earlier
        generation of the same root is returned while it loads on, unless a
        background load of this row failed (then this call loads, and raises).
        """
        with self._lock:
            cached = self._views.get(meta.name)
            if cached is not None and cached.meta == meta:
                return cached
            early = (
                not wait
                and cached is not None
                # An earlier generation of the same directory (a drop and a new index
                # start again at 1; a directory replaced at the same path is another).
                and cached.meta.generation < meta.generation
                and (cached.meta.root, cached.meta.root_identity) == (meta.root, meta.root_identity)
                and cached.meta.pins() != meta.pins()  # else relabelling is free: done here
                and self._failed.get(meta.name) != meta
            )
        if cached is not None and early:
            self._load_behind(meta).wait(self.grace)
            with self._lock:
                now = self._views.get(meta.name, cached)
                failed = self._failed.get(meta.name) == meta
            if not failed:
                return now  # the new view if it loaded in time (or a later one), else the held one
        # One load per index at a time; other indexes' views do not wait.
        with self._loading(meta.name):
            with self._lock:
                cached = self._views.get(meta.name)
            if cached is not None and cached.meta == meta:
                return cached  # loaded by the request this one waited for
            view = self._load(meta.name, cached)
            with self._lock:
                self._views[meta.name] = view
                self._failed.pop(meta.name, None)
        if cached is not None:
            del cached
            trim_heap()  # the previous generation is garbage now
        return view

    def held(self) -> list[RepoView]:
        """Every view loaded now."""
        with self._lock:
            return list(self._views.values())

    def forget(self, name: str) -> None:
        """Drop ``name``'s view, after a load under way (it would cache the view)."""
        with self._loading(name), self._lock:
            self._views.pop(name, None)
            self._failed.pop(name, None)

    def holds(self, name: str) -> bool:
        """Whether a view of ``name`` is loaded."""
        with self._lock:
            return name in self._views

    def loading(self, name: str) -> bool:
        """Whether a background load of ``name``'s newest view is under way."""
        with self._lock:
            return name in self._behind

    def _load(self, name: str, cached: RepoView | None) -> RepoView:
        for _ in range(VIEW_ATTEMPTS):
            reader = self.store.reader(name)
            if cached is not None and reader.meta == cached.meta:
                return cached  # the row asked for was older than the view
            # A rebuild writes new tables: names and versions tell generations apart.
            if cached is not None and reader.meta.pins() == cached.meta.pins():
                view = cached.relabelled(reader)  # a run with no file changed (HEAD moved)
            elif cached is not None and reader.meta.text_pins() == cached.meta.text_pins():
                view = cached.with_vectors(reader)  # a fill committed more vectors
            else:
                view = RepoView.load(reader)
            if not reader.moved:
                self.store.repaired(name, view.meta)
                return view
        raise StoreError(
            f"index {name!r} changed {VIEW_ATTEMPTS} times while its view loaded",
            hint="index runs are committing one after another; retry",
        )

    def _load_behind(self, meta: IndexMeta) -> threading.Event:
        """Load ``meta``'s index's newest view in a thread of its own, one at a time;
        the event is set when that load is done (or failed)."""
        name = meta.name
        with self._lock:
            done = self._behind.get(name)
            if done is not None:
                return done
            done = self._behind[name] = threading.Event()

        def run() -> None:
            try:
                self.get(meta)
            except Exception as exc:  # a thread of its own: nothing above it would log it
                try:
                    row = self.store.meta(name) or meta  # the row it loaded: the newest
                except CtxError:
                    row = meta
                with self._lock:
                    self._failed[name] = row
                why = exc.message if isinstance(exc, CtxError) else f"{type(exc).__name__}: {exc}"
                log.warning(
                    "loading an index's new view failed: the next query loads it and says why",
                    extra={"repo": name, "generation": meta.generation, "error": why},
                    exc_info=not isinstance(exc, CtxError),
                )
            finally:
                with self._lock:
                    del self._behind[name]
                done.set()

        threading.Thread(target=run, name=f"view-load-{name}", daemon=True).start()
        return done

    def _loading(self, name: str) -> threading.Lock:
        with self._lock:
            return self._loads.setdefault(name, threading.Lock())


def trim_heap() -> None:
    """Hand freed heap pages back to the OS (glibc's malloc_trim); nothing elsewhere.

    Without it a long-running server keeps the high-water mark of every
    re-index and view load, and its RSS climbs in steps.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
