"""The threads the routes' blocking calls run in, off the event loop.

The service's calls block (LanceDB, SQLite, parsing), so a route hands its
work to :meth:`Workers.run`, which runs it in a thread of its own and waits
for it without holding the loop: ``/healthz`` answers whatever the other
requests do. The wait can be cancelled (the request's deadline, SIGTERM's
graceful-shutdown timeout); a thread cannot, so its work is *abandoned*: it
runs to its end, its answer is dropped, and the log says so. Abandoned work
keeps its slot until it ends, so that stuck calls cannot pile up threads
without bound (past the limit, requests are refused as overloaded), and the
threads are daemons, so that no stuck call keeps the process alive after the
server has stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

from ctxsvc.errors import Overloaded
from ctxsvc.http.observability import annotate

log = logging.getLogger("ctxsvc.api")

T = TypeVar("T")


class Workers:
    """Runs blocking calls in daemon threads, at most ``limit`` at once."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._busy = 0
        self.abandoned = 0  # running past the request that wanted them

    @property
    def busy(self) -> int:
        """Threads running now, abandoned ones included."""
        return self._busy

    async def run(self, fn: Callable[[], T]) -> T:
        """``fn()`` in a thread, in a copy of the current context (the request's log fields).

        Raises :class:`Overloaded` when ``limit`` threads are running. Cancelled,
        it returns at once and leaves ``fn`` running; the stack it was at goes
        on the request's log line (``abandoned_stack``).
        """
        with self._lock:
            if self._busy >= self.limit:
                raise Overloaded(
                    f"all {self.limit} worker threads are busy "
                    f"({self.abandoned} of them running past their request's deadline)",
                    hint="retry after the given delay",
                )
            self._busy += 1
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        ctx = contextvars.copy_context()
        t0 = time.perf_counter()
        thread = threading.Thread(
            target=self._work, args=(fn, ctx, loop, future, t0), name="ctxsvc-request", daemon=True
        )
        thread.start()
        try:
            return await future
        except asyncio.CancelledError:
            if not future.done() or future.cancelled():
                with self._lock:
                    self.abandoned += 1
                annotate(abandoned_stack=_stack(thread))
            raise

    def _work(
        self,
        fn: Callable[[], T],
        ctx: contextvars.Context,
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[T],
        t0: float,
    ) -> None:
        outcome: tuple[Any, BaseException | None]
        try:
            outcome = (ctx.run(fn), None)
        except BaseException as exc:  # handed to the waiting request, which raises it
            outcome = (None, exc)
        finally:
            with self._lock:
                self._busy -= 1
        with contextlib.suppress(RuntimeError):  # a closed loop: the server stopped meanwhile
            loop.call_soon_threadsafe(self._settle, future, outcome, ctx, t0)

    def _settle(
        self,
        future: asyncio.Future[T],
        outcome: tuple[Any, BaseException | None],
        ctx: contextvars.Context,
        t0: float,
    ) -> None:
        value, error = outcome
        if future.cancelled():
            with self._lock:
                self.abandoned -= 1
            seconds = round(time.perf_counter() - t0, 3)
            ctx.run(
                log.warning,
                "abandoned work finished",
                extra={"seconds": seconds, "outcome": type(error).__name__ if error else "ok"},
            )
        elif error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)


def _stack(thread: threading.Thread) -> str:
    frame = sys._current_frames().get(thread.ident or -1)
    if frame is None:
        return "(the thread had just finished)"
    return "".join(traceback.format_stack(frame))
