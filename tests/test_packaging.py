"""The distribution as a user installs it: the wheel built from this checkout claims only
the name ``ctxsvc`` (the indexers ship inside it), carries its licence, its typing
marker, its data and its metadata; ``ctxsvc --version`` answers; and the environment
``make install`` builds holds a CPU build of torch, no CUDA packages."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from email.parser import Parser
from importlib import metadata
from pathlib import Path

import pytest

import ctxsvc

pytestmark = pytest.mark.slow
PROJECT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    # The venv's setuptools (no build isolation: nothing is downloaded).
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(PROJECT)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    (found,) = out.glob("ctxsvc-*.whl")
    return zipfile.ZipFile(found)


def test_the_wheel_claims_only_the_name_ctxsvc(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    tops = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith(".dist-info")}
    assert tops == {"ctxsvc"}
    # The indexers ship inside it, as files (the checkout's link is followed).
    ours = {p.name for p in (PROJECT / "indexers").glob("*.py")}
    shipped = {n.rsplit("/", 1)[1] for n in names if n.startswith("ctxsvc/indexers/")}
    assert ours <= shipped


def test_the_wheel_carries_its_licence_marker_data_and_metadata(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    for needed in ("ctxsvc/py.typed", "ctxsvc/data/ranker.txt", "ctxsvc/data/ui/ui.css",
                   "ctxsvc/data/ui/ui.js"):  # fmt: skip
        assert needed in names, needed
    assert any(n.startswith("ctxsvc/data/static/") and n.endswith(".js") for n in names)
    info = next(n for n in names if n.endswith(".dist-info/METADATA"))
    meta = Parser().parsestr(wheel.read(info).decode())
    assert meta["License-Expression"] == "MIT"
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL") or [])
    assert {"Homepage", "Documentation", "Source", "Issues"} <= set(urls)
    classifiers = meta.get_all("Classifier") or []
    assert "Typing :: Typed" in classifiers and any("Python :: 3.11" in c for c in classifiers)
    assert meta["Requires-Python"] == ">=3.11"


def test_version_is_the_distributions() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "ctxsvc", "--version"], capture_output=True, text=True, check=True
    )
    assert (
        out.stdout.strip()
        == f"ctxsvc {metadata.version('ctxsvc')}"
        == f"ctxsvc {ctxsvc.__version__}"
    )


def test_the_installed_torch_is_a_cpu_build_without_cuda_packages() -> None:
    # What `make install` makes of constraints.txt: an unconstrained torch would pull a
    # CUDA build and its nvidia-* packages (gigabytes) from the package index.
    cuda = sorted(
        d.metadata["Name"] for d in metadata.distributions()
        if (d.metadata["Name"] or "").lower().startswith("nvidia-")
    )  # fmt: skip
    assert cuda == []
    assert metadata.version("torch").endswith("+cpu")
