"""Embedding on Ray (``--executor ray``): the same vectors as local embedding.

Real Ray (a local instance each test process starts), the real bundled model,
real tree-sitter and LanceDB: an index built with two Ray actors holds, chunk
for chunk, the vectors an index built by local worker processes holds. (Two
actors take calls of the local size; a larger pool takes larger calls, whose
int8 batches hold other neighbours: see ``ctxsvc.indexers.embed_ray``.)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import cli_env, make_repo, run_cli

from ctxsvc.compose import build_service
from ctxsvc.errors import ConfigError, ModelUnavailable
from ctxsvc.indexers.embed import EmbedderStalled, load_embedder
from ctxsvc.indexers.embed_ray import RayEmbedder, RayRecipe
from ctxsvc.settings import Settings
from ctxsvc.stores.lance import LanceStore

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow
MODEL = "all-MiniLM-L6-v2"
WORDS = "cache evict store fetch parse token budget graph socket retry queue lock".split()


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One local Ray instance for this module (two CPUs: two actors)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def corpus(root: Path, n: int = 120) -> Path:
    files = {
        f"pkg/m{i}.py": f"def {WORDS[i % 12]}_{WORDS[(i * 5) % 12]}_{i}(x):\n"
        f"    # {WORDS[(i * 7) % 12]} item {i} {'of the queue ' * (i % 9)}\n"
        f"    return x + {i}\n"
        for i in range(n)
    }
    return make_repo(root, files)


def vectors(home: Path, name: str) -> dict[str, np.ndarray]:
    reader = LanceStore(Settings.from_env({}, home=home).db_path).reader(name)
    hashes = reader.vector_hashes()
    assert hashes
    return reader.vectors_of(hashes)


def test_an_index_embedded_on_ray_holds_the_vectors_of_local_embedding(tmp_path: Path) -> None:
    repo = corpus(tmp_path / "demo")
    local = run_cli(cli_env(tmp_path / "local"), "index", str(repo), "--json")
    assert local.returncode == 0, local.stderr
    # A Ray job of its own: the CLI starts a local instance and stops it on exit.
    on_ray = run_cli(
        cli_env(tmp_path / "ray", CTXSVC_EMBED_WORKERS="2"),
        "index", str(repo), "--executor", "ray", "--json",
    )  # fmt: skip
    assert on_ray.returncode == 0, on_ray.stderr
    a, b = json.loads(local.stdout), json.loads(on_ray.stdout)
    assert a["vectors"] == b["vectors"] == "complete"
    assert a["model"] == b["model"]
    assert a["chunks_embedded"] == b["chunks_embedded"] >= 120
    va, vb = vectors(tmp_path / "local", "demo"), vectors(tmp_path / "ray", "demo")
    assert va.keys() == vb.keys()
    worst = max(float(np.abs(va[h] - vb[h]).max()) for h in va)
    assert worst < 1e-5, f"a vector differs by {worst}"


def test_a_static_index_on_ray_outlives_the_thread_that_loaded_the_model(tmp_path: Path) -> None:
    """The static tier on Ray, through the lazy loader whose thread ends once the model is
    loaded: the pool must outlive that thread. (A local Ray instance's daemons die with the
    thread that started them; before ``_init_ray``, a static index of tokio's 561 files
    died mid-run. This corpus is smaller, and the race may not be met on it.)"""
    repo = corpus(tmp_path / "demo")
    home = tmp_path / "home"
    got = run_cli(cli_env(home), "index", str(repo), "--model", "static", "--executor", "ray",
                  "--json")  # fmt: skip
    assert got.returncode == 0, got.stderr[-2000:]
    summary = json.loads(got.stdout)
    assert summary["vectors"] == "complete", summary["warnings"]
    assert summary["chunks_embedded"] >= 120


def recipe(model: str = MODEL, *, static: bool = False, cache: Path) -> RayRecipe:
    return RayRecipe(model, 192, True, 8, str(cache), static)


def test_ray_embedding_equals_the_in_process_model_batch_for_batch(
    tmp_path: Path, local_ray: None
) -> None:
    kw = {"max_seq_tokens": 192, "quantize": True, "batch_size": 8, "threads": 1}
    local = load_embedder(MODEL, cache_dir=tmp_path, workers=1, **kw)
    texts = [f"def f{i}(x):\n    return x * {i}{' + y' * (i % 23)}\n" for i in range(150)]
    pooled = RayEmbedder(local, recipe(cache=tmp_path), actors=2)
    try:
        got = pooled.embed(texts)
        assert pooled.size == 2
        assert np.abs(got - local.embed(texts)).max() < 1e-5
        assert pooled.embed(texts[:3]).shape == (3, local.dimension)  # small: in process
    finally:
        pooled.close()
    assert ray.is_initialized()  # the module's instance: not this embedder's to stop


def test_a_lost_actor_fails_the_call_retryably_and_the_next_call_starts_anew(
    tmp_path: Path, local_ray: None
) -> None:
    local = load_embedder(MODEL, cache_dir=tmp_path, workers=1, max_seq_tokens=192,
                          quantize=True, batch_size=8, threads=1)  # fmt: skip
    pooled = RayEmbedder(local, recipe(cache=tmp_path), actors=2)
    texts = [f"token {i} of a text" for i in range(80)]
    try:
        first = pooled.embed(texts)
        ray.kill(pooled._held.pool[0])
        with pytest.raises(EmbedderStalled, match="Ray actor was lost"):
            pooled.embed(texts)
        assert pooled.size == 0
        assert np.abs(pooled.embed(texts) - first).max() < 1e-5
        assert pooled.size == 2
    finally:
        pooled.close()


def test_actors_that_load_another_model_are_refused(tmp_path: Path, local_ray: None) -> None:
    local = load_embedder(MODEL, cache_dir=tmp_path, workers=1, max_seq_tokens=192,
                          quantize=True, batch_size=8, threads=1)  # fmt: skip
    # The actors build the model without int8 while this process holds it with.
    other = RayRecipe(MODEL, 192, False, 8, str(tmp_path), False)
    pooled = RayEmbedder(local, other, actors=1)
    try:
        with pytest.raises(ModelUnavailable, match=r"loaded all-MiniLM-L6-v2@seq192 \(384"):
            pooled.embed([f"text {i}" for i in range(100)])
        assert pooled.size == 0
    finally:
        pooled.close()


def test_the_ray_executor_without_ray_installed_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("ctxsvc.compose.ray_missing", lambda: "Ray is not installed (test)")
    settings = Settings.from_env({}, home=tmp_path / "home", embed_executor="ray")
    with pytest.raises(ConfigError, match="CTXSVC_EMBED_EXECUTOR=ray: Ray is not installed"):
        build_service(settings)
