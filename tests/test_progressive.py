"""Progressive indexing: an index answers at its commit, its vectors fill in behind."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from fakes import HangingEmbedder, HashEmbedder, Interrupted

from ctxsvc import vector_fill
from ctxsvc.compose import build_service
from ctxsvc.settings import Settings
from ctxsvc.stores.lance import LanceStore
from ctxsvc.tokens import TiktokenCounter

QUESTION = "server handles a request from the store"


def chunk_hashes(store: LanceStore) -> set[str]:
    return {c.content_hash for c in store.reader("demo").chunks()}


def until(check: object, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_an_index_answers_before_its_vectors_and_says_what_share_it_used(
    settings: Settings, counter: TiktokenCounter, repo: Path
) -> None:
    model = HashEmbedder()
    service = build_service(settings, tokens=counter, embedder=model)
    s = service.index(repo, wait=False)
    assert s.vectors == "partial" and s.chunks_embedded == 0 and model.embedded == 0
    assert s.vectors_missing == s.chunks > 0
    pack = service.context("demo", QUESTION, 800)
    assert pack.items  # full text, symbols and the graph answer already
    assert any(d.startswith("vectors: partial 0%") for d in pack.degraded)
    status = service.status("demo")
    assert status.vectors == "partial" and status.vectors_share == 0.0
    assert any("vectors: partial 0%" in d for d in status.degraded)

    before = model.embedded  # the query's own vector
    done = service.index(repo)  # waits: embeds what is missing, nothing else
    assert done.vectors == "complete" and done.vectors_missing == 0
    assert done.chunks_embedded == model.embedded - before == len(chunk_hashes(service.store))
    assert [t.stage for t in done.timings][-2:] == ["commit", "embed"]
    pack = service.context("demo", QUESTION, 800)
    assert not any("vector" in d for d in pack.degraded)
    assert service.status("demo").vectors_share == 1.0


def test_a_query_during_background_embedding_uses_the_share_committed(
    settings: Settings, counter: TiktokenCounter, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vector_fill, "BATCH", 2)
    monkeypatch.setattr(vector_fill, "COMMIT_SECONDS", 0.0)
    (repo / "extra.py").write_text(
        "".join(f"def step_{i}(x):\n    return x + {i} * {i}\n\n\n" for i in range(60))
    )
    gate = HangingEmbedder(ok_calls=2)  # two batches, then waits for the test
    service = build_service(
        settings, tokens=counter, embedder=gate, query_embedder=HashEmbedder(), fill_behind=True
    )
    started = time.monotonic()
    s = service.index(repo, wait=False)
    assert s.vectors == "partial"
    until(lambda: service.store.meta("demo").stats.get("embedded", 0) >= 4)  # type: ignore[union-attr]
    pack = service.context("demo", QUESTION, 800)
    notes = [d for d in pack.degraded if d.startswith("vectors: partial")]
    share = service.store.meta("demo").vectors_share()  # type: ignore[union-attr]
    assert notes and share is not None and 0 < share < 1
    assert notes[0].startswith(f"vectors: partial {int(share * 100)}%")
    assert pack.items and time.monotonic() - started < 30  # answered while the model waits
    assert any("filling in" in d for d in service.status("demo").degraded)
    gate.release.set()
    until(lambda: service.store.meta("demo").vectors == "complete")  # type: ignore[union-attr]
    until(lambda: not service.catalog.filler.filling("demo"))  # type: ignore[union-attr]
    pack = service.context("demo", QUESTION, 800)
    assert not any("vector" in d for d in pack.degraded)
    view = service.catalog.view(service.resolve("demo"))
    assert view.has_vector is not None and bool(view.has_vector.all())


def test_a_run_killed_mid_embedding_keeps_its_text_and_resumes_the_vectors(
    settings: Settings, counter: TiktokenCounter, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vector_fill, "BATCH", 2)
    killed = build_service(settings, tokens=counter, embedder=Interrupted(ok_calls=1))
    with pytest.raises(KeyboardInterrupt):
        killed.index(repo)
    store = LanceStore(settings.db_path)
    meta = store.meta("demo")
    assert meta is not None and meta.vectors == "partial"  # the text was committed first
    assert (
        build_service(settings, tokens=counter, embedder=HashEmbedder())
        .context("demo", QUESTION, 800)
        .items
    )
    model = HashEmbedder()
    s = build_service(
        settings, tokens=counter, embedder=model, query_embedder=HashEmbedder()
    ).index(repo)
    assert s.vectors == "complete" and s.files_indexed == 0
    assert model.embedded == len(chunk_hashes(store)) - 2  # the stored batch is not redone


def test_a_query_refresh_embeds_a_small_edit_itself_when_nothing_fills_behind(
    settings: Settings, counter: TiktokenCounter, repo: Path
) -> None:
    model = HashEmbedder()
    service = build_service(settings, tokens=counter, embedder=model)
    service.index(repo)
    before = model.embedded
    (repo / "app" / "store.py").write_text(
        (repo / "app" / "store.py").read_text() + "\n\ndef flush() -> None:\n    pass\n"
    )
    pack = service.context("demo", QUESTION, 800, refresh=True)
    assert service.status("demo").vectors == "complete" and model.embedded > before
    assert not any("vector" in d for d in pack.degraded)


def test_a_server_fills_the_vectors_a_killed_run_left_when_it_starts(
    settings: Settings, counter: TiktokenCounter, repo: Path
) -> None:
    build_service(settings, tokens=counter, embedder=HashEmbedder()).index(repo, wait=False)
    assert LanceStore(settings.db_path).meta("demo").vectors == "partial"  # type: ignore[union-attr]
    server = build_service(settings, tokens=counter, embedder=HashEmbedder(), fill_behind=True)
    until(lambda: server.store.meta("demo").vectors == "complete")  # type: ignore[union-attr]
    assert server.status("demo").vectors_share == 1.0


def test_a_run_that_waits_waits_for_the_fill_behind_of_its_own_process(
    settings: Settings, counter: TiktokenCounter, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vector_fill, "BATCH", 2)
    gate = HangingEmbedder(ok_calls=1)
    service = build_service(
        settings, tokens=counter, embedder=gate, query_embedder=HashEmbedder(), fill_behind=True
    )
    service.index(repo, wait=False)
    until(lambda: gate.started >= 2)  # the thread behind is in the model
    (repo / "app" / "store.py").write_text(
        (repo / "app" / "store.py").read_text() + "\n\ndef flush() -> None:\n    pass\n"
    )
    threading.Timer(0.5, gate.release.set).start()
    s = service.index(repo)  # as an HTTP index job: returns with every vector
    assert s.vectors == "complete" and s.vectors_missing == 0 and not s.warnings
    assert service.store.meta("demo").vectors == "complete"  # type: ignore[union-attr]


def test_a_drop_and_a_new_index_during_a_fill_keep_the_new_vectors_readable(
    settings: Settings, counter: TiktokenCounter, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vector_fill, "BATCH", 2)
    gate = HangingEmbedder(ok_calls=1)
    service = build_service(
        settings, tokens=counter, embedder=gate, query_embedder=HashEmbedder(), fill_behind=True
    )
    service.index(repo, wait=False)
    until(lambda: gate.started >= 2)
    service.drop("demo")
    service.index(repo, wait=False)  # the same name, generation, tables: another run
    gate.release.set()
    until(lambda: not service.catalog.filler.filling("demo"))  # type: ignore[union-attr]
    again = build_service(settings, tokens=counter, embedder=HashEmbedder()).index(repo)
    assert again.vectors == "complete" and not again.warnings  # nothing unreadable
