"""A cold index of a large repository, embedded locally and on Ray, side by side.

For each executor of ``--executors`` (``local``: worker processes; ``ray``:
Ray actors on a local instance, or the cluster ``RAY_ADDRESS`` names), in a
fresh data directory each: ``ctxsvc index CORPUS --executor E --json`` as a
subprocess, timed, with the resident memory of its whole process tree
(worker processes; Ray's daemons and actors, which are not its children,
counted as the processes started since the run began) sampled from ``/proc``
every 0.2 s. It prints wall time, chunks, chunks/s over the run and over the embed
stage, the peak tree RSS and the peak of the indexing process alone; then,
on the last index built, what serving it costs (a fresh process: view load
time, the view's resident memory, context latency) and the approximate
vector index against brute force (``benchmarks.ann``: recall@k and latency).
Results go to JSON.

    python -m benchmarks.cold_index --corpus DIR --name moby --model static \\
        --out benchmarks/results/cold-moby.json

The corpus is named in the results by its commit, not by its path.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks import ann
from ctxsvc.indexers import static_model

RESULTS = Path(__file__).resolve().parent / "results"
SAMPLE_SECONDS = 0.2


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", type=Path, required=True, help="a git checkout to index")
    p.add_argument("--name", required=True, help="the index name (and the results' label)")
    p.add_argument("--executors", default="local,ray", help="comma-separated: local, ray")
    p.add_argument("--model", help="the embedding model (default: ctxsvc's)")
    p.add_argument("--workers", type=int, default=0, help="CTXSVC_EMBED_WORKERS (0: per core)")
    p.add_argument("--keep", type=Path, help="keep the data directories under this folder")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    corpus = args.corpus.resolve()
    commit = _git(corpus, "rev-parse", "HEAD")
    work = (args.keep or Path(tempfile.mkdtemp(prefix="ctxsvc-cold-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    models = work / "models"  # one model cache: a static model is distilled once, untimed
    if args.model and static_model.is_static(args.model):
        static_model.load(args.model, models)
    runs: list[dict[str, Any]] = []
    for executor in args.executors.split(","):
        home = work / f"home-{executor}"
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        (home / "models").symlink_to(models.resolve(), target_is_directory=True)
        runs.append(_run(corpus, args.name, executor, home, args.model, args.workers))
        _print_runs(runs)
    last = work / f"home-{args.executors.split(',')[-1]}"
    serving = _probe(last, args.name)
    ann_out = work / "ann.json"
    ann.main(["--home", str(last), "--repo", args.name, "--k", str(args.k),
              "--queries", str(args.queries), "--out", str(ann_out)])  # fmt: skip
    result = {
        "corpus": f"checkout of {commit}",
        "name": args.name,
        "model": args.model or "default",
        "cores": len(os.sched_getaffinity(0)),
        "runs": runs,
        "serving": serving,
        "ann": json.loads(ann_out.read_text()),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    out = args.out or RESULTS / f"cold-{args.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


# A fresh process that loads the index's view and answers queries: what serving it costs.
PROBE = """
import json, os, statistics, sys, time
from pathlib import Path
from ctxsvc.compose import build_service
from ctxsvc.settings import Settings

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024

home, name = Path(sys.argv[1]), sys.argv[2]
service = build_service(Settings.from_env({}, home=home), for_repo=name)
before = rss()
t0 = time.perf_counter()
view = service.catalog.view(service.resolve(name))
load = time.perf_counter() - t0
after = rss()
service.context(name, "warm up the model", 500)  # the model loads here, not in a timing
ms = []
for q in QUESTIONS:
    t0 = time.perf_counter()
    service.context(name, q, 8000)
    ms.append((time.perf_counter() - t0) * 1000)
print(json.dumps({"chunks": len(view.chunks), "vector_search": "approximate" if view.ann else
                  "exact", "view_load_seconds": round(load, 2),
                  "view_rss_mb": round((after - before) / 2**20),
                  "process_rss_mb": round(rss() / 2**20),
                  "context_p50_ms": round(statistics.median(ms), 1),
                  "context_max_ms": round(max(ms), 1), "queries": len(ms)}))
