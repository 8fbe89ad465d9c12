"""Retrieval ablation and tuning on the shared localization tasks.

Indexes each repository once (incrementally, with vectors), then runs every
task under several retrieval configurations in one process, so that the
configurations are compared on the same index, the same query vectors and
the same machine state. Prints region recall and file hit per budget, mean
over the tuning repositories and over the held-out ones separately, and
writes JSON.

    python -m benchmarks.tune_retrieval --home /tmp/ctxsvc-tune --configs ablation
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console
from rich.table import Table

from benchmarks.paths import CORPORA, TASKS_DIR
from ctxsvc.bench.metrics import delivered_lines, file_hit, region_recall
from ctxsvc.candidates import candidates
from ctxsvc.compose import build_service
from ctxsvc.packing import pack
from ctxsvc.retrieval import RetrievalConfig, retrieve
from ctxsvc.settings import Settings

TASKS = TASKS_DIR
REPOS = ("requests", "click", "pytest", "cobra", "axios", "tokio")
HELD_OUT = ("requests", "tokio")  # never used to choose weights
BUDGETS = (2000, 4000, 8000, 16000)


def config_sets(base: RetrievalConfig) -> dict[str, dict[str, RetrievalConfig]]:
    w = dict(base.weights)
    return {
        "default": {"default": base},
        "ablation": {
            "all signals": base,
            "no priors": replace(base, prose_weight=1.0, test_weight=1.0),
            "no fts": replace(base, fts=False),
            "no vector": replace(base, vector=False),
            "no symbol": replace(base, symbol=False),
            "no graph": replace(base, graph=False),
            "fts only": replace(base, vector=False, symbol=False, graph=False),
            "vector only": replace(base, fts=False, symbol=False, graph=False),
        },
        "fusion": {
            "rrf (equal)": replace(base, weights={k: 1.0 for k in w}, file_boost=0.0),
            "weighted": base,
            "weighted + file-aware 0.3": replace(base, file_boost=0.3),
            "weighted + file-aware 0.6": replace(base, file_boost=0.6),
            "graph 0.25": replace(base, weights={**w, "graph": 0.25}),
            "graph 1.0": replace(base, weights={**w, "graph": 1.0}),
            "vector 1.5": replace(base, weights={**w, "vector": 1.5}),
            "fts 1.5": replace(base, weights={**w, "fts": 1.5}),
        },
        "spread": {
            "priors 0.5, spread 0": replace(base, spread=0.0, prose_weight=0.5, test_weight=0.5),
            "priors 0.5, spread 0.25": replace(
                base, spread=0.25, prose_weight=0.5, test_weight=0.5
            ),
            "priors 0.5, spread 0.5": replace(base, spread=0.5, prose_weight=0.5, test_weight=0.5),
            "priors 0.25, spread 0": replace(base, spread=0.0, prose_weight=0.25, test_weight=0.25),
            "priors 0.25, spread 0.25": replace(
                base, spread=0.25, prose_weight=0.25, test_weight=0.25
            ),
        },
        "priors": {
            "no priors": replace(base, prose_weight=1.0, test_weight=1.0),
            "prose 0.5": replace(base, prose_weight=0.5, test_weight=1.0),
            "tests 0.5": replace(base, prose_weight=1.0, test_weight=0.5),
            "both 0.5": replace(base, prose_weight=0.5, test_weight=0.5),
            "both 0.25": replace(base, prose_weight=0.25, test_weight=0.25),
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--home", type=Path, default=Path("/tmp/ctxsvc-tune"))
    ap.add_argument("--corpora", type=Path, default=CORPORA)
    ap.add_argument("--repos", default=",".join(REPOS))
    ap.add_argument("--configs", default="ablation", help="ablation, fusion or priors")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()

    settings = Settings.from_env(home=args.home)
    service = build_service(settings)
    counter, embedder = service.tokens, service.embedder
    if embedder is None:
        raise SystemExit(f"the embedding model did not load: {service.embedder_error}")
    configs = config_sets(service.queries.retrieval)[args.configs]
    results: dict[str, dict[str, dict[int, dict[str, float]]]] = {name: {} for name in configs}
    latency: dict[str, list[float]] = {name: [] for name in configs}
    for repo in args.repos.split(","):
        tasks = [json.loads(x) for x in (TASKS / f"{repo}.jsonl").read_text().splitlines() if x]
        service.index(args.corpora / repo, repo)
        meta = service.resolve(repo)
        view = service.view(meta)
        qvecs = embedder.embed([t["query"] for t in tasks])
        for name, cfg in configs.items():
            per_budget: dict[int, list[tuple[float | None, float | None]]] = {
                b: [] for b in BUDGETS
            }
            for task, qv in zip(tasks, qvecs, strict=True):
                for budget in BUDGETS:
                    t0 = time.perf_counter()
                    limit = max(60, 2 * budget // settings.chunk_target_tokens)
                    hits = retrieve(
                        view, task["query"], qv if cfg.vector else None, cfg, limit=limit
                    )
                    cands = candidates(
                        view, hits, "snippets", budget_tokens=budget, spread=cfg.spread
                    )
                    p = pack(repo, task["query"], cands, budget, counter)
                    latency[name].append((time.perf_counter() - t0) * 1000)
                    assert p.tokens_used <= budget, "overrun"
                    d = delivered_lines((i.path, i.start_line, i.end_line) for i in p.items)
                    per_budget[budget].append(
                        (file_hit(d, task["gold"]), region_recall(d, task["regions"]))
                    )
            results[name][repo] = {
                b: {
                    "file_hit": statistics.fmean(f for f, _ in rows if f is not None),
                    "region_recall": statistics.fmean(r for _, r in rows if r is not None),
                }
                for b, rows in per_budget.items()
            }
        print(f"{repo}: done", flush=True)
    summary = summarize(results, args.repos.split(","))
    show(summary, latency)
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"tune-{args.configs}.json"
    out.write_text(
        json.dumps(
            {
                "configs": {k: asdict(v) for k, v in configs.items()},
                "held_out": HELD_OUT,
                "per_repo": results,
                "summary": summary,
                "latency_ms": {
                    k: {"p50": pct(v, 50), "p95": pct(v, 95)} for k, v in latency.items()
                },
            },
            indent=2,
            default=str,
        )
    )
    print(f"wrote {out}")


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else (values or [0.0])[0]


def summarize(results: dict[str, Any], repos: list[str]) -> dict[str, Any]:
    groups = {
        "tuning": [r for r in repos if r not in HELD_OUT],
        "held-out": [r for r in repos if r in HELD_OUT],
        "all": repos,
    }
    out: dict[str, Any] = {}
    for name, per_repo in results.items():
        out[name] = {}
        for g, members in groups.items():
            if not members:
                continue
            out[name][g] = {
                f"{m}@{b // 1000}K": statistics.fmean(per_repo[r][b][m] for r in members)
                for b in BUDGETS
                for m in ("file_hit", "region_recall")
            }
    return out


def show(summary: dict[str, Any], latency: dict[str, list[float]]) -> None:
    for group in ("tuning", "held-out", "all"):
        table = Table(title=f"retrieval configurations, mean over {group} repositories")
        cols = [
            "config",
            "file@2K",
            "region@2K",
            "file@8K",
            "region@8K",
            "file@16K",
            "region@16K",
            "p50 ms",
        ]
        for c in cols:
            table.add_column(c)
        for name, groups in summary.items():
            if group not in groups:
                continue
            g = groups[group]
            table.add_row(
                name,
                *(f"{g[k]:.3f}" for k in ("file_hit@2K", "region_recall@2K", "file_hit@8K",
                                          "region_recall@8K", "file_hit@16K", "region_recall@16K")),
                f"{pct(latency[name], 50):.1f}",
            )  # fmt: skip
        Console(width=200).print(table)


if __name__ == "__main__":
    main()
