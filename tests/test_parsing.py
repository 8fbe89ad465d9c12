"""Parsing in this process and in worker processes gives the same rows.

Real tree-sitter, real tiktoken, real files; the pool is forced on
(``pool_min_bytes=0``) wherever a test is about it. The counters below are
module-level so that workers can rebuild them from a pickle; this module
imports nothing heavy, since a worker imports it to do so.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ctxsvc.errors import ConfigError, CtxError, RootChanged
from ctxsvc.indexers.discover import discover
from ctxsvc.models import SourceFile
from ctxsvc.parsing import Parsed, parse_file, parse_files
from ctxsvc.settings import Settings
from ctxsvc.tokens import TiktokenCounter

PROJECT = Path(__file__).resolve().parents[1]
HEAVY = ("lancedb", "torch", "sentence_transformers", "transformers", "pyarrow")


class ProbeCounter:
    """A real tiktoken counter that writes down, under ``out``, the id and the
    imported modules of each process it counts in (kept up to date)."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.inner = TiktokenCounter("cl100k_base")
        self.name = self.inner.name
        self._seen = 0

    def _note(self) -> None:
        if len(sys.modules) != self._seen:
            self._seen = len(sys.modules)
            doc = {"pid": os.getpid(), "modules": sorted(sys.modules)}
            (self.out / f"{os.getpid()}.json").write_text(json.dumps(doc))

    def warm(self) -> None:
        self.inner.warm()

    def count(self, text: str) -> int:
        out = self.inner.count(text)
        self._note()
        return out

    def count_many(self, texts: list[str]) -> list[int]:
        out = self.inner.count_many(texts)
        self._note()
        return out


class DyingCounter:
    """Counts as tiktoken does in the process that made it; kills any other."""

    def __init__(self) -> None:
        self.parent = os.getpid()
        self.inner = TiktokenCounter("cl100k_base")
        self.name = self.inner.name

    def count(self, text: str) -> int:
        return self.count_many([text])[0]

    def count_many(self, texts: list[str]) -> list[int]:
        if os.getpid() != self.parent:
            os.kill(os.getpid(), signal.SIGKILL)
        return self.inner.count_many(texts)


class LocalCounter:
    """Cannot be pickled (it holds a lambda): parsing stays in this process."""

    def __init__(self) -> None:
        self.inner = TiktokenCounter("cl100k_base")
        self.name = self.inner.name
        self.measure: Callable[[str], int] = lambda text: self.inner.count(text)

    def count(self, text: str) -> int:
        return int(self.measure(text))

    def count_many(self, texts: list[str]) -> list[int]:
        return [self.count(t) for t in texts]


