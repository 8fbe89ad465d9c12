"""Vectors fill in behind a committed index.

An index run commits text, symbols and the graph without waiting for the
model (see :mod:`ctxsvc.indexing`); this loop then embeds every chunk that
has no vector, shortest texts first so batches pad little, and stores each
batch as it comes. The repository lock is held only to store a batch and to
commit, never while the model runs, so an index run or a query's refresh
waits a moment at most, and commits between two batches; the loop then reads
the new index and goes on with what it lacks. Every ``COMMIT_SECONDS`` the
``repos`` row pins the vectors stored so far, so answers use a growing share.
Killed at any point, it loses one batch at most: the next run starts from
the vectors stored.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from ctxsvc.errors import CtxError, IndexBusy, ModelUnavailable, StoreError
from ctxsvc.indexers.embed import Embedder, EmbedderStalled, ModelLoading, call_size
from ctxsvc.indexing import Reporter
from ctxsvc.models import IndexSummary, StageTiming
from ctxsvc.settings import Settings
from ctxsvc.stores.lance import IndexMeta, LanceStore
from ctxsvc.stores.lance_vectors import VectorWriter, index_vectors, index_wanted
from ctxsvc.stores.locks import FileLock

log = logging.getLogger("ctxsvc.index")

BATCH = 128  # chunks per stored batch: the most a kill can lose (more on a Ray pool)
COMMIT_SECONDS = 10.0  # how often readers are shown the vectors stored so far
RETRIES = 5  # tries of one batch while the model is paused, then the fill stops
RETRY_SECONDS = 10.0  # times the try: a paused model resumes after 30 s


@dataclass(frozen=True)
class Filled:
    """What one fill did: the index's vector status after it, and why it stopped early."""

    vectors: str  # "complete", "partial" (stopped or the model failed) or "gone"
    embedded: int  # chunks embedded by this fill
    seconds: float
    missing: int  # chunks of the index still without a vector
    warning: str | None = None
    # Why the approximate vector index could not be built (the fill itself went well).
    index_warning: str | None = None


Progress = Callable[[int, int], None]  # (embedded so far, to embed in all)


def fill_vectors(
    store: LanceStore,
    name: str,
    settings: Settings,
    embedder: Embedder,
    *,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
) -> Filled:
    """Embed every chunk of index ``name`` that has no vector, until none is left.

    Raises ``IndexBusy`` at once when another process fills them. Stops early
    when ``stop`` is set, when the index is dropped or re-embedded
    with another model (``"gone"``), or when the model fails (a warning says
    why; the vectors stored so far stay).
    """
    # One filler per index at a time: a second one (another process) would embed the same.
    with FileLock(settings.locks_path / f"{name}.fill.lock", f"filling the vectors of {name!r}"):
        return _fill(store, name, settings.locks_path / f"{name}.lock", embedder, progress, stop)


