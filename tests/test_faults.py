"""Injected failures at the seams: the service degrades, names it, and loses nothing."""

from __future__ import annotations

import json
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from conftest import cli_env, run_cli, write_tree
from fakes import FailingEmbedder, HangingEmbedder, HashEmbedder

from ctxsvc import vector_fill
from ctxsvc.compose import build_service
from ctxsvc.errors import StoreError
from ctxsvc.http import create_app
from ctxsvc.indexers.embed import EmbedderStalled, GuardedEmbedder
from ctxsvc.service import ContextService
from ctxsvc.settings import Settings
from ctxsvc.stores import lance_writer
from ctxsvc.stores.lance import LanceStore
from ctxsvc.tokens import TiktokenCounter


def test_hanging_model_during_indexing_degrades_and_keeps_finished_batches(
    settings: Settings, counter: TiktokenCounter, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vector_fill, "BATCH", 2)
    monkeypatch.setattr(vector_fill, "RETRY_SECONDS", 0.05)  # the retries, not their waits
    hung = HangingEmbedder(ok_calls=2)
    store = LanceStore(settings.db_path)
    guarded = GuardedEmbedder(hung, timeout=0.5, cooldown=60)
    s = build_service(settings, store=store, tokens=counter, embedder=guarded).index(repo)
    assert s.vectors == "partial" and s.chunks_embedded == 4
    assert any("did not answer within 0.5 s" in w for w in s.warnings)
    # Later calls fail at once while the breaker is open.
    with pytest.raises(EmbedderStalled, match="paused"):
        guarded.embed(["x"])
    hung.release.set()
    # A later run with a working model fills in exactly what is missing.
    resumed = HashEmbedder()
    s2 = build_service(settings, store=store, tokens=counter, embedder=resumed).index(repo)
    assert s2.vectors == "complete" and s2.chunks_embedded == resumed.embedded
    chunks = store.reader("demo").table("chunks").to_arrow().column("content_hash").to_pylist()
    assert s2.chunks_embedded == len(set(chunks)) - 4


def query_service(settings: Settings, counter: TiktokenCounter, query: object) -> ContextService:
    index_model = HashEmbedder()
    return build_service(
        settings, tokens=counter, embedder=index_model, query_embedder=query,  # type: ignore[arg-type]
    )  # fmt: skip


def test_hanging_query_model_answers_without_vectors_and_says_so(
    settings: Settings, counter: TiktokenCounter, repo: Path
) -> None:
    hung = HangingEmbedder(ok_calls=0)
    service = query_service(settings, counter, GuardedEmbedder(hung, timeout=0.3, cooldown=60))
    service.index(repo)
    pack = service.context("demo", "where does the store write JSON", 1000)
    assert pack.items and pack.items[0].path == "app/store.py"
    assert any("could not be embedded" in d and "0.3 s" in d for d in pack.degraded)
    again = service.context("demo", "server handles a request", 1000)
    assert any("paused" in d for d in again.degraded)
    assert hung.started == 1  # the breaker answered: the hung model got no second call
    hung.release.set()


def test_failing_query_model_degrades(
    settings: Settings, counter: TiktokenCounter, repo: Path
) -> None:
    service = query_service(settings, counter, FailingEmbedder(ok_calls=0))
    service.index(repo)
    pack = service.context("demo", "where does the store write JSON", 1000)
    assert pack.items and any("simulated embedding failure" in d for d in pack.degraded)


@pytest.mark.anyio
async def test_readyz_names_a_paused_model(
    settings: Settings, counter: TiktokenCounter, repo: Path, tmp_path: Path
) -> None:
    hung = HangingEmbedder(ok_calls=0)
    guarded = GuardedEmbedder(hung, timeout=0.2, cooldown=60)
    service = build_service(settings, tokens=counter, embedder=guarded)
    with pytest.raises(EmbedderStalled):
        guarded.embed(["x"])
    app = create_app(service, allowed_roots=[tmp_path])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
        ready = (await c.get("/readyz")).json()
    assert "paused" in ready["model"]["paused"]
    assert any("did not answer within 0.2 s" in d for d in ready["degraded"])
    hung.release.set()


def test_store_writes_retry_with_backoff_then_fail_typed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lance_writer, "WRITE_BACKOFF_SECONDS", 0.01)
    calls: list[float] = []

    def flaky(fails: int) -> str:
        calls.append(time.monotonic())
        if len(calls) <= fails:
            raise RuntimeError("lance error: LanceError(IO): Resource busy (os error 16)")
        return "ok"

    assert lance_writer.write("storing", lambda: flaky(2)) == "ok" and len(calls) == 3
    assert calls[2] - calls[1] > calls[1] - calls[0]  # the backoff grows
    calls.clear()
    with pytest.raises(StoreError, match="storing failed after 3 attempts") as info:
        lance_writer.write("storing", lambda: flaky(10))
    assert info.value.retryable and "previous index version is intact" in info.value.hint
    calls.clear()
    for exc in (
        OSError("lance error: LanceError(IO): File too large (os error 27)"),
        OSError(28, "No space left on device"),
        RuntimeError("LanceError(IO): Disk quota exceeded (os error 122)"),
    ):
        with pytest.raises(StoreError, match="disk is full"):
            lance_writer.write("x", lambda e=exc: (_ for _ in ()).throw(e))


def _limited(limit: int) -> Callable[[], None]:
    def preexec() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write (EFBIG), do not die
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


@pytest.mark.slow
def test_disk_full_during_reindex_keeps_the_previous_index(tmp_path: Path, repo: Path) -> None:
    env = cli_env(tmp_path / "home")
    assert run_cli(env, "index", str(repo), "--no-vectors").returncode == 0
    before = json.loads(run_cli(env, "status", "demo", "--json").stdout)[0]
    write_tree(
        repo,
        {f"pkg/big_{i}.py": "".join(f"def f{i}_{j}(x):\n    return x + {j}\n\n" for j in range(300)) for i in range(5)},
    )  # fmt: skip
    full = subprocess.run(
        [sys.executable, "-m", "ctxsvc", "index", str(repo), "--no-vectors"],
        env=env, capture_output=True, text=True, timeout=600,
        preexec_fn=_limited(64 * 1024),
    )  # fmt: skip
    assert full.returncode == 74, full.stderr  # EX_IOERR: a store error, retryable
    said = " ".join(full.stderr.split())  # the terminal wraps lines
    assert "failed after 3 attempts" in said and "disk is full" in said, said
    assert "index write failed, retrying" in said
    # The previous index is intact and answers.
    after = json.loads(run_cli(env, "status", "demo", "--json").stdout)[0]
    assert after["files"] == before["files"] and after["indexed_at"] == before["indexed_at"]
    answer = run_cli(env, "query", "demo", "Store put JSON", "--no-refresh", "--json")
    assert answer.returncode == 0 and json.loads(answer.stdout)["items"]
    # Space again: the next run completes with the new files.
    done = run_cli(env, "index", str(repo), "--no-vectors", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["files_indexed"] == 5
