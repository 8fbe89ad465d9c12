"""One worker against two, SQLite against PostgreSQL state: the same load, side by side.

    python -m benchmarks.scale --repo tokio --home DIR
    python benchmarks/load.py --repo tokio --home DIR --compare        # the same
    python -m benchmarks.scale --repo tokio --home DIR --seconds 120 --configs 1:sqlite,2:sqlite
    python -m benchmarks.scale --repo tokio --home DIR --code before=CHECKOUT \
        --configs 1:sqlite,2:sqlite,1:sqlite:before,2:sqlite:before     # before and after

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

Before anything is timed, every worker answers each kind of call once (a connection is
served by one worker, so the warm-up goes over new connections until each worker has
answered): no worker loads its view, model batch or ledger inside the measured window.
With ``--rounds R`` the configurations run R times, interleaved (round 1 in order, round 2
reversed, ...), so that a drift of the machine spreads over all of them; each configuration
is reported by its median round, and the ratio of two workers to one is the median of the
rounds' ratios.

A configuration ``W:DB:LABEL`` runs the code of another checkout (``--code LABEL=DIR``,
put first on the servers' ``PYTHONPATH``), so that a change is measured against the code
before it, interleaved in the same rounds; the others run the code installed.

Prints throughput, p50/p95/p99 and errors per configuration and the ratio of two workers'
capacity to one's per state database (and code), and writes JSON (``results/scale-<repo>.json``).
The servers' summed RSS is sampled each second. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from benchmarks.load import KINDS, TASKS, Load, _free_port, _percentiles, _run, open_session
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
    p.add_argument("--rounds", type=int, default=1, help="times each configuration runs")
    p.add_argument("--code", action="append", default=[], metavar="LABEL=DIR",
                   help="a checkout whose code the configurations W:DB:LABEL run")  # fmt: skip
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    args.weights = {k: float(v) for k, v in (part.split("=") for part in args.mix.split(","))}
    args.max_requests, args.token = 10**7, ""
    args.checkouts = dict(c.split("=", 1) for c in args.code if "=" in c)
    parts = [[*c.split(":"), ""][:3] for c in args.configs.split(",")]
    configs = [(int(w), db, label) for w, db, label in parts]
    if not set(args.weights) <= set(KINDS) or any(
        db not in ("sqlite", "postgresql") or (label and label not in args.checkouts)
        for _, db, label in configs
    ):
        p.error(f"--mix kinds are {', '.join(KINDS)}; --configs are WORKERS:sqlite|postgresql"
                "[:LABEL], each LABEL given by --code LABEL=DIR")  # fmt: skip
    for label, checkout in args.checkouts.items():
        if not (Path(checkout) / "ctxsvc" / "__init__.py").is_file():
            p.error(f"--code {label}={checkout}: no ctxsvc package there")
    if not 1 <= args.rounds <= 20 or len(set(configs)) != len(configs):
        p.error("--rounds must be 1..20, and --configs name each configuration once")
    tasks = args.tasks or TASKS / f"{args.repo}.jsonl"
    queries = [json.loads(line)["query"] for line in tasks.read_text().splitlines() if line.strip()]
    cluster = None
    if any(db == "postgresql" for _, db, _ in configs):
        bindir = binaries()
        if bindir is None:
            raise SystemExit("PostgreSQL server binaries (initdb, pg_ctl) not found")
        cluster = PostgresServer(bindir).start()
    rounds: list[list[dict[str, Any]]] = []
    out = args.out or RESULTS / f"scale-{args.repo}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        for k in range(args.rounds):
            rounds.append([])
            for workers, db, label in configs if k % 2 == 0 else configs[::-1]:
                url = cluster.new_database() if cluster is not None and db == "postgresql" else None
                rounds[-1].append(_measure(args, queries, workers, db, label, url, k + 1))
                _print_one(rounds[-1][-1])
                summary = _summary(args, configs, rounds)
                out.write_text(json.dumps(summary, indent=2))  # each run kept as it ends
    finally:
        if cluster is not None:
            cluster.stop()
    _print(summary)
    print(f"wrote {out}")
    errors = sum(r["closed"]["errors"] + r["open"]["errors"] for r in summary["every_run"])
    return 0 if errors == 0 else 1


def _summary(
    args: argparse.Namespace,
    configs: list[tuple[int, str, str]],
    rounds: list[list[dict[str, Any]]],
) -> dict[str, Any]:
    every = [r for one in rounds for r in one]
    results = [_median_round([r for r in every if _key(r) == c]) for c in configs if any(
        _key(r) == c for r in every)]  # fmt: skip
    return {"repo": args.repo, "clients": args.clients, "seconds": args.seconds,
            "mix": args.weights, "rounds": len(rounds), "code": args.checkouts, "runs": results,
            "ratios": _ratios(rounds), "round_ratios": [_ratios([one]) for one in rounds],
            "every_run": every}  # fmt: skip


def _key(run: dict[str, Any]) -> tuple[int, str, str]:
    return run["workers"], run["state"], run.get("code", "")


def _median_round(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median closed-loop throughput (the lower middle of an even count), with
    every round's throughput beside it."""
    ranked = sorted(runs, key=lambda r: r["closed"]["throughput_rps"])
    chosen = dict(ranked[(len(ranked) - 1) // 2])
    chosen["closed_rps_by_round"] = [r["closed"]["throughput_rps"] for r in runs]
    return chosen


def _measure(
    args: argparse.Namespace,
    queries: list[str],
    workers: int,
    db: str,
    label: str,
    url: str | None,
    round_: int,
) -> dict[str, Any]:
    port = _free_port()
    log = RESULTS / f"scale-{args.repo}-{workers}-{db}{'-' + label if label else ''}-{round_}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CTXSVC_HOME": args.home, "CTXSVC_WORKERS": str(workers)}
    env.pop("CTXSVC_STATE_URL", None)
    if label:  # that checkout's ctxsvc and indexers before the installed ones
        path = [str(Path(args.checkouts[label]).resolve()), env.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(p for p in path if p)
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
        asyncio.run(_warm(args, queries, workers))
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
    return {"workers": workers, "state": db, "code": label, "round": round_, "closed": closed,
            "open": opened, "rss_mb": rss}  # fmt: skip


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


async def _warm(args: argparse.Namespace, queries: list[str], workers: int) -> None:
    """Each call kind answered once by every worker, over new connections until each has."""
    async with httpx.AsyncClient(base_url=args.url, timeout=120) as setup:
        session = await open_session(setup, args.repo, "warm-up")
    warmed: set[str] = set()
    deadline = time.monotonic() + 600
    while len(warmed) < workers:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {len(warmed)} of {workers} workers answered the warm-up")
        one = httpx.Limits(max_connections=1)  # every call of this round on one connection
        async with httpx.AsyncClient(base_url=args.url, timeout=120, limits=one) as client:
            load = Load(client, args, queries)
            for kind in args.weights:
                r = await load.call(kind, session, queries[0])
                if r.status_code >= 400:
                    raise SystemExit(f"warm-up {kind} failed: {r.status_code} {r.text[:300]}")
            warmed.add(r.headers["x-ctxsvc-worker"])


async def _open_loop(args: argparse.Namespace, queries: list[str], rate: float) -> dict[str, Any]:
    """Calls at ``rate`` per second for ``args.seconds``, each sent on time whatever the
    answers before it; latency from the call's scheduled time."""
    limits = httpx.Limits(max_connections=args.clients * 4, max_keepalive_connections=args.clients)
    async with httpx.AsyncClient(base_url=args.url, limits=limits, timeout=60) as client:
        load = Load(client, args, queries)
        sessions = [await open_session(client, args.repo, f"open {k}") for k in range(args.clients)]
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


def _ratios(rounds: list[list[dict[str, Any]]]) -> dict[str, float]:
    """Two workers' closed-loop throughput over one's, per state database (and code, as
    ``db:label``): the median of the rounds' ratios (each round's two runs measured side by
    side; the lower middle of an even count)."""
    out: dict[str, float] = {}
    labels = sorted({_key(r)[1:] for one in rounds for r in one})
    for db, label in labels:
        ratios = []
        for one in rounds:
            by = {_key(r): r["closed"]["throughput_rps"] for r in one}
            if (1, db, label) in by and (2, db, label) in by and by[(1, db, label)]:
                ratios.append(by[(2, db, label)] / by[(1, db, label)])
        if ratios:  # a round's, as _median_round
            out[f"{db}:{label}" if label else db] = round(statistics.median_low(ratios), 2)
    return out


def _print_one(r: dict[str, Any]) -> None:
    c, o = r["closed"], r["open"]
    code = f" ({r['code']})" if r.get("code") else ""
    print(f"round {r['round']}: {r['workers']} worker(s), {r['state']}{code}: closed {c['throughput_rps']} req/s "
          f"p99 {c['p99_ms']} ms, {c['errors']} errors, {c['reindexes']} re-indexes; "
          f"open at {o['rate_rps']} req/s p99 {o['p99_ms']} ms, {o['errors']} errors", flush=True)  # fmt: skip


def _print(summary: dict[str, Any]) -> None:
    print("| workers | state | code | closed req/s (rounds) | p50 ms | p95 ms | p99 ms | open req/s "
          "| p50 ms | p95 ms | p99 ms | errors (all rounds) | re-indexes | RSS MB |")  # fmt: skip
    print("|" + "---|" * 14)
    for r in summary["runs"]:
        c, o = r["closed"], r["open"]
        cells = [
            r["workers"], r["state"], r.get("code") or "installed",
            f"{c['throughput_rps']} ({', '.join(map(str, r['closed_rps_by_round']))})",
            c["p50_ms"], c["p95_ms"], c["p99_ms"],
            o["rate_rps"], o["p50_ms"], o["p95_ms"], o["p99_ms"],
            sum(x["closed"]["errors"] + x["open"]["errors"] for x in summary["every_run"]
                if _key(x) == _key(r)),  # every round's: an error anywhere shows
            c["reindexes"], r["rss_mb"],
        ]  # fmt: skip
        print("| " + " | ".join(str(x) for x in cells) + " |")
    for db, ratio in summary["ratios"].items():
        each = ", ".join(f"{r[db]}x" for r in summary["round_ratios"] if db in r)
        print(f"two workers / one, {db}: {ratio}x (median of rounds: {each})")


if __name__ == "__main__":
    raise SystemExit(main())
