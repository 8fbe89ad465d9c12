"""The index pipeline against real tree-sitter and a real LanceDB in a temp dir."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import git
from fakes import FailingEmbedder, HashEmbedder

from ctxsvc import vector_fill
from ctxsvc.compose import build_service
from ctxsvc.errors import IndexBusy, InvalidPath, ModelMismatch
from ctxsvc.service import ContextService
from ctxsvc.settings import Settings
from ctxsvc.stores.lance import LanceStore
from ctxsvc.stores.lance_schema import DATA_TABLES
from ctxsvc.stores.locks import FileLock
from ctxsvc.tokens import TiktokenCounter


def rows(service: ContextService, name: str, table: str) -> list[dict[str, object]]:
    reader = service.store.reader(name)
    return reader.table(table).to_arrow().drop_columns(["path_id"]).to_pylist()  # type: ignore[no-any-return]


def test_cold_index(service: ContextService, repo: Path, embedder: HashEmbedder) -> None:
    s = service.index(repo)
    assert s.repo == "demo"
    assert s.commit and len(s.commit) == 40
    assert s.files_indexed == 4
    assert s.skipped == {"binary": 1}
    assert s.vectors == "complete"
    chunks = rows(service, "demo", "chunks")
    assert s.chunks == len(chunks) > 0
    assert s.chunks_embedded == len({c["content_hash"] for c in chunks}) == embedder.embedded
    quals = {r["qualname"] for r in rows(service, "demo", "symbols")}
    assert {"Server", "Server.handle", "Store.put", "main", "loadUser"} <= quals
    assert any(r["name"] == "get" and r["kind"] == "call" for r in rows(service, "demo", "refs"))
    assert {r["module"] for r in rows(service, "demo", "imports")} >= {"json", "os", "./http"}
    files = service.store.reader("demo").files()
    assert files["logo.png"].status == "skipped" and files["logo.png"].reason == "binary"
    # Each chunk's lines are the file's lines, verbatim.
    for c in chunks:
        lines = (repo / str(c["path"])).read_text().split("\n")
        assert "\n".join(lines[int(c["start_line"]) - 1 : int(c["end_line"])]) == c["text"]


def test_incremental_after_one_edit(
    service: ContextService, repo: Path, embedder: HashEmbedder
) -> None:
    service.index(repo)
    before = {(c["path"], c["content_hash"]) for c in rows(service, "demo", "chunks")}
    calls = embedder.embedded
    store_py = repo / "app" / "store.py"
    store_py.write_text(
        store_py.read_text().replace(
            "return self.data.get(key)", "return self.data.get(key.strip())"
        )
    )
    (repo / "README.md").unlink()

    s = service.index(repo)
    assert (s.files_indexed, s.files_deleted) == (1, 1)
    assert s.files_unchanged == 3  # two source files and the skipped binary
    after = rows(service, "demo", "chunks")
    new_hashes = {c["content_hash"] for c in after} - {h for _, h in before}
    assert 0 < len(new_hashes) <= s.chunks_embedded == embedder.embedded - calls
    assert not any(c["path"] == "README.md" for c in after)
    assert "README.md" not in service.store.reader("demo").files()
    # No duplicate rows: one row per chunk id, and per-file counts add up.
    assert len({c["id"] for c in after}) == len(after) == s.chunks
    assert s.version == 2


def test_rename_reuses_vectors(service: ContextService, repo: Path, embedder: HashEmbedder) -> None:
    service.index(repo)
    embedded = embedder.embedded
    git(repo, "mv", "app/store.py", "app/kv.py")
    s = service.index(repo)
    assert s.chunks_embedded == 0 and embedder.embedded == embedded
    assert (
        s.chunks_reused
        == sum(1 for c in rows(service, "demo", "chunks") if c["path"] == "app/kv.py")
        > 0
    )
    assert {c["path"] for c in rows(service, "demo", "chunks")} >= {"app/kv.py"}
    assert not any(c["path"] == "app/store.py" for c in rows(service, "demo", "chunks"))


def test_unchanged_run_does_no_work(
    service: ContextService, repo: Path, embedder: HashEmbedder
) -> None:
    first = service.index(repo)
    embedded = embedder.embedded
    view = service.view(service.resolve("demo"))
    row = service.store.meta("demo")
    s = service.index(repo)
    assert (s.files_indexed, s.chunks_embedded, embedder.embedded) == (0, 0, embedded)
    assert (s.chunks, s.symbols) == (first.chunks, first.symbols)
    # Nothing committed: the same row (run, generation, versions), the same view.
    assert service.store.meta("demo") == row and s.version == first.version == 1
    assert service.view(service.resolve("demo")) is view
    # A commit that changes no file is a new generation: it names the new HEAD.
    git(repo, "commit", "--allow-empty", "-qm", "empty")
    moved = service.index(repo)
    assert moved.version == 2 and moved.commit != first.commit and moved.files_indexed == 0
    # After a run that changed a file (its prune leaves versions past the pins), runs that
    # find nothing write no table version either.
    store_py = repo / "app" / "store.py"
    store_py.write_text(store_py.read_text() + "\n# one more line\n")
    assert service.index(repo).files_indexed == 1

    def versions() -> dict[str, int]:
        meta = service.store.meta("demo")
        assert meta is not None
        return {t: len(service.store.open(meta.table(t)).list_versions()) for t in DATA_TABLES}

    held = versions()
    for _ in range(3):
        assert service.index(repo).version == 3
    assert versions() == held


def test_degraded_without_model_then_filled(
    settings: Settings, counter: TiktokenCounter, repo: Path
) -> None:
    store = LanceStore(settings.db_path)
    degraded = build_service(
        settings, store=store, tokens=counter, vectors=False, embedder_error="no model"
    )
    s = degraded.index(repo)
    assert s.vectors == "missing"
    assert any("vectors are missing" in w for w in s.warnings)
    assert degraded.status("demo").degraded
    pack = degraded.context("demo", "server handles a request", 500)
    assert pack.items and any("vector" in d for d in pack.degraded)

    embedder = HashEmbedder()
    s2 = build_service(settings, store=store, tokens=counter, embedder=embedder).index(repo)
    assert s2.vectors == "complete"
    assert s2.files_indexed == 0 and s2.chunks_embedded == len(
        {c["content_hash"] for c in rows(degraded, "demo", "chunks")}
    )


def test_embedder_failing_mid_run_keeps_finished_batches(
    settings: Settings, counter: TiktokenCounter, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vector_fill, "BATCH", 2)
    store = LanceStore(settings.db_path)
    s = build_service(
        settings, store=store, tokens=counter, embedder=FailingEmbedder(ok_calls=2)
    ).index(repo)
    assert s.vectors == "partial" and s.chunks_embedded == 4 and s.vectors_missing > 0
    assert any("embedding failed after 4 chunks" in w for w in s.warnings)
    resumed = HashEmbedder()
    s2 = build_service(settings, store=store, tokens=counter, embedder=resumed).index(repo)
    assert s2.vectors == "complete"
    assert (
        s2.chunks_embedded
        == resumed.embedded
        == len({c["content_hash"] for c in rows_of(store)}) - 4
    )


def rows_of(store: LanceStore) -> list[dict[str, object]]:
    return store.reader("demo").table("chunks").to_arrow().to_pylist()  # type: ignore[no-any-return]


def test_model_change_needs_reembed(
    settings: Settings, counter: TiktokenCounter, repo: Path
) -> None:
    store = LanceStore(settings.db_path)
    build_service(settings, store=store, tokens=counter, embedder=HashEmbedder()).index(repo)
    other = HashEmbedder(dimension=32, name="hash-32")
    with pytest.raises(ModelMismatch) as err:
        build_service(settings, store=store, tokens=counter, embedder=other).index(repo)
    assert "--reembed" in err.value.hint and not err.value.retryable
    s = build_service(settings, store=store, tokens=counter, embedder=other).index(
        repo, reembed=True
    )
    assert s.model == "hash-32" and s.chunks_embedded == other.embedded > 0
    assert store.reader("demo").meta.dimension == 32


def test_concurrent_run_is_refused(service: ContextService, settings: Settings, repo: Path) -> None:
    with (
        FileLock(settings.locks_path / "demo.lock", "index 'demo'"),
        pytest.raises(IndexBusy) as err,
    ):
        service.index(repo)
    assert err.value.retryable and str(os.getpid()) in err.value.message


def test_uncommitted_writes_are_invisible_and_rolled_back(
    service: ContextService, repo: Path
) -> None:
    clean = service.index(repo)
    store = service.store
    # A run that dies after writing its tables but before pinning them.
    writer = store.writer("demo", dimension=64)
    writer.replace_paths(["app/server.py", "app/store.py"], [], [], [], [], [], [])
    reader = store.reader("demo")
    assert len(reader.chunks()) == clean.chunks  # readers still see the pinned version
    s = service.index(repo)
    assert s.files_indexed == 0  # the rollback restored the pinned state: nothing to redo
    assert s.chunks == clean.chunks == len(store.reader("demo").chunks())


def test_status_reports_changes(service: ContextService, repo: Path) -> None:
    service.index(repo)
    assert service.status("demo").changed == ()
    (repo / "app" / "server.py").write_text("PORT = 1\n")
    (repo / "new.py").write_text("X = 1\n")
    st = service.status(str(repo))
    assert st.changed == ("app/server.py",) and st.added == ("new.py",)


def test_index_rejects_missing_path(service: ContextService, tmp_path: Path) -> None:
    with pytest.raises(InvalidPath):
        service.index(tmp_path / "nope")


def test_syntax_errors_are_flagged_not_fatal(service: ContextService, repo: Path) -> None:
    (repo / "broken.py").write_text("def ok():\n    return 1\n\ndef broken(:\n    pass\n")
    s = service.index(repo)
    assert s.files_with_syntax_errors == 1
    rec = service.store.reader("demo").files()["broken.py"]
    assert rec.status == "indexed" and rec.syntax_errors > 0 and "partial tree" in rec.detail
    assert "ok" in {r["qualname"] for r in rows(service, "demo", "symbols")}


def test_hostile_names_and_contents_never_stop_a_run(service: ContextService, repo: Path) -> None:
    raw = os.fsencode(repo) + b"/bad-\xff-name.py"
    with open(raw, "wb") as f:
        f.write(b"X = 1\n")
    (repo / "latin1.py").write_bytes(b"# caf\xe9\nNAME = 'caf\xe9'\n")
    (repo / "-dash name\n.py").write_text("def dashed():\n    return 1\n")
    (repo / "loop").symlink_to(repo / "loop")
    (repo / "etc_passwd").symlink_to("/etc/passwd")
    first = service.index(repo)
    files = service.store.reader("demo").files()
    assert files["bad-\ufffd-name.py"].detail == "file name is not valid UTF-8"
    assert files["latin1.py"].lossy and files["latin1.py"].status == "indexed"
    assert files["-dash name\n.py"].status == "indexed"
    assert files["etc_passwd"].reason == "symlink_outside_root"
    assert files["loop"].reason == "symlink_loop"
    again = service.index(repo)  # stable: nothing re-read, nothing churns
    assert (again.files_indexed, again.files_deleted, again.chunks) == (0, 0, first.chunks)
