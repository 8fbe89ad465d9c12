"""The approximate vector index: chosen above the threshold, brute force below it.

Real LanceDB in a temp dir, real tree-sitter; the hash embedder stands in for the
model (the index does not care what made the vectors).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import git, make_repo, write_tree
from fakes import HashEmbedder

from ctxsvc.compose import build_service
from ctxsvc.service import ContextService
from ctxsvc.settings import Settings
from ctxsvc.stores import lance_ann
from ctxsvc.tokens import TiktokenCounter

WORDS = (
    "cache evict store fetch parse token budget graph socket retry queue lock "
    "timer channel buffer stream frame codec header route session window"
).split()
QUESTION = "how does the queue retry a socket frame"


def functions(n: int, start: int = 0) -> dict[str, str]:
    """``n`` files of a small function each (a chunk each), with its own pair of words."""
    files: dict[str, str] = {}
    for i in range(start, start + n):
        a, b = WORDS[i % len(WORDS)], WORDS[(i * 7 + 3) % len(WORDS)]
        files[f"pkg/m{i}.py"] = (
            f"def {a}_{b}_{i}(x):\n    # {a} the {b} of item {i}\n    return x + {i}\n"
        )
    return files


def build(tmp_path: Path, ann_min_vectors: int) -> ContextService:
    settings = Settings.from_env(
        {}, home=tmp_path / f"home-{ann_min_vectors}", ann_min_vectors=ann_min_vectors
    )
    return build_service(settings, embedder=HashEmbedder(), tokens=TiktokenCounter("cl100k_base"))


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "demo", functions(300))


def test_above_the_threshold_the_view_searches_the_approximate_index(
    tmp_path: Path, corpus: Path
) -> None:
    approx = build(tmp_path, ann_min_vectors=256)
    exact = build(tmp_path, ann_min_vectors=100_000)
    approx.index(corpus)
    exact.index(corpus)
    a = approx.view(approx.resolve("demo"))
    e = exact.view(exact.resolve("demo"))
    assert len(a.chunks) == len(e.chunks) >= 300

    # Above the threshold: the table has the index, the view holds no matrix.
    found = a.reader.ann()
    assert found is not None and found.trained_rows >= 300
    assert a.ann and a.vectors is None and a.has_vector is not None and a.has_vector.all()
    # Below it: no index, the whole matrix in memory.
    assert e.reader.ann() is None and not e.ann and e.vectors is not None

    q = HashEmbedder().embed([QUESTION])[0]
    approximate, exact_hits = a.nearest(q, 10), e.nearest(q, 10)
    got, want = [i for i, _ in approximate], [i for i, _ in exact_hits]
    assert len(got) == 10 and len(set(got)) == 10
    # Chunk positions are the same in both views (sorted by path and line).
    assert [a.chunks[i].id for i in want] == [e.chunks[i].id for i in want]
    # Recall at 10, ties counted as found (many chunks share their words here): the
    # approximate hits at least as near as the exact tenth, their similarity true.
    tenth = exact_hits[-1][1]
    assert sum(1 for _, sim in approximate if sim >= tenth - 1e-5) >= 8
    cos = a.cosines(got, q)
    assert cos is not None
    np.testing.assert_allclose([sim for _, sim in approximate], cos, atol=1e-4)
    # The ranker's cosines come from the full vectors either way.
    pos = sorted(set(got) | set(want) | {0, 1, 2})
    cos_a, cos_e = a.cosines(pos, q), e.cosines(pos, q)
    assert cos_a is not None and cos_e is not None
    np.testing.assert_allclose(cos_a, cos_e, rtol=1e-5, atol=1e-6)

    # The answer is the same kind of answer: vector hits among its reasons.
    pack = approx.context("demo", QUESTION, 800)
    assert pack.items and pack.tokens_used <= 800


def test_new_rows_extend_the_index_and_a_doubled_table_retrains_it(
    tmp_path: Path, corpus: Path
) -> None:
    service = build(tmp_path, ann_min_vectors=256)
    service.index(corpus)
    first = service.view(service.resolve("demo")).reader.ann()
    assert first is not None

    # A few more chunks: the same trained index, extended with them.
    write_tree(corpus, functions(16, start=300))
    git(corpus, "add", "-A")
    service.index(corpus)
    view = service.view(service.resolve("demo"))
    again = view.reader.ann()
    assert again == first and view.ann and view.has_vector is not None and view.has_vector.all()
    table = view.reader.table("vectors")
    stats = table.index_stats(first.name)
    assert stats.num_unindexed_rows == 0 and stats.num_indexed_rows >= len(view.chunks)
    names = [c.id for c in view.chunks if "_300(" in c.text or "_315(" in c.text]
    assert len(names) == 2  # the new functions are chunks of the view

    # Past twice the rows it was trained on: trained again, on all of them.
    write_tree(corpus, functions(300, start=316))
    service.index(corpus)
    view = service.view(service.resolve("demo"))
    third = view.reader.ann()
    assert third is not None and third.trained_rows >= 2 * first.trained_rows
    assert [ix.name for ix in view.reader.table("vectors").list_indices()].count(third.name) == 1
    assert first.name not in {ix.name for ix in view.reader.table("vectors").list_indices()}


def test_vectors_no_chunk_of_the_view_holds_do_not_take_its_places(
    tmp_path: Path, corpus: Path
) -> None:
    """A branch left keeps its chunks' vectors (its snapshot's): the search of the
    branch checked out asks past them."""
    service = build(tmp_path, ann_min_vectors=256)
    zebras = {f"pkg/z{i}.py": f"def zebra_{i}(x):\n    # zebra stripes zebra {i}\n    return x\n"
              for i in range(40)}  # fmt: skip
    write_tree(corpus, zebras)
    git(corpus, "add", "-A")
    git(corpus, "commit", "-qm", "zebras")
    service.index(corpus)
    git(corpus, "checkout", "-qb", "horses")
    write_tree(corpus, {p: t.replace("zebra", "horse") for p, t in zebras.items()})
    git(corpus, "commit", "-qam", "horses")
    summary = service.index(corpus)
    assert not summary.warnings
    view = service.view(service.resolve("demo"))
    assert view.ann and view.ann_foreign == 40
    assert not any("zebra" in c.text for c in view.chunks)

    q = HashEmbedder().embed(["zebra stripes zebra"])[0]
    hits = view.nearest(q, 10)
    assert len(hits) == 10  # the 40 zebras are the nearest in the table, and skipped
    assert all(0 <= i < len(view.chunks) for i, _ in hits)


def test_a_failed_build_keeps_the_vectors_and_says_so(
    tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(table: object, min_rows: int, what: str) -> None:
        raise RuntimeError("no space for the index")

    monkeypatch.setattr("ctxsvc.stores.lance_vectors.ensure", broken)
    service = build(tmp_path, ann_min_vectors=256)
    summary = service.index(corpus)
    assert any("approximate vector index" in w and "no space" in w for w in summary.warnings)
    meta = service.resolve("demo")
    assert meta.vectors == "complete"
    view = service.view(meta)
    assert not view.ann and view.vectors is not None and view.has_vector is not None
    assert view.has_vector.all()

    # Not again over the same vectors (a build takes minutes at scale)...
    monkeypatch.undo()
    again = service.index(corpus)
    assert not again.warnings and not service.view(service.resolve("demo")).ann
    # ...but once they change: built, and pinned.
    write_tree(corpus, functions(1, start=300))
    git(corpus, "add", "-A")
    again = service.index(corpus)
    assert not again.warnings
    assert [t.stage for t in again.timings].count("embed") == 1
    view = service.view(service.resolve("demo"))
    assert view.ann and view.reader.ann() is not None


def test_plan_fits_the_rows_and_the_dimension() -> None:
    assert lance_ann.plan(1_000_000, 384) == (1000, 48)
    assert lance_ann.plan(3_852, 384) == (15, 48)  # one partition per 256 rows at most
    assert lance_ann.plan(100, 64) == (1, 8)
    assert lance_ann.plan(10_000, 6) == (39, 3)
    assert lance_ann.plan(100_000_000, 384)[0] == 4096


def test_a_bad_threshold_is_a_config_error() -> None:
    from ctxsvc.errors import ConfigError

    with pytest.raises(
        ConfigError,
        match="CTXSVC_ANN_MIN_VECTORS='1': input should be greater than or equal to 256",
    ):
        Settings.from_env({"CTXSVC_ANN_MIN_VECTORS": "1"})
