"""Embedding fan-out on Ray (``--executor ray``, ``CTXSVC_EMBED_EXECUTOR=ray``).

A cold index of a large repository is nearly all embedding. This spreads a
large call over a pool of Ray actors, each holding its own copy of the model
on one thread, on the machines of a Ray cluster (``RAY_ADDRESS``) or on a
local instance that the first call starts (``ray.init()``). Only the vectors
travel back: the writer stays single, in this process, and commits as it
does without Ray.

The vectors are the same model's as in process: the actors build it from
the same recipe, and a call is cut into the whole model batches that
``encode()`` would make in process (int8 activations are scaled per batch,
so a text's vector depends on its batch: :func:`batch_groups`). Small calls
(a query) stay in this process, on its own copy of the model. A pool larger
than the default call (``call_size``: two groups per actor) is handed larger
calls, whose batches then hold other neighbours than a local run's: with int8
the vectors of the same chunks then differ in the last digits, as they do
between two local runs whose calls are cut differently.

Failures are typed as the worker pool's are: an actor that dies, or no
answer within the timeout, fails the call with :class:`EmbedderStalled`
(retryable) and the actors start anew on the next call; actors that cannot
load the model, or load another one, raise :class:`ModelUnavailable`.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ctxsvc.errors import ModelUnavailable
from ctxsvc.indexers.embed import Embedder, EmbedderStalled, Vectors
from ctxsvc.indexers.embed_workers import GROUP_BATCHES, MIN_POOLED, batch_groups

log = logging.getLogger(__name__)

IN_FLIGHT = 2  # groups queued per actor: one embedding, one on its way
STATIC_GROUP = 512  # texts an actor of the static tier is given at once, at most
MAX_ACTORS = 64
FREE_WAIT_SECONDS = 10.0  # for the CPUs of stopped actors to come back, at a pool's start


@dataclass(frozen=True)
class RayRecipe:
    """How an actor builds its model: the arguments of this process's."""

    model: str
    max_seq_tokens: int
    quantize: bool
    batch_size: int
    cache_dir: str  # where the static tier's distilled model lies (or is distilled to)
    static: bool


def missing() -> str | None:
    """Why Ray cannot be used here (not installed), or None."""
    try:
        import ray  # noqa: F401
    except ImportError as exc:
        return f"Ray is not installed ({exc})"
    return None


