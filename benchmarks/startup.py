"""How long ctxsvc's processes take to start, as a user meets them.

Every row is the median wall time of ``--runs`` fresh subprocesses (``python -m
ctxsvc``, importing the ctxsvc of this checkout, or of ``--pythonpath``), driven
only through the command line, HTTP and MCP over stdio, so the same script measures
older code (a flag it lacks makes its row "skipped", with the reason):

- ``--help``; ``status`` on an empty data directory and on one indexed repository;
- ``query`` in a cold process with no server (vectors, then ``--no-vectors``);
- ``query`` while a ``ctxsvc serve`` of the same data directory runs (whether the
  server answered it is read off its ``/metrics``), and the bare HTTP call;
- ``ctxsvc mcp``: from spawn until the ``tools/list`` answer, and until the first
  ``get_context`` answer;
- ``ctxsvc serve``: from spawn until ``/healthz`` answers, and until ``/readyz``
  says ready (200).

Set-up: a copy of ``--corpus`` (default: the requests snapshot), indexed once with
vectors into a fresh data directory before anything is timed.

    python -m benchmarks.startup --label after --out benchmarks/results/startup-after.json
    cd /tmp/base15 && PYTHONPATH=/tmp/base15 python -m benchmarks.startup --label before \\
        --out /tmp/d15/startup-before.json
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

CHECKOUT = Path(__file__).resolve().parents[1]
QUESTION = "how are retries and connection timeouts handled"
NAME = "corpus"
TARGETS = {  # seconds, from issue 15
    "status": 0.5,
    "query cold (vectors)": 3.0,
    "query via server (CLI)": 0.3,
    "status via server (CLI)": 0.5,
    "mcp tools/list": 1.0,
    "mcp --repo PATH tools/list": 1.0,
}


class Skipped(Exception):
    """A row this code cannot run (a flag it lacks): the reason."""


class Bench:
    """Runs ``python -m ctxsvc`` of one checkout against one data directory."""

    def __init__(self, pythonpath: Path, home: Path, log_dir: Path) -> None:
        self.home = home
        self.logs = log_dir
        env = {k: v for k, v in os.environ.items() if not k.startswith("CTXSVC_")}
        path = os.pathsep.join(p for p in (str(pythonpath), env.get("PYTHONPATH", "")) if p)
        self.env = {
            **env, "PYTHONPATH": path, "CTXSVC_HOME": str(home), "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
        }  # fmt: skip

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "ctxsvc", *args]

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 600) -> float:
        """Seconds ``ctxsvc ARGS`` took; raises unless it exits 0 (2 on a flag it lacks)."""
        t0 = time.perf_counter()
        done = subprocess.run(
            self.argv(*args), env={**self.env, **(env or {})}, capture_output=True, text=True,
            timeout=timeout,
        )  # fmt: skip
        seconds = time.perf_counter() - t0
        if done.returncode == 2 and "unrecognized arguments" in done.stderr:
            raise Skipped(" ".join(done.stderr.split())[-200:])
        if done.returncode != 0:
            raise RuntimeError(f"ctxsvc {' '.join(args)}: exit {done.returncode}: {done.stderr}")
        return seconds

    def spawn(self, *args: str, log: str, stdin: bool = False) -> subprocess.Popen[bytes]:
        with (self.logs / log).open("ab") as err:
            return subprocess.Popen(
                self.argv(*args), env=self.env, stderr=err,
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE if stdin else err,
            )  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def until(check: Callable[[], bool], proc: subprocess.Popen[bytes], limit: float = 300) -> None:
    deadline = time.monotonic() + limit
    while not check():
        if proc.poll() is not None:
            raise RuntimeError(f"the process exited ({proc.returncode}) before it was ready")
        if time.monotonic() > deadline:
            raise RuntimeError(f"not ready after {limit:g}s")
        time.sleep(0.01)


def answers(url: str, ready: bool = False) -> bool:
    try:
        r = httpx.get(url, timeout=1)
    except httpx.TransportError:
        return False
    return r.status_code == 200 and (not ready or bool(r.json().get("ready")))


def serve_times(b: Bench) -> dict[str, float]:
    """Seconds from spawning ``ctxsvc serve`` until /healthz, then /readyz, answer."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    t0 = time.perf_counter()
    proc = b.spawn("serve", "--port", str(port), log="serve.log")
    try:
        until(lambda: answers(f"{base}/healthz"), proc)
        health = time.perf_counter() - t0
        until(lambda: answers(f"{base}/readyz", ready=True), proc)
        return {"serve /healthz": health, "serve /readyz ready": time.perf_counter() - t0}
    finally:
        stop(proc)


