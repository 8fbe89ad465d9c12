"""Load on the HTTP API: N concurrent clients for a fixed time, a re-index running.

    python benchmarks/load.py --repo tokio                       # a server already running
    python benchmarks/load.py --repo tokio --serve --home DIR    # start one on a free port
    python benchmarks/load.py --repo tokio --serve --home DIR --seconds 300 \
        --mix context=6,search=2,checkpoint=1,resume=1 --reindex-every 30
    python benchmarks/load.py --repo tokio --home DIR --compare    # see benchmarks/scale.py

``--compare [CONFIGS]`` runs ``benchmarks.scale``: one worker against two, SQLite against
PostgreSQL state, closed loop then open loop at half capacity, side by side in one run.

Each client draws its next call from ``--mix`` (weights): POST /v1/context and
/v1/search with queries from ../shared/bench/tasks/<repo>.jsonl (the
localization tasks), POST a checkpoint to its own session (a short transcript
with a tool call and a decision, an Idempotency-Key each), GET its resume.
With ``--reindex-every S``, one file of the repository gets a line appended
every S seconds and a refresh job re-indexes it while the clients run (the
file is restored at the end). With ``--serve``, the server's RSS is sampled
every second. Prints throughput, latency percentiles per call and overall,
errors and RSS, and writes JSON. Bounded: loopback only, at most --seconds
and --max-requests. One warm-up request per call kind is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

if __package__ in (None, ""):  # run as a file: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from benchmarks.paths import TASKS_DIR

TASKS = TASKS_DIR
RESULTS = Path(__file__).parent / "results"
KINDS = ("context", "search", "checkpoint", "resume")
WARMUP_SECONDS = 30.0  # RSS growth is measured after this


def main() -> int:
    if "--compare" in sys.argv:
        from benchmarks import scale

        return scale.main(_compare_argv(sys.argv[1:]))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repo", required=True, help="index name on the server")
    p.add_argument("--url", default="http://127.0.0.1:8765", help="server (loopback only)")
    p.add_argument("--tasks", type=Path, help="JSONL with a 'query' per line")
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--max-requests", type=int, default=200_000)
    p.add_argument("--budget", type=int, default=8000, help="budget_tokens per request")
    p.add_argument("--mix", default="context=1", help="call weights, e.g. context=6,search=2")
    p.add_argument("--reindex-every", type=float, default=0.0, help="seconds between re-indexes")
    p.add_argument("--token", default=os.environ.get("CTXSVC_TOKEN", ""))
    p.add_argument("--serve", action="store_true", help="start `ctxsvc serve` on a free port")
    p.add_argument("--home", help="CTXSVC_HOME for --serve")
    p.add_argument("--server-log", type=Path, help="the --serve server's log (default: results/)")
    p.add_argument("--out", type=Path, help="JSON output (default: results/load-<repo>.json)")
    args = p.parse_args()
    if not 1 <= args.clients <= 256 or not 0 < args.seconds <= 3600:
        p.error("--clients must be 1..256 and --seconds 0..3600")
    try:
        args.weights = {k: float(v) for k, v in (part.split("=") for part in args.mix.split(","))}
    except ValueError:
        p.error("--mix takes kind=weight pairs, e.g. context=6,search=2")
    if not set(args.weights) <= set(KINDS) or sum(args.weights.values()) <= 0:
        p.error(f"--mix kinds are {', '.join(KINDS)}, with positive weights")
    tasks = args.tasks or TASKS / f"{args.repo}.jsonl"
    queries = [json.loads(line)["query"] for line in tasks.read_text().splitlines() if line.strip()]
    server = None
    if args.serve:
        port = _free_port()
        args.url = f"http://127.0.0.1:{port}"
        log = args.server_log or RESULTS / f"load-{args.repo}-server.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        server = _start(port, args.home, log)
    host = urlsplit(args.url).hostname or ""
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        p.error("the load script only targets loopback addresses")
    try:
        result = asyncio.run(_run(args, queries, server.pid if server else None))
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


def _compare_argv(argv: list[str]) -> list[str]:
    """``benchmarks.scale``'s arguments for ``load.py ... --compare [CONFIGS]``."""
    i = argv.index("--compare")
    rest = argv[:i] + argv[i + 1 :]
    if i + 1 < len(argv) and not argv[i + 1].startswith("-"):
        rest = [*argv[:i], "--configs", argv[i + 1], *argv[i + 2 :]]
    return rest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _start(port: int, home: str | None, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    if home:
        env["CTXSVC_HOME"] = home
    with log.open("wb") as out:  # one JSON line per request: a 5xx can be looked up by its id
        proc = subprocess.Popen(
            [sys.executable, "-m", "ctxsvc", "--log-json", "serve", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
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


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


MESSAGES = [
    {"role": "user", "content": "Make the runtime shut down cleanly when a task panics."},
    {
        "role": "assistant",
        "content": "I decided to catch the panic in the worker because the pool must survive.",
        "tool_calls": [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "edit_file", "arguments": json.dumps({"path": "src/lib.rs"})},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "c1", "content": "ok"},
    {"role": "assistant", "content": "TODO: add a test for the panic path"},
]


class Load:
    """The clients' calls, timed per kind."""

    def __init__(self, client: httpx.AsyncClient, args: argparse.Namespace, queries: list[str]):
        self.client, self.args, self.queries = client, args, queries
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.statuses: Counter[str] = Counter()
        self.tokens: list[int] = []

    async def call(self, kind: str, session: str, q: str) -> httpx.Response:
        repo, budget = self.args.repo, self.args.budget
        if kind == "context":
            body = {"repo": repo, "query": q, "budget_tokens": budget}
            return await self.client.post("/v1/context", json=body)
        if kind == "search":
            return await self.client.post("/v1/search", json={"repo": repo, "query": q})
        if kind == "checkpoint":
            return await self.client.post(
                f"/v1/sessions/{session}/checkpoints",
                json={"messages": MESSAGES},
                headers={"Idempotency-Key": uuid.uuid4().hex},
            )
        return await self.client.get(f"/v1/sessions/{session}/resume?budget_tokens=1000")

    async def timed(self, kind: str, session: str, q: str) -> None:
        t0 = time.perf_counter()
        try:
            r = await self.call(kind, session, q)
            status = str(r.status_code)
            if kind == "context" and r.status_code == 200:
                self.tokens.append(r.json()["tokens_used"])
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        self.statuses[f"{kind} {status}"] += 1
        self.latencies[kind].append((time.perf_counter() - t0) * 1000)


async def open_session(client: httpx.AsyncClient, repo: str, task: str) -> str:
    """A new session with a first checkpoint (so that a resume always has one); its id."""
    r = await client.post("/v1/sessions", json={"repo": repo, "task": task})
    session = str(r.json()["id"]) if r.status_code == 201 else ""
    if session:
        r = await client.post(f"/v1/sessions/{session}/checkpoints", json={"messages": MESSAGES})
    if r.status_code != 201:
        raise SystemExit(f"set-up failed: {r.status_code} {r.text[:300]}")
    return session


async def _reindex(client: httpx.AsyncClient, args: argparse.Namespace, stop: float) -> int:
    """Refresh jobs every --reindex-every seconds, each after a one-line edit; returns the count."""
    status = (await client.get(f"/v1/repos/{args.repo}")).json()
    root = Path(status["root"])
    target = next(p for p in sorted(root.rglob("*.rs")) + sorted(root.rglob("*.py")))
    original = target.read_bytes()
    done = 0
    try:
        while time.monotonic() + args.reindex_every < stop:
            await asyncio.sleep(args.reindex_every)
            target.write_bytes(original + f"\n// load edit {done}\n".encode())
            job = (await client.post(f"/v1/repos/{args.repo}/refresh")).json()
            while job.get("state") in ("queued", "running"):
                await asyncio.sleep(0.5)
                job = (await client.get(f"/v1/jobs/{job['id']}")).json()
            if job.get("state") != "done":
                raise SystemExit(f"re-index failed: {job}")
            done += 1
    finally:
        target.write_bytes(original)
    return done


async def _run(args: argparse.Namespace, queries: list[str], pid: int | None) -> dict[str, Any]:
    headers = {"authorization": f"Bearer {args.token}"} if args.token else {}
    limits = httpx.Limits(max_connections=args.clients + 2, max_keepalive_connections=args.clients)
    rss: list[tuple[float, float]] = []
    async with httpx.AsyncClient(
        base_url=args.url, headers=headers, limits=limits, timeout=60
    ) as client:
        load = Load(client, args, queries)
        sessions = [await open_session(client, args.repo, f"load {k}") for k in range(args.clients)]
        for kind in args.weights:  # loads the view, the model and the ledger; not counted
            warm = await load.call(kind, sessions[0], queries[0])
            if warm.status_code >= 400:
                raise SystemExit(f"warm-up {kind} failed: {warm.status_code} {warm.text[:300]}")
        start = time.monotonic()
        deadline = start + args.seconds
        sent = [0]
        kinds, weights = list(args.weights), list(args.weights.values())

        async def worker(k: int) -> None:
            rng, i = random.Random(k), k
            while time.monotonic() < deadline and sent[0] < args.max_requests:
                sent[0] += 1
                await load.timed(
                    rng.choices(kinds, weights)[0], sessions[k], queries[i % len(queries)]
                )
                i += args.clients

        async def sample() -> None:
            while pid is not None and time.monotonic() < deadline:
                mb = _rss_mb(pid)
                if mb is not None:
                    rss.append((round(time.monotonic() - start, 1), round(mb, 1)))
                await asyncio.sleep(1.0)

        t0 = time.perf_counter()
        jobs = [worker(k) for k in range(args.clients)] + [sample()]
        reindex = (
            asyncio.ensure_future(_reindex(client, args, deadline)) if args.reindex_every else None
        )
        await asyncio.gather(*jobs)
        reindexes = await reindex if reindex is not None else 0
        elapsed = time.perf_counter() - t0
    every = [ms for kind in load.latencies for ms in load.latencies[kind]]
    errors = sum(n for key, n in load.statuses.items() if not key.split()[1].startswith("2"))
    return {
        "repo": args.repo, "clients": args.clients, "seconds": round(elapsed, 2),
        "budget_tokens": args.budget, "mix": args.weights, "reindexes": reindexes,
        "requests": len(every), "throughput_rps": round(len(every) / elapsed, 1),
        **_percentiles(every), "errors": errors, "statuses": dict(load.statuses),
        "by_kind": {
            kind: {"requests": len(ms), "throughput_rps": round(len(ms) / elapsed, 1), **_percentiles(ms)}
            for kind, ms in load.latencies.items()
        },
        "mean_tokens_used": round(statistics.fmean(load.tokens), 1) if load.tokens else 0,
        "rss_mb": _rss_summary(rss), "rss_samples": rss,
    }  # fmt: skip


def _percentiles(ms: list[float]) -> dict[str, float]:
    q = statistics.quantiles(ms, n=100, method="inclusive") if len(ms) > 1 else [0.0] * 99
    return {
        "p50_ms": round(q[49], 1), "p95_ms": round(q[94], 1), "p99_ms": round(q[98], 1),
        "max_ms": round(max(ms, default=0.0), 1),
    }  # fmt: skip


def _rss_summary(rss: list[tuple[float, float]]) -> dict[str, float | None]:
    """RSS after warm-up, at the end, its peak, and its slope (MB/min) after warm-up."""
    after = [(t, mb) for t, mb in rss if t >= WARMUP_SECONDS]
    if len(after) < 2:
        return {"after_warmup": None, "end": None, "peak": None, "slope_mb_per_min": None}
    slope = statistics.linear_regression([t for t, _ in after], [mb for _, mb in after]).slope
    return {
        "after_warmup": after[0][1], "end": after[-1][1], "peak": max(mb for _, mb in rss),
        "slope_mb_per_min": round(slope * 60, 2),
    }  # fmt: skip


def _print(r: dict[str, Any]) -> None:
    cols = ["requests", "throughput_rps", "p50_ms", "p95_ms", "p99_ms", "max_ms"]
    print(f"{r['clients']} clients, {r['seconds']} s, mix {r['mix']}, {r['reindexes']} re-indexes, "
          f"{r['errors']} errors")  # fmt: skip
    print("| call | " + " | ".join(cols) + " |")
    print("|" + "|".join(" --- " for _ in range(len(cols) + 1)) + "|")
    rows = [("all", r), *((k, v) for k, v in r["by_kind"].items())]
    for name, v in rows:
        print(f"| {name} | " + " | ".join(str(v[c]) for c in cols) + " |")
    print(f"RSS (MB): {r['rss_mb']}")
    if r["errors"]:
        print(f"statuses: {r['statuses']}")


if __name__ == "__main__":
    raise SystemExit(main())
