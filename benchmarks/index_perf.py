"""Indexing speed: a cold index of a real repository, then a one-file edit.

Prints per-stage seconds, files/s (discovery + read + parse + chunk),
embedding chunks/s and peak RSS, and writes JSON. The model is loaded once
before timing starts: its load time is reported apart.

    python benchmarks/index_perf.py /tmp/corpora/pytest
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ctxsvc.compose import build_service
from ctxsvc.models import IndexSummary
from ctxsvc.settings import Settings


def stage(s: IndexSummary, name: str) -> float:
    return sum(t.seconds for t in s.timings if t.stage == name)


def row(label: str, s: IndexSummary, wall: float) -> dict[str, float | str]:
    front = stage(s, "discover") + stage(s, "parse")
    embed = stage(s, "embed")
    return {
        "run": label,
        "wall_s": wall,
        **{f"{t.stage}_s": t.seconds for t in s.timings},
        "files_parsed": s.files_indexed,
        "files_per_s": s.files_indexed / front if front and s.files_indexed else 0.0,
        "chunks": s.chunks,
        "chunks_embedded": s.chunks_embedded,
        "embed_chunks_per_s": s.chunks_embedded / embed if embed and s.chunks_embedded else 0.0,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("repo", type=Path)
    ap.add_argument("--home", type=Path, help="data directory (default: a fresh temp dir)")
    ap.add_argument("--no-vectors", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/index_perf.json"))
    args = ap.parse_args()

    home = args.home or Path(tempfile.mkdtemp(prefix="ctxsvc-bench-"))
    settings = Settings.from_env(home=home)
    t0 = time.perf_counter()
    service = build_service(settings, vectors=not args.no_vectors)
    if not args.no_vectors and service.embedder is None:
        raise SystemExit(f"the embedding model did not load: {service.embedder_error}")
    load_s = time.perf_counter() - t0
    # Work on a copy: the edit must not touch the user's tree.
    work = Path(tempfile.mkdtemp(prefix="ctxsvc-tree-")) / args.repo.name
    shutil.copytree(args.repo, work, symlinks=True)

    rows = []
    t = time.perf_counter()
    cold = service.index(work, "perf", vectors=not args.no_vectors)
    rows.append(row("cold", cold, time.perf_counter() - t))

    # One-file edit: change a line inside the largest indexed source file.
    files = service.store.reader("perf").files()
    target = max(
        (r for r in files.values() if r.status == "indexed" and r.language), key=lambda r: r.size
    )
    path = work / target.path
    text = path.read_text()
    path.write_text(
        text.replace(
            "\n",
            "\n// edited by index_perf\n" if target.language != "python" else "\n# edited\n",
            1,
        )
    )
    t = time.perf_counter()
    warm = service.index(work, "perf", vectors=not args.no_vectors)
    rows.append(row(f"one-file edit ({target.path})", warm, time.perf_counter() - t))

    t = time.perf_counter()
    noop = service.index(work, "perf", vectors=not args.no_vectors)
    rows.append(row("no change", noop, time.perf_counter() - t))

    table = Table(
        title=f"indexing {args.repo.name}: {cold.files_seen} files, {cold.chunks} chunks "
        f"(model load {load_s:.1f} s, excluded)"
    )
    cols = [
        "run",
        "wall_s",
        "discover_s",
        "parse_s",
        "embed_s",
        "write_s",
        "commit_s",
        "files_per_s",
        "embed_chunks_per_s",
        "peak_rss_mb",
    ]
    for c in cols:
        table.add_column(c)
    for r in rows:
        table.add_row(
            *(
                f"{r.get(c, 0):.2f}" if isinstance(r.get(c, 0), float) else str(r.get(c, ""))
                for c in cols
            )
        )
    Console(width=200).print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "repo": str(args.repo),
                "model_load_s": load_s,
                "settings": {
                    k: str(v)
                    for k, v in settings.model_dump(
                        mode="json", exclude={"token", "summarizer_api_key"}
                    ).items()
                },
                "runs": rows,
                "summary": asdict(cold),
            },
            indent=2,
            default=str,
        )
    )
    shutil.rmtree(work.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
