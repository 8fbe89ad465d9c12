"""The learned ranker: features of each candidate chunk, scored by a LambdaRank model.

Retrieval's signals (full text, vector, symbol, graph) each name candidates
with a score and a rank. Hand-weighted reciprocal-rank fusion sums the ranks
with fixed weights; the learned ranker instead sees, per candidate, every
signal's score and rank, path priors, the chunk's kind and size, how much of
the query its path, names and text cover, aggregates of its file, and the
file's and the lines' git history (how often and how lately they changed, and
how strongly the file changes together with the best files of the other
signals). A LightGBM LambdaRank model, trained on tasks mined from the
history of public repositories other than the benchmark's
(``benchmarks/train_ranker.py``), turns them into one score.

The model ships in the package (``ctxsvc/data/ranker.txt``, and
``ranker-nohist.txt`` trained without the history features, for an index
without git history) with a header line naming its feature version and the
hash of the model text; a missing, unreadable or incompatible file
raises :class:`RankerUnavailable`, and the query falls back to fusion and
says so in ``degraded``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
import threading
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ctxsvc.errors import RankerUnavailable
from ctxsvc.indexers.terms import code_terms, path_terms
from ctxsvc.view import RepoView

FEATURE_VERSION = 1
MODEL_PATH = Path(__file__).resolve().parent / "data" / "ranker.txt"
# Trained with the history features at zero: for indexes without git history, and ablation.
NO_HISTORY_MODEL_PATH = MODEL_PATH.with_name("ranker-nohist.txt")
SEEDS = 5  # best files of the fused ranking whose co-change partners gain
NO_AGE = 3650.0  # days: the age of what never changed in the history read

FEATURES = (
    "fts_rrank", "fts_score", "vector_rrank", "vector_cos", "vector_gap", "has_vector",
    "symbol_rrank", "symbol_weight", "graph_rrank", "graph_score", "fused", "fused_rrank",
    "signals", "is_test", "is_prose", "path_depth", "log_tokens", "lines", "whole_definition",
    "definition_chunks", "path_cover", "name_cover", "text_cover", "file_best", "file_sum",
    "file_candidates", "file_rrank", "file_best_cos", "file_best_fts", "file_commits",
    "file_age", "span_commits", "span_age", "cochange", "has_history",
)  # fmt: skip
_COL = {name: i for i, name in enumerate(FEATURES)}


@dataclass
class Signals:
    """What each signal found: chunk position -> (1-based rank, score)."""

    ranked: dict[str, dict[int, tuple[int, float]]] = field(default_factory=dict)
    fused: dict[int, float] = field(default_factory=dict)  # hand-weighted fusion, no priors
    query_vector: npt.NDArray[np.float32] | None = None

    def add(self, signal: str, ranked: Sequence[tuple[int, float]]) -> None:
        self.ranked[signal] = {i: (r, s) for r, (i, s) in enumerate(ranked, start=1)}

    def positions(self) -> list[int]:
        return sorted(self.fused)


def features(
    view: RepoView, query: str, signals: Signals, *, history: bool = True
) -> tuple[list[int], npt.NDArray[np.float32]]:
    """The candidates (chunk positions) and their feature rows, in ``FEATURES`` order."""
    pos = signals.positions()
    n = len(pos)
    x = np.zeros((n, len(FEATURES)), dtype=np.float32)
    if not n:
        return pos, x
    chunks = view.chunks
    for signal, col_r, col_s in (
        ("fts", "fts_rrank", "fts_score"),
        ("symbol", "symbol_rrank", "symbol_weight"),
        ("graph", "graph_rrank", "graph_score"),
        ("vector", "vector_rrank", None),
    ):
        got = signals.ranked.get(signal, {})
        top = max((s for _, s in got.values()), default=0.0) or 1.0
        for row, i in enumerate(pos):
            hit = got.get(i)
            if hit is not None:
                x[row, _COL[col_r]] = 1.0 / hit[0]
                if col_s is not None:
                    x[row, _COL[col_s]] = hit[1] / top
                x[row, _COL["signals"]] += 1.0
    q = signals.query_vector
    cos = view.cosines(pos, q) if q is not None else None
    if cos is not None:
        x[:, _COL["vector_cos"]] = cos
        x[:, _COL["vector_gap"]] = cos - cos.max()
        x[:, _COL["has_vector"]] = 1.0
    fused = np.array([signals.fused[i] for i in pos], dtype=np.float32)
    top_fused = float(fused.max()) or 1.0
    x[:, _COL["fused"]] = fused / top_fused
    order = np.argsort(-fused, kind="stable")
    x[order, _COL["fused_rrank"]] = 1.0 / np.arange(1, n + 1, dtype=np.float32)

    words = _query_words(query)
    by_file: dict[str, list[int]] = defaultdict(list)
    for row, i in enumerate(pos):
        c = chunks[i]
        by_file[c.path].append(row)
        x[row, _COL["is_test"]] = float(_is_test(c.path))
        x[row, _COL["is_prose"]] = float(c.language is None)
        x[row, _COL["path_depth"]] = c.path.count("/")
        x[row, _COL["log_tokens"]] = math.log1p(c.tokens)
        x[row, _COL["lines"]] = math.log1p(c.end_line - c.start_line + 1)
        whole, parts = _definition_shape(view, i)
        x[row, _COL["whole_definition"]] = float(whole)
        x[row, _COL["definition_chunks"]] = math.log1p(parts)
        if words:
            x[row, _COL["path_cover"]] = len(words & _path_words(c.path)) / len(words)
            x[row, _COL["name_cover"]] = len(words & _name_words(c.symbols)) / len(words)
            x[row, _COL["text_cover"]] = len(words & _text_words(c.id, c.text)) / len(words)

    file_best = {p: float(x[rows, _COL["fused"]].max()) for p, rows in by_file.items()}
    file_order = sorted(file_best, key=lambda p: (-file_best[p], p))
    file_rank = {p: r for r, p in enumerate(file_order, start=1)}
    for p, rows in by_file.items():
        x[rows, _COL["file_best"]] = file_best[p]
        x[rows, _COL["file_sum"]] = float(x[rows, _COL["fused"]].sum())
        x[rows, _COL["file_candidates"]] = math.log1p(len(rows))
        x[rows, _COL["file_rrank"]] = 1.0 / file_rank[p]
        x[rows, _COL["file_best_cos"]] = float(x[rows, _COL["vector_cos"]].max())
        x[rows, _COL["file_best_fts"]] = float(x[rows, _COL["fts_score"]].max())

    hist = view.history
    if history and hist.commits:
        x[:, _COL["has_history"]] = 1.0
        seeds = file_order[:SEEDS]
        for p, rows in by_file.items():
            fh = hist.file(p)
            x[rows, _COL["file_commits"]] = math.log1p(fh.commits) if fh else 0.0
            x[rows, _COL["file_age"]] = math.log1p(fh.age_days if fh else NO_AGE)
            x[rows, _COL["cochange"]] = sum(
                hist.cochanged(s).get(p, 0.0) * file_best[s] for s in seeds if s != p
            )
            for row in rows:
                c = chunks[pos[row]]
                count, age = hist.span(p, c.start_line, c.end_line)
                x[row, _COL["span_commits"]] = math.log1p(count)
                x[row, _COL["span_age"]] = math.log1p(NO_AGE if age is None else age)
    else:
        blank_history(x)
    return pos, x


HISTORY_FEATURES = (
    "file_commits",
    "file_age",
    "span_commits",
    "span_age",
    "cochange",
    "has_history",
)


def blank_history(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """``x`` (in place) as without git history: what an index without it computes."""
    for name in HISTORY_FEATURES:
        x[:, _COL[name]] = math.log1p(NO_AGE) if name.endswith("_age") else 0.0
    return x


class Ranker:
    """A LambdaRank model over ``FEATURES``: higher scores rank first."""

    def __init__(self, booster: Any, name: str) -> None:
        self._booster = booster
        self.name = name

    @classmethod
    def load(cls, path: Path | None = None, history: bool | None = None) -> Ranker:
        """The model at ``path``; raises RankerUnavailable naming what is wrong.

        With ``history``, the model must have been trained with (or without) the
        history features, as its header says.
        """
        path = path or MODEL_PATH
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise RankerUnavailable(f"no learned ranker at {path.name} ({exc.strerror})") from exc
        head, _, body = text.partition("\n")
        try:
            meta = json.loads(head)
            version, names = int(meta["feature_version"]), list(meta["features"])
            digest = str(meta["sha256"])
        except (ValueError, KeyError, TypeError) as exc:
            raise RankerUnavailable(f"the learned ranker {path.name} has no valid header") from exc
        # LightGBM aborts the process on some damaged model texts: check them first.
        if hashlib.sha256(body.encode("utf-8")).hexdigest() != digest:
            raise RankerUnavailable(
                f"the learned ranker {path.name} is damaged (its content does not match its hash)"
            )
        if version != FEATURE_VERSION or names != list(FEATURES):
            raise RankerUnavailable(
                f"the learned ranker {path.name} is of feature version {version}, "
                f"this ctxsvc computes version {FEATURE_VERSION}"
            )
        if history is not None and meta.get("history") is not history:
            raise RankerUnavailable(
                f"the learned ranker {path.name} was trained "
                f"{'without' if history else 'with'} the git history features"
            )
        try:
            import lightgbm

            booster = lightgbm.Booster(model_str=body)
        except ImportError as exc:
            raise RankerUnavailable("lightgbm is not installed") from exc
        except Exception as exc:  # LightGBMError and parse errors of a damaged file
            raise RankerUnavailable(f"the learned ranker {path.name} does not load: {exc}") from exc
        if booster.num_feature() != len(FEATURES):
            raise RankerUnavailable(
                f"the learned ranker {path.name} takes {booster.num_feature()} features, "
                f"not {len(FEATURES)}"
            )
        return cls(booster, str(meta.get("name", path.stem)))

    def score(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        if not len(x):
            return np.zeros(0)
        return np.asarray(self._booster.predict(x, num_threads=1), dtype=np.float64)


def save_model(booster: Any, path: Path, meta: Mapping[str, Any]) -> None:
    """Write ``booster`` with its header line (feature version and names) to ``path``."""
    body = booster.model_to_string()
    head = {
        "feature_version": FEATURE_VERSION, "features": list(FEATURES), **meta,
        "sha256": hashlib.sha256(body.encode("utf-8")).hexdigest(),
    }  # fmt: skip
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(head) + "\n" + body, encoding="utf-8")
    tmp.replace(path)


_lock = threading.Lock()
_loaded: dict[tuple[Path, bool | None], Ranker | RankerUnavailable] = {}


def model_path(history: bool) -> Path:
    """The shipped model for an index with (or without) git history."""
    return MODEL_PATH if history else NO_HISTORY_MODEL_PATH


def shipped_ranker(path: Path | None = None, history: bool | None = None) -> Ranker:
    """The packaged model, loaded once per process (a failure is remembered too)."""
    path = path or MODEL_PATH
    with _lock:
        got = _loaded.get((path, history))
        if got is None:
            try:
                got = Ranker.load(path, history)
            except RankerUnavailable as exc:
                got = exc
            _loaded[(path, history)] = got
    if isinstance(got, RankerUnavailable):
        raise got
    return got


def preload_rankers() -> None:
    """Load both shipped models now (a failure is remembered for the first query to say)."""
    for history in (True, False):
        with contextlib.suppress(RankerUnavailable):
            shipped_ranker(model_path(history), history)


_STOP = frozenset(
    """the and for with from that this when into not are was were has have had its also only
    than then them they there which while where what how why can should would will all any""".split()
)


def _query_words(query: str) -> frozenset[str]:
    return frozenset(w for w in code_terms(query) if len(w) > 2 and w not in _STOP)


@lru_cache(maxsize=65536)
def _path_words(path: str) -> frozenset[str]:
    return frozenset(path_terms(path))


def _name_words(names: tuple[str, ...]) -> frozenset[str]:
    return frozenset(code_terms(" ".join(names)))


@lru_cache(maxsize=65536)
def _text_words(chunk_id: str, text: str) -> frozenset[str]:  # keyed by the content-stable id
    return frozenset(code_terms(text))


def _definition_shape(view: RepoView, pos: int) -> tuple[bool, int]:
    """Whether chunk ``pos`` holds a whole definition, and how many chunks its innermost
    enclosing definition spans (1 when it holds it whole or lies outside every one)."""
    c = view.chunks[pos]
    lo, hi = c.start_line, c.end_line
    whole = False
    owner = None
    for s in view.symbols_of(c.path):
        if lo <= s.start_line and s.end_line <= hi:
            whole = True
        elif s.start_line <= hi and s.end_line >= lo:
            owner = s  # the last overlapping one is the innermost
    if owner is None:
        return whole, 1
    parts = sum(
        1
        for j in view.by_path.get(c.path, ())
        if view.chunks[j].start_line <= owner.end_line
        and view.chunks[j].end_line >= owner.start_line
    )
    return whole, max(parts, 1)


TEST_PATH = re.compile(
    r"(^|/)(tests?|testing|spec|specs|__tests__|benches|examples?)/|(^|/)test_[^/]*$|_test\.[a-z]+$|\.(test|spec)\.[a-z]+$"
)


def _is_test(path: str) -> bool:
    return bool(TEST_PATH.search(path))