"""
# Generic questions (no task of any benchmark repository): the probe times answers only.
QUESTIONS = [
    "where is the configuration file parsed",
    "how are errors retried with backoff",
    "where are network connections closed",
    "how is a request authenticated",
    "where are metrics registered",
    "how does shutdown stop the workers",
    "where is the cache invalidated",
    "how are log lines formatted",
    "where are command line flags defined",
    "how are tests given a temporary directory",
]


def _probe(home: Path, name: str) -> dict[str, Any]:
    """What serving the index costs: view load time, its resident memory, query latency."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTXSVC_")}
    env["CTXSVC_HOME"] = str(home)
    code = PROBE.replace("QUESTIONS", repr(QUESTIONS))
    got = subprocess.run([sys.executable, "-c", code, str(home), name], env=env,
                         capture_output=True, text=True, check=False)  # fmt: skip
    if got.returncode != 0:
        raise SystemExit(f"the serving probe failed:\n{got.stderr}")
    probe: dict[str, Any] = json.loads(got.stdout.strip().splitlines()[-1])
    Console().print(
        f"serving {name}: view of {probe['chunks']:,} chunks loaded in "
        f"{probe['view_load_seconds']} s, {probe['view_rss_mb']:,} MB resident "
        f"({probe['vector_search']} vector search); process {probe['process_rss_mb']:,} MB; "
        f"context (8,000 tokens) p50 {probe['context_p50_ms']} ms over {probe['queries']}"
    )
    return probe


def _run(
    corpus: Path, name: str, executor: str, home: Path, model: str | None, workers: int
) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTXSVC_")}
    env.update(CTXSVC_HOME=str(home), CTXSVC_EMBED_WORKERS=str(workers))
    command = [sys.executable, "-m", "ctxsvc", "index", str(corpus), "--name", name,
               "--executor", executor, "--json"]  # fmt: skip
    if model:
        command += ["--model", model]
    t0 = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    sampler = _Sampler(proc.pid)
    sampler.start()
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    sampler.stop()
    if proc.returncode != 0:
        raise SystemExit(f"{executor}: ctxsvc index failed ({proc.returncode}):\n{stderr.decode()}")
    summary = json.loads(stdout)
    stages = {t["stage"]: t for t in summary.get("timings", [])}
    embed = stages.get("embed", {})
    chunks = int(summary["chunks"])
    return {
        "executor": executor,
        "wall_seconds": round(wall, 1),
        "files": summary["files_indexed"],
        "chunks": chunks,
        "chunks_embedded": summary["chunks_embedded"],
        "chunks_per_second": round(chunks / wall, 1),
        "embed_seconds": embed.get("seconds"),
        "embed_chunks_per_second": (
            round(embed["items"] / embed["seconds"], 1) if embed.get("seconds") else None
        ),
        "stages": {k: v.get("seconds") for k, v in stages.items()},
        "peak_tree_rss_mb": round(sampler.peak_tree / 2**20),
        "peak_main_rss_mb": round(sampler.peak_main / 2**20),
        "vectors": summary["vectors"],
        "warnings": summary.get("warnings", []),
    }


class _Sampler:
    """The peak resident memory of a run: its process, its descendants, and every other
    process started since it began (Ray daemonizes its raylet, GCS and actors, so they
    are no descendants; the machine should be quiet)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_tree = self.peak_main = 0
        self._since = _procs().get(pid, (0, 0, 0))[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        me = os.getpid()
        while not self._stop.wait(SAMPLE_SECONDS):
            procs = _procs()
            children: dict[int, list[int]] = {}
            for pid, (ppid, _, _) in procs.items():
                children.setdefault(ppid, []).append(pid)
            run, stack = set(), [self.pid]
            while stack:
                pid = stack.pop()
                run.add(pid)
                stack.extend(children.get(pid, []))
            run |= {p for p, (_, t, _) in procs.items() if t >= self._since and p != me}
            self.peak_tree = max(self.peak_tree, sum(procs[p][2] for p in run if p in procs))
            self.peak_main = max(self.peak_main, procs.get(self.pid, (0, 0, 0))[2])


def _procs() -> dict[int, tuple[int, int, int]]:
    """pid -> (parent pid, start time in clock ticks, resident bytes) of every process."""
    page = os.sysconf("SC_PAGE_SIZE")
    out: dict[int, tuple[int, int, int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry.name}/statm") as f:
                resident = int(f.read().split()[1]) * page
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        fields = stat[stat.rindex(")") + 2 :].split()  # from field 3 (state) on
        out[int(entry.name)] = (int(fields[1]), int(fields[19]), resident)
    return out


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                          check=True).stdout.strip()  # fmt: skip


def _print_runs(runs: list[dict[str, Any]]) -> None:
    t = Table("executor", "wall s", "files", "chunks", "chunks/s", "embed s", "embed chunks/s",
              "peak RSS (tree)", "peak RSS (indexer)")  # fmt: skip
    for r in runs:
        t.add_row(r["executor"], f"{r['wall_seconds']:.0f}", f"{r['files']:,}",
                  f"{r['chunks']:,}", f"{r['chunks_per_second']:.0f}",
                  f"{r['embed_seconds'] or 0:.0f}", f"{r['embed_chunks_per_second'] or 0:.0f}",
                  f"{r['peak_tree_rss_mb']:,} MB", f"{r['peak_main_rss_mb']:,} MB")  # fmt: skip
    Console().print(t)


if __name__ == "__main__":
    raise SystemExit(main())
