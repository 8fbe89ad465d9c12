"""One worker against two, SQLite against PostgreSQL state: the same load, side by side.

    python -m benchmarks.scale --repo tokio --home DIR
    python benchmarks/load.py --repo tokio --home DIR --compare        # the same
    python -m benchmarks.scale --repo tokio --home DIR --seconds 120 --configs 1:sqlite,2:sqlite

For each configuration (workers : state database) in turn, on one machine in one run:
``ctxsvc serve --workers W`` on a free loopback port over the data directory ``--home``
(its indexes shared by every configuration; the state in the home's SQLite file, or in a
fresh database of a throwaway PostgreSQL cluster this script starts, ``benchmarks.pgcluster``),
then

* **closed loop**: ``--clients`` concurrent clients (20), each sending its next call as the
  last one is answered, for ``--seconds``, drawing from the mix of ``benchmarks.load``
  (context 6, search 2, checkpoint 1, resume 1) with a refresh job every
  ``--reindex-every`` seconds (30) while they run: throughput is the capacity;
* **open loop** at half that capacity: calls sent at a fixed rate whatever the answers
  (each on its own, so a slow answer does not slow the arrivals), for ``--seconds``:
  latency then includes the queueing a real arrival meets.

Prints throughput, p50/p95/p99 and errors per configuration and the ratio of two workers'
capacity to one's per state database, and writes JSON (``results/scale-<repo>.json``).
The servers' summed RSS is sampled each second. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from benchmarks.load import KINDS, MESSAGES, TASKS, Load, _free_port, _percentiles, _run
from benchmarks.pgcluster import PostgresServer, binaries

RESULTS = Path(__file__).parent / "results"
MIX = "context=6,search=2,checkpoint=1,resume=1"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repo", required=True, help="an index name in --home")
    p.add_argument("--home", required=True, help="CTXSVC_HOME holding the index")
    p.add_argument("--configs", default="1:sqlite,2:sqlite,1:postgresql,2:postgresql")
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--seconds", type=float, default=60.0, help="per loop, per configuration")
    p.add_argument("--budget", type=int, default=8000)
    p.add_argument("--mix", default=MIX)
    p.add_argument("--reindex-every", type=float, default=30.0)
    p.add_argument("--tasks", type=Path, help="JSONL with a 'query' per line")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    args.weights = {k: float(v) for k, v in (part.split("=") for part in args.mix.split(","))}
    args.max_requests, args.token = 10**7, ""
    configs = [(int(w), db) for w, db in (c.split(":") for c in args.configs.split(","))]
    if not set(args.weights) <= set(KINDS) or any(
        db not in ("sqlite", "postgresql") for _, db in configs
    ):
        p.error(f"--mix kinds are {', '.join(KINDS)}; --configs are WORKERS:sqlite|postgresql")
    tasks = args.tasks or TASKS / f"{args.repo}.jsonl"
    queries = [json.loads(line)["query"] for line in tasks.read_text().splitlines() if line.strip()]
    cluster = None
    if any(db == "postgresql" for _, db in configs):
        bindir = binaries()
        if bindir is None:
            raise SystemExit("PostgreSQL server binaries (initdb, pg_ctl) not found")
        cluster = PostgresServer(bindir).start()
    results: list[dict[str, Any]] = []
    try:
        for workers, db in configs:
            url = cluster.new_database() if cluster is not None and db == "postgresql" else None
            results.append(_measure(args, queries, workers, db, url))
            _print_one(results[-1])
    finally:
        if cluster is not None:
            cluster.stop()
    summary = {"repo": args.repo, "clients": args.clients, "seconds": args.seconds,
               "mix": args.weights, "runs": results, "ratios": _ratios(results)}  # fmt: skip
    _print(summary)
    out = args.out or RESULTS / f"scale-{args.repo}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    print(f"wrote {out}")
    errors = sum(r["closed"]["errors"] + r["open"]["errors"] for r in results)
    return 0 if errors == 0 else 1


def _measure(
    args: argparse.Namespace, queries: list[str], workers: int, db: str, url: str | None
) -> dict[str, Any]:
    port = _free_port()
    log = RESULTS / f"scale-{args.repo}-{workers}-{db}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CTXSVC_HOME": args.home, "CTXSVC_WORKERS": str(workers)}
    env.pop("CTXSVC_STATE_URL", None)
    if url:
        env["CTXSVC_STATE_URL"] = url
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ctxsvc", "serve", "--port", str(port)],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    args.url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(args.url, proc, workers)
        closed = asyncio.run(_run(args, queries, None))
        rate = closed["throughput_rps"] / 2
        opened = asyncio.run(_open_loop(args, queries, rate))
        rss = _tree_rss_mb(proc.pid)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    for r in (closed, opened):
        r.pop("rss_samples", None)
        r.pop("rss_mb", None)
    return {"workers": workers, "state": db, "closed": closed, "open": opened, "rss_mb": rss}


def _wait_ready(base: str, proc: subprocess.Popen[bytes], workers: int) -> None:
    """Until every worker has answered ``/readyz`` 200 (a new connection each time)."""
    seen: set[str] = set()
    deadline = time.monotonic() + 300
    while len(seen) < workers:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise SystemExit(f"only {len(seen)} of {workers} workers became ready")
        try:
            r = httpx.get(f"{base}/readyz", timeout=2)
            if r.status_code == 200:
                seen.add(r.headers["x-ctxsvc-worker"])
        except httpx.TransportError:
            time.sleep(0.2)


async def _open_loop(args: argparse.Namespace, queries: list[str], rate: float) -> dict[str, Any]:
    """Calls at ``rate`` per second for ``args.seconds``, each sent on time whatever the
    answers before it; latency from the call's scheduled time."""
    limits = httpx.Limits(max_connections=args.clients * 4, max_keepalive_connections=args.clients)
    async with httpx.AsyncClient(base_url=args.url, limits=limits, timeout=60) as client:
        load = Load(client, args, queries)
        sessions = []
        for k in range(args.clients):
            r = await client.post("/v1/sessions", json={"repo": args.repo, "task": f"open {k}"})
            sessions.append(r.json()["id"])
            await client.post(
                f"/v1/sessions/{sessions[-1]}/checkpoints", json={"messages": MESSAGES}
            )
        rng = random.Random(7)
        kinds, weights = list(args.weights), list(args.weights.values())
        latencies: dict[str, list[float]] = defaultdict(list)
        statuses: Counter[str] = Counter()

        async def one(at: float, kind: str, session: str, q: str) -> None:
            try:
                r = await load.call(kind, session, q)
                status = str(r.status_code)
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            statuses[f"{kind} {status}"] += 1
            latencies[kind].append((time.perf_counter() - at) * 1000)

        start = time.perf_counter()
        pending: list[asyncio.Task[None]] = []
        n = int(rate * args.seconds)
        for i in range(n):
            at = start + i / rate
            await asyncio.sleep(max(0.0, at - time.perf_counter()))
            kind = rng.choices(kinds, weights)[0]
            pending.append(
                asyncio.create_task(
                    one(at, kind, sessions[i % len(sessions)], queries[i % len(queries)])
                )
            )
        await asyncio.gather(*pending)
        elapsed = time.perf_counter() - start
    every = [ms for kind in latencies for ms in latencies[kind]]
    errors = sum(v for k, v in statuses.items() if not k.split()[1].startswith("2"))
    return {
        "rate_rps": round(rate, 1), "requests": len(every), "seconds": round(elapsed, 1),
        "throughput_rps": round(len(every) / elapsed, 1), **_percentiles(every), "errors": errors,
        "statuses": dict(statuses),
        "by_kind": {k: {"requests": len(v), **_percentiles(v)} for k, v in latencies.items()},
    }  # fmt: skip


