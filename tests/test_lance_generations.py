"""Sets of tables: a rebuild writes beside what readers pin, and swaps at its commit.

Also: a killed rebuild's set is dropped by the next run, a replaced set only
after the grace period, a reader whose versions were pruned follows the row,
and the manifest check knows every file of a real index.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest
from fakes import HashEmbedder, KillAt

from ctxsvc.compose import build_service
from ctxsvc.errors import StoreCorrupt
from ctxsvc.service import ContextService
from ctxsvc.settings import Settings
from ctxsvc.stores import lance_writer
from ctxsvc.stores.lance import DATA_TABLES, LanceStore, RepoReader
from ctxsvc.stores.lance_reader import (
    Unreadable,
    _listed_files,
    _manifest_path,
    _read_manifest,
    check_files,
)
from ctxsvc.tokens import TiktokenCounter

QUESTION = "how does the server handle a request"


def sets(store: LanceStore) -> dict[int, set[str]]:
    """The tables of ``demo``, by set number."""
    out: dict[int, set[str]] = {}
    for table, n in store.tables_of("demo").items():
        out.setdefault(n, set()).add(table)
    return out


def test_a_rebuild_writes_a_new_set_and_the_old_view_keeps_answering(
    service: ContextService, repo: Path, embedder: HashEmbedder
) -> None:
    first = service.index(repo)
    old = service.view(service.resolve("demo"))
    assert old.meta.table("chunks") == "demo__chunks"  # a first run's names
    embedded = embedder.embedded
    s = service.index(repo, rebuild=True)
    new = service.resolve("demo")
    assert (s.version, new.generation) == (2, 2) and s.files_indexed == first.files_indexed
    assert {new.table(t) for t in DATA_TABLES} == {f"_r1.demo__{t}" for t in DATA_TABLES}
    # The same model's vectors serve the rebuilt chunks: nothing embedded again.
    assert new.table("vectors") == "demo__vectors" and embedder.embedded == embedded
    assert s.chunks_embedded == 0 and new.vectors == "complete"
    assert set(new.retired) == {f"demo__{t}" for t in DATA_TABLES}
    # The view loaded before still reads its own tables, which the rebuild left alone.
    assert old.reader.fts("store get", 5)
    assert service.view(new) is not old and service.context("demo", QUESTION, 500).items
    again = service.index(repo, rebuild=True)  # a third set; the first is still kept
    assert again.version == 3 and set(sets(service.store)) == {0, 1, 2}


def test_a_killed_rebuild_leaves_the_old_index_and_the_next_run_drops_its_set(
    settings: Settings, counter: TiktokenCounter, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_service(settings, embedder=HashEmbedder(), tokens=counter).index(repo)
    store = LanceStore(settings.db_path)
    before = store.meta("demo")
    (repo / "extra.py").write_text(
        "".join(f"def step_{i}(x):\n    return x + {i} * {i}\n\n\n" for i in range(40))
    )
    killed = build_service(settings, embedder=HashEmbedder(), tokens=counter)
    with pytest.raises(KeyboardInterrupt):
        killed.index(repo, rebuild=True, reporter=KillAt("commit"))
    # The old index answers as before; the half-written set lies beside it.
    fresh = LanceStore(settings.db_path)
    assert fresh.meta("demo") == before and set(sets(fresh)) == {0, 1}
    reader = build_service(settings, embedder=HashEmbedder(), tokens=counter)
    assert reader.context("demo", QUESTION, 500).items
    model = HashEmbedder()
    s = build_service(settings, embedder=model, tokens=counter).index(repo)
    assert set(sets(fresh)) == {0} and s.version == 2
    new = {c.content_hash for c in fresh.reader("demo").chunks() if c.path == "extra.py"}
    assert model.embedded == s.chunks_embedded == len(new)


def test_a_replaced_set_is_dropped_only_after_the_grace_period(
    service: ContextService, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    service.index(repo)
    service.index(repo, rebuild=True)
    service.index(repo)  # within the grace period: the first set stays for its readers
    meta = service.resolve("demo")
    assert set(meta.retired) == {f"demo__{t}" for t in DATA_TABLES}
    assert sets(service.store)[0] == {*meta.retired, "demo__vectors"}
    monkeypatch.setattr(lance_writer, "RETIRED_GRACE", timedelta(0))
    service.index(repo)
    meta = service.resolve("demo")
    assert meta.retired == {} and sets(service.store)[0] == {"demo__vectors"}
    assert service.context("demo", QUESTION, 500).items


def test_a_reader_whose_versions_were_pruned_follows_the_row(
    service: ContextService, repo: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    service.index(repo)
    old = service.resolve("demo")
    # Prune all but what the new row pins (the version just made is kept, by its age).
    monkeypatch.setattr(lance_writer, "KEEP_VERSIONS", timedelta(milliseconds=1))
    time.sleep(lance_writer.PIN_MARGIN.total_seconds() + 0.5)
    (repo / "app" / "cache.py").write_text("def evict_everything():\n    return None\n")
    service.index(repo)
    new = service.resolve("demo")
    for t, version in new.versions.items():
        check_files(settings.db_path / f"{new.table(t)}.lance", version)
    chunks = settings.db_path / f"{old.table('chunks')}.lance"
    with pytest.raises(Unreadable):  # the version the old row pinned is gone from disk
        check_files(chunks, old.versions["chunks"])
    # A reader of the old row is no damage: it opens the row committed now.
    reader = RepoReader(service.store, old)
    assert reader.meta == new and not reader.moved
    assert any(c.path == "app/cache.py" for c in reader.chunks())
    assert service.view(old).meta == new and service.catalog.damaged() == {}


def test_damage_to_the_pinned_version_is_not_taken_for_a_move(
    service: ContextService, repo: Path, settings: Settings
) -> None:
    service.index(repo)
    meta = service.resolve("demo")
    for f in (settings.db_path / "demo__symbols.lance" / "data").glob("*.lance"):
        f.unlink()
    with pytest.raises(StoreCorrupt) as err:
        RepoReader(service.store, meta)
    assert "index 'demo': table symbols" in err.value.message
    assert "table symbols" in service.catalog.damaged()["demo"]
    # An incremental run does not write over it: it needs the rebuild.
    with pytest.raises(StoreCorrupt) as err:
        service.index(repo)
    assert err.value.hint == "run `ctxsvc index --rebuild demo`"
    service.index("demo", rebuild=True)  # by name, as the hint says
    assert service.catalog.damaged() == {} and service.context("demo", QUESTION, 500).items


def test_drop_deletes_every_set(service: ContextService, repo: Path) -> None:
    service.index(repo)
    service.index(repo, rebuild=True)
    assert set(sets(service.store)) == {0, 1}
    service.drop("demo")
    assert sets(service.store) == {}


def test_the_manifest_check_knows_every_file_of_a_real_index(
    service: ContextService, repo: Path, settings: Settings
) -> None:
    service.index(repo)
    (repo / "app" / "server.py").write_text((repo / "app" / "server.py").read_text() + "\n# x\n")
    (repo / "README.md").unlink()
    service.index(repo)
    meta = service.resolve("demo")
    listed: list[str] = []
    for t, version in meta.versions.items():
        root = settings.db_path / f"{meta.table(t)}.lance"
        check_files(root, version)  # a sound index passes
        manifest = _manifest_path(root / "_versions", version)
        assert manifest is not None
        listed += [f"{t}:{p}" for p, _ in _listed_files(*_read_manifest(manifest))]
    assert all(any(p.startswith(f"{t}:data/") for p in listed) for t in meta.versions)
    assert any(p.startswith("chunks:_indices/") for p in listed)  # the full-text index
