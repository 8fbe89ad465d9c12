"""The lazy embedder: a name and dimension at once, the model on first use."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from conftest import cli_env
from fakes import HashEmbedder

from ctxsvc.compose import build_service
from ctxsvc.errors import ModelUnavailable
from ctxsvc.indexers.embed import (
    Embedder,
    GuardedEmbedder,
    LazyEmbedder,
    ModelLoading,
    ModelSpec,
    SentenceTransformerEmbedder,
    describe,
    model_path,
)
from ctxsvc.settings import Settings
from ctxsvc.tokens import TiktokenCounter

HEAVY = ("torch", "sentence_transformers", "transformers", "model2vec")
SPEC = ModelSpec("hash", "hash-64", 64)


class Loads:
    """A load function that counts its calls and can be held until released."""

    def __init__(self, embedder: Embedder | None = None, *, hold: bool = False) -> None:
        self.embedder = embedder or HashEmbedder()
        self.calls = 0
        self.release = threading.Event()
        if not hold:
            self.release.set()

    def __call__(self) -> Embedder:
        self.calls += 1
        self.release.wait(timeout=30)
        return self.embedder


class Broken:
    def __call__(self) -> Embedder:
        raise OSError("weights are missing")


def test_name_and_dimension_are_known_before_the_load() -> None:
    load = Loads()
    lazy = LazyEmbedder(SPEC, load)
    assert (lazy.name, lazy.dimension, lazy.loaded, lazy.error) == ("hash-64", 64, False, None)
    assert lazy.embed([]).shape == (0, 64) and load.calls == 0  # nothing to embed: no load
    vecs = lazy.embed(["a text", "another"])
    assert vecs.shape == (2, 64) and lazy.loaded and load.calls == 1
    assert np.array_equal(vecs, HashEmbedder().embed(["a text", "another"]))


def test_start_loads_once_in_the_background() -> None:
    load = Loads(hold=True)
    lazy = LazyEmbedder(SPEC, load)
    lazy.start()
    lazy.start()
    assert not lazy.wait(0.05) and not lazy.loaded
    results: list[npt.NDArray[np.float32]] = []
    callers = [threading.Thread(target=lambda: results.append(lazy.embed(["x"]))) for _ in range(3)]
    for t in callers:
        t.start()
    load.release.set()
    for t in callers:
        t.join(10)
    assert lazy.wait(10) and lazy.loaded and len(results) == 3 and load.calls == 1


def test_a_failed_load_raises_model_unavailable_every_time() -> None:
    lazy = LazyEmbedder(SPEC, Broken())
    with pytest.raises(ModelUnavailable, match="could not be loaded: OSError: weights are missing"):
        lazy.embed(["x"])
    with pytest.raises(ModelUnavailable):
        lazy.wait(1)
    assert not lazy.loaded and lazy.error and "weights are missing" in lazy.error


@pytest.mark.parametrize(
    ("real", "why"),
    [(HashEmbedder(64, name="other"), "loaded as other"), (HashEmbedder(32), "32 dimensions")],
)
def test_a_model_that_loads_as_another_is_refused(real: HashEmbedder, why: str) -> None:
    lazy = LazyEmbedder(SPEC, Loads(real))
    with pytest.raises(ModelUnavailable, match=why):
        lazy.embed(["x"])
    assert not lazy.loaded


def test_guarded_waits_for_a_load_without_tripping_the_breaker() -> None:
    load = Loads(hold=True)
    guarded = GuardedEmbedder(LazyEmbedder(SPEC, load), timeout=0.1, cooldown=60)
    with pytest.raises(ModelLoading, match="the embedding model is still loading"):
        guarded.embed(["x"])
    assert guarded.paused() is None and not guarded.loaded and guarded.error is None
    load.release.set()
    assert guarded.wait(10) and guarded.loaded
    assert guarded.embed(["x"]).shape == (1, 64)


def test_guarded_passes_a_failed_load_through() -> None:
    guarded = GuardedEmbedder(LazyEmbedder(SPEC, Broken()), timeout=5)
    guarded.start()
    with pytest.raises(ModelUnavailable):
        guarded.embed(["x"])
    assert guarded.paused() is None and guarded.error and "weights are missing" in guarded.error


def test_a_plain_embedder_counts_as_loaded() -> None:
    guarded = GuardedEmbedder(HashEmbedder(), timeout=5).with_timeout(1)
    guarded.start()
    assert guarded.loaded and guarded.wait(0) and guarded.error is None


def write_model(root: Path, modules: list[str], *, seq: int | None = 256, dense: int = 0) -> Path:
    """The configuration files of a sentence-transformers model, without weights."""
    root.mkdir(parents=True)
    listed = []
    for i, kind in enumerate(modules):
        path = {"Transformer": "", "Pooling": "1_Pooling", "Dense": "2_Dense"}.get(kind, kind)
        listed.append({"idx": i, "name": str(i), "path": path, "type": f"x.models.{kind}"})
        if kind == "Pooling":
            (root / path).mkdir()
            pooling = {"word_embedding_dimension": 384, "pooling_mode_mean_tokens": True}
            (root / path / "config.json").write_text(json.dumps(pooling))
        if kind == "Dense":
            (root / path).mkdir()
            (root / path / "config.json").write_text(json.dumps({"out_features": dense}))
    (root / "modules.json").write_text(json.dumps(listed))
    (root / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": seq}))
    return root


def test_describe_reads_the_model_files(tmp_path: Path) -> None:
    plain = write_model(tmp_path / "plain", ["Transformer", "Pooling", "Normalize"])
    spec = describe(str(plain), max_seq_tokens=192, quantize=True, cache_dir=tmp_path)
    assert spec == ModelSpec(str(plain), f"{plain}@seq192+int8", 384)
    dense = write_model(tmp_path / "dense", ["Transformer", "Pooling", "Dense"], seq=128, dense=768)
    spec = describe(str(dense), max_seq_tokens=192, quantize=False, cache_dir=tmp_path)
    assert spec == ModelSpec(str(dense), f"{dense}@seq128", 768)


def test_describe_says_none_when_only_loading_can_tell(tmp_path: Path) -> None:
    odd = write_model(tmp_path / "odd", ["Transformer", "Pooling", "LayerNorm"])
    no_seq = write_model(tmp_path / "noseq", ["Transformer", "Pooling"], seq=None)
    for model in (str(odd), str(no_seq), str(tmp_path / "missing"), "acme/no-such-model-here"):
        assert describe(model, max_seq_tokens=192, quantize=True, cache_dir=tmp_path) is None
    assert model_path("acme/no-such-model-here") is None


def test_a_lazy_model_that_cannot_load_fails_at_first_use_typed(
    tmp_path: Path, counter: TiktokenCounter
) -> None:
    weightless = write_model(tmp_path / "weightless", ["Transformer", "Pooling", "Normalize"])
    settings = Settings(home=tmp_path / "home", model=str(weightless))
    service = build_service(settings, tokens=counter, preload=True)
    embedder = service.embedder
    assert isinstance(embedder, GuardedEmbedder) and embedder.name == f"{weightless}@seq192+int8"
    with pytest.raises(ModelUnavailable):
        embedder.wait(120)
    with pytest.raises(ModelUnavailable, match="could not be loaded"):
        embedder.embed(["x"])
    assert embedder.error and service.embedder_error is None  # known at first use, not at build


def test_a_model_describe_cannot_tell_loads_at_build_as_before(
    tmp_path: Path, counter: TiktokenCounter
) -> None:
    settings = Settings(home=tmp_path / "home", model=str(tmp_path / "no-such-model"))
    service = build_service(settings, tokens=counter)
    assert service.embedder is None and service.embedder_error
    assert "could not be loaded" in service.embedder_error


CHILD = """
import json, sys
from pathlib import Path
from ctxsvc.compose import build_service
from ctxsvc.settings import Settings
heavy = {heavy!r}
service = build_service(Settings(home=Path(sys.argv[1])))
before = [m for m in heavy if m in sys.modules]
embedder = service.embedder
vecs = embedder.embed(["def main(): return 0"])
after = [m for m in heavy if m in sys.modules]
print(json.dumps({{"before": before, "after": after, "shape": list(vecs.shape),
                  "name": embedder.name}}))
"""


@pytest.mark.slow
def test_building_a_service_imports_no_torch_until_a_vector_is_needed(tmp_path: Path) -> None:
    env = cli_env(tmp_path / "home", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    code = textwrap.dedent(CHILD.format(heavy=HEAVY))
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "home")],
        env=env, capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["before"] == []
    assert {"torch", "sentence_transformers", "transformers"} <= set(got["after"])
    assert got["shape"] == [1, 384] and got["name"] == "all-MiniLM-L6-v2@seq192+int8"


@pytest.mark.slow
@pytest.mark.parametrize(("seq", "quantize"), [(192, True), (1024, False)])
def test_describe_matches_the_loaded_bundled_model(
    tmp_path: Path, seq: int, quantize: bool
) -> None:
    spec = describe("all-MiniLM-L6-v2", max_seq_tokens=seq, quantize=quantize, cache_dir=tmp_path)
    loaded = SentenceTransformerEmbedder("all-MiniLM-L6-v2", max_seq_tokens=seq, quantize=quantize)
    assert spec is not None and (spec.name, spec.dimension) == (loaded.name, loaded.dimension)
