"""The learned ranker: features per candidate, the shipped model, and the fall-back to fusion."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import lightgbm
import numpy as np
import pytest
from conftest import git, write_tree

from ctxsvc import ranking
from ctxsvc.compose import build_service
from ctxsvc.errors import RankerUnavailable
from ctxsvc.ranking import FEATURE_VERSION, FEATURES, Ranker, features, save_model
from ctxsvc.retrieval import RetrievalConfig, gather, retrieve
from ctxsvc.service import ContextService
from ctxsvc.settings import Settings
from ctxsvc.tokens import TiktokenCounter

COL = {name: i for i, name in enumerate(FEATURES)}


def _view(service: ContextService, root: Path):  # type: ignore[no-untyped-def]
    return service.catalog.current(str(root)).view


def _rows(service: ContextService, root: Path, query: str, **config: object):  # type: ignore[no-untyped-def]
    view = _view(service, root)
    cfg = RetrievalConfig(**config)  # type: ignore[arg-type]
    vector = service.embedder.embed([query])[0] if service.embedder else None
    signals = gather(view, query, vector, cfg, limit=60)
    pos, x = features(view, query, signals, history=cfg.history)
    return view, pos, x


def _row_of(view, pos, x, path: str, line: int):  # type: ignore[no-untyped-def]
    target = view.chunk_at(path, line)
    assert target in pos, f"{path}:{line} is not a candidate"
    return x[pos.index(target)]


def test_features_carry_each_signal_the_path_and_the_chunk_shape(
    indexed: ContextService, repo: Path
) -> None:
    view, pos, x = _rows(indexed, repo, "Server handle request store")
    assert x.shape == (len(pos), len(FEATURES)) and x.dtype == np.float32
    assert np.isfinite(x).all()
    row = _row_of(view, pos, x, "app/server.py", 10)  # class Server
    assert row[COL["symbol_rrank"]] > 0  # the query names Server
    assert row[COL["fts_rrank"]] > 0
    assert row[COL["path_cover"]] > 0  # "server" is in the path
    assert row[COL["name_cover"]] > 0
    assert row[COL["is_test"]] == 0 and row[COL["is_prose"]] == 0
    # The best fused candidate has reciprocal fused rank 1 and the file aggregates bound it.
    assert x[:, COL["fused_rrank"]].max() == 1.0
    assert (x[:, COL["file_best"]] >= x[:, COL["fused"]] - 1e-6).all()
    assert (x[:, COL["file_sum"]] >= x[:, COL["file_best"]] - 1e-6).all()
    if any(view.chunks[i].language is None for i in pos):
        prose = [r for r, i in enumerate(pos) if view.chunks[i].language is None]
        assert (x[prose, COL["is_prose"]] == 1).all()


def test_history_features_come_from_git_and_switch_off(
    tmp_path: Path, service: ContextService
) -> None:
    root = tmp_path / "hist"
    write_tree(root, {"pkg/cold.py": "def cold_store(x):\n    return x\n"})
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "start")
    write_tree(root, {
        "pkg/hot.py": "def hot(x):\n    return x\n",
        "pkg/partner.py": "def partner(x):\n    return x\n",
    })  # fmt: skip
    git(root, "add", "-A")
    git(root, "commit", "-qm", "more")
    for n in range(4):  # hot.py and partner.py always change together
        write_tree(root, {
            "pkg/hot.py": f"def hot(x):\n    return x + {n}\n",
            "pkg/partner.py": f"def partner(x):\n    return x * {n}\n",
        })  # fmt: skip
        git(root, "commit", "-qam", f"change {n}")
    service.index(root)
    view, pos, x = _rows(service, root, "hot partner cold store value")
    assert view.history.commits == 6
    hot = _row_of(view, pos, x, "pkg/hot.py", 1)
    cold = _row_of(view, pos, x, "pkg/cold.py", 1)
    assert hot[COL["has_history"]] == 1
    assert hot[COL["file_commits"]] > cold[COL["file_commits"]] > 0
    assert hot[COL["span_commits"]] > cold[COL["span_commits"]]
    assert hot[COL["file_age"]] <= cold[COL["file_age"]]
    partner = _row_of(view, pos, x, "pkg/partner.py", 1)
    assert partner[COL["cochange"]] > 0 or hot[COL["cochange"]] > 0
    assert cold[COL["cochange"]] == 0
    _, _, off = _rows(service, root, "hot partner cold store value", history=False)
    assert (off[:, COL["has_history"]] == 0).all() and (off[:, COL["file_commits"]] == 0).all()


def _toy_model(path: Path, feature: str, *, version: int = FEATURE_VERSION) -> Path:
    """A model that ranks by one feature: label 1 where it is set."""
    rng = np.random.default_rng(0)
    x = rng.random((400, len(FEATURES))).astype(np.float32)
    x[:, COL[feature]] = rng.integers(0, 2, 400)
    y = x[:, COL[feature]].astype(int)
    params = {"objective": "lambdarank", "verbose": -1, "num_threads": 1, "min_data_in_leaf": 5}
    booster = lightgbm.train(params, lightgbm.Dataset(x, y, group=[20] * 20), 20)
    save_model(booster, path, {"name": f"toy-{feature}"})
    if version != FEATURE_VERSION:
        head, _, body = path.read_text().partition("\n")
        meta = json.loads(head) | {"feature_version": version}
        path.write_text(json.dumps(meta) + "\n" + body)
    return path


def test_the_ranker_orders_the_candidates(
    indexed: ContextService, repo: Path, tmp_path: Path
) -> None:
    view = _view(indexed, repo)
    query = "Server handle request store"
    vector = indexed.embedder.embed([query])[0] if indexed.embedder else None
    toy = Ranker.load(_toy_model(tmp_path / "prose.txt", "is_prose"))
    hits = retrieve(view, query, vector, RetrievalConfig(), limit=60, ranker=toy)
    fused = retrieve(view, query, vector, RetrievalConfig(), limit=60)
    assert sorted(h.chunk.id for h in hits) == sorted(h.chunk.id for h in fused)
    assert hits[0].chunk.language is None  # the toy model puts prose first
    assert fused[0].chunk.language is not None  # fusion's prose prior puts it last
    assert all(0 < h.score < 1 for h in hits)


@pytest.mark.parametrize("history", [True, False])
def test_the_shipped_models_load_offline_and_score(history: bool) -> None:
    path = ranking.model_path(history)
    model = Ranker.load(path, history)
    scores = model.score(np.zeros((3, len(FEATURES)), dtype=np.float32))
    assert scores.shape == (3,) and np.isfinite(scores).all()
    head = json.loads(path.read_text().partition("\n")[0])
    assert head["feature_version"] == FEATURE_VERSION and head["features"] == list(FEATURES)
    assert head["history"] is history and head["tasks"] >= 1000 and len(head["repos"]) >= 20
    with pytest.raises(RankerUnavailable, match="history"):
        Ranker.load(path, not history)  # the other model's place: refused by its header


def test_without_a_query_vector_the_answer_is_ranked_by_fusion_and_says_so(
    settings: Settings, counter: TiktokenCounter, repo: Path
) -> None:
    service = build_service(settings, tokens=counter, vectors=False)
    service.index(repo)
    pack = service.context(str(repo), "Server handle request store", 600)
    assert "ranking: hand-weighted fusion (no query vector)" in pack.degraded
    assert pack.items and pack.tokens_used <= 600


@pytest.mark.parametrize("damage", ["missing", "version", "body", "header"])
def test_a_bad_model_file_is_refused_by_name(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "ranker.txt"
    if damage == "version":
        _toy_model(path, "fts_rrank", version=FEATURE_VERSION + 1)
    elif damage == "body":
        _toy_model(path, "fts_rrank")
        head, _, body = path.read_text().partition("\n")
        path.write_text(head + "\n" + body[: len(body) // 3])
    elif damage == "header":
        path.write_text("not json\n")
    with pytest.raises(RankerUnavailable) as exc:
        Ranker.load(path)
    assert "ranker" in exc.value.message and exc.value.retryable is False


def test_without_a_model_the_answer_falls_back_to_fusion_and_says_so(
    indexed: ContextService, repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ranking, "MODEL_PATH", tmp_path / "absent.txt")
    monkeypatch.setattr(ranking, "_loaded", {})
    query = "Server handle request store"
    pack = indexed.context(str(repo), query, 600)
    assert any(d.startswith("ranking: hand-weighted fusion") for d in pack.degraded)
    fusion = replace(indexed.queries, retrieval=RetrievalConfig(ranker="fusion"))
    plain = fusion.context(str(repo), query, 600)
    assert [(i.path, i.start_line, i.end_line) for i in pack.items] == [
        (i.path, i.start_line, i.end_line) for i in plain.items
    ]
    assert not any(d.startswith("ranking:") for d in plain.degraded)


def test_the_learned_ranker_answers_by_default_without_degrading(
    indexed: ContextService, repo: Path
) -> None:
    pack = indexed.context(str(repo), "Server handle request store", 600)
    assert pack.items and not any(d.startswith("ranking:") for d in pack.degraded)
    assert pack.tokens_used <= 600