def _fill(
    store: LanceStore,
    name: str,
    lock: Path,
    embedder: Embedder,
    progress: Progress | None,
    stop: threading.Event | None,
) -> Filled:
    t0 = time.perf_counter()
    done = 0
    indexed: str | None = None  # set once the approximate index was seen to: its warning
    while True:
        # Read outside the lock (a big index takes a while), check it is current under it.
        writer = _writer(store, store.meta(name), embedder)
        if writer is None:
            return Filled("gone", done, time.perf_counter() - t0, 0)
        with FileLock(lock, f"index {name!r}", wait=True):
            current = store.meta(name)
            if current is None or current.text_pins() != writer.meta.text_pins():
                continue  # a run committed meanwhile
            todo = sorted(writer.missing().items(), key=lambda kv: len(kv[1]))
            if not todo and writer.meta.vectors != "complete":
                writer.commit()
        if not todo:
            if indexed is not None:
                seconds = time.perf_counter() - t0
                return Filled("complete", done, seconds, 0, index_warning=indexed or None)
            # Outside the index's lock (a large build takes minutes); then once more
            # round, for what a run stored meanwhile.
            indexed = index_vectors(store, name, lock) or ""
            continue
        if progress is not None:
            progress(done, done + len(todo))
        committed = time.monotonic()
        i = retries = 0
        while i < len(todo):
            if stop is not None and stop.is_set():
                return _stopped(store, name, lock, writer, done, t0, None)
            batch = todo[i : i + call_size(embedder, BATCH)]
            try:
                vectors = embedder.embed([text for _, text in batch])
            except ModelUnavailable as exc:  # a model loaded on first use may fail then
                why = f"{exc.message}; the chunks without a vector wait for a run that loads it"
                log.warning(why, extra={"repo": name})
                return _stopped(store, name, lock, writer, done, t0, why)
            except (ModelLoading, EmbedderStalled) as exc:
                # Passing: a model still loading, or paused after a slow call (a query's
                # timeout trips the same breaker). Wait, then the same batch again.
                retries += 1
                if retries > RETRIES:
                    why = f"embedding stopped after {done} chunks: {exc}"
                    return _stopped(store, name, lock, writer, done, t0, why)
                waiter = getattr(embedder, "wait", None)
                if isinstance(exc, ModelLoading) and waiter is not None:
                    waiter(None)
                else:
                    time.sleep(RETRY_SECONDS * retries)
                continue
            except CtxError:
                raise
            except Exception as exc:  # the model failing degrades the index, never loses it
                why = (
                    f"embedding failed after {done} chunks ({type(exc).__name__}: {exc}); "
                    "the rest have no vector until the next run"
                )
                log.warning(why, extra={"repo": name})
                return _stopped(store, name, lock, writer, done, t0, why)
            retries = 0
            i += len(batch)
            with FileLock(lock, f"index {name!r}", wait=True):
                current = store.meta(name)
                if current is None or current.text_pins() != writer.meta.text_pins():
                    # A run committed (or dropped and re-made the index): store the batch
                    # in the vectors table the row names now, then read what it lacks.
                    fresh = _writer(store, current, embedder)
                    if fresh is not None:
                        fresh.add([h for h, _ in batch], vectors)
                        done += len(batch)
                    break
                writer.add([h for h, _ in batch], vectors)
                done += len(batch)
                if time.monotonic() - committed >= COMMIT_SECONDS:
                    writer.commit()
                    committed = time.monotonic()
            if progress is not None:
                progress(done, done + len(todo) - i)


def _writer(store: LanceStore, meta: IndexMeta | None, embedder: Embedder) -> VectorWriter | None:
    """A writer of ``meta``'s vectors, when it holds ``embedder``'s (else None: gone)."""
    if meta is None or meta.model != embedder.name or meta.dimension is None:
        return None
    if meta.vectors == "disabled" or "vectors" not in meta.versions:
        return None
    return VectorWriter(store, meta)


def _stopped(
    store: LanceStore,
    name: str,
    lock: Path,
    writer: VectorWriter,
    done: int,
    t0: float,
    warning: str | None,
) -> Filled:
    """Commit what is stored, when the row still pins the text it was embedded for."""
    try:
        with FileLock(lock, f"index {name!r}", wait=True):
            current = store.meta(name)
            if current is not None and current.text_pins() == writer.meta.text_pins():
                writer.commit()
    except StoreError as exc:  # the batches are stored: the next run pins them
        log.warning("committing vectors failed", extra={"repo": name, "error": exc.message})
    return Filled("partial", done, time.perf_counter() - t0, len(writer.missing()), warning)


