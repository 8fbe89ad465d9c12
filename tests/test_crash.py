"""kill -9 of a real indexing process at 20 seeded random points, on a real
repository (this project's own tracked source): after each kill the committed
index answers queries from one consistent version, and the next run resumes
and ends with exactly the rows of a clean index."""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fakes import HashEmbedder

from ctxsvc.compose import build_service
from ctxsvc.settings import Settings
from ctxsvc.stores.lance import LanceStore
from ctxsvc.tokens import TiktokenCounter

RUNNER = Path(__file__).parent / "crash_runner.py"
PROJECT = Path(__file__).resolve().parents[1]
DELAY = 0.01  # seconds per embedding batch of 8: keeps the embed stage killable
KILLS = 20


def copy_source(dest: Path) -> None:
    """This project's tracked Python, Markdown and TOML files, its tests and benchmarks
    left out (they grow fastest and add nothing the package does not have): a real
    repository."""
    listed = subprocess.run(
        ["git", "-C", str(PROJECT), "ls-files", "-z"], capture_output=True, check=True
    ).stdout.decode()
    paths = [
        p
        for p in listed.split("\0")
        if p.endswith((".py", ".md", ".toml")) and not p.startswith(("tests/", "benchmarks/"))
    ]
    assert len(paths) > 40
    for rel in paths:
        if (PROJECT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(PROJECT / rel, dest / rel)


def edit(root: Path) -> None:
    """A re-index's worth of change: edits, a deletion, a rename, a new file."""
    py = sorted(root.rglob("*.py"))
    for f in py[:6]:
        f.write_text(f.read_text() + "\n\ndef added_after_edit(x):\n    return x\n")
    py[6].unlink()
    py[7].rename(py[7].with_name("renamed_" + py[7].name))
    (root / "ctxsvc" / "brand_new.py").write_text("def brand_new_feature():\n    return 42\n")


def run(home: Path, root: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(RUNNER), str(home), str(root), str(DELAY)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def clean_index(home: Path, root: Path) -> tuple[dict[str, object], float]:
    proc = run(home, root)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "start"
    t0 = time.monotonic()
    _, errs = proc.communicate(timeout=600)
    assert proc.returncode == 0, errs
    return snapshot(home), time.monotonic() - t0


def snapshot(home: Path) -> dict[str, object]:
    """Everything a clean index must equal: rows and content hashes per table."""
    reader = LanceStore(Settings.from_env({}, home=home).db_path).reader("crash")
    out: dict[str, object] = {}
    for t in ("files", "chunks", "symbols", "refs", "imports"):
        data = reader.table(t).to_arrow().drop_columns(["path_id"])
        if t == "files":
            data = data.drop_columns(["mtime_ns"])
        out[t] = sorted(map(repr, data.to_pylist()))
    out["vectors"] = sorted(reader.table("vectors").to_arrow().column("content_hash").to_pylist())
    return out


def assert_consistent(home: Path) -> int | None:
    """If an index is committed, its pinned tables agree and it answers queries."""
    settings = Settings.from_env({}, home=home)
    store = LanceStore(settings.db_path)
    if store.meta("crash") is None:
        return None
    reader = store.reader("crash")
    files = reader.files()
    chunks = reader.chunks()
    assert len(chunks) == sum(f.chunks for f in files.values())
    assert {c.path for c in chunks} <= set(files)
    assert len({c.id for c in chunks}) == len(chunks)
    assert {s.path for s in reader.symbols()} <= set(files)
    service = build_service(
        settings, store=store, tokens=TiktokenCounter(), embedder=HashEmbedder()
    )
    pack = service.context("crash", "where are files discovered and skipped", 2000)
    assert pack.items and pack.tokens_used <= 2000
    assert all(i.path in files for i in pack.items)
    return reader.meta.generation


@pytest.mark.slow
def test_kill9_at_20_random_points_of_a_real_repository(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    copy_source(root)
    clean, duration = clean_index(tmp_path / "clean", root)

    rng = random.Random(1234)  # fixed seed: the same kill points every run
    home = tmp_path / "crashy"
    generations: list[int | None] = []
    for i in range(KILLS):
        if i == KILLS // 2:  # from here on, the killed runs re-index an edited tree
            edit(root)
            clean, duration = clean_index(tmp_path / "clean2", root)
        proc = run(home, root)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "start"
        time.sleep(rng.uniform(0.0, duration))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        generations.append(assert_consistent(home))

    print(f"generations seen after each kill: {generations}")
    vectors_before = (
        LanceStore(Settings.from_env({}, home=home).db_path).open("crash__vectors").count_rows()
    )
    proc = run(home, root)
    out, errs = proc.communicate(timeout=600)
    assert proc.returncode == 0, errs
    _, _, embedded = out.split()[-3:]
    assert snapshot(home) == clean
    # Finished embedding batches of killed runs were not redone.
    assert int(embedded) <= len(set(clean["vectors"])) - min(vectors_before, 1)  # type: ignore[arg-type]
    assert generations.count(None) < len(generations), "no kill happened after a commit"
    assert len(set(generations) - {None}) >= 2, "kills never landed across a re-index"