class Stdio:
    """A line-delimited JSON-RPC client of one ``ctxsvc mcp`` process."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.lines: queue.Queue[bytes] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        self.proc.stdin.flush()

    def call(self, id_: int, method: str, params: dict[str, Any], limit: float = 300) -> Any:
        self.send({"jsonrpc": "2.0", "id": id_, "method": method, "params": params})
        deadline = time.monotonic() + limit
        while True:
            try:
                reply = json.loads(self.lines.get(timeout=max(0.01, deadline - time.monotonic())))
            except queue.Empty:
                raise RuntimeError(f"no answer to {method} in {limit:g}s") from None
            if reply.get("id") == id_:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]


def mcp_times(b: Bench, *args: str, label: str = "mcp", query: bool = True) -> dict[str, float]:
    """Seconds from spawning ``ctxsvc mcp ARGS`` until tools/list, then get_context, answer."""
    t0 = time.perf_counter()
    proc = b.spawn("mcp", *args, log="mcp.log", stdin=True)
    try:
        rpc = Stdio(proc)
        rpc.call(1, "initialize", {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "startup-bench", "version": "1"},
        })  # fmt: skip
        rpc.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        tools = rpc.call(2, "tools/list", {})
        times = {f"{label} tools/list": time.perf_counter() - t0}
        if not any(t["name"] == "get_context" for t in tools["tools"]):
            raise RuntimeError("no get_context tool")
        if query:
            arguments = {"repo": NAME, "query": QUESTION, "budget_tokens": 2000}
            result = rpc.call(3, "tools/call", {"name": "get_context", "arguments": arguments})
            if result.get("isError"):
                raise RuntimeError(f"get_context failed: {result['content'][0]['text']}")
            times[f"{label} first get_context"] = time.perf_counter() - t0
        return times
    finally:
        if proc.stdin:
            proc.stdin.close()
        stop(proc)


def mcp_cold_times(b: Bench) -> dict[str, float]:
    """``ctxsvc mcp`` with no record of an earlier start's handshake (new code keeps one
    in ``<home>/mcp``; older code none, so this row is its plain start)."""
    shutil.rmtree(b.home / "mcp", ignore_errors=True)
    return mcp_times(b, label="mcp (no handshake record)", query=False)


def mcp_repo_times(b: Bench) -> dict[str, float]:
    """``ctxsvc mcp --repo PATH``, as the README's agent configuration starts it."""
    return mcp_times(b, "--repo", str(b.home.parent / NAME), label="mcp --repo PATH", query=False)


def context_count(base: str) -> float:
    """How many POST /v1/context the server has answered, from its metrics."""
    text = httpx.get(f"{base}/metrics", timeout=10).text
    key = 'ctxsvc_http_request_duration_seconds_count{method="POST",route="/v1/context"'
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(key))