def children() -> set[int]:
    """Process ids of this process's live children (from /proc, no psutil)."""
    found: set[int] = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[1]) == os.getpid() and fields[0] != "Z":
            found.add(int(stat.parent.name))
    return found


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings.from_env({}, home=tmp_path_factory.mktemp("home"))


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This project's own source plus one fixture per language, and odd files."""
    root = tmp_path_factory.mktemp("parse") / "repo"
    for part in ("ctxsvc",):  # its indexers/ link is copied as the files
        shutil.copytree(PROJECT / part, root / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(PROJECT / "tests" / "fixtures" / "languages", root / "fixtures")
    odd = root / "odd"
    odd.mkdir()
    (odd / "broken.py").write_text("def ok():\n    return 1\n\ndef broken(:\n    pass\n")
    (odd / "latin1.py").write_bytes("name = 'caf\xe9'\n".encode("latin-1"))
    (odd / "blob.txt").write_bytes(b"\x00\x01\x02binary\x00" * 64)
    (odd / "empty.md").write_text("")
    (odd / "crlf.ts").write_bytes(b"export function f(): number {\r\n  return 1;\r\n}\r\n")
    (odd / "vanishes.go").write_text("package main\n\nfunc main() {}\n")
    (odd / "grows.rs").write_text("fn main() {}\n")
    return root


@pytest.fixture(scope="module")
def found(tree: Path, settings: Settings) -> tuple[list[SourceFile], tuple[int, int]]:
    """Every file of ``tree`` as discovered, then two changed behind discovery's back."""
    got = discover(tree, max_file_bytes=settings.max_file_bytes)
    (tree / "odd" / "vanishes.go").unlink()
    (tree / "odd" / "grows.rs").write_text("x" * (settings.max_file_bytes + 10))
    return list(got.files), got.identity


@pytest.fixture(scope="module")
def serial(
    tree: Path, found: tuple[list[SourceFile], tuple[int, int]], settings: Settings
) -> list[Parsed]:
    files, identity = found
    return [parse_file(tree, sf, settings, TiktokenCounter(), identity) for sf in files]


def by_path(rows: list[Parsed]) -> dict[str, Parsed]:
    return {p.source.path: p for p in rows}


def test_the_tree_is_large_and_odd(serial: list[Parsed]) -> None:
    rows = by_path(serial)
    assert len(rows) >= 100
    assert rows["odd/broken.py"].record.syntax_errors > 0
    assert "syntax error" in rows["odd/broken.py"].record.detail
    assert rows["odd/broken.py"].symbols  # the partial tree still has ``ok``
    assert rows["odd/latin1.py"].record.lossy
    assert rows["odd/vanishes.go"].record.status == "skipped"
    assert rows["odd/vanishes.go"].record.reason == "unreadable"
    assert rows["odd/grows.rs"].record.reason == "too_large"
    assert rows["odd/empty.md"].record.reason == "empty"
    assert rows["odd/crlf.ts"].chunks[0].text.endswith("\r")
    assert "odd/blob.txt" not in rows or rows["odd/blob.txt"].record.status == "skipped"
    assert rows["fixtures/rust.rs"].symbols and rows["fixtures/rust.rs"].refs
    assert rows["ctxsvc/parsing.py"].imports


def test_in_process_and_pool_give_the_same_rows_in_order(
    tree: Path,
    found: tuple[list[SourceFile], tuple[int, int]],
    serial: list[Parsed],
    settings: Settings,
    tmp_path: Path,
) -> None:
    import lancedb  # noqa: F401 - the parent has it loaded: the workers must not

    files, identity = found
    here = list(parse_files(tree, files, settings, TiktokenCounter(), identity, processes=1))
    probe = ProbeCounter(tmp_path)
    pooled = list(
        parse_files(tree, files, settings, probe, identity, processes=2, pool_min_bytes=0)
    )
    assert [p.source for p in pooled] == files
    assert here == serial
    assert pooled == serial
    # It really was parsed elsewhere, and the workers imported nothing heavy.
    notes = [json.loads(p.read_text()) for p in tmp_path.glob("*.json")]
    assert notes and all(n["pid"] != os.getpid() for n in notes)
    assert len(notes) <= 2
    for note in notes:
        assert {"tree_sitter", "tiktoken"} <= set(note["modules"]), note["pid"]
        assert not [m for m in note["modules"] if m.split(".")[0] in HEAVY]


def test_a_small_job_stays_in_process(
    tree: Path, found: tuple[list[SourceFile], tuple[int, int]], serial: list[Parsed],
    settings: Settings, tmp_path: Path,
) -> None:  # fmt: skip
    files, identity = found
    probe = ProbeCounter(tmp_path)
    got = list(parse_files(tree, files[:10], settings, probe, identity, processes=2))
    assert got == serial[:10]
    assert [json.loads(p.read_text())["pid"] for p in tmp_path.glob("*.json")] == [os.getpid()]


def test_an_unpicklable_counter_parses_in_process(
    tree: Path, found: tuple[list[SourceFile], tuple[int, int]], serial: list[Parsed],
    settings: Settings, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    files, identity = found
    with caplog.at_level(logging.WARNING, logger="ctxsvc.index"):
        got = list(
            parse_files(
                tree, files, settings, LocalCounter(), identity, processes=2, pool_min_bytes=0
            )
        )
    assert got == serial
    assert "cannot be sent to worker processes" in caplog.text


@contextmanager
def replaced(root: Path) -> Iterator[None]:
    """``root`` moved aside and a copy put in its place, then put back."""
    aside = root.with_name(root.name + "-aside")
    root.rename(aside)
    shutil.copytree(aside, root)
    try:
        yield
    finally:
        shutil.rmtree(root)
        aside.rename(root)


@pytest.mark.parametrize("processes", [1, 2])
def test_a_replaced_root_raises_root_changed(
    tree: Path, found: tuple[list[SourceFile], tuple[int, int]], settings: Settings,
    processes: int,
) -> None:  # fmt: skip
    files, identity = found
    before = children()
    with pytest.raises(RootChanged) as raised, replaced(tree):
        list(
            parse_files(
                tree,
                files,
                settings,
                TiktokenCounter(),
                identity,
                processes=processes,
                pool_min_bytes=0,
            )
        )
    assert raised.value.code == "root_changed"
    assert children() <= before | _trackers()
    # The same error, word for word, whichever the mode (but the new directory's inode: each
    # replacement is a new directory, and a process beside this one may take a freed inode).
    with pytest.raises(RootChanged) as here, replaced(tree):
        parse_file(tree, files[0], settings, TiktokenCounter(), identity)
    now = re.compile(r"\(device \d+, inode \d+;")
    assert now.search(str(raised.value))
    assert now.sub("", str(raised.value)) == now.sub("", str(here.value))


def test_a_ctx_error_in_a_worker_keeps_its_type(
    tree: Path, found: tuple[list[SourceFile], tuple[int, int]], settings: Settings
) -> None:
    files, identity = found
    odd = [*files[:40], SourceFile("odd/broken.py", 60, 0, "cobol"), *files[40:]]
    with pytest.raises(ConfigError, match="unknown language 'cobol'") as raised:
        list(
            parse_files(
                tree, odd, settings, TiktokenCounter(), identity, processes=2, pool_min_bytes=0
            )
        )
    assert "use one of" in raised.value.hint


def test_stopping_early_leaves_no_process_behind(
    tree: Path, found: tuple[list[SourceFile], tuple[int, int]], settings: Settings
) -> None:
    files, identity = found
    before = children()
    seen = 0
    with pytest.raises(KeyboardInterrupt):
        for _ in parse_files(
            tree, files, settings, TiktokenCounter(), identity, processes=2, pool_min_bytes=0
        ):
            seen += 1
            if seen == 3:
                raise KeyboardInterrupt
    assert children() <= before | _trackers()


def test_a_worker_that_dies_raises_and_does_not_hang(
    tree: Path, found: tuple[list[SourceFile], tuple[int, int]], settings: Settings
) -> None:
    files, identity = found
    before = children()
    with pytest.raises(CtxError, match="parse worker process died") as raised:
        list(
            parse_files(
                tree, files, settings, DyingCounter(), identity, processes=2, pool_min_bytes=0
            )
        )
    assert "CTXSVC_PARSE_PROCESSES=1" in raised.value.hint
    assert children() <= before | _trackers()


def _trackers() -> set[int]:
    """multiprocessing's resource tracker: one per parent, started at first use, kept."""
    out: set[int] = set()
    for pid in children():
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        if b"resource_tracker" in cmdline:
            out.add(pid)
    return out
