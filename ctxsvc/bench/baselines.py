"""Baselines: BM25 over whole files or line windows, and the oracle, packed in rank order.

Documents are tokenized as lower-cased identifier words with camelCase and
snake_case split (``indexers.terms``), of the path and the text. Packing is
greedy in rank order and checks the exact token count of the whole rendered
context, so a baseline never exceeds its budget. The one owner of ``bm25s``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ctxsvc.bench.metrics import Span, delivered_lines, merge_spans
from ctxsvc.errors import ConfigError
from ctxsvc.tokens import TokenCounter
from indexers.terms import code_terms, path_terms

SEPARATOR = "\n"  # between snippets, as ctxsvc.packing renders them
# BPE counts of parts and of their concatenation differ by a token or two at a
# seam: only candidates this close to the budget by the estimate get an exact count.
_SEAM_SLACK = 8


@dataclass(frozen=True)
class Doc:
    """A retrievable unit: a whole file or a window of its lines."""

    path: str
    start_line: int
    end_line: int
    text: str  # lines start_line..end_line, verbatim

    def render(self) -> str:
        return render_snippet(self.path, self.start_line, self.end_line, self.text)


def render_snippet(path: str, start: int, end: int, text: str) -> str:
    """A ``## path:start-end`` heading and a fenced block, like ctxsvc's packer."""
    return f"## {path}:{start}-{end}\n```\n{text}\n```\n"


def tokenize(path: str, text: str) -> list[str]:
    return path_terms(path) + code_terms(text)


def file_docs(files: Mapping[str, str]) -> list[Doc]:
    """One document per file, in path order."""
    docs = []
    for path in sorted(files):
        text = files[path]
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        docs.append(Doc(path, 1, max(len(lines), 1), "\n".join(lines)))
    return docs


def window_docs(files: Mapping[str, str], size: int = 60, overlap: int = 30) -> list[Doc]:
    """Windows of ``size`` lines starting every ``size - overlap`` lines, per file.

    The last window of a file ends at its last line; a file shorter than
    ``size`` lines is one window.
    """
    if not 0 <= overlap < size:
        raise ValueError("need 0 <= overlap < size")
    step = size - overlap
    docs = []
    for path in sorted(files):
        lines = files[path].split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        n = max(len(lines), 1)
        start = 1
        while True:
            end = min(start + size - 1, n)
            docs.append(Doc(path, start, end, "\n".join(lines[start - 1 : end])))
            if end >= n:
                break
            start += step
    return docs


def oracle_docs(
    files: Mapping[str, str], gold: Sequence[str], regions: Mapping[str, Sequence[Sequence[int]]],
    context: int = 10, head: int = 60,
) -> list[Doc]:  # fmt: skip
    """What a perfect localizer would send: the gold files' changed lines only.

    Each region with ``context`` lines either side, in gold order; a gold file
    without regions contributes its first ``head`` lines. Gold files absent
    from ``files`` (skipped by discovery) contribute nothing.
    """
    docs: list[Doc] = []
    for path in gold:
        if path not in files:
            continue
        lines = files[path].split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        n = max(len(lines), 1)
        spans = merge_spans(
            (max(1, int(r[0]) - context), min(n, int(r[1]) + context))
            for r in regions.get(path, ())
        ) or [(1, min(n, head))]
        docs.extend(Doc(path, s, e, "\n".join(lines[s - 1 : e])) for s, e in spans)
    return docs


def require_bm25s() -> Any:
    """The ``bm25s`` module, or a ConfigError saying how to install it."""
    try:
        import bm25s
    except ImportError:
        raise ConfigError(
            "the BM25 baselines need the bm25s package, which is not installed",
            hint="pip install 'ctxsvc[bench]'",
        ) from None
    # bm25s sets its logger to DEBUG on import and logs every index it builds.
    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s


class BM25Ranker:
    """bm25s over a list of documents; ``rank`` gives indices best first.

    ``terms`` may give each document's tokens (``tokenize``), precomputed.
    """

    def __init__(self, docs: Sequence[Doc], terms: Sequence[list[str]] | None = None) -> None:
        bm25s = require_bm25s()
        self.docs = list(docs)
        self._bm25 = bm25s.BM25()
        if terms is None:
            terms = [tokenize(d.path, d.text) for d in self.docs]
        self._bm25.index([t or ["\x00empty"] for t in terms], show_progress=False)
        self._vocab: set[str] = set(self._bm25.vocab_dict)

    def rank(self, query: str) -> list[int]:
        """Indices of the documents scoring above zero, best first (ties by order)."""
        terms = [t for t in dict.fromkeys(code_terms(query)) if t in self._vocab]
        if not terms:
            return []
        scores = self._bm25.get_scores(terms)
        order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
        return [i for i in order if scores[i] > 0]


@dataclass(frozen=True)
class Packed:
    """What a baseline delivers: the snippets kept, their lines and exact size."""

    docs: tuple[Doc, ...]
    delivered: dict[str, list[Span]]
    tokens: int
    rendered: str


def pack_ranked(
    ranked: Sequence[Doc],
    budget: int,
    counter: TokenCounter,
    *,
    sizes: Sequence[int] | None = None,
) -> Packed:
    """Greedy packing in rank order under ``budget`` tokens, counted exactly.

    A document that does not fit is skipped and packing continues with the
    next; one whose lines are all delivered already adds nothing and is skipped.
    ``sizes`` may give each document's rendered token count (precomputed).
    """
    sep = counter.count(SEPARATOR)
    kept: list[Doc] = []
    blocks: list[str] = []
    spans: dict[str, list[Span]] = {}
    used = 0  # the sum of parts; exact whenever it came near the budget
    smallest = min(sizes) if sizes else 1
    for i, doc in enumerate(ranked):
        if budget + _SEAM_SLACK - used < smallest:
            break
        have = spans.get(doc.path, [])
        if any(s <= doc.start_line and doc.end_line <= e for s, e in have):
            continue
        size = sizes[i] if sizes is not None else counter.count(doc.render())
        estimate = used + size + (sep if kept else 0)
        if estimate > budget + _SEAM_SLACK:
            continue
        block = doc.render()
        if estimate > budget - _SEAM_SLACK:  # close: count the whole text exactly
            estimate = counter.count(SEPARATOR.join([*blocks, block]))
            if estimate > budget:
                continue
        kept.append(doc)
        blocks.append(block)
        used = estimate
        spans[doc.path] = merge_spans([*have, (doc.start_line, doc.end_line)])
    rendered = SEPARATOR.join(blocks)
    tokens = counter.count(rendered)
    while tokens > budget:  # seams added more than the slack: drop the last kept
        kept.pop()
        blocks.pop()
        rendered = SEPARATOR.join(blocks)
        tokens = counter.count(rendered)
    delivered = delivered_lines((d.path, d.start_line, d.end_line) for d in kept)
    return Packed(tuple(kept), delivered, tokens, rendered)
