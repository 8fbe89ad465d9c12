"""Embedding worker processes: one torch thread each, for calls large enough to pay.

On a CPU, torch's own threads scale poorly on this model (a small BERT at
short sequences): two processes of one thread each embed about twice as many
chunks a second as one process of two threads, and spend less CPU per chunk
(``benchmarks/embed_speed.py``). So a large call (an index batch) is sorted
by length, cut into groups of whole model batches, and the groups are handed
to worker processes as each becomes free; the vectors are reassembled in the
call's order. Tiny calls (a query) stay in this process, which keeps its own
copy of the model for them.

Workers are fresh interpreters (``subprocess``, never ``fork``: the parent
has threads), load the model once and stay up. They start on the first large
call; until they are ready, calls run in this process. A worker that dies
fails its call with :class:`EmbedderStalled` and the pool starts anew on the
next call; a worker that cannot load its model turns the pool off (calls run
in this process). Vectors are the same model's: same quantization, same
sequence limit, same batches, so :attr:`name` is the in-process model's.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import pickle
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from ctxsvc.indexers.embed import EmbedderStalled, SentenceTransformerEmbedder, Vectors

log = logging.getLogger(__name__)

MIN_POOLED = 64  # texts in a call below which the pool does not pay for the hand-off
GROUP_BATCHES = 2  # model batches per group handed to a worker: fine enough to balance


@dataclass(frozen=True)
class Recipe:
    """How a worker builds its model: the in-process model's arguments."""

    model: str
    max_seq_tokens: int
    quantize: bool
    batch_size: int


class WorkerPool:
    """``workers`` processes embedding with one thread each; starts on first use."""

    def __init__(self, recipe: Recipe, workers: int, *, timeout: float = 600.0) -> None:
        self.recipe = recipe
        self.workers = workers
        self.timeout = timeout  # seconds without any answer before the pool counts as stalled
        self.name: str | None = None  # the workers' model name, once one reports
        self.failed: str | None = None  # why the workers cannot load the model: pool off
        self._lock = threading.Lock()
        self._procs: list[_Worker] = []
        atexit.register(self.close)

    @property
    def pids(self) -> list[int]:
        """The worker processes' ids (for CPU accounting)."""
        return [w.proc.pid for w in self._procs]

    def start(self) -> None:
        """Start the workers (they load the model in the background); idempotent."""
        with self._lock:
            self._start()

    def ready(self) -> int:
        """How many workers have loaded the model."""
        with self._lock:
            self._poll_ready()
            return sum(w.ready for w in self._procs)

    def embed(self, texts: Sequence[str], dimension: int) -> Vectors | None:
        """The vectors of ``texts``, or None when no worker is ready (embed in process)."""
        if not self._lock.acquire(timeout=self.timeout):
            raise EmbedderStalled("the embedding workers are busy with another call")
        try:
            self._start()
            self._poll_ready()
            if self.failed is not None or not any(w.ready for w in self._procs):
                return None
            return self._dispatch(texts, dimension)
        finally:
            self._lock.release()

    def close(self) -> None:
        """Stop the workers; the next call starts new ones."""
        with self._lock:
            self._stop()

    def _start(self) -> None:
        if not self._procs and self.failed is None:
            self._procs = [_Worker.spawn(self.recipe) for _ in range(self.workers)]

    def _stop(self) -> None:
        procs, self._procs = self._procs, []
        for w in procs:
            w.stop()

    def _poll_ready(self) -> None:
        for w in self._procs:
            while self.failed is None and not w.ready and w.conn.poll(0):
                msg = w.recv_or_none()
                if msg is None:
                    break
                self._hello(w, msg)
            if self.failed is None and not w.ready and w.proc.poll() is not None:
                # Died while loading (out of memory, say): starting more would die too.
                self._hello(
                    w, ("error", f"a worker died loading the model (exit code {w.proc.returncode})")
                )

    def _hello(self, w: _Worker, msg: tuple[Any, ...]) -> None:
        if msg[0] == "error":
            self.failed = str(msg[1])
            log.warning("embedding workers off: %s", self.failed)
            self._stop()
        elif msg[0] == "ready":
            if self.name is None:
                self.name = str(msg[1])
            w.ready = True

    def _died(self, w: _Worker) -> NoReturn:
        code = w.exit_code()
        self._stop()
        raise EmbedderStalled(
            f"an embedding worker process died (exit code {code}); "
            "the workers start anew on the next call"
        )

    def _dispatch(self, texts: Sequence[str], dimension: int) -> Vectors:
        groups = batch_groups(texts, self.recipe.batch_size)
        out = np.empty((len(texts), dimension), dtype=np.float32)
        todo = list(range(len(groups)))[::-1]
        busy: dict[int, int] = {}  # worker index -> the group it embeds
        while todo or busy:
            for k, w in enumerate(self._procs):
                if w.ready and k not in busy and todo:
                    g = todo.pop()
                    try:
                        w.conn.send((g, [texts[i] for i in groups[g]]))
                    except OSError:  # its socket closed: the process is gone
                        self._died(w)
                    busy[k] = g
            got = wait([w.conn for w in self._procs], timeout=self.timeout)
            if not got:
                self._stop()
                raise EmbedderStalled(
                    f"no embedding worker answered within {self.timeout:g} s; "
                    "the workers start anew on the next call"
                )
            for k, w in enumerate(self._procs):
                if w.conn not in got:
                    continue
                msg = w.recv_or_none()
                if msg is None:  # the socket closed: the process is gone or going
                    self._died(w)
                if msg[0] in ("ready", "error"):
                    self._hello(w, msg)
                    if self.failed is not None:
                        raise EmbedderStalled(f"the embedding workers stopped: {self.failed}")
                    continue
                kind, g, payload = msg
                busy.pop(k, None)
                if kind != "ok":
                    raise RuntimeError(f"an embedding worker failed: {payload}")
                out[groups[g]] = payload
        return out


