"""A new generation's view loads behind the one held: queries never wait for it.

Two services over one data directory stand for two worker processes: one
indexes, the other answers. The other's view load is held at a gate (the
real load, started late), so that what a query does meanwhile is seen.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import make_repo
from fakes import HashEmbedder

from ctxsvc import views
from ctxsvc.compose import build_service
from ctxsvc.errors import StoreError
from ctxsvc.service import ContextService
from ctxsvc.settings import Settings
from ctxsvc.tokens import TiktokenCounter
from ctxsvc.view import RepoView

QUESTION = "how does the store evict entries"
EDITED = "app/store.py"
ADDED = "\n\ndef evict_everything_now():\n    return None\n"
WAIT = 20.0  # seconds a step may take before the test calls it stuck


class Gate:
    """Holds every full view load until opened (or fails the first, with ``fail``)."""

    def __init__(self, fail: bool = False) -> None:
        self.open = threading.Event()
        self.entered = threading.Event()
        self.fail = fail
        self.armed = False  # loads pass until armed (the writer's own, before the test's step)
        self.loads = 0

    def wrap(self, real: Callable[[Any], RepoView]) -> Callable[[Any], RepoView]:
        def load(reader: Any) -> RepoView:
            if not self.armed:
                return real(reader)
            self.loads += 1
            self.entered.set()
            if self.fail and self.loads == 1:
                raise StoreError("reading table chunks failed: Too many open files")
            assert self.open.wait(WAIT), "the gate was never opened"
            return real(reader)

        return load


@pytest.fixture
def pair(
    settings: Settings, counter: TiktokenCounter, embedder: HashEmbedder, repo: Path
) -> tuple[ContextService, ContextService]:
    """(writer, reader): the reader holds the first generation's view."""
    writer = build_service(settings, embedder=embedder, tokens=counter)
    reader = build_service(settings, embedder=embedder, tokens=counter)
    writer.index(repo)
    assert reader.context("demo", QUESTION, 800).index.generation == 1  # type: ignore[union-attr]
    return writer, reader


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[Gate]:
    g = Gate()
    monkeypatch.setattr(views.RepoView, "load", g.wrap(RepoView.load))
    yield g
    g.open.set()


def commit_edit(writer: ContextService, repo: Path) -> None:
    with (repo / EDITED).open("a") as f:
        f.write(ADDED)
    assert writer.index(repo).files_indexed == 1
    assert writer.resolve("demo").generation == 2


def in_thread(call: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(call()), daemon=True)
    t.start()
    return t, out


def loaded(reader: ContextService) -> None:
    deadline = time.monotonic() + WAIT
    while reader.catalog.views.loading("demo"):
        assert time.monotonic() < deadline, "the background load never finished"
        time.sleep(0.02)


def test_a_query_answers_from_the_held_view_while_the_new_one_loads(
    pair: tuple[ContextService, ContextService], repo: Path, gate: Gate
) -> None:
    writer, reader = pair
    commit_edit(writer, repo)
    gate.armed = True
    t, out = in_thread(lambda: reader.context("demo", QUESTION, 800))
    t.join(5)
    assert not t.is_alive(), "the query waited for the new generation's view"
    assert gate.entered.wait(WAIT)  # the load did start, behind the answer
    pack = out[0]
    assert pack.index.generation == 1 and EDITED in pack.index.changed_since
    assert any("answered from generation 1 while generation 2" in d for d in pack.degraded)
    assert "evict_everything_now" not in "".join(i.text for i in pack.items)
    gate.open.set()
    loaded(reader)
    after = reader.context("demo", QUESTION, 800)
    assert after.index is not None and after.index.generation == 2
    assert EDITED not in after.index.changed_since
    assert not any("answered from generation" in d for d in after.degraded)
    assert gate.loads == 1  # one background load, however many queries met it


def test_a_refreshing_query_waits_for_the_generation_it_needs(
    pair: tuple[ContextService, ContextService], repo: Path, gate: Gate
) -> None:
    writer, reader = pair
    commit_edit(writer, repo)
    gate.armed = True
    reader.context("demo", QUESTION, 800)  # starts the load behind
    assert gate.entered.wait(WAIT)
    t, out = in_thread(lambda: reader.context("demo", QUESTION, 800, refresh=True))
    t.join(0.5)
    assert t.is_alive(), "a refreshing query answered before the generation it needs loaded"
    gate.open.set()
    t.join(WAIT)
    assert not t.is_alive()
    pack = out[0]
    assert pack.index.generation == 2 and not pack.index.changed_since
    assert not any("answered from generation" in d for d in pack.degraded)
    # Checkpoint facts and a status read the newest generation too.
    assert reader.status("demo").version == 2 and not reader.status("demo").changed


def test_a_failed_background_load_is_met_by_the_next_query(
    pair: tuple[ContextService, ContextService],
    repo: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    writer, reader = pair
    gate = Gate(fail=True)
    gate.open.set()
    monkeypatch.setattr(views.RepoView, "load", gate.wrap(RepoView.load))
    commit_edit(writer, repo)
    gate.armed = True
    with caplog.at_level(logging.WARNING, logger="ctxsvc.views"):
        # The load behind fails within the grace: the query loads the row itself.
        first = reader.context("demo", QUESTION, 800)
    failed = [r for r in caplog.records if "new view failed" in r.getMessage()]
    assert failed and "Too many open files" in failed[0].error  # type: ignore[attr-defined]
    assert first.index is not None and first.index.generation == 2 and gate.loads == 2
    assert not any("answered from generation" in d for d in first.degraded)


def test_a_refreshing_query_over_a_fresh_held_view_still_answers_from_the_newest(
    pair: tuple[ContextService, ContextService], repo: Path, gate: Gate
) -> None:
    writer, reader = pair
    writer.index(repo, rebuild=True)  # new tables, the same files: nothing stale on disk
    gate.open.set()
    gate.armed = True
    pack = reader.context("demo", QUESTION, 800, refresh=True)
    assert pack.index is not None and pack.index.generation == 2 and gate.loads == 1


def test_a_query_in_the_indexing_process_sees_what_its_run_wrote(
    pair: tuple[ContextService, ContextService], repo: Path, gate: Gate
) -> None:
    writer, _ = pair
    gate.open.set()
    writer.context("demo", QUESTION, 800)  # the writer holds a view too
    gate.armed = True
    commit_edit(writer, repo)  # its run loads the new view before it returns
    loads = gate.loads
    assert loads == 1
    pack = writer.context("demo", QUESTION, 800)
    assert pack.index is not None and pack.index.generation == 2 and gate.loads == loads


def test_an_index_re_pointed_to_another_root_is_never_answered_from_the_old_one(
    pair: tuple[ContextService, ContextService], repo: Path, tmp_path: Path, gate: Gate
) -> None:
    writer, reader = pair
    other = make_repo(tmp_path / "other", {"lib/evict.py": ADDED})
    writer.index(other, name="demo", rebuild=True)
    gate.armed = True
    t, out = in_thread(lambda: reader.context("demo", "evict everything now", 800))
    t.join(0.5)
    assert t.is_alive(), "a query answered from the view of another root"
    gate.open.set()
    t.join(WAIT)
    pack = out[0]
    assert pack.index.generation == 2 and {i.path for i in pack.items} == {"lib/evict.py"}