class RayEmbedder:
    """``local`` for small calls; large calls fanned out to ``actors`` Ray actors.

    ``actors`` 0: one per CPU of the Ray cluster, at most :data:`MAX_ACTORS`.
    """

    def __init__(
        self, local: Embedder, recipe: RayRecipe, actors: int = 0, *, timeout: float = 600.0
    ) -> None:
        why = missing()
        if why is not None:
            raise ModelUnavailable(
                f"--executor ray: {why}", hint="pip install 'ctxsvc[ray]', or index without it"
            )
        self.local = local
        self.name = local.name
        self.dimension = int(local.dimension)
        self.recipe = recipe
        self.actors = actors
        self.timeout = timeout  # seconds without any answer before the call counts as stalled
        self.min_pooled = MIN_POOLED
        self._lock = threading.Lock()
        self._held = _Held()
        # At exit or collection, whichever comes first: the actors and a local instance stop.
        weakref.finalize(self, self._held.release)

    @property
    def size(self) -> int:
        """How many actors are up."""
        return len(self._held.pool)

    @property
    def call_size(self) -> int:
        """Texts per call that keep every actor busy (:func:`ctxsvc.indexers.embed.call_size`):
        :data:`IN_FLIGHT` groups each, once the actors are up."""
        per_group = STATIC_GROUP if self.recipe.static else self.recipe.batch_size * GROUP_BATCHES
        return max(len(self._held.pool), 1) * IN_FLIGHT * per_group

    def start(self) -> None:
        """Connect to Ray and start the actors (each loads the model); idempotent."""
        with self._lock:
            self._start()

    def embed(self, texts: Sequence[str]) -> Vectors:
        if len(texts) < self.min_pooled:
            return self.local.embed(texts)
        if not self._lock.acquire(timeout=self.timeout):
            raise EmbedderStalled("the Ray actors are busy with another call")
        try:
            self._start()
            import ray

            try:
                return self._dispatch(texts)
            except (ray.exceptions.RayError, ConnectionError) as exc:  # Ray itself is gone
                self._stop()
                raise EmbedderStalled(
                    f"Ray failed under the call ({type(exc).__name__}: {_why(exc)}); "
                    "the actors start anew on the next call"
                ) from exc
        finally:
            self._lock.release()

    def close(self) -> None:
        """Stop the actors, and the local Ray instance when this process started it (a
        call under way that holds the pool past the timeout is not waited for)."""
        locked = self._lock.acquire(timeout=self.timeout)
        try:
            self._held.release()
        finally:
            if locked:
                self._lock.release()

    def _start(self) -> None:
        if self._held.pool:
            return
        import ray

        if not ray.is_initialized():
            _init_ray()
            self._held.started_ray = True  # shutdown() stops a local instance, leaves a cluster
        cpus = int(ray.cluster_resources().get("CPU", 0))  # type: ignore[no-untyped-call]
        wanted = min(self.actors or cpus, MAX_ACTORS)
        # Actors just stopped (a pool started anew) give their CPUs back a moment later.
        deadline = time.monotonic() + FREE_WAIT_SECONDS
        while True:
            free = int(ray.available_resources().get("CPU", 0))  # type: ignore[no-untyped-call]
            if free >= wanted or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if free < 1:
            raise EmbedderStalled(
                f"the Ray cluster has no free CPU ({cpus} in all): the actors wait for one"
            )
        # An actor holds a CPU until it stops: no more than are free, or they would wait.
        count = min(wanted, free)
        actor = _actor_class()
        pool = [actor.remote(self.recipe) for _ in range(count)]
        try:
            hellos = ray.get([a.hello.remote() for a in pool], timeout=self.timeout)
        except Exception as exc:  # a load that fails, or takes past the timeout
            _kill(pool)
            raise ModelUnavailable(
                f"the Ray actors could not load {self.recipe.model!r}: {_why(exc)}",
                hint="check that ctxsvc and the model are installed on every Ray node",
            ) from exc
        for name, dimension in hellos:
            if name != self.name or dimension != self.dimension:
                _kill(pool)
                raise ModelUnavailable(
                    f"a Ray actor loaded {name} ({dimension} dimensions), not {self.name} "
                    f"({self.dimension}): its vectors would not match",
                    hint="install the same ctxsvc and model versions on every Ray node",
                )
        log.info("ray actors ready", extra={"actors": count, "cpus": cpus, "model": self.name})
        self._held.pool = pool

    def _stop(self) -> None:
        pool, self._held.pool = self._held.pool, []
        _kill(pool)

    def _dispatch(self, texts: Sequence[str]) -> Vectors:
        import ray

        if self.recipe.static:  # no batches to keep: an even share per slot, in order
            share = -(-len(texts) // (len(self._held.pool) * IN_FLIGHT))
            size = min(STATIC_GROUP, max(MIN_POOLED, share))
            groups = [list(range(i, min(i + size, len(texts)))) for i in range(0, len(texts), size)]
        else:
            groups = batch_groups(texts, self.recipe.batch_size)
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        todo = list(range(len(groups)))[::-1]
        running: dict[Any, tuple[int, int]] = {}  # ref -> (group, actor)
        load = [0] * len(self._held.pool)
        while todo or running:
            for k, a in enumerate(self._held.pool):
                while todo and load[k] < IN_FLIGHT:
                    g = todo.pop()
                    running[a.embed.remote([texts[i] for i in groups[g]])] = (g, k)
                    load[k] += 1
            done, _ = ray.wait(list(running), num_returns=1, timeout=self.timeout)
            if not done:
                self._stop()
                raise EmbedderStalled(
                    f"no Ray actor answered within {self.timeout:g} s; "
                    "the actors start anew on the next call"
                )
            for ref in done:
                g, k = running.pop(ref)
                load[k] -= 1
                try:
                    out[groups[g]] = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:  # the call failed, not the actor
                    for other in running:
                        ray.cancel(other)
                    raise RuntimeError(f"a Ray actor failed to embed: {_why(exc)}") from exc
                except ray.exceptions.RayError as exc:  # the actor (or its node) is gone
                    self._stop()
                    raise EmbedderStalled(
                        f"a Ray actor was lost ({type(exc).__name__}); "
                        "the actors start anew on the next call"
                    ) from exc
        return out


class _Held:
    """What a :class:`RayEmbedder` holds in Ray: its actors, and whether it started the
    local instance (released by ``close``, or at exit or collection)."""

    def __init__(self) -> None:
        self.pool: list[Any] = []
        self.started_ray = False  # this process started the local instance: it stops it

    def release(self) -> None:
        pool, self.pool = self.pool, []
        _kill(pool)
        if self.started_ray:
            import ray

            self.started_ray = False
            ray.shutdown()


def _init_ray() -> None:
    """``ray.init()`` (``RAY_ADDRESS`` names a cluster to join; without it a local instance
    starts), called on a thread that lives as long as this process. A local instance's
    daemons are killed when the *thread* that started them ends (Ray sets the parent-death
    signal on them, and Linux sends it at the thread's exit), so not a model loader's
    thread, nor a call's."""
    import ray

    done = threading.Event()
    failed: list[BaseException] = []

    def own() -> None:
        try:
            ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
        except BaseException as exc:  # handed to the caller
            failed.append(exc)
        finally:
            done.set()
        threading.Event().wait()  # never set: the daemons live until the process ends

    threading.Thread(target=own, name="ray-owner", daemon=True).start()
    done.wait()
    if failed:
        raise failed[0]


def _actor_class() -> Any:
    import ray

    @ray.remote(num_cpus=1)
    class EmbedActor:
        """One copy of the model on one thread."""

        def __init__(self, recipe: RayRecipe) -> None:
            from pathlib import Path

            from ctxsvc.indexers.embed import load_embedder

            self.model = load_embedder(
                recipe.model,
                max_seq_tokens=recipe.max_seq_tokens,
                quantize=recipe.quantize,
                batch_size=recipe.batch_size,
                threads=1,
                cache_dir=Path(recipe.cache_dir),
                workers=1,  # this actor embeds in its own process
            )

        def hello(self) -> tuple[str, int]:
            return str(self.model.name), int(self.model.dimension)

        def embed(self, texts: list[str]) -> Vectors:
            return self.model.embed(texts)

    return EmbedActor


def _kill(pool: list[Any]) -> None:
    if not pool:
        return
    import ray

    for a in pool:
        try:
            ray.kill(a)
        except Exception:  # already gone, or Ray is shutting down: nothing to stop
            log.debug("ray actor already gone", exc_info=True)


def _why(exc: BaseException) -> str:
    """The first line of ``exc``'s message (Ray wraps the remote traceback)."""
    cause = getattr(exc, "cause", None)
    inner = cause if isinstance(cause, BaseException) else exc
    text = str(inner).strip().splitlines()
    return f"{type(inner).__name__}: {text[-1] if text else ''}"