class Filler:
    """Fills the vectors of this data directory's indexes with ``embedder``'s model:
    :meth:`now` while the caller waits, or :meth:`behind` in a thread per index
    (a server's way: its answers say the share so far)."""

    def __init__(self, store: LanceStore, settings: Settings, embedder: Embedder) -> None:
        self.store = store
        self.settings = settings
        self.embedder = embedder
        self._threads: dict[str, threading.Thread] = {}
        self._again: set[str] = set()
        self._active: dict[str, int] = {}  # fills the caller waits for, by index
        self._one = threading.Lock()
        self._problems: dict[str, str] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def now(self, summary: IndexSummary, reporter: Reporter) -> IndexSummary:
        """Fill the vectors ``summary``'s run left missing; the summary says what was done.

        A background fill of this process on that index is waited for first.
        """
        name = summary.repo
        with self._lock:
            self._active[name] = self._active.get(name, 0) + 1
            behind = self._threads.get(name)
        shown = [-1]

        def progress(done: int, total: int) -> None:
            if shown[0] < 0:
                reporter.start("embed", total)
                shown[0] = 0
            reporter.advance("embed", done - shown[0])
            shown[0] = done

        try:
            if behind is not None:
                behind.join()
            filled = fill_vectors(self.store, name, self.settings, self.embedder, progress=progress)
        except CtxError as exc:  # the text is committed: the run is not lost for its vectors
            return replace(summary, warnings=(*summary.warnings, f"vectors: {exc.message}"))
        finally:
            if shown[0] >= 0:
                reporter.finish("embed")
            with self._lock:
                self._active[name] -= 1
        embedding = summary.vectors != "complete"  # else only the approximate index was due
        if embedding:
            log.info(
                "stage done",
                extra={
                    "stage": "embed", "seconds": round(filled.seconds, 3),
                    "items": filled.embedded,
                },
            )  # fmt: skip
        with self._lock:
            if filled.warning:
                self._problems[name] = filled.warning
            else:
                self._problems.pop(name, None)
        vectors = summary.vectors if filled.vectors == "gone" else filled.vectors
        return replace(
            summary,
            chunks_embedded=filled.embedded,
            vectors=vectors,
            vectors_missing=filled.missing if filled.vectors != "gone" else summary.vectors_missing,
            timings=(
                *summary.timings,
                *([StageTiming("embed", filled.seconds, filled.embedded)] if embedding else []),
            ),
            warnings=(
                *summary.warnings,
                *(w for w in (filled.warning, filled.index_warning) if w),
            ),
        )

    def index_wanted(self, name: str) -> bool:
        """Whether the complete vectors of ``name`` still want their approximate index
        built (or dropped): a fill with nothing to embed does that."""
        return index_wanted(self.store, name)

    def behind(self, name: str) -> None:
        """Fill the vectors of ``name`` in a background thread (one per index: a call
        while it runs makes it look again when done). Threads embed one at a time."""
        with self._lock:
            if self._stop.is_set():
                return
            if name in self._threads:
                self._again.add(name)
                return
            thread = threading.Thread(
                target=self._run, args=(name,), name=f"fill-{name}", daemon=True
            )
            self._threads[name] = thread
            thread.start()  # under the lock: now() may join it as soon as it is listed

    def filling(self, name: str) -> bool:
        """Whether a thread of this process fills ``name``'s vectors now."""
        with self._lock:
            return self._active.get(name, 0) > 0 or name in self._threads

    def problem(self, name: str) -> str | None:
        """Why the last fill of ``name`` in this process stopped short, if it did."""
        with self._lock:
            return self._problems.get(name)

    def close(self) -> None:
        """Stop filling: each thread commits what it stored and ends after its batch."""
        self._stop.set()

    def _run(self, name: str) -> None:
        while True:
            with self._one:  # one model: two fills at once only queue on it
                problem = self._fill_once(name)
            with self._lock:
                if problem:
                    self._problems[name] = problem
                else:
                    self._problems.pop(name, None)
                again = name in self._again and not problem and not self._stop.is_set()
                self._again.discard(name)
                if not again:
                    del self._threads[name]
                    return

    def _fill_once(self, name: str) -> str | None:
        """One fill of ``name``; why it stopped short, if it did."""
        try:
            return fill_vectors(
                self.store, name, self.settings, self.embedder, stop=self._stop
            ).warning
        except IndexBusy:
            return None  # another process fills them
        except CtxError as exc:
            log.warning("filling vectors failed", extra={"repo": name, "error": exc.message})
            return f"{exc.code}: {exc.message}"
        except Exception as exc:  # a background thread must say why it died, not vanish
            log.exception("filling vectors failed", extra={"repo": name})
            return f"{type(exc).__name__}: {exc}"
