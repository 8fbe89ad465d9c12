"""Deterministic stand-ins at the seams, for fast tests.

The fake embedder hashes words into buckets with hashlib (never Python's
``hash()``, which changes per process), so texts that share words are near.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt


class HashEmbedder:
    def __init__(self, dimension: int = 64, name: str = "hash-64", delay: float = 0.0) -> None:
        self.dimension = dimension
        self.name = name
        self.delay = delay
        self.calls = 0
        self.embedded = 0

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self.calls += 1
        self.embedded += len(texts)
        if self.delay:
            time.sleep(self.delay)
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in re.findall(r"[a-z0-9]+", text.lower()):
                h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "little")
                out[i, h % self.dimension] += 1.0
            norm = float(np.linalg.norm(out[i]))
            out[i] = out[i] / norm if norm else 1.0 / np.sqrt(self.dimension)
        return out


class FailingEmbedder(HashEmbedder):
    """Fails after ``ok_calls`` successful calls, like a model that dies mid-run."""

    def __init__(self, ok_calls: int = 0) -> None:
        super().__init__()
        self.ok_calls = ok_calls

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        if self.calls >= self.ok_calls:
            self.calls += 1
            raise RuntimeError("simulated embedding failure")
        return super().embed(texts)


class HangingEmbedder(HashEmbedder):
    """Answers ``ok_calls`` calls, then blocks until ``release`` is set, like a hung model."""

    def __init__(self, ok_calls: int = 0) -> None:
        super().__init__()
        self.ok_calls = ok_calls
        self.release = threading.Event()
        self.started = 0  # calls begun, hung ones included

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self.started += 1
        if self.calls >= self.ok_calls:
            self.release.wait(timeout=60)
        return super().embed(texts)


class Interrupted(HashEmbedder):
    """Embeds ``ok_calls`` batches, then is interrupted, as a run killed mid-embedding."""

    def __init__(self, ok_calls: int) -> None:
        super().__init__()
        self.ok_calls = ok_calls

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        if self.calls >= self.ok_calls:
            raise KeyboardInterrupt
        return super().embed(texts)


class KillAt:
    """A progress reporter that interrupts the run as stage ``stage`` starts, as a kill
    at that point would (say "commit": everything written, nothing committed)."""

    def __init__(self, stage: str) -> None:
        self.stage = stage

    def start(self, stage: str, total: int | None) -> None:
        if stage == self.stage:
            raise KeyboardInterrupt

    def advance(self, stage: str, n: int = 1) -> None:
        pass

    def finish(self, stage: str) -> None:
        pass
