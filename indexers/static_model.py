"""The static tier: a model2vec model distilled from a sentence-transformers model.

``--model static`` (or ``static:<source>``, a bundled name or a local model
path) embeds a text as the mean of per-token vectors: no transformer runs,
so it embeds thousands of chunks a second on one core, with weaker vectors.
The token vectors are distilled offline from the source model once, on
first use, into ``<cache_dir>/static-<source>-<params>/``; later processes
load that directory with model2vec alone (numpy and tokenizers; no torch).

The name (``static:<source>@m2v0.10-pca256``) differs from every
transformer's, so an index never mixes the two kinds of vectors; it names
the distillation parameters, which change the vectors.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ctxsvc.errors import ModelUnavailable
from ctxsvc.indexers.embed import ModelSpec, Vectors
from ctxsvc.indexers.model_files import model_path, read_dimension

log = logging.getLogger(__name__)

STATIC = "static"
DEFAULT_SOURCE = "all-MiniLM-L6-v2"
PCA_DIMS = 256
# Texts are cut at model2vec's default 512 tokens. Any change to the
# distillation or to this limit changes the vectors: give it a new tag.
MAX_TOKENS = 512
TAG = f"m2v0.10-pca{PCA_DIMS}"
BATCH = 1024


def is_static(model: str) -> bool:
    """Whether ``model`` names the static tier: ``static`` or ``static:<source>``."""
    return model == STATIC or model.startswith(STATIC + ":")


def source_of(model: str) -> str:
    """The sentence-transformers model a static ``model`` is distilled from."""
    return DEFAULT_SOURCE if model == STATIC else model.split(":", 1)[1]


def describe(model: str) -> ModelSpec | None:
    """The spec of a static model, from the parameters (distilled or not yet).

    None when the source model is not on disk, or its dimension is below the
    PCA target (then the loader decides).
    """
    source = source_of(model)
    path = model_path(source)
    try:
        dimension = read_dimension(path) if path is not None else None
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if dimension is None or dimension < PCA_DIMS:
        return None
    return ModelSpec(model, f"{STATIC}:{source}@{TAG}", PCA_DIMS)


def cache_path(model: str, cache_dir: Path) -> Path:
    """Where the static model distilled for ``model`` lives."""
    source = source_of(model)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(source).name or source)[:60]
    if source != DEFAULT_SOURCE:  # two local paths may share a last component
        slug += "-" + hashlib.sha256(source.encode()).hexdigest()[:8]
    return cache_dir / f"static-{slug}-{TAG}"


class StaticEmbedder:
    """A model2vec static model: unit-length float32 vectors, no transformer."""

    def __init__(self, model: str, path: Path) -> None:
        from model2vec import StaticModel

        self.model_name = model
        self.path = path
        self._model: Any = StaticModel.from_pretrained(path, normalize=True, force_download=False)
        self.dimension = int(self._model.dim)
        self.name = f"{STATIC}:{source_of(model)}@{TAG}"

    def embed(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        out = self._model.encode(
            list(texts),
            max_length=MAX_TOKENS,
            batch_size=BATCH,
            show_progress_bar=False,
            use_multiprocessing=False,  # joblib would fork a threaded process
        )
        vecs = np.asarray(out, dtype=np.float32)
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        # A text of no known token has a zero vector: leave it zero, not NaN.
        unit: Vectors = np.divide(vecs, norms, out=np.zeros_like(vecs), where=norms > 0)
        return unit


def load(model: str, cache_dir: Path) -> StaticEmbedder:
    """The static model for ``model``, distilled into ``cache_dir`` first when not there.

    Raises :class:`ModelUnavailable` when it can be neither loaded nor distilled.
    """
    path = cache_path(model, cache_dir)
    try:
        if not (path / "config.json").is_file():
            distill(model, cache_dir)
        return StaticEmbedder(model, path)
    except ModelUnavailable:
        raise
    except Exception as exc:  # any failure is one typed error: the caller degrades
        raise ModelUnavailable(
            f"static model {model!r} could not be loaded: {type(exc).__name__}: {exc}",
            hint=f"remove {path} to distil it again, use a transformer model, "
            "or index with --no-vectors",
        ) from exc


def distill(model: str, cache_dir: Path) -> Path:
    """Distil the static model for ``model`` into the cache, once; its directory.

    It is written to a temporary directory beside the cache and renamed into
    place, so a crash never leaves half a model; a lock file keeps two
    processes from distilling the same model at once.
    """
    path = cache_path(model, cache_dir)
    source = source_of(model)
    local = model_path(source)
    if local is None:
        raise ModelUnavailable(
            f"the static model's source {source!r} is not on disk",
            hint="name the bundled all-MiniLM-L6-v2 or a local model directory",
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / f".{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (path / "config.json").is_file():
            return path  # another process distilled it while this one waited
        started = time.perf_counter()
        log.warning("distilling the static model from %s, once (about a minute)", source)
        static = _distill(local)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=cache_dir))
        try:
            static.save_pretrained(tmp)
            if path.exists():  # a half-removed leftover: never a model (no rename got there)
                shutil.rmtree(path)
            os.rename(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(tmp)
        log.info(
            "static model distilled",
            extra={"path": str(path), "seconds": round(time.perf_counter() - started, 1)},
        )
    return path


def _distill(source: Path) -> Any:
    from model2vec.distill import distill as m2v_distill
    from model2vec.distill import inference
    from tqdm import tqdm
    from transformers.utils import logging as hf_logging

    # No progress bars: a server's log or an MCP client's stderr is no terminal.
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    setattr(inference, "tqdm", functools.partial(tqdm, disable=True))  # noqa: B010
    return m2v_distill(str(source), pca_dims=PCA_DIMS, device="cpu")
