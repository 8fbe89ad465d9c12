"""The static tier: distilled offline once, loaded without torch, never mixed with the transformer."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import cli_env, write_tree

from ctxsvc.compose import build_service
from ctxsvc.errors import ModelMismatch
from ctxsvc.indexers import static_model
from ctxsvc.indexers.embed import describe
from ctxsvc.settings import Settings

pytestmark = pytest.mark.slow  # distils the bundled model once per session (a minute or two)

HEAVY = ("torch", "sentence_transformers", "transformers")
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}

CHILD = """
import json, sys
from pathlib import Path
from ctxsvc.indexers import static_model
embedder = static_model.load(sys.argv[1], Path(sys.argv[2]))
vecs = embedder.embed(["def main(): return 0", "class Store: pass", ""])
print(json.dumps({{
    "heavy": [m for m in {heavy!r} if m in sys.modules],
    "name": embedder.name, "shape": list(vecs.shape), "dtype": str(vecs.dtype),
    "norms": [float(n) for n in (vecs * vecs).sum(1)],
}}))
"""


def child(tmp: Path, model: str, cache: Path) -> dict[str, object]:
    code = textwrap.dedent(CHILD.format(heavy=HEAVY))
    out = subprocess.run(
        [sys.executable, "-c", code, model, str(cache)],
        env=cli_env(tmp / "home", **OFFLINE), capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert isinstance(got, dict)
    return got


@pytest.fixture(scope="session")
def distilled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache directory holding the static model, distilled offline in a child process."""
    tmp = tmp_path_factory.mktemp("static")
    cache = tmp / "models"
    got = child(tmp, "static", cache)
    assert got["name"] == "static:all-MiniLM-L6-v2@m2v0.10-pca256"
    return cache


def test_describe_knows_the_static_spec_before_distilling(tmp_path: Path) -> None:
    spec = describe("static", max_seq_tokens=192, quantize=True, cache_dir=tmp_path)
    assert spec is not None and spec.dimension == static_model.PCA_DIMS
    assert spec.name == "static:all-MiniLM-L6-v2@m2v0.10-pca256"
    transformer = describe(
        "all-MiniLM-L6-v2", max_seq_tokens=192, quantize=True, cache_dir=tmp_path
    )
    assert transformer is not None and transformer.name != spec.name
    assert not any(tmp_path.iterdir())  # nothing distilled to tell
    again = describe(
        "static:all-MiniLM-L6-v2", max_seq_tokens=192, quantize=True, cache_dir=tmp_path
    )
    assert again is not None and again.name == spec.name  # the name an index keeps, model re-read


def test_the_distilled_model_is_whole_and_alone_in_the_cache(distilled: Path) -> None:
    path = static_model.cache_path("static", distilled)
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    leftovers = [p.name for p in distilled.iterdir() if p.is_dir() and p != path]
    assert leftovers == []  # the temporary directory was renamed into place


def test_loading_the_distilled_model_imports_no_torch_and_embeds(
    distilled: Path, tmp_path: Path
) -> None:
    got = child(tmp_path, "static", distilled)
    assert got["heavy"] == []
    assert got["shape"] == [3, static_model.PCA_DIMS] and got["dtype"] == "float32"
    norms = got["norms"]
    assert isinstance(norms, list)
    assert all(abs(n - 1) < 1e-5 for n in norms[:2]) and norms[2] in (0.0, pytest.approx(1.0))


def test_a_transformer_index_refuses_static_vectors_without_reembed(
    distilled: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    write_tree(repo, {"app/main.py": "def main():\n    return serve(8080)\n"})
    home = tmp_path / "home"
    shutil.copytree(distilled, home / "models")
    transformer = build_service(Settings(home=home))
    transformer.index(repo, "demo")
    static = build_service(Settings(home=home, model="static"))
    assert static.embedder is not None and static.embedder.name.startswith("static:")
    with pytest.raises(ModelMismatch, match="holds vectors of all-MiniLM-L6-v2@seq192"):
        static.index(repo, "demo")
    summary = static.index(repo, "demo", reembed=True)
    assert summary is not None
