"""Baselines: BM25 over whole files or line windows, a grep agent, and the oracle.

BM25 documents are tokenized as lower-cased identifier words with camelCase and
snake_case split (``ctxsvc.indexers.terms``), of the path and the text. The grep agent
(``GrepAgent``) searches the query's terms as fixed strings and reads whole
files in match order (``pack_reads``). Packing checks the exact token count of
the whole rendered context, so a baseline never exceeds its budget. The one
owner of ``bm25s``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ctxsvc.bench.metrics import Span, delivered_lines, merge_spans
from ctxsvc.errors import ConfigError
from ctxsvc.indexers.terms import code_terms, path_terms
from ctxsvc.retrieval import _STOP as STOP_WORDS
from ctxsvc.tokens import TokenCounter

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
    return _finish(kept, blocks, budget, counter)


def _finish(kept: list[Doc], blocks: list[str], budget: int, counter: TokenCounter) -> Packed:
    """The pack of ``kept``, the last ones dropped while seams put it over ``budget``."""
    rendered = SEPARATOR.join(blocks)
    tokens = counter.count(rendered)
    while tokens > budget:  # seams added more than the slack: drop the last kept
        kept.pop()
        blocks.pop()
        rendered = SEPARATOR.join(blocks)
        tokens = counter.count(rendered)
    delivered = delivered_lines((d.path, d.start_line, d.end_line) for d in kept)
    return Packed(tuple(kept), delivered, tokens, rendered)


# -- the grep agent --------------------------------------------------------------

# A name as written: an identifier, or identifiers joined by "." or "::".
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:(?:\.|::)[A-Za-z_][A-Za-z0-9_]*)*")
_QUOTED = re.compile(r"`[^`\n]+`")
MAX_TERMS = 8  # searches an agent runs before it starts reading


def query_terms(query: str) -> tuple[list[str], list[str]]:
    """The search terms an agent takes from ``query``: identifiers and words.

    Identifiers are kept as written, in query order: names with an inner
    ``_``, camelCase (an upper-case letter after the first, and a lower-case
    one), dotted or ``::`` paths (``os.path``, ``tokio::spawn``) and anything
    in backticks. Words are the other alphabetic words of three letters or
    more, lower-cased, without retrieval's stop words, longest first (then in
    query order). Duplicates are dropped, case-insensitively.
    """
    quoted = [(m.start(), m.end()) for m in _QUOTED.finditer(query)]
    names: list[str] = []
    words: list[str] = []
    seen: set[str] = set()
    for m in _NAME.finditer(query):
        word = m.group()
        low = word.lower()
        if low in seen:
            continue
        joined = ("." in word or "::" in word) and len(word) >= 4  # not "e.g"
        camel = any(c.isupper() for c in word[1:]) and any(c.islower() for c in word)
        in_quotes = len(word) >= 2 and any(s < m.start() and m.end() < e for s, e in quoted)
        if "_" in word.strip("_") or joined or camel or in_quotes:
            names.append(word)
        elif len(word) >= 3 and word.isalpha() and low not in STOP_WORDS:
            words.append(low)
        else:
            continue
        seen.add(low)
    return names, sorted(words, key=len, reverse=True)  # sorted() is stable


class GrepAgent:
    """What a tool-using agent without an index reads, simulated deterministically.

    The agent greps the query's terms (``query_terms``) one at a time, as
    ``rg -i -F -l TERM`` would: case-insensitive fixed strings over each
    document's text (whole files, the ones the BM25 baselines use; paths are
    not searched). A term found nowhere costs nothing, but a qualified name
    found nowhere is tried again by its tails (``Instant::elapsed``, then
    ``elapsed``). Of the terms found it keeps the identifiers in query order,
    then the words rarest first (fewest files matching; ties longest first),
    ``max_terms`` in all. It reads the matching
    files by how many distinct kept terms each holds, then by how many matches
    of them (non-overlapping, as ``rg --count-matches``), then by the earliest
    kept term it holds, then by path; ``pack_reads`` reads them under a budget.
    Python's ``str.count`` on lower-cased text does the searching: no ``rg``
    binary is needed.
    """

    def __init__(self, docs: Sequence[Doc], *, max_terms: int = MAX_TERMS) -> None:
        self.docs = list(docs)
        self.max_terms = max_terms
        self._texts = [d.text.lower() for d in self.docs]

    def search(self, query: str) -> tuple[list[str], list[int]]:
        """The terms kept, and the indices of the documents matching them in reading order."""
        names, words = query_terms(query)
        counts: dict[str, list[int]] = {}
        files: dict[str, int] = {}

        def found(term: str) -> int:
            if term not in counts:
                counts[term] = [text.count(term.lower()) for text in self._texts]
                files[term] = sum(1 for c in counts[term] if c)
            return files[term]

        kept: list[str] = []
        for name in names:
            # A qualified name found nowhere as written: its shorter tails, as an agent
            # tries `saturating_duration_since` after `Instant::saturating_duration_since`.
            tail = next((t for t in _tails(name) if found(t)), None)
            if tail is not None and tail.lower() not in {k.lower() for k in kept}:
                kept.append(tail)
        taken = {k.lower() for k in kept}
        rare = sorted((w for w in words if w not in taken and found(w)), key=files.__getitem__)
        kept = (kept + rare)[: self.max_terms]  # sorted() is stable: longest first in a tie
        ranked = []
        for i, doc in enumerate(self.docs):
            hits = [counts[t][i] for t in kept]
            matched = [j for j, c in enumerate(hits) if c]
            if matched:
                ranked.append((-len(matched), -sum(hits), matched[0], doc.path, i))
        ranked.sort()
        return kept, [r[-1] for r in ranked]

    def rank(self, query: str) -> list[int]:
        """Indices of the documents the agent reads, in reading order."""
        return self.search(query)[1]


def _tails(name: str) -> list[str]:
    """``a.b::c``, then ``b::c`` and ``c``: the tails of three letters or more."""
    cuts = [m.end() for m in re.finditer(r"\.|::", name)]
    return [name] + [name[i:] for i in cuts if len(name) - i >= 3]


def pack_reads(
    ranked: Sequence[Doc],
    budget: int,
    counter: TokenCounter,
    *,
    sizes: Sequence[int] | None = None,
) -> Packed:
    """An agent's reads under ``budget`` tokens: whole documents in order, the last one cut.

    Each document is read from its first line, whole, as an agent's read tool
    returns a file; the first that does not fit whole is cut to its longest
    prefix of lines that does, and reading stops there. Rendered and counted
    like ``pack_ranked``. ``sizes`` may give each document's rendered token count.
    """
    sep = counter.count(SEPARATOR)
    kept: list[Doc] = []
    blocks: list[str] = []
    used = 0  # the sum of parts; exact whenever it came near the budget
    for i, doc in enumerate(ranked):
        block = doc.render()
        size = sizes[i] if sizes is not None else counter.count(block)
        estimate = used + size + (sep if kept else 0)
        if budget - _SEAM_SLACK < estimate <= budget + _SEAM_SLACK:  # close: count exactly
            estimate = counter.count(SEPARATOR.join([*blocks, block]))
        if estimate <= budget:
            kept.append(doc)
            blocks.append(block)
            used = estimate
            continue
        room = budget - used - (sep if kept else 0)
        while (cut := _prefix(doc, room, counter)) is not None:
            total = counter.count(SEPARATOR.join([*blocks, cut.render()]))
            if total <= budget:
                kept.append(cut)
                blocks.append(cut.render())
                break
            room -= total - budget  # a seam cost more than the parts: ask for less
        break
    return _finish(kept, blocks, budget, counter)


def _prefix(doc: Doc, room: int, counter: TokenCounter) -> Doc | None:
    """The longest run of ``doc``'s first lines whose rendering fits ``room`` tokens."""
    lines = doc.text.split("\n")

    def cut(k: int) -> Doc:
        return Doc(doc.path, doc.start_line, doc.start_line + k - 1, "\n".join(lines[:k]))

    lo, hi = 0, len(lines)  # cut(lo) fits (lo = 0: nothing), cut(hi + 1) does not
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if counter.count(cut(mid).render()) <= room:
            lo = mid
        else:
            hi = mid - 1
    return cut(lo) if lo else None
