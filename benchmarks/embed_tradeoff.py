"""Embedding speed against retrieval quality, side by side in one run.

For each configuration (sequence limit, int8 quantization) this embeds every
chunk of the chosen benchmark corpora, times it, and ranks chunks by vector
similarity to each task's query: file hit@10 chunks and gold-region hit@20
chunks (a region counts when a top chunk overlaps it), vector signal alone.

    python benchmarks/embed_tradeoff.py --repos click,requests,cobra
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from rich.console import Console
from rich.table import Table

from benchmarks.paths import CORPORA, TASKS_DIR
from ctxsvc.indexers.chunking import chunk_file
from ctxsvc.indexers.discover import discover, read_text
from ctxsvc.indexers.embed import SentenceTransformerEmbedder
from ctxsvc.indexers.symbols import extract
from ctxsvc.models import Chunk
from ctxsvc.tokens import TiktokenCounter

CONFIGS = [
    ("fp32", 256, False),
    ("fp32", 128, False),
    ("int8", 256, True),
    ("int8", 192, True),
    ("int8", 128, True),
]
BATCH = 8
TASKS = TASKS_DIR


def corpus_chunks(root: Path, counter: TiktokenCounter) -> list[Chunk]:
    found = discover(root)
    chunks: list[Chunk] = []
    for sf in found.files:
        got = read_text(root, sf, max_file_bytes=1 << 20)
        if not hasattr(got, "text"):
            continue
        parsed = extract(sf.path, got.text, sf.language) if sf.language else None
        chunks.extend(chunk_file(sf.path, got.text, parsed, counter))
    return chunks


def score(
    chunks: list[Chunk], vecs: np.ndarray, qvecs: np.ndarray, tasks: list[dict]
) -> dict[str, float]:
    file_hits, region_hits = [], []
    sims = qvecs @ vecs.T
    for t, row in zip(tasks, sims, strict=True):
        order = np.argsort(-row)
        top10 = {chunks[i].path for i in order[:10]}
        file_hits.append(sum(g in top10 for g in t["gold"]) / len(t["gold"]))
        regions = [(p, a, b) for p, rs in t.get("regions", {}).items() for a, b in rs]
        if regions:
            top20 = [chunks[i] for i in order[:20]]
            hit = sum(
                any(c.path == p and c.start_line <= b and c.end_line >= a for c in top20)
                for p, a, b in regions
            )
            region_hits.append(hit / len(regions))
    return {
        "file_hit@10": statistics.fmean(file_hits),
        "region_hit@20": statistics.fmean(region_hits) if region_hits else float("nan"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repos", default="click,requests,cobra")
    ap.add_argument("--corpora", default=str(CORPORA))
    ap.add_argument("--out", default="benchmarks/results/embed_tradeoff.json")
    args = ap.parse_args()
    counter = TiktokenCounter()
    results: dict[str, dict[str, dict[str, float]]] = {}
    for repo in args.repos.split(","):
        tasks = [
            json.loads(line) for line in (TASKS / f"{repo}.jsonl").read_text().splitlines() if line
        ]
        chunks = corpus_chunks(Path(args.corpora) / repo, counter)
        texts = [c.embed_text for c in chunks]
        for label, seq, quant in CONFIGS:
            emb = SentenceTransformerEmbedder(
                "all-MiniLM-L6-v2", max_seq_tokens=seq, quantize=quant
            )
            emb.embed(texts[:16])  # warm-up
            t0 = time.perf_counter()
            vecs = emb.embed(texts)
            rate = len(texts) / (time.perf_counter() - t0)
            qvecs = emb.embed([t["query"] for t in tasks])
            res = {
                "chunks": float(len(chunks)),
                "chunks_per_s": rate,
                **score(chunks, vecs, qvecs, tasks),
            }
            results.setdefault(f"{label}/seq{seq}", {})[repo] = res
            print(repo, label, seq, {k: round(v, 3) for k, v in res.items()}, flush=True)
    table = Table(title="embedding: speed against vector-only retrieval quality")
    for col in ("config", "chunks/s (median over repos)", "file_hit@10", "region_hit@20"):
        table.add_column(col)
    summary = {}
    for cfg, per_repo in results.items():
        vals = list(per_repo.values())
        summary[cfg] = {
            "chunks_per_s": statistics.median(v["chunks_per_s"] for v in vals),
            "file_hit@10": statistics.fmean(v["file_hit@10"] for v in vals),
            "region_hit@20": statistics.fmean(v["region_hit@20"] for v in vals),
        }
        s = summary[cfg]
        table.add_row(
            cfg, f"{s['chunks_per_s']:.1f}", f"{s['file_hit@10']:.3f}", f"{s['region_hit@20']:.3f}"
        )
    Console().print(table)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"per_repo": results, "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
