"""Byte-exact text through the index, and the rebuild of an index of an older schema.

Real tree-sitter and a real LanceDB in a temp dir. The fixtures reproduce what
was lost before: CRLF line ends (discover rewrote them), tabs and trailing
spaces, whitespace-only lines at chunk edges and between definitions (trimmed,
so the view filled them in as ""), a lone "\\r" line, and a string of
whitespace lines long enough to be split into windows of whitespace only
(dropped).
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from conftest import cli_env, git, run_cli
from fakes import HashEmbedder, KillAt

from ctxsvc import view
from ctxsvc.compose import build_service
from ctxsvc.errors import ModelMismatch, RepoNotFound, StoreCorrupt
from ctxsvc.http import create_app
from ctxsvc.service import ContextService
from ctxsvc.settings import Settings
from ctxsvc.stores.lance import SCHEMA_VERSION, LanceStore
from ctxsvc.tokens import TiktokenCounter

FILES: dict[str, bytes] = {
    "crlf.py": (
        b"import os\r\n\r\n\r\nclass A:\r\n    def f(self):\r\n        return 1\r\n\r\n"
        b"    def g(self):\r\n        return os.sep  \r\n\r\n\r\ndef h():\r\n    pass\r\n"
    ),
    "server.go": (
        b"package server\n\n// Run serves.\nfunc Run(port int) error {\n\tif port == 0 {\n"
        b"\t\treturn nil \t\n\t}\n\t\n\treturn serve(port)\n}\n\t\n\nfunc serve(p int) error {\n"
        b"\treturn nil\n}\n"
    ),
    "spaces.py": (
        b"class B:\n    def f(self):  \n        return 1\n    \n\t\n    def g(self):\n"
        b"        return 2\n    \n\n\ndef k():\n    return 3\n\r\n   \n"
    ),
    "strings.py": b'X = """\n' + b"    \n" * 700 + b'"""\n\n\ndef use():\n    return X\n',
    "notes.md": b"# Notes\n\none\n  \n\t\n \ntwo\n\n## More\n   \nthree\n\n  \n",
}


@pytest.fixture
def exact_repo(tmp_path: Path) -> Path:
    root = tmp_path / "exact"
    root.mkdir()
    for rel, data in FILES.items():
        (root / rel).write_bytes(data)
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "init")
    return root


def test_the_view_rebuilds_every_line_byte_for_byte(
    service: ContextService, exact_repo: Path
) -> None:
    service.index(exact_repo)
    view = service.view(service.resolve("exact"))
    for rel, data in FILES.items():
        lines = data.decode().split("\n")
        got = view.file_lines(rel)
        assert got, rel
        last = max(got)
        assert list(got) == list(range(1, last + 1))
        assert [got[n] for n in range(1, last + 1)] == lines[:last], rel
        assert not any(lines[last:]), f"{rel}: a line after the last chunk is not empty"
        whole = view.lines(rel, 1, last)
        assert whole is not None and whole.encode() == b"\n".join(data.split(b"\n")[:last])


def test_chunk_texts_are_the_files_bytes(service: ContextService, exact_repo: Path) -> None:
    service.index(exact_repo)
    view = service.view(service.resolve("exact"))
    for c in view.chunks:
        raw = FILES[c.path].split(b"\n")
        assert c.text.encode() == b"\n".join(raw[c.start_line - 1 : c.end_line])
    crlf = [c for c in view.chunks if c.path == "crlf.py"]
    assert crlf and all(line.endswith("\r") for c in crlf for line in c.text.split("\n"))
    assert {s.qualname for s in view.symbols if s.path == "crlf.py"} >= {"A.f", "A.g", "h"}


def test_file_lines_are_kept_read_only_and_bounded(
    service: ContextService, exact_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    service.index(exact_repo)
    v = service.view(service.resolve("exact"))
    first = v.file_lines("crlf.py")
    assert v.file_lines("crlf.py") is first  # built once, not per call
    with pytest.raises(TypeError):
        first[1] = "changed"  # type: ignore[index]
    assert v.file_lines("no/such/file.py") == {} and v.lines("no/such/file.py", 1, 1) is None
    monkeypatch.setattr(view, "LINES_KEPT", 2)
    for rel in ("server.go", "spaces.py"):
        v.file_lines(rel)
    again = v.file_lines("crlf.py")  # the least recently used, evicted
    assert again is not first and again == first
    monkeypatch.setattr(view, "LINES_KEPT_TOTAL", len(FILES["strings.py"].split(b"\n")))
    big = v.file_lines("strings.py")  # fills the line bound: the others are evicted
    assert v.file_lines("strings.py") is big and v.file_lines("crlf.py") is not again
    # Threads share one view: every one reads the same lines.
    got: list[str | None] = []
    threads = [
        threading.Thread(target=lambda r=rel: got.append(v.lines(r, 1, 3)))
        for rel in FILES
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(map(str, got)) == sorted(str(v.lines(r, 1, 3)) for r in FILES for _ in range(8))


def test_service_file_lines_are_exact(service: ContextService, exact_repo: Path) -> None:
    service.index(exact_repo)
    got = service.file_lines("exact", "server.go", 1, 12)
    assert got is not None
    assert got.text.encode() == b"\n".join(FILES["server.go"].split(b"\n")[:12])


# -- the schema version --------------------------------------------------------------


def age(store: LanceStore, name: str, version: int) -> None:
    """Rewrite the ``repos`` row of ``name`` as if an index of ``version`` wrote it."""
    meta = store.meta(name)
    assert meta is not None
    store.commit_meta(replace(meta, schema_version=version))


def test_reading_an_older_schema_raises_with_the_rebuild_hint(
    service: ContextService, repo: Path, settings: Settings
) -> None:
    service.index(repo)
    age(service.store, "demo", SCHEMA_VERSION - 1)
    fresh = LanceStore(settings.db_path)  # another process: no cached metadata
    for store in (service.store, fresh):
        with pytest.raises(StoreCorrupt) as err:
            store.reader("demo")
        assert f"schema version {SCHEMA_VERSION - 1}" in err.value.message
        assert f"ctxsvc index {repo}" in err.value.hint and not err.value.retryable
    with pytest.raises(StoreCorrupt):
        service.context("demo", "server", 500)
    with pytest.raises(StoreCorrupt):
        service.resolve(str(repo))


def test_an_index_run_rebuilds_an_older_schema(
    settings: Settings,
    counter: TiktokenCounter,
    repo: Path,
    embedder: HashEmbedder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    service = build_service(settings, embedder=embedder, tokens=counter)
    first = service.index(repo)
    age(service.store, "demo", SCHEMA_VERSION - 1)
    embedded = embedder.embedded
    # Another process, as after an upgrade.
    later = build_service(settings, embedder=embedder, tokens=counter)
    with caplog.at_level(logging.WARNING, logger="ctxsvc.index"):
        s = later.index(repo)
    note = f"had schema version {SCHEMA_VERSION - 1}, this ctxsvc writes {SCHEMA_VERSION}"
    assert any(note in w and "rebuilt from scratch" in w for w in s.warnings)
    assert any(note in r.getMessage() for r in caplog.records)
    # From scratch: every file parsed again, a first generation, the old tables gone.
    assert s.files_indexed == first.files_indexed and s.version == 1
    assert (s.chunks, s.symbols) == (first.chunks, first.symbols)
    # Vectors are keyed by content: the same model's are reused, not recomputed.
    assert s.chunks_embedded == 0 and embedder.embedded == embedded
    meta = later.store.reader("demo").meta
    assert meta.schema_version == SCHEMA_VERSION and meta.vectors == "complete"
    assert later.context("demo", "how does the server handle a request", 500).items
    again = later.index(repo)
    # Nothing changed since: nothing committed, the rebuilt generation stands.
    assert not any("schema version" in w for w in again.warnings) and again.version == 1


@pytest.mark.parametrize("why", ["--no-vectors", "no model"])
def test_a_rebuild_without_a_model_keeps_the_vectors(
    settings: Settings, counter: TiktokenCounter, repo: Path, why: str
) -> None:
    build_service(settings, embedder=HashEmbedder(), tokens=counter).index(repo)
    age(LanceStore(settings.db_path), "demo", SCHEMA_VERSION - 1)
    if why == "--no-vectors":
        s = build_service(settings, embedder=HashEmbedder(), tokens=counter).index(
            repo, vectors=False
        )
    else:
        later = build_service(settings, tokens=counter, vectors=False, embedder_error="no model")
        s = later.index(repo)
    assert any("rebuilt from scratch, keeping its vectors of hash-64" in w for w in s.warnings)
    meta = LanceStore(settings.db_path).reader("demo").meta
    # Without a model the kept vectors still cover every chunk (the content is the same).
    expected = "disabled" if why == "--no-vectors" else "complete"
    assert meta.schema_version == SCHEMA_VERSION and meta.vectors == expected
    assert (meta.model, meta.dimension) == ("hash-64", 64)  # whose vectors are kept
    # The model's next run finds every vector it needs.
    model = HashEmbedder()
    again = build_service(settings, embedder=model, tokens=counter).index(repo)
    assert again.vectors == "complete" and again.chunks_embedded == model.embedded == 0


def test_a_killed_rebuild_leaves_the_outdated_index_and_the_vectors(
    settings: Settings, counter: TiktokenCounter, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_service(settings, embedder=HashEmbedder(), tokens=counter).index(repo)
    store = LanceStore(settings.db_path)
    age(store, "demo", SCHEMA_VERSION - 1)
    vectors = store.open("demo__vectors").count_rows()
    # New code, so that the rebuild has chunks to embed; it is killed before its commit.
    (repo / "extra.py").write_text(
        "".join(f"def step_{i}(x):\n    return x + {i} * {i}\n\n\n" for i in range(40))
    )
    killed = build_service(settings, embedder=HashEmbedder(), tokens=counter)
    with pytest.raises(KeyboardInterrupt):
        killed.index(repo, reporter=KillAt("commit"))
    # Readers see the outdated index, as before the run: never "no index named demo".
    fresh = LanceStore(settings.db_path)
    with pytest.raises(StoreCorrupt) as err:
        fresh.reader("demo")
    assert f"ctxsvc index {repo}" in err.value.hint
    assert fresh.open("demo__vectors").count_rows() == vectors  # the kept vectors
    model = HashEmbedder()
    s = build_service(settings, embedder=model, tokens=counter).index(repo)
    assert s.version == 1 and s.vectors == "complete"
    old = {c.content_hash for c in fresh.reader("demo").chunks() if c.path != "extra.py"}
    new = {c.content_hash for c in fresh.reader("demo").chunks()} - old
    assert model.embedded == len(new)  # the old vectors serve the rebuilt chunks


def test_a_rebuild_with_another_model_drops_the_old_vectors_only_when_asked(
    settings: Settings, counter: TiktokenCounter, repo: Path
) -> None:
    build_service(settings, embedder=HashEmbedder(), tokens=counter).index(repo)
    store = LanceStore(settings.db_path)
    age(store, "demo", SCHEMA_VERSION - 1)
    other = HashEmbedder(dimension=32, name="hash-32")
    with pytest.raises(ModelMismatch) as err:  # hours of embedding go only on request
        build_service(settings, embedder=other, tokens=counter).index(repo)
    assert "--reembed" in err.value.hint and store.outdated("demo") is not None
    s = build_service(settings, embedder=other, tokens=counter).index(repo, reembed=True)
    assert any("rebuilt from scratch" in w for w in s.warnings)
    assert s.model == "hash-32" and s.chunks_embedded == other.embedded > 0


def test_a_newer_schema_is_not_overwritten_unless_rebuilt(
    service: ContextService, repo: Path, settings: Settings
) -> None:
    service.index(repo)
    age(service.store, "demo", SCHEMA_VERSION + 1)
    with pytest.raises(StoreCorrupt) as err:
        service.index(repo)
    assert "newer" in err.value.message and "--rebuild" in err.value.hint
    s = service.index(repo, rebuild=True)
    assert s.version == 1 and service.store.reader("demo").meta.schema_version == SCHEMA_VERSION


@pytest.fixture
def beside_outdated(service: ContextService, repo: Path, tmp_path: Path) -> Path:
    """Index ``demo`` (at ``repo``, then aged to the previous schema) and ``other`` (a copy
    of it, current); the copy's root."""
    other = tmp_path / "other"
    shutil.copytree(repo, other)
    service.index(repo)
    service.index(other)
    age(service.store, "demo", SCHEMA_VERSION - 1)
    return other


