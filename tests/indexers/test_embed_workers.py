"""Embedding worker processes: the same vectors as in process, and no hang when one dies."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ctxsvc.compose import build_service
from ctxsvc.indexers.embed import EmbedderStalled, GuardedEmbedder, SentenceTransformerEmbedder
from ctxsvc.indexers.embed_workers import MIN_POOLED, PooledEmbedder, Recipe, WorkerPool, wait_ready
from ctxsvc.settings import Settings

pytestmark = pytest.mark.slow  # real model, real processes

TEXTS = [
    f"def handler_{i}(request):\n    " + "value = compute(request.args) + 1\n    " * (i % 40)
    + f"return respond(value, status={200 + i % 7})"
    for i in range(150)
]  # fmt: skip


@pytest.fixture(scope="module")
def pooled() -> Iterator[PooledEmbedder]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    local = SentenceTransformerEmbedder(
        "all-MiniLM-L6-v2", max_seq_tokens=192, quantize=True, batch_size=8
    )
    embedder = PooledEmbedder(local, 2)
    yield embedder
    embedder.close()


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_small_calls_stay_in_process(pooled: PooledEmbedder) -> None:
    assert pooled.embed(TEXTS[: MIN_POOLED - 1]).shape == (MIN_POOLED - 1, 384)
    assert pooled.pool.pids == []  # no worker started for a query-sized call


def test_workers_give_the_in_process_vectors_in_order(pooled: PooledEmbedder) -> None:
    assert wait_ready(pooled.pool, 300), pooled.pool.failed
    assert pooled.pool.name == pooled.name == "all-MiniLM-L6-v2@seq192+int8"
    got = pooled.embed(TEXTS)
    want = pooled.local.embed(TEXTS)
    assert got.shape == (len(TEXTS), 384) and got.dtype == np.float32
    assert float((got * want).sum(1).min()) > 0.999
    assert float(np.abs(got - want).max()) < 1e-5  # the same batches, so the same int8 scales


def test_a_dead_worker_fails_its_call_and_the_pool_starts_anew(pooled: PooledEmbedder) -> None:
    assert wait_ready(pooled.pool, 300)
    victim = pooled.pool.pids[0]
    os.kill(victim, signal.SIGKILL)
    with pytest.raises(EmbedderStalled, match="worker process died"):
        pooled.embed(TEXTS)
    assert not alive(victim) and pooled.pool.pids == []
    # The next call answers (in process while the new workers load), then workers take over.
    assert pooled.embed(TEXTS).shape == (len(TEXTS), 384)
    assert wait_ready(pooled.pool, 300)
    assert victim not in pooled.pool.pids and len(pooled.pool.pids) == 2


def test_close_leaves_no_worker_behind(pooled: PooledEmbedder) -> None:
    assert wait_ready(pooled.pool, 300)
    pids = pooled.pool.pids
    pooled.close()
    assert pids and not any(alive(p) for p in pids)


def test_workers_that_cannot_load_turn_the_pool_off(tmp_path: Path) -> None:
    pool = WorkerPool(Recipe(str(tmp_path / "no-model"), 192, True, 8), 2)
    try:
        assert not wait_ready(pool, 300)
        assert pool.failed and "could not be loaded" in pool.failed
        assert pool.embed(TEXTS, 384) is None  # the caller embeds in process
    finally:
        pool.close()


def test_compose_builds_the_pool_from_the_setting(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", embed_workers=2)
    service = build_service(settings)
    embedder = service.embedder
    assert isinstance(embedder, GuardedEmbedder) and embedder.wait(300)
    pooled = getattr(embedder.inner, "model", None)
    assert isinstance(pooled, PooledEmbedder) and pooled.pool.workers == 2
    single = build_service(Settings(home=tmp_path / "home1", embed_workers=1)).embedder
    assert isinstance(single, GuardedEmbedder) and single.wait(300)
    assert isinstance(getattr(single.inner, "model", None), SentenceTransformerEmbedder)
    embedder.close()
