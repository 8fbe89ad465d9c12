"""Embedding throughput: today's configuration against each lever, in one run.

Embeds the same N chunks of a real corpus (the project's own chunker) with:

- ``today``: one process, torch's default threads, int8, 192 tokens, batches of 8;
- ``threads1``: the same on one torch thread (CPU per chunk without thread overhead);
- ``bs16`` / ``bs32``: today's with larger batches (changes int8 vectors: see below);
- ``pretruncate``: today's with each text cut to what the model reads before encode;
- ``workers``: the new default, ``embed_workers`` one-thread worker processes;
- ``fp32-workers``: the workers without int8 (what quantization buys);
- ``static``: the model2vec static tier (``--model static``), distilled once.

Each configuration runs ``--rounds`` times, interleaved, and the best round is
kept (other helpers' benchmarks share the machine: the load average is
recorded). CPU seconds count this process and the worker processes.

    python benchmarks/embed_speed.py --repo /tmp/corpora/tokio -n 600
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the bundled model, never the hub

import numpy as np
from rich.console import Console
from rich.table import Table

from benchmarks.embed_tradeoff import corpus_chunks
from ctxsvc.indexers import static_model
from ctxsvc.indexers.embed import SentenceTransformerEmbedder, Vectors
from ctxsvc.indexers.embed_workers import PooledEmbedder, wait_ready
from ctxsvc.tokens import TiktokenCounter

MODEL = "all-MiniLM-L6-v2"
SEQ = 192
CHARS_PER_TOKEN = 6  # the pre-truncation's cut: generous, code runs 2-4 characters a token


def chunk_texts(repo: Path, n: int, seed: int) -> list[str]:
    texts = [c.embed_text for c in corpus_chunks(repo, TiktokenCounter())]
    random.Random(seed).shuffle(texts)
    return texts[:n]


def pretruncate(text: str, max_tokens: int = SEQ) -> str:
    """``text`` cut at the first whitespace past ``max_tokens * CHARS_PER_TOKEN`` characters."""
    cut = max_tokens * CHARS_PER_TOKEN
    if len(text) <= cut:
        return text
    end = min((i for i in (text.find(" ", cut), text.find("\n", cut)) if i >= 0), default=-1)
    return text if end < 0 else text[:end]


def cpu_seconds(pids: Sequence[int]) -> float:
    """User and system CPU seconds of this process and ``pids`` so far."""
    own = time.process_time()
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return own + ticks / os.sysconf("SC_CLK_TCK")


def memory_mb(pids: Sequence[int], field: str) -> float:
    """The sum of ``field`` (``Rss:``, or ``Pss:``: shared pages split) over ``pids``."""
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith(field):
                total += int(line.split()[1])
    return total / 1024


class Config:
    """One configuration: a way to embed a list of texts, and its worker processes."""

    def __init__(
        self,
        label: str,
        what: str,
        embed: Callable[[list[str]], Vectors],
        pids: Callable[[], list[int]] = list,
    ) -> None:
        self.label, self.what, self.embed, self.pids = label, what, embed, pids
        self.rounds: list[dict[str, float]] = []

    def run(self, texts: list[str]) -> Vectors:
        pids = self.pids()
        c0, t0 = cpu_seconds(pids), time.perf_counter()
        vecs = self.embed(texts)
        wall, cpu = time.perf_counter() - t0, cpu_seconds(pids) - c0
        self.rounds.append(
            {
                "seconds": wall,
                "chunks_per_s": len(texts) / wall,
                "chunks_per_cpu_s": len(texts) / cpu,
                "load1": os.getloadavg()[0],
            }
        )
        return vecs

    def best(self) -> dict[str, float]:
        return max(self.rounds, key=lambda r: r["chunks_per_s"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    here = Path(__file__).resolve().parents[1]
    default = Path("/tmp/corpora/tokio")
    ap.add_argument("--repo", type=Path, default=default if default.is_dir() else here / "ctxsvc")
    ap.add_argument("-n", type=int, default=600, help="chunks to embed")
    ap.add_argument("--seed", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default="", help="comma-separated configs to run (default: all)")
    ap.add_argument("--workers", type=int, default=0, help="0: one per core")
    ap.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "ctxsvc-bench")
    ap.add_argument("--out", type=Path, default=here / "benchmarks/results/embed_speed.json")
    args = ap.parse_args()
    texts = chunk_texts(args.repo, args.n, args.seed)
    console = Console()
    console.print(f"{len(texts)} chunks of {args.repo}; load {os.getloadavg()}")

    import torch

    default_threads = torch.get_num_threads()
    today = SentenceTransformerEmbedder(MODEL, max_seq_tokens=SEQ, quantize=True, batch_size=8)
    workers = args.workers or min(len(os.sched_getaffinity(0)), 8)
    pooled = PooledEmbedder(today, workers)
    fp32_local = SentenceTransformerEmbedder(
        MODEL, max_seq_tokens=SEQ, quantize=False, batch_size=8
    )
    fp32 = PooledEmbedder(fp32_local, workers)
    t0 = time.perf_counter()
    static = static_model.load("static", args.cache_dir)
    static_load = time.perf_counter() - t0

    def with_threads(n: int, batch: int, cut: bool = False) -> Callable[[list[str]], Vectors]:
        def embed(xs: list[str]) -> Vectors:
            torch.set_num_threads(n)
            today.batch_size = batch
            try:
                return today.embed([pretruncate(x) for x in xs] if cut else xs)
            finally:
                torch.set_num_threads(default_threads)
                today.batch_size = 8

        return embed

    configs = [
        Config("today", f"1 process, {default_threads} torch threads, int8, bs 8",
               with_threads(default_threads, 8)),
        Config("threads1", "1 process, 1 torch thread, int8, bs 8", with_threads(1, 8)),
        Config("bs16", f"1 process, {default_threads} threads, bs 16", with_threads(default_threads, 16)),
        Config("bs32", f"1 process, {default_threads} threads, bs 32", with_threads(default_threads, 32)),
        Config("pretruncate", f"today's + cut at {CHARS_PER_TOKEN} chars/token",
               with_threads(default_threads, 8, cut=True)),
        Config("workers", f"{workers} worker processes x 1 thread, int8, bs 8 (new default)",
               pooled.embed, lambda: pooled.pool.pids),
        Config("fp32-workers", f"{workers} workers x 1 thread, fp32, bs 8",
               fp32.embed, lambda: fp32.pool.pids),
        Config("static", f"model2vec static, {static.dimension} dims", static.embed),
    ]  # fmt: skip
    if args.only:
        keep = {"today", *args.only.split(",")}
        configs = [c for c in configs if c.label in keep]
    labels = {c.label for c in configs}
    for label, pool in (("workers", pooled.pool), ("fp32-workers", fp32.pool)):
        if label in labels and not wait_ready(pool, 300):
            raise SystemExit(f"the workers did not start: {pool.failed}")
    for c in configs:  # warm-up: first calls allocate
        c.embed(texts[:16])
    vectors: dict[str, Vectors] = {}
    for r in range(args.rounds):
        for c in configs:
            vectors[c.label] = c.run(texts)
            b = c.rounds[-1]
            console.print(
                f"round {r + 1} {c.label:13s} {b['chunks_per_s']:7.1f} chunks/s "
                f"{b['chunks_per_cpu_s']:7.1f} chunks/cpu-s  load {b['load1']:.2f}"
            )
    base = configs[0].best()["chunks_per_s"]

    def cos_min(a: Vectors, b: Vectors) -> float:
        return float((a * b).sum(1).min())

    # Pre-truncation must not change what the model reads: compare text by text
    # (batches of one, so int8 scaling is per text in both).
    sample = [t for t in texts if pretruncate(t) != t][:40]
    today.batch_size = 1
    full, cut = today.embed(sample), today.embed([pretruncate(t) for t in sample])
    today.batch_size = 8
    tok = today._model.tokenizer
    same_ids = sum(
        tok(t, truncation=True, max_length=SEQ)["input_ids"]
        == tok(pretruncate(t), truncation=True, max_length=SEQ)["input_ids"]
        for t in texts
    )
    checks: dict[str, Any] = {
        f"{label}_vs_today_cos_min": cos_min(vectors[label], vectors["today"])
        for label in ("workers", "bs16", "fp32-workers")
        if label in labels
    }
    if "workers" in labels:
        checks["workers_vs_today_max_abs"] = float(
            np.abs(vectors["workers"] - vectors["today"]).max()
        )
    checks |= {
        "pretruncate_changed_texts": len([t for t in texts if pretruncate(t) != t]),
        "pretruncate_same_model_input": f"{same_ids}/{len(texts)}",
        "pretruncate_max_abs_diff": float(np.abs(full - cut).max()) if sample else 0.0,
        "worker_rss_mb": memory_mb(pooled.pool.pids, "Rss:"),
        "worker_pss_mb": memory_mb(pooled.pool.pids, "Pss:"),
        "this_process_pss_mb": memory_mb([os.getpid()], "Pss:"),
        "static_load_or_distill_s": static_load,
    }
    table = Table(
        title=f"embedding {len(texts)} chunks of {args.repo.name} (best of {args.rounds})"
    )
    for col in ("config", "what", "chunks/s", "chunks/CPU-s", "x today"):
        table.add_column(col, justify="right" if col not in ("config", "what") else "left")
    for c in configs:
        b = c.best()
        table.add_row(
            c.label, c.what, f"{b['chunks_per_s']:.1f}", f"{b['chunks_per_cpu_s']:.1f}",
            f"{b['chunks_per_s'] / base:.2f}",
        )  # fmt: skip
    console.print(table)
    for k, v in checks.items():
        console.print(f"  {k}: {v:.6g}" if isinstance(v, float) else f"  {k}: {v}")
    pooled.close()
    fp32.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "corpus": str(args.repo),
        "chunks": len(texts),
        "seed": args.seed,
        "cpus": len(os.sched_getaffinity(0)),
        "torch_default_threads": default_threads,
        "configs": {
            c.label: {"what": c.what, "best": c.best(), "rounds": c.rounds} for c in configs
        },
        "checks": checks,
        "loadavg_end": os.getloadavg(),
    }
    args.out.write_text(json.dumps(result, indent=2))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