def _tree_rss_mb(pid: int) -> float:
    """The RSS of ``pid`` and its descendants (the supervisor and its workers)."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        todo.extend(int(c) for c in children)
    return round(total, 1)


def _ratios(results: list[dict[str, Any]]) -> dict[str, float]:
    """Two workers' closed-loop throughput over one's, per state database."""
    by = {(r["workers"], r["state"]): r["closed"]["throughput_rps"] for r in results}
    return {
        db: round(by[(2, db)] / by[(1, db)], 2)
        for db in ("sqlite", "postgresql")
        if (1, db) in by and (2, db) in by and by[(1, db)]
    }


def _print_one(r: dict[str, Any]) -> None:
    c, o = r["closed"], r["open"]
    print(f"{r['workers']} worker(s), {r['state']}: closed {c['throughput_rps']} req/s "
          f"p99 {c['p99_ms']} ms, {c['errors']} errors, {c['reindexes']} re-indexes; "
          f"open at {o['rate_rps']} req/s p99 {o['p99_ms']} ms, {o['errors']} errors", flush=True)  # fmt: skip


def _print(summary: dict[str, Any]) -> None:
    print("| workers | state | closed req/s | p50 ms | p95 ms | p99 ms | open req/s | p50 ms "
          "| p95 ms | p99 ms | errors | re-indexes | RSS MB |")  # fmt: skip
    print("|" + "---|" * 13)
    for r in summary["runs"]:
        c, o = r["closed"], r["open"]
        cells = [
            r["workers"], r["state"], c["throughput_rps"], c["p50_ms"], c["p95_ms"], c["p99_ms"],
            o["rate_rps"], o["p50_ms"], o["p95_ms"], o["p99_ms"], c["errors"] + o["errors"],
            c["reindexes"], r["rss_mb"],
        ]  # fmt: skip
        print("| " + " | ".join(str(x) for x in cells) + " |")
    for db, ratio in summary["ratios"].items():
        print(f"two workers / one, {db}: {ratio}x")


if __name__ == "__main__":
    raise SystemExit(main())
