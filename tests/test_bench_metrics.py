"""Exact answers of the benchmark's metric functions and BM25 window packing."""

from __future__ import annotations

import pytest

from ctxsvc.bench.baselines import (
    BM25Ranker,
    file_docs,
    pack_ranked,
    render_snippet,
    window_docs,
)
from ctxsvc.bench.metrics import (
    aggregate,
    delivered_lines,
    file_hit,
    merge_spans,
    percentile,
    region_recall,
    savings,
)


class WordCounter:
    """Counts whitespace-separated words: a deterministic stand-in for cl100k."""

    name = "words"

    def count(self, text: str) -> int:
        return len(text.split())

    def count_many(self, texts: list[str]) -> list[int]:
        return [self.count(t) for t in texts]


def test_merge_spans_joins_overlapping_and_adjacent() -> None:
    assert merge_spans([(10, 20), (1, 3), (4, 5), (18, 25), (30, 30)]) == [
        (1, 5),
        (10, 25),
        (30, 30),
    ]


def test_delivered_lines_unions_items_per_path() -> None:
    got = delivered_lines([("a.py", 1, 10), ("b.py", 5, 6), ("a.py", 11, 20), ("a.py", 40, 50)])
    assert got == {"a.py": [(1, 20), (40, 50)], "b.py": [(5, 6)]}


def test_file_hit_is_share_of_gold_files_touched() -> None:
    delivered = {"a.py": [(1, 2)], "c.py": [(3, 3)]}
    assert file_hit(delivered, ["a.py", "b.py"]) == 0.5
    assert file_hit(delivered, ["a.py", "c.py"]) == 1.0
    assert file_hit(delivered, []) is None


def test_region_recall_needs_every_line_of_a_region() -> None:
    # Two snippets touching at line 20/21 merge, so [15, 25] is covered.
    delivered = delivered_lines([("a.py", 10, 20), ("a.py", 21, 30), ("b.py", 1, 5)])
    regions = {"a.py": [[15, 25], [29, 31]], "b.py": [[5, 5]], "c.py": [[1, 1]]}
    assert region_recall(delivered, regions) == 2 / 4
    assert region_recall(delivered, {}) is None
    assert region_recall(delivered, {"a.py": []}) is None


def test_savings_and_percentile() -> None:
    assert savings(250, 1000) == 0.75
    assert savings(0, 0) == 0.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 95) == pytest.approx(4.8)
    assert percentile([], 50) is None


def test_aggregate_means_tasks_per_repo_then_repos() -> None:
    def row(
        repo: str, fh: float, rr: float | None, tokens: int, overrun: bool = False
    ) -> dict[str, object]:
        return {"system": "s", "budget": 100, "repo": repo, "file_hit": fh, "region_recall": rr,
                "tokens": tokens, "savings": 0.5, "overrun": overrun}  # fmt: skip

    rows = [row("x", 1.0, 1.0, 10), row("x", 0.0, None, 20, True), row("y", 0.5, 0.0, 90)]
    per_repo, overall = aggregate(rows)
    assert per_repo["s"]["100"]["x"]["file_hit"] == 0.5
    assert per_repo["s"]["100"]["x"]["region_recall"] == 1.0  # the task without regions is left out
    assert per_repo["s"]["100"]["x"]["overruns"] == 1
    assert overall["s"]["100"]["file_hit"] == 0.5  # mean of 0.5 (x) and 0.5 (y)
    assert overall["s"]["100"]["region_recall"] == 0.5
    assert overall["s"]["100"]["tokens"] == 52.5
    assert overall["s"]["100"]["overruns"] == 1


def _numbered(n: int, word: str = "filler") -> str:
    return "\n".join(f"{word} line{i}" for i in range(1, n + 1)) + "\n"


def test_windows_step_by_size_minus_overlap_and_end_at_the_last_line() -> None:
    docs = window_docs({"a.py": _numbered(100), "b.py": _numbered(10)}, size=60, overlap=30)
    assert [(d.path, d.start_line, d.end_line) for d in docs] == [
        ("a.py", 1, 60),
        ("a.py", 31, 90),
        ("a.py", 61, 100),
        ("b.py", 1, 10),
    ]
    assert docs[1].text.split("\n")[0] == "filler line31"
    assert file_docs({"b.py": _numbered(10)})[0].end_line == 10


def test_bm25_window_packing_on_a_tiny_corpus() -> None:
    target = _numbered(40) + "def parse_http_header(value):\n    return value\n" + _numbered(38)
    files = {"pkg/net.py": target, "pkg/other.py": _numbered(50, "unrelated")}
    docs = window_docs(files, size=60, overlap=30)
    ranker = BM25Ranker(docs)
    ranked = [docs[i] for i in ranker.rank("parseHttpHeader is broken")]
    # Lines 41-42 lie in the first two windows of net.py only, and the shorter
    # one ranks first (BM25 length normalisation); other.py never matches.
    assert [(d.path, d.start_line, d.end_line) for d in ranked] == [
        ("pkg/net.py", 31, 80),
        ("pkg/net.py", 1, 60),
    ]

    counter = WordCounter()
    one = counter.count(ranked[0].render())
    packed = pack_ranked(ranked, one, counter)  # room for exactly one window
    assert packed.tokens == one
    assert packed.delivered == {"pkg/net.py": [(31, 80)]}
    assert region_recall(packed.delivered, {"pkg/net.py": [[41, 42]]}) == 1.0

    both = pack_ranked(ranked, 10_000, counter)
    assert both.delivered == {"pkg/net.py": [(1, 80)]}
    assert both.rendered == "\n".join(d.render() for d in both.docs)
    assert both.tokens == counter.count(both.rendered) <= 10_000


def test_pack_ranked_skips_what_does_not_fit_and_what_is_already_delivered() -> None:
    counter = WordCounter()
    big = file_docs({"big.py": _numbered(100)})[0]
    small = file_docs({"small.py": _numbered(3)})[0]
    dup = window_docs({"small.py": _numbered(3)})[0]  # the same lines again
    budget = counter.count(small.render()) + 5
    packed = pack_ranked([big, small, dup], budget, counter)
    assert [d.path for d in packed.docs] == ["small.py"]
    assert packed.tokens <= budget
    assert packed.rendered == render_snippet(
        "small.py", 1, 3, "filler line1\nfiller line2\nfiller line3"
    )
    assert pack_ranked([big], 3, counter).tokens == 0
