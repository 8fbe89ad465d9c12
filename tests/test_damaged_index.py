"""A damaged index is named, never a traceback or a bare 500, and a rebuild repairs it.

Each form of damage is done to the files of a real LanceDB index: a data file
of the chunks table truncated or deleted, the manifest of its pinned version
garbled, its ``_versions`` directory deleted, the vectors table's data gone.
Then the library raises ``StoreCorrupt`` naming the index and the table, the
catalog lists the index as damaged, the CLI exits 74 with one line and a hint
and no traceback, and ``ctxsvc index --rebuild NAME`` repairs it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import cli_env, run_cli
from fakes import HashEmbedder

from ctxsvc.compose import build_service
from ctxsvc.errors import StoreCorrupt
from ctxsvc.service import ContextService
from ctxsvc.settings import Settings
from ctxsvc.stores.lance import LanceStore
from ctxsvc.tokens import TiktokenCounter

pytestmark = pytest.mark.slow  # the CLI runs in subprocesses

QUESTION = "how does the server handle a request"


def table_dir(settings: Settings, table: str) -> Path:
    """The directory of ``demo``'s table ``table`` (a first run's: named after the index)."""
    path = settings.db_path / f"demo__{table}.lance"
    assert path.is_dir(), sorted(p.name for p in settings.db_path.iterdir())
    return path


def newest_data_file(settings: Settings, table: str) -> Path:
    """A data file of the pinned version: the last written (by the run's compaction)."""
    files = sorted(
        (table_dir(settings, table) / "data").glob("*.lance"),
        key=lambda p: (p.stat().st_mtime_ns, p.name),
    )
    assert files
    return files[-1]


def pinned_manifest(settings: Settings, table: str) -> Path:
    meta = LanceStore(settings.db_path).meta("demo")
    assert meta is not None
    version = meta.versions[table]
    versions = table_dir(settings, table) / "_versions"
    for name in (f"{2**64 - 1 - version:020d}.manifest", f"{version}.manifest"):
        if (versions / name).is_file():
            return versions / name
    raise AssertionError(sorted(p.name for p in versions.iterdir()))


def truncate(settings: Settings) -> None:
    f = newest_data_file(settings, "chunks")
    os.truncate(f, f.stat().st_size // 2)


def delete(settings: Settings) -> None:
    newest_data_file(settings, "chunks").unlink()


def garble(settings: Settings) -> None:
    f = pinned_manifest(settings, "chunks")
    data = bytearray(f.read_bytes())
    for i in range(16, len(data) - 24, 5):
        data[i] ^= 0x5A
    f.write_bytes(bytes(data))


def no_versions(settings: Settings) -> None:
    shutil.rmtree(table_dir(settings, "chunks") / "_versions")


def vectors(settings: Settings) -> None:
    for f in (table_dir(settings, "vectors") / "data").glob("*.lance"):
        os.truncate(f, f.stat().st_size // 3)


DAMAGE: dict[str, tuple[Callable[[Settings], None], str]] = {
    "truncated data file": (truncate, "chunks"),
    "deleted data file": (delete, "chunks"),
    "garbled manifest": (garble, "chunks"),
    "deleted _versions": (no_versions, "chunks"),
    "damaged vectors": (vectors, "vectors"),
}


def fresh(settings: Settings, counter: TiktokenCounter) -> ContextService:
    """A service as a new process builds it: nothing cached."""
    return build_service(settings, embedder=HashEmbedder(), tokens=counter)


@pytest.mark.parametrize("form", list(DAMAGE))
def test_a_damaged_index_is_named_and_a_rebuild_repairs_it(
    form: str, settings: Settings, counter: TiktokenCounter, repo: Path, tmp_path: Path
) -> None:
    damage, table = DAMAGE[form]
    # Without vectors where they are not damaged: the CLI then loads no model.
    fresh(settings, counter).index(repo, vectors=table == "vectors")
    damage(settings)

    # Named before any query meets it (what /readyz reports), except damage inside
    # the vectors' data, found by the read that needs it.
    if table != "vectors":
        early = fresh(settings, counter).damaged()
        assert list(early) == ["demo"] and f"table {table}" in early["demo"], early

    # The library: a typed error naming the index and the table, with the hint.
    service = fresh(settings, counter)
    with pytest.raises(StoreCorrupt) as err:
        service.context("demo", QUESTION, 500)
    assert "index 'demo'" in err.value.message and f"table {table}" in err.value.message
    assert "damaged" in err.value.message and "\n" not in err.value.message
    assert err.value.hint == "run `ctxsvc index --rebuild demo`"
    damaged = service.catalog.damaged()
    assert list(damaged) == ["demo"] and f"table {table}" in damaged["demo"]
    with pytest.raises(StoreCorrupt):  # again: still damaged, still typed
        service.search("demo", QUESTION)
    # Its status is still given, from its row, and says it is damaged.
    assert any(d.startswith("damaged: index 'demo'") for d in service.status("demo").degraded)

    # The CLI: exit code 74 and one clear line, no traceback (a query on damaged vectors
    # would load the real model first: the library check above covers that form).
    env = cli_env(tmp_path / "home", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    if table != "vectors":
        done = run_cli(env, "query", "demo", QUESTION, "--no-refresh")
        assert done.returncode == 74, (done.stdout, done.stderr)
        assert "Traceback" not in done.stderr
        errors = [line for line in done.stderr.splitlines() if line.startswith("error")]
        assert len(errors) == 1 and "index 'demo'" in errors[0] and "damaged" in errors[0]
        assert "hint: run `ctxsvc index --rebuild demo`" in done.stderr

    # `ctxsvc index --rebuild NAME` repairs it, without reading what is damaged (from
    # a real process once; the library's rebuild is the same call).
    if form == "truncated data file":
        done = run_cli(env, "index", "--rebuild", "demo", "--no-vectors", "--json")
        assert done.returncode == 0, done.stderr
    else:
        fresh(settings, counter).index("demo", rebuild=True, vectors=False)
    assert service.context("demo", QUESTION, 500).items
    assert service.catalog.damaged() == {}
    assert fresh(settings, counter).context("demo", QUESTION, 500).items


@pytest.mark.parametrize("form", ["damaged vectors", "deleted data file"])
def test_a_rebuild_embeds_again_only_what_it_cannot_reuse(
    form: str, settings: Settings, counter: TiktokenCounter, repo: Path
) -> None:
    """The old vectors serve the rebuild when they are readable; damaged, they are
    embedded again, and the summary says so."""
    first = fresh(settings, counter).index(repo)
    DAMAGE[form][0](settings)
    model = HashEmbedder()
    service = build_service(settings, embedder=model, tokens=counter)
    s = service.index(repo, rebuild=True)
    if form == "damaged vectors":
        assert s.chunks_embedded == model.embedded == first.chunks_embedded > 0
        assert any("vectors" in w and "embedding again" in w for w in s.warnings), s.warnings
    else:
        assert s.chunks_embedded == model.embedded == 0 and not s.warnings
    assert s.vectors == "complete" and service.context("demo", QUESTION, 500).items


@pytest.mark.parametrize("how", ["garbled manifest", "no _versions"])
def test_a_damaged_registry_is_named_not_a_traceback(
    how: str, settings: Settings, counter: TiktokenCounter, repo: Path, tmp_path: Path
) -> None:
    fresh(settings, counter).index(repo, vectors=False)
    versions = settings.home / "lance" / "repos.lance" / "_versions"
    if how == "no _versions":
        shutil.rmtree(versions)
    else:
        for manifest in versions.glob("*.manifest"):
            manifest.write_bytes(b"\x00garbled\xff" * 64)
    with pytest.raises(StoreCorrupt, match=r"index registry .* is damaged"):
        fresh(settings, counter).context("demo", QUESTION, 500)
    env = cli_env(tmp_path / "home", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    done = run_cli(env, "status")
    assert done.returncode == 74, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and "index registry" in done.stderr