def test_an_outdated_index_does_not_hide_the_others(
    service: ContextService, repo: Path, tmp_path: Path, beside_outdated: Path
) -> None:
    other = beside_outdated
    assert [m.name for m in service.repos()] == ["other"]
    assert service.names() == ["demo", "other"]
    for name_or_path in ("demo", str(repo)):
        st = service.status(name_or_path)
        assert st.name == "demo" and st.files == 4 and st.model == "hash-64"
        assert st.degraded[0].startswith("needs a rebuild: index 'demo' has schema version")
        assert f"run `ctxsvc index {repo}`" in st.degraded[0]
    assert not any("rebuild" in d for d in service.status("other").degraded)
    # By path, each root resolves to its own index; only the outdated one fails.
    assert service.resolve(str(other)).name == "other"
    assert service.context(str(other), "how does the server handle a request", 500).items
    with pytest.raises(StoreCorrupt):
        service.resolve(str(repo))
    with pytest.raises(RepoNotFound):
        service.resolve(str(tmp_path))
    # An outdated index can be dropped.
    assert service.drop(str(repo)) == "demo" and service.names() == ["other"]


@pytest.mark.anyio
async def test_the_api_lists_around_an_outdated_index(
    service: ContextService, beside_outdated: Path
) -> None:
    app = create_app(service)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://localhost"
    ) as c:
        listed = await c.get("/v1/repos")
        demo = await c.get("/v1/repos/demo")
        context = await c.post("/v1/context", json={"repo": "demo", "query": "server"})
    assert listed.status_code == 200 and [r["name"] for r in listed.json()] == ["other"]
    assert demo.status_code == 200 and "needs a rebuild" in demo.json()["degraded"][0]
    assert context.status_code >= 400 and "ctxsvc index" in json.dumps(context.json())


@pytest.mark.slow
def test_cli_status_lists_an_outdated_index_as_needing_a_rebuild(
    settings: Settings, beside_outdated: Path
) -> None:
    r = run_cli(cli_env(settings.home), "status", "--json")
    assert r.returncode == 0, r.stderr
    got = {s["name"]: s for s in json.loads(r.stdout)}
    assert set(got) == {"demo", "other"}
    assert "needs a rebuild" in got["demo"]["degraded"][0] and got["other"]["files"] == 4
