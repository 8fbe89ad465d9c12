"""The approximate vector index against brute force, on a real index's vectors.

Copies the vectors of one index (``--home``, ``--repo``) into a scratch table,
builds the approximate index on it with ctxsvc's own code (``lance_ann.ensure``,
the partitions and sub-vectors ``lance_ann.plan`` picks), and compares, for
``--queries`` stored vectors drawn at random (each one's own row left out of
both answers):

- brute force as a view does it: one matrix product over the matrix in memory;
- the approximate index at ctxsvc's settings (``probes``, ``REFINE``) and at
  the others of ``--sweep``: recall@k against brute force, and latency.

It prints a table, writes JSON, and states the memory each way: the matrix a
view holds (4 bytes per dimension per chunk), against the index files on disk
(of which the product-quantized codes and row ids are what a search keeps hot).

    python -m benchmarks.ann --home DIR --repo tokio --out benchmarks/results/ann-tokio.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from rich.console import Console
from rich.table import Table

from ctxsvc.settings import Settings
from ctxsvc.stores import lance_ann
from ctxsvc.stores.lance import LanceStore, RepoReader
from ctxsvc.stores.lance_schema import pa, schemas

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--home", type=Path, required=True, help="CTXSVC_HOME holding the index")
    p.add_argument("--repo", required=True, help="an index name in --home, with vectors")
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--sweep", default="8:1,16:4,32:8,64:8", help="NPROBES:REFINE pairs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    store = LanceStore(Settings.from_env({}, home=args.home).db_path)
    meta = store.meta(args.repo)
    if meta is None or meta.dimension is None:
        p.error(f"--repo {args.repo}: no index with vectors in {args.home}")
    stored = RepoReader(store, meta).vectors()
    if stored is None or len(stored[0]) < 2 * args.k:
        p.error(f"--repo {args.repo}: too few vectors")
    hashes, matrix = stored
    n, dim = matrix.shape
    rng = np.random.default_rng(args.seed)
    picks = rng.choice(n, size=min(args.queries, n), replace=False)
    sweep = [tuple(int(x) for x in pair.split(":")) for pair in args.sweep.split(",")]
    partitions, _ = lance_ann.plan(n, dim)
    settings = (lance_ann.probes(lance_ann.AnnIndex("", n), dim), lance_ann.REFINE)
    if settings not in sweep:
        sweep.append(settings)

    with tempfile.TemporaryDirectory(prefix="ctxsvc-ann-") as scratch:
        table = _copy(Path(scratch), hashes, matrix, dim)
        t0 = time.perf_counter()
        built = lance_ann.ensure(table, 2, "the benchmark's copy")
        build_seconds = time.perf_counter() - t0
        assert built is not None
        index_bytes = sum(f.stat().st_size for f in Path(scratch).rglob("*") if
                          "_indices" in f.parts and f.is_file())  # fmt: skip
        truth, exact_ms = _exact(matrix, picks, args.k)
        rows = [{"method": "brute force (in memory)", "nprobes": None, "refine": None,
                 "recall": 1.0, **_ms(exact_ms)}]  # fmt: skip
        for nprobes, refine in sweep:
            recall, ms = _approximate(table, hashes, matrix, picks, truth, args.k, nprobes, refine)
            rows.append({"method": "approximate (IVF-PQ)", "nprobes": nprobes, "refine": refine,
                         "recall": recall, **_ms(ms),
                         "ctxsvc": (nprobes, refine) == settings})  # fmt: skip

    sub_vectors = lance_ann.plan(n, dim)[1]
    result: dict[str, Any] = {
        "repo": args.repo, "vectors": n, "dimension": dim, "k": args.k,
        "queries": len(picks), "partitions": partitions, "sub_vectors": sub_vectors,
        "build_seconds": round(build_seconds, 2),
        "matrix_bytes": int(matrix.nbytes), "index_bytes": index_bytes,
        "matrix_mb_per_million": round(4 * dim * 1_000_000 / 2**20, 1),
        "index_mb_per_million": round(index_bytes / n * 1_000_000 / 2**20, 1),
        "rows": rows, "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }  # fmt: skip
    _print(result)
    out = args.out or RESULTS / f"ann-{args.repo}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def _copy(scratch: Path, hashes: list[str], matrix: npt.NDArray[np.float32], dim: int) -> Any:
    arrow = pa()
    table = LanceStore(scratch).create_table("bench__vectors", schemas(dim)["vectors"])
    for i in range(0, len(hashes), 50_000):
        part = np.ascontiguousarray(matrix[i : i + 50_000])
        table.add(arrow.Table.from_arrays(
            [arrow.array(hashes[i : i + 50_000], arrow.string()),
             arrow.FixedSizeListArray.from_arrays(arrow.array(part.reshape(-1)), dim)],
            schema=schemas(dim)["vectors"],
        ))  # fmt: skip
    return table


def _exact(
    matrix: npt.NDArray[np.float32], picks: npt.NDArray[np.int64], k: int
) -> tuple[list[set[int]], list[float]]:
    truth, ms = [], []
    for q in picks:
        t0 = time.perf_counter()
        sims = matrix @ matrix[q]
        sims[q] = -2.0  # the query's own row is not an answer
        top = np.argpartition(-sims, k - 1)[:k]
        ms.append((time.perf_counter() - t0) * 1000)
        truth.append({int(i) for i in top})
    return truth, ms


def _approximate(
    table: Any,
    hashes: list[str],
    matrix: npt.NDArray[np.float32],
    picks: npt.NDArray[np.int64],
    truth: list[set[int]],
    k: int,
    nprobes: int,
    refine: int,
) -> tuple[float, list[float]]:
    row = {h: i for i, h in enumerate(hashes)}
    hits, ms = 0, []
    for q, want in zip(picks, truth, strict=True):
        t0 = time.perf_counter()
        got = (
            table.search(matrix[q], vector_column_name="vector")
            .distance_type("cosine")
            .nprobes(nprobes)
            .refine_factor(refine)
            .select(["content_hash"])
            .limit(k + 1)
            .to_list()
        )
        ms.append((time.perf_counter() - t0) * 1000)
        found = [row[r["content_hash"]] for r in got if row[r["content_hash"]] != q][:k]
        hits += len(want & set(found))
    return hits / (k * len(picks)), ms


def _ms(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    return {
        "p50_ms": round(statistics.median(values), 3),
        "p95_ms": round(values[int(0.95 * (len(values) - 1))], 3),
    }


def _print(r: dict[str, Any]) -> None:
    console = Console()
    console.print(
        f"{r['repo']}: {r['vectors']:,} vectors of {r['dimension']} dims; IVF-PQ of "
        f"{r['partitions']} partitions, {r['sub_vectors']} sub-vectors, built in "
        f"{r['build_seconds']} s; {r['queries']} queries, recall@{r['k']}"
    )
    t = Table("method", "nprobes", "refine", f"recall@{r['k']}", "p50 ms", "p95 ms")
    for row in r["rows"]:
        mark = " (ctxsvc)" if row.get("ctxsvc") else ""
        if row["nprobes"] and row["nprobes"] >= r["partitions"]:
            mark += " (all partitions)"
        t.add_row(row["method"] + mark, str(row["nprobes"] or "-"), str(row["refine"] or "-"),
                  f"{row['recall']:.3f}", f"{row['p50_ms']:.2f}", f"{row['p95_ms']:.2f}")  # fmt: skip
    console.print(t)
    console.print(
        f"memory: the matrix {r['matrix_mb_per_million']} MB per million vectors; "
        f"the index files {r['index_mb_per_million']} MB per million"
    )


if __name__ == "__main__":
    raise SystemExit(main())
