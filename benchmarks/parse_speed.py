"""Parse speed: files/s of ``ctxsvc.parsing.parse_files`` with 1 and 2 processes.

    python -m benchmarks.parse_speed                      # tokio and pytest under CORPORA
    python -m benchmarks.parse_speed /path/to/repo --runs 3 --processes 1,2

For each repository: ``discover`` once, then parse every discovered file
``--runs`` times per process count (the pool is forced on, whatever the
size, so that its start is measured too) and keep the median wall time; the
first yield's delay says what starting the pool costs. A profile in this
process splits the per-file cost into read, tree-sitter (``extract``),
chunking and tiktoken counting (the counter is timed from inside chunking),
and times pickling the rows, the price of sending them back from a worker.
The table is printed and written as JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console
from rich.table import Table

from benchmarks.paths import CORPORA
from ctxsvc.indexers.chunking import chunk_file
from ctxsvc.indexers.discover import discover, read_text
from ctxsvc.indexers.symbols import extract
from ctxsvc.models import SourceFile
from ctxsvc.parsing import parse_files
from ctxsvc.settings import Settings
from ctxsvc.tokens import TiktokenCounter

RESULTS = Path(__file__).parent / "results"


@dataclass
class TimedCounter:
    """A TiktokenCounter that adds up the seconds spent counting."""

    inner: TiktokenCounter
    seconds: float = 0.0
    texts: int = 0
    name: str = field(init=False)

    def __post_init__(self) -> None:
        self.name = self.inner.name

    def count(self, text: str) -> int:
        t0 = time.perf_counter()
        n = self.inner.count(text)
        self.seconds += time.perf_counter() - t0
        self.texts += 1
        return n

    def count_many(self, texts: list[str]) -> list[int]:
        t0 = time.perf_counter()
        out = self.inner.count_many(texts)
        self.seconds += time.perf_counter() - t0
        self.texts += len(texts)
        return out


def time_parse(
    root: Path,
    files: list[SourceFile],
    settings: Settings,
    counter: TiktokenCounter,
    identity: tuple[int, int],
    processes: int,
) -> tuple[float, float, float]:
    """Seconds to parse all ``files``, seconds until the first one came back,
    and CPU seconds of this process and its (finished) children."""
    cpu0 = _cpu()
    t0 = time.perf_counter()
    first = 0.0
    n = 0
    for _ in parse_files(
        root, files, settings, counter, identity, processes=processes, pool_min_bytes=0
    ):
        if n == 0:
            first = time.perf_counter() - t0
        n += 1
    assert n == len(files)
    return time.perf_counter() - t0, first, _cpu() - cpu0


def _cpu() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def profile(
    root: Path,
    files: list[SourceFile],
    settings: Settings,
    counter: TiktokenCounter,
    identity: tuple[int, int],
) -> dict[str, Any]:
    """Seconds per stage of parsing every file once in this process."""
    timed = TimedCounter(counter)
    read = parse = chunk = 0.0
    rows: list[Any] = []
    for sf in files:
        t0 = time.perf_counter()
        got = read_text(
            root,
            sf,
            max_file_bytes=settings.max_file_bytes,
            max_line_chars=settings.max_line_chars,
            expect=identity,
        )
        t1 = time.perf_counter()
        read += t1 - t0
        if not hasattr(got, "text"):
            continue
        parsed = extract(sf.path, got.text, sf.language) if sf.language else None
        t2 = time.perf_counter()
        parse += t2 - t1
        chunks = chunk_file(
            sf.path,
            got.text,
            parsed,
            timed,
            target_tokens=settings.chunk_target_tokens,
            max_tokens=settings.chunk_max_tokens,
        )
        chunk += time.perf_counter() - t2
        rows.append((chunks, parsed))
    t0 = time.perf_counter()
    blob = pickle.dumps(rows)
    dumped = time.perf_counter() - t0
    t0 = time.perf_counter()
    pickle.loads(blob)
    loaded = time.perf_counter() - t0
    return {
        "read_s": round(read, 3),
        "tree_sitter_s": round(parse, 3),
        "chunk_s": round(chunk - timed.seconds, 3),
        "tiktoken_s": round(timed.seconds, 3),
        "tiktoken_texts": timed.texts,
        "pickle_dump_s": round(dumped, 3),
        "pickle_load_s": round(loaded, 3),
        "pickle_mb": round(len(blob) / 1e6, 1),
        "chunks": sum(len(c) for c, _ in rows),
        "refs": sum(len(p.references) for _, p in rows if p),
    }


def bench_repo(root: Path, processes: list[int], runs: int) -> dict[str, Any]:
    settings = Settings.from_env()
    counter = TiktokenCounter()
    found = discover(root, max_file_bytes=settings.max_file_bytes)
    files = list(found.files)
    size = sum(sf.size for sf in files)
    # Warm this process (grammars, tiktoken) as a real indexing run's parent is.
    for _ in parse_files(root, files[:50], settings, counter, found.identity, processes=1):
        pass
    out: dict[str, Any] = {
        "repo": root.name,
        "files": len(files),
        "mb": round(size / 1e6, 2),
        "runs": {},
        "profile": profile(root, files, settings, counter, found.identity),
    }
    for p in processes:
        times = [time_parse(root, files, settings, counter, found.identity, p) for _ in range(runs)]
        wall = statistics.median(t for t, _, _ in times)
        out["runs"][str(p)] = {
            "seconds": round(wall, 3),
            "files_per_s": round(len(files) / wall, 1),
            "best_files_per_s": round(len(files) / min(t for t, _, _ in times), 1),
            "first_result_s": round(statistics.median(f for _, f, _ in times), 3),
            "cpu_s": round(statistics.median(c for _, _, c in times), 3),
            "all_seconds": [round(t, 3) for t, _, _ in times],
        }
    return out


def sweep(root: Path, sizes_mb: list[float], runs: int) -> list[dict[str, Any]]:
    """In process against a 2-process pool on growing prefixes of ``root``'s files:
    where the pool starts to pay (``POOL_MIN_BYTES``)."""
    settings = Settings.from_env()
    counter = TiktokenCounter()
    counter.warm()
    found = discover(root, max_file_bytes=settings.max_file_bytes)
    rows = []
    for mb in sizes_mb:
        files: list[SourceFile] = []
        total = 0
        for sf in found.files:
            if total >= mb * 1e6:
                break
            files.append(sf)
            total += sf.size
        one = min(
            time_parse(root, files, settings, counter, found.identity, 1)[0] for _ in range(runs)
        )
        two = min(
            time_parse(root, files, settings, counter, found.identity, 2)[0] for _ in range(runs)
        )
        rows.append(
            {
                "mb": round(total / 1e6, 2),
                "files": len(files),
                "one_s": round(one, 3),
                "two_s": round(two, 3),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("repos", nargs="*", type=Path)
    ap.add_argument("--processes", default="1,2", help="comma-separated process counts")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS / "parse_speed.json")
    ap.add_argument(
        "--sweep",
        default="",
        help="comma-separated MB: 1 vs 2 processes on prefixes of the first repo",
    )
    args = ap.parse_args(argv)
    repos = args.repos or [CORPORA / "tokio", CORPORA / "pytest"]
    processes = [int(p) for p in args.processes.split(",")]
    console = Console()
    if args.sweep:
        rows = sweep(repos[0].resolve(), [float(x) for x in args.sweep.split(",")], args.runs)
        table = Table(title=f"where the pool pays, {repos[0].name} (min of {args.runs} runs)")
        for col in ("MB", "files", "1 process (s)", "2 processes (s)"):
            table.add_column(col, justify="right")
        for r in rows:
            table.add_row(
                f"{r['mb']:.2f}", str(r["files"]), f"{r['one_s']:.2f}", f"{r['two_s']:.2f}"
            )
        console.print(table)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"load": os.getloadavg(), "sweep": rows}, indent=2) + "\n")
        return 0
    load = os.getloadavg()  # other work on the machine skews every number: noted
    results = [bench_repo(r.resolve(), processes, args.runs) for r in repos]

    table = Table(title="parse_files: files/s, median (best) of runs; pool start included")
    for col in ("repo", "files", "MB"):
        table.add_column(col, justify="right")
    for p in processes:
        table.add_column(f"{p} proc files/s", justify="right")
        table.add_column(f"{p} proc CPU s", justify="right")
    table.add_column("first result (s)", justify="right")
    for r in results:
        cells = []
        for p in processes:
            run = r["runs"][str(p)]
            cells += [
                f"{run['files_per_s']:.0f} ({run['best_files_per_s']:.0f})",
                f"{run['cpu_s']:.2f}",
            ]
        firsts = "/".join(f"{r['runs'][str(p)]['first_result_s']:.2f}" for p in processes)
        table.add_row(r["repo"], str(r["files"]), f"{r['mb']:.1f}", *cells, firsts)
    prof = Table(title="one process, seconds per stage over all files")
    cols = ("read_s", "tree_sitter_s", "chunk_s", "tiktoken_s", "pickle_dump_s", "pickle_load_s")
    for col in ("repo", *cols, "pickle MB"):
        prof.add_column(col, justify="right")
    for r in results:
        p = r["profile"]
        prof.add_row(r["repo"], *(f"{p[c]:.2f}" for c in cols), f"{p['pickle_mb']:.1f}")
    console.print(table)
    console.print(prof)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "cpus": os.cpu_count(),
        "load_before": load,
        "load_after": os.getloadavg(),
        "results": results,
    }
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