def with_server(b: Bench, runs: int) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """CLI queries, and bare HTTP calls, while ``ctxsvc serve`` runs on this data directory."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = b.spawn("serve", "--port", str(port), log="serve.log")
    times: dict[str, list[float]] = {
        "query via server (CLI)": [], "status via server (CLI)": [], "POST /v1/context (HTTP)": [],
    }  # fmt: skip
    try:
        until(lambda: answers(f"{base}/readyz", ready=True), proc)
        body = {"repo": NAME, "query": QUESTION, "budget_tokens": 4000}
        httpx.post(f"{base}/v1/context", json=body, timeout=60).raise_for_status()  # warm-up
        before = context_count(base)
        for _ in range(runs):
            times["query via server (CLI)"].append(
                b.run("query", NAME, QUESTION, "--budget", "4000", "--json")
            )
        served = context_count(base) - before
        for _ in range(runs):
            times["status via server (CLI)"].append(b.run("status"))
        for _ in range(runs):
            t0 = time.perf_counter()
            httpx.post(f"{base}/v1/context", json=body, timeout=60).raise_for_status()
            times["POST /v1/context (HTTP)"].append(time.perf_counter() - t0)
    finally:
        stop(proc)
    return times, {"cli_queries_answered_by_server": served, "cli_queries": runs}


def measure(b: Bench, empty: Bench, runs: int, console: Console) -> dict[str, Any]:
    rows: dict[str, list[float]] = {}
    skipped: dict[str, str] = {}
    notes: dict[str, Any] = {}
    no_server = {"CTXSVC_USE_SERVER": "0"}
    single: dict[str, Callable[[], float]] = {
        "--help": lambda: b.run("--help"),
        "status (empty home)": lambda: empty.run("status"),
        "status": lambda: b.run("status"),
        "query cold (vectors)": lambda: b.run(
            "query", NAME, QUESTION, "--budget", "4000", "--json", env=no_server
        ),
        "query cold --no-vectors": lambda: b.run(
            "query", NAME, QUESTION, "--budget", "4000", "--json", "--no-vectors", env=no_server
        ),
    }
    for name, once in single.items():
        try:
            rows[name] = [once() for _ in range(runs)]
        except Skipped as why:
            skipped[name] = str(why)
        console.print(f"{name}: {rows.get(name) or skipped.get(name)}")
    served, notes["server"] = with_server(b, runs)
    rows.update(served)
    console.print(f"with a server: {served} {notes['server']}")
    for measure_once in (mcp_times, mcp_repo_times, mcp_cold_times, serve_times):
        for _ in range(runs):
            for name, seconds in measure_once(b).items():
                rows.setdefault(name, []).append(seconds)
        console.print({k: v for k, v in rows.items() if k.startswith(("mcp", "serve"))})
    return {"rows": rows, "skipped": skipped, "notes": notes}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5, help="fresh processes per row (default 5)")
    p.add_argument(
        "--corpus", type=Path, default=Path(tempfile.gettempdir()) / "corpora" / "requests"
    )
    p.add_argument("--pythonpath", type=Path, default=CHECKOUT, help="the checkout to measure")
    p.add_argument("--label", default="current")
    p.add_argument("--out", type=Path, help="JSON output (default: results/startup-LABEL.json)")
    args = p.parse_args()
    if args.runs < 1:
        p.error("--runs must be at least 1")
    console = Console(width=160)
    out = args.out or CHECKOUT / "benchmarks" / "results" / f"startup-{args.label}.json"
    with tempfile.TemporaryDirectory(prefix="ctxsvc-startup-") as tmp:
        work = Path(tmp)
        (work / "logs").mkdir()
        repo = work / NAME
        shutil.copytree(args.corpus, repo, symlinks=True)
        b = Bench(args.pythonpath, work / "home", work / "logs")
        empty = Bench(args.pythonpath, work / "empty-home", work / "logs")
        probe = subprocess.run(
            [sys.executable, "-c", "import ctxsvc; print(ctxsvc.__file__)"], env=b.env,
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        source = probe.stdout.strip()
        if not Path(source).resolve().is_relative_to(args.pythonpath.resolve()):
            raise SystemExit(f"subprocesses import {source}, not {args.pythonpath}'s ctxsvc")
        commit = subprocess.run(
            ["git", "-C", str(args.pythonpath), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
        console.print(f"ctxsvc from {source} (commit {commit}); indexing {args.corpus} ...")
        t0 = time.perf_counter()
        b.run("index", str(repo), "--name", NAME, "--json")
        console.print(f"indexed in {time.perf_counter() - t0:.1f}s")
        found = measure(b, empty, args.runs, console)
        logs = {f.name: f.read_text(errors="replace")[-4000:] for f in (work / "logs").iterdir()}
    medians = {k: statistics.median(v) for k, v in found["rows"].items()}
    table = Table(title=f"start-up, {args.label} (median of {args.runs} fresh processes)")
    for col in ("what", "median s", "min s", "max s", "target s", "met"):
        table.add_column(col, justify="left" if col == "what" else "right")
    for name, runs in found["rows"].items():
        target = TARGETS.get(name)
        met = "" if target is None else ("yes" if medians[name] <= target else "no")
        table.add_row(
            name, f"{medians[name]:.2f}", f"{min(runs):.2f}", f"{max(runs):.2f}",
            "" if target is None else f"{target:g}", met,
        )  # fmt: skip
    for name, why in found["skipped"].items():
        table.add_row(name, "skipped", "", "", f"{TARGETS.get(name, '')}", why[:60])
    console.print(table)
    server = found["notes"]["server"]
    console.print(
        f"CLI queries answered by the server: {server['cli_queries_answered_by_server']:g} "
        f"of {server['cli_queries']}"
    )
    result = {
        "label": args.label, "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "ctxsvc": source, "commit": commit, "corpus": str(args.corpus), "runs": args.runs,
        "cpus": os.cpu_count(), "load_average": os.getloadavg(), "median_seconds": medians,
        "seconds": found["rows"], "skipped": found["skipped"], "targets": TARGETS,
        "notes": found["notes"], "log_tails": logs,
    }  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
