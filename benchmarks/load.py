"""Load on the HTTP API: N concurrent clients posting /v1/context for a fixed time.

    python benchmarks/load.py --repo tokio                       # a server already running
    python benchmarks/load.py --repo tokio --serve --home DIR    # start one on a free port

Queries come from /work/shared/bench/tasks/<repo>.jsonl (the localization
tasks), round-robin. One warm-up request (the view load) is not counted.
Prints throughput, latency percentiles and errors, and writes JSON. Bounded:
loopback only, at most --seconds and --max-requests.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

TASKS = Path("/work/shared/bench/tasks")
RESULTS = Path(__file__).parent / "results"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repo", required=True, help="index name on the server")
    p.add_argument("--url", default="http://127.0.0.1:8765", help="server (loopback only)")
    p.add_argument("--tasks", type=Path, help="JSONL with a 'query' per line")
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--max-requests", type=int, default=200_000)
    p.add_argument("--budget", type=int, default=8000, help="budget_tokens per request")
    p.add_argument("--token", default=os.environ.get("CTXSVC_TOKEN", ""))
    p.add_argument("--serve", action="store_true", help="start `ctxsvc serve` on a free port")
    p.add_argument("--home", help="CTXSVC_HOME for --serve")
    p.add_argument("--out", type=Path, help="JSON output (default: results/load-<repo>.json)")
    args = p.parse_args()
    if not 1 <= args.clients <= 256 or not 0 < args.seconds <= 3600:
        p.error("--clients must be 1..256 and --seconds 0..3600")
    tasks = args.tasks or TASKS / f"{args.repo}.jsonl"
    queries = [json.loads(line)["query"] for line in tasks.read_text().splitlines() if line.strip()]
    server = None
    if args.serve:
        port = _free_port()
        args.url = f"http://127.0.0.1:{port}"
        server = _start(port, args.home)
    host = urlsplit(args.url).hostname or ""
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        p.error("the load script only targets loopback addresses")
    try:
        result = asyncio.run(_run(args, queries))
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
    _print(result)
    out = args.out or RESULTS / f"load-{args.repo}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0 if result["errors"] == 0 else 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _start(port: int, home: str | None) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    if home:
        env["CTXSVC_HOME"] = home
    proc = subprocess.Popen(
        [sys.executable, "-m", "ctxsvc", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server did not become ready within 180 s")


async def _run(args: argparse.Namespace, queries: list[str]) -> dict[str, Any]:
    headers = {"authorization": f"Bearer {args.token}"} if args.token else {}
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    tokens: list[int] = []
    async with httpx.AsyncClient(
        base_url=args.url, headers=headers, limits=limits, timeout=30
    ) as client:
        body = {"repo": args.repo, "query": queries[0], "budget_tokens": args.budget}
        warm = await client.post("/v1/context", json=body)  # loads the view; not counted
        if warm.status_code != 200:
            raise SystemExit(f"warm-up failed: {warm.status_code} {warm.text[:300]}")
        deadline = time.monotonic() + args.seconds
        sent = [0]

        async def worker(k: int) -> None:
            i = k
            while time.monotonic() < deadline and sent[0] < args.max_requests:
                sent[0] += 1
                q = queries[i % len(queries)]
                i += args.clients
                t0 = time.perf_counter()
                try:
                    r = await client.post(
                        "/v1/context",
                        json={"repo": args.repo, "query": q, "budget_tokens": args.budget},
                    )
                    statuses[str(r.status_code)] += 1
                    if r.status_code == 200:
                        tokens.append(r.json()["tokens_used"])
                except httpx.HTTPError as exc:
                    statuses[type(exc).__name__] += 1
                latencies.append((time.perf_counter() - t0) * 1000)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(args.clients)))
        elapsed = time.perf_counter() - t0
    q = (
        statistics.quantiles(latencies, n=100, method="inclusive")
        if len(latencies) > 1
        else [0.0] * 99
    )
    return {
        "repo": args.repo,
        "clients": args.clients,
        "seconds": round(elapsed, 2),
        "budget_tokens": args.budget,
        "requests": len(latencies),
        "throughput_rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(q[49], 1),
        "p95_ms": round(q[94], 1),
        "p99_ms": round(q[98], 1),
        "max_ms": round(max(latencies, default=0.0), 1),
        "errors": sum(n for s, n in statuses.items() if s != "200"),
        "statuses": dict(statuses),
        "mean_tokens_used": round(statistics.fmean(tokens), 1) if tokens else 0,
    }


def _print(r: dict[str, Any]) -> None:
    cols = ["clients", "seconds", "requests", "throughput_rps", "p50_ms", "p95_ms", "p99_ms",
            "max_ms", "errors"]  # fmt: skip
    print("| " + " | ".join(cols) + " |")
    print("|" + "|".join(" --- " for _ in cols) + "|")
    print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    if r["errors"]:
        print(f"statuses: {r['statuses']}")


if __name__ == "__main__":
    raise SystemExit(main())