class _Worker:
    def __init__(self, proc: subprocess.Popen[bytes], conn: Connection) -> None:
        self.proc = proc
        self.conn = conn
        self.ready = False

    @classmethod
    def spawn(cls, recipe: Recipe) -> _Worker:
        ours, theirs = socket.socketpair()
        # The workers import the ctxsvc these modules come from (a checkout, a worktree):
        # the directory above ctxsvc/indexers/, as imported (not resolved: in a checkout
        # ctxsvc/indexers links to the indexers/ beside ctxsvc/).
        source = str(Path(__file__).absolute().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (source, os.environ.get("PYTHONPATH", "")) if p
        )}  # fmt: skip
        code = (
            "import sys; from ctxsvc.indexers.embed_workers import serve; serve(int(sys.argv[1]))"
        )
        proc = subprocess.Popen(
            [sys.executable, "-c", code, str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,  # failures come back as messages or exit codes
        )
        theirs.close()
        conn = Connection(ours.detach())
        conn.send(asdict(recipe))
        return cls(proc, conn)

    def recv(self) -> tuple[Any, ...]:
        msg = self.conn.recv()
        assert isinstance(msg, tuple)
        return msg

    def recv_or_none(self) -> tuple[Any, ...] | None:
        try:
            return self.recv()
        except (EOFError, OSError, pickle.UnpicklingError):
            return None  # the process died; the caller sees its exit code

    def exit_code(self) -> int | None:
        try:
            return self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.conn.send(None)
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        with contextlib.suppress(OSError):
            self.conn.close()


def batch_groups(texts: Sequence[str], batch_size: int) -> list[list[int]]:
    """``texts``' positions in the order encode() sorts them, cut into groups of
    :data:`GROUP_BATCHES` whole model batches: each batch holds the texts it holds in
    process. That matters: int8 activations are scaled per batch, so a text's vector
    depends on its batch."""
    order = [int(i) for i in np.argsort([-len(t) for t in texts])]
    size = batch_size * GROUP_BATCHES
    return [order[i : i + size] for i in range(0, len(order), size)]


def serve(fd: int) -> None:
    """A worker's loop: load the model with one thread, then embed what comes."""
    conn = Connection(fd)
    recipe = Recipe(**conn.recv())
    try:
        import torch

        torch.set_num_threads(1)
        torch.set_num_interop_threads(1)
        model = SentenceTransformerEmbedder(
            recipe.model,
            max_seq_tokens=recipe.max_seq_tokens,
            quantize=recipe.quantize,
            batch_size=recipe.batch_size,
        )
    except Exception as exc:  # reported to the parent, which embeds in process instead
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", model.name, model.dimension))
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return  # the parent is gone
        if msg is None:
            return
        g, texts = msg
        try:
            conn.send(("ok", g, model.embed(texts)))
        except Exception as exc:  # one bad call fails that call, not the worker
            conn.send(("fail", g, f"{type(exc).__name__}: {exc}"))


class PooledEmbedder:
    """A sentence-transformers model in this process plus a pool of workers for large calls."""

    def __init__(self, local: SentenceTransformerEmbedder, workers: int) -> None:
        self.local = local
        self.name = local.name
        self.dimension = local.dimension
        recipe = Recipe(local.model_name, local.max_seq_tokens, local.quantize, local.batch_size)
        self.pool = WorkerPool(recipe, workers)
        self.min_pooled = MIN_POOLED

    def embed(self, texts: Sequence[str]) -> Vectors:
        if len(texts) >= self.min_pooled:
            vecs = self.pool.embed(texts, self.dimension)
            if self.pool.name not in (None, self.name):
                self.pool.failed = f"the workers run {self.pool.name}, not {self.name}"
                self.pool.close()
                vecs = None
            if vecs is not None:
                return vecs
        return self.local.embed(texts)

    def close(self) -> None:
        """Stop the worker processes."""
        self.pool.close()


def wait_ready(pool: WorkerPool, timeout: float) -> bool:
    """Start ``pool`` and wait until every worker has loaded its model (benchmarks, tests)."""
    pool.start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pool.failed is not None:
            return False
        if pool.ready() == pool.workers:
            return True
        time.sleep(0.05)
    return False
