"""Cold indexing as a user sees it: time to the first answer, time to complete vectors.

Drives only the public surfaces, in subprocesses, so that one script measures any
checkout (``--pythonpath``): for each repository,

- ``ctxsvc index PATH --no-vectors --json`` into a fresh data directory once per
  ``--parse-processes`` count (``CTXSVC_PARSE_PROCESSES``; code without that setting
  ignores the variable, and the JSON says so): parse files/s from the summary's
  discover + parse seconds;
- ``ctxsvc serve`` on a free port with a fresh data directory: from the
  ``POST /v1/repos`` that starts a cold index, ``POST /v1/context`` (a fixed question
  and budget) every 0.25 s until one answers 200 (404/409: not yet) = *first answer*;
  then ``GET /v1/repos/{name}`` and ``GET /v1/jobs/{id}`` until the vectors are
  complete and the job is done = *vectors complete*. Per-stage seconds and chunks
  embedded come from the job's summary (chunks/s = chunks embedded / embed seconds),
  cross-checked with ``/metrics``. Peak RSS: the sampled sum over the server's process
  tree (its workers included), and each process's own high-water mark (VmHWM).

Only 2 cores: each measurement waits for an idle machine (``--quiet-wait``), and is
taken again (``--attempts``) while other processes took more than ``--max-others``
cores during it; the JSON keeps the least disturbed attempt and its ``other_cores``.

    python benchmarks/index_perf.py /tmp/corpora/tokio /tmp/corpora/pytest \\
        --label before --pythonpath /tmp/base15i --out benchmarks/results/index_perf-before.json
    python benchmarks/index_perf.py /tmp/corpora/tokio /tmp/corpora/pytest --label after \\
        --compare benchmarks/results/index_perf-before.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

POLL = 0.25
NOT_YET = {404, 409}  # no index committed yet, or the index is busy
PAGE = 4096


class Code:
    """Which interpreter and which checkout the subprocesses run."""

    def __init__(self, python: str, pythonpath: str | None, extra: dict[str, str]) -> None:
        self.python = python
        self.pythonpath = pythonpath
        self.extra = extra  # --env: settings for every run (CTXSVC_MODEL=static, say)
        # `python -m` puts the working directory first on sys.path: run from a scratch
        # directory so that neither this checkout nor an editable install shadows PYTHONPATH.
        self.cwd = tempfile.mkdtemp(prefix="ctxsvc-perf-cwd-")

    def env(self, home: Path, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CTXSVC_")}
        if self.pythonpath:
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (self.pythonpath, env.get("PYTHONPATH", "")) if p
            )
        return {
            **env,
            "CTXSVC_HOME": str(home),
            "CTXSVC_USE_SERVER": "0",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            **self.extra,
            **extra,
        }

    def argv(self, *args: str) -> list[str]:
        return [self.python, "-m", "ctxsvc", *args]

    def probe(self) -> dict[str, Any]:
        """Where ``ctxsvc`` is imported from and which settings it knows."""
        script = (
            "import json, ctxsvc, ctxsvc.indexers; from ctxsvc.settings import Settings;"
            "print(json.dumps({'ctxsvc': ctxsvc.__file__, 'indexers': ctxsvc.indexers.__file__,"
            "'settings': sorted(Settings.model_fields)}))"
        )
        out = subprocess.run(
            [self.python, "-c", script], env=self.env(Path(self.cwd)), cwd=self.cwd,
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        found = json.loads(out.stdout)
        src = Path(found["ctxsvc"]).resolve().parent.parent
        git = ["git", "-C", str(src)]
        head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True)
        return {
            **found,
            "source": str(src),
            "commit": head.stdout.strip() or None,
            "dirty_files": len(dirty.stdout.splitlines()),
        }


class TreeSampler(threading.Thread):
    """Samples the RSS and CPU time of a process and its descendants from /proc until
    stopped, and the CPU time the rest of the machine took meanwhile (another benchmark
    on these 2 cores skews every number: ``other_cores`` says by how much)."""

    def __init__(self, pid: int, every: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.hwm_kb: dict[int, int] = {}  # pid -> VmHWM, last seen
        self.ticks: dict[int, int] = {}  # pid -> utime + stime, last seen
        self.peak_sum_kb = 0
        self.most_processes = 0
        self._halt = threading.Event()
        self._t0, self._busy0, self._self0 = time.perf_counter(), _machine_ticks(), _ticks("self")

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.every)

    def stop(self) -> dict[str, Any]:
        self._halt.set()
        self.join()
        self.sample()
        hz = os.sysconf("SC_CLK_TCK")
        wall = time.perf_counter() - self._t0
        ours = sum(self.ticks.values()) + _ticks("self") - self._self0
        others = max(_machine_ticks() - self._busy0 - ours, 0) / hz
        children = [kb for pid, kb in self.hwm_kb.items() if pid != self.pid]
        return {
            "ours_cores": round(ours / hz / wall, 2),
            "other_cpu_s": round(others, 1),
            "other_cores": round(others / wall, 2),
            "tree_peak_rss_mb": round(self.peak_sum_kb / 1024, 1),
            "main_hwm_mb": round(self.hwm_kb.get(self.pid, 0) / 1024, 1),
            "children_seen": len(children),
            "child_max_hwm_mb": round(max(children, default=0) / 1024, 1),
            "children_hwm_sum_mb": round(sum(children) / 1024, 1),
            "most_processes": self.most_processes,
        }

    def sample(self) -> None:
        total = 0
        tree = _descendants(self.pid)
        for pid in tree:
            rss, hwm = _mem_kb(pid)
            if hwm:
                self.hwm_kb[pid] = max(hwm, self.hwm_kb.get(pid, 0))
            total += rss
            self.ticks[pid] = max(_ticks(str(pid)), self.ticks.get(pid, 0))
        self.peak_sum_kb = max(self.peak_sum_kb, total)
        self.most_processes = max(self.most_processes, len(tree))


def _ticks(pid: str) -> int:
    """utime + stime of a process (its reaped children not included), 0 once gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def _machine_ticks() -> int:
    """Busy CPU ticks of the whole machine since boot (all but idle and iowait)."""
    cpu = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(cpu) - cpu[3] - cpu[4]


def _descendants(root: int) -> list[int]:
    parent: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parent.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(parent.get(pid, ()))
    return out


def _mem_kb(pid: int) -> tuple[int, int]:
    rss = hwm = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    except OSError:
        pass
    return rss, hwm


def busy_neighbours(exclude: set[int], window: float = 1.0) -> list[str]:
    """Other processes using more than a fifth of a core, over ``window`` seconds."""

    def ticks() -> dict[int, int]:
        out = {}
        for entry in filter(str.isdigit, os.listdir("/proc")):
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            out[int(entry)] = int(fields[11]) + int(fields[12])
        return out

    a = ticks()
    time.sleep(window)
    b = ticks()
    hz = os.sysconf("SC_CLK_TCK")
    busy = []
    for pid, t in b.items():
        share = (t - a.get(pid, t)) / hz / window
        if share > 0.2 and pid not in exclude:
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            busy.append(f"{pid} {share:.0%} {cmd[:120]}")
    return busy


def load() -> dict[str, Any]:
    return {"loadavg": os.getloadavg(), "busy": busy_neighbours({os.getpid()})}


def wait_quiet(most: float) -> dict[str, Any]:
    """Wait up to ``most`` seconds for no other busy process (2 cores: another benchmark
    or test run would skew every number); the load when it started, and how long it waited."""
    t0 = time.perf_counter()
    while True:
        now = load()
        waited = time.perf_counter() - t0
        if not now["busy"] or waited >= most:
            return {**now, "waited_s": round(waited, 1), "quiet": not now["busy"]}
        time.sleep(5)


def warm(repo: Path) -> int:
    """Read every file once, so that the first parse run does not pay for a cold page cache."""
    n = 0
    for dirpath, _, names in os.walk(repo):
        for name in names:
            with contextlib.suppress(OSError):
                n += len(Path(dirpath, name).read_bytes())
    return n


def clean(
    measure: Callable[[], dict[str, Any]], args: argparse.Namespace, console: Console
) -> dict[str, Any]:
    """``measure()`` on an idle machine: after waiting for one, and again (up to
    ``--attempts`` times) while other processes took more than ``--max-others`` cores
    during it; the least disturbed attempt, with the others' numbers under ``discarded``."""
    tries: list[dict[str, Any]] = []
    for _ in range(args.attempts):
        start = wait_quiet(args.quiet_wait)
        row = measure()
        row["load"] = {"start": start, "end": load()}
        tries.append(row)
        if row.get("other_cores", 0) <= args.max_others:
            break
        console.print(f"  disturbed: other processes took {row['other_cores']} cores; again")
    best = min(tries, key=lambda r: r.get("other_cores", 0))
    best["discarded"] = [{k: v for k, v in r.items() if k != "discarded"}
                         for r in tries if r is not best]  # fmt: skip
    return best


def stages(summary: dict[str, Any] | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for t in (summary or {}).get("timings", ()):
        out[t["stage"]] = out.get(t["stage"], 0.0) + t["seconds"]
    return out


def parse_run(code: Code, repo: Path, processes: int, keep: bool) -> dict[str, Any]:
    """A cold ``--no-vectors`` index by the CLI: files/s of discover + parse."""
    home = Path(tempfile.mkdtemp(prefix="ctxsvc-perf-parse-"))
    env = code.env(home, CTXSVC_PARSE_PROCESSES=str(processes))
    argv = code.argv("index", str(repo), "--name", repo.name, "--no-vectors", "--json")
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=code.cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    sampler = TreeSampler(proc.pid)
    sampler.start()
    out, err = proc.communicate(timeout=1800)
    wall = time.perf_counter() - t0
    rss = sampler.stop()
    if not keep:
        shutil.rmtree(home, ignore_errors=True)
    if proc.returncode != 0:
        return {"processes": processes, "error": err.strip()[-2000:], "wall_s": wall}
    summary = json.loads(out[out.index("{") :])
    st = stages(summary)
    front = st.get("discover", 0.0) + st.get("parse", 0.0)
    files = summary.get("files_indexed", 0)
    return {
        "processes": processes,
        "wall_s": round(wall, 3),
        "stages_s": st,
        "files_indexed": files,
        "chunks": summary.get("chunks"),
        "files_per_s": round(files / front, 1) if front else None,
        **rss,
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def vector_state(status: dict[str, Any] | None) -> tuple[str | None, float | None]:
    """The status's vectors word and share (0..1) however the code spells them:
    ``vectors: "complete"``, or ``"partial"`` beside a percentage or share field."""
    if not status:
        return None, None
    v = status.get("vectors")
    word = v.get("state") or v.get("status") if isinstance(v, dict) else v
    fields = {**(v if isinstance(v, dict) else {}),
              **{k: x for k, x in status.items() if "vector" in k and k != "vectors"}}  # fmt: skip
    share = 1.0 if word == "complete" else None
    nums = {
        k: x for k, x in fields.items() if isinstance(x, int | float) and not isinstance(x, bool)
    }
    for k, x in nums.items():
        if "percent" in k or "pct" in k:
            return _word(word), x / 100
        if any(w in k for w in ("share", "fraction", "ratio")):
            return _word(word), float(x)
    done = next((x for k, x in nums.items() if k.endswith(("done", "embedded"))), None)
    total = next((x for k, x in nums.items() if k.endswith("total")), None)
    if done is not None and total:
        share = done / total
    return _word(word), share


def _word(word: Any) -> str | None:
    return None if word is None else str(word)


def _metrics(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("ctxsvc_embedded_chunks_total", "ctxsvc_embed_seconds_total"):
            out[name] = float(value)
    return out


def serve_run(code: Code, repo: Path, args: argparse.Namespace) -> dict[str, Any]:
    """A cold index over HTTP: first answer, vectors complete, stages, RSS."""
    home = Path(tempfile.mkdtemp(prefix="ctxsvc-perf-serve-"))
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = code.env(home, CTXSVC_ALLOWED_ROOTS=str(repo.resolve().parent))
    log_path = home / "server.log"
    t_spawn = time.perf_counter()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(code.argv("serve", "--port", str(port)), env=env, cwd=code.cwd,
                                stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    sampler = TreeSampler(proc.pid)
    sampler.start()
    row: dict[str, Any] = {"server_log": str(log_path)}
    client = httpx.Client(base_url=base, timeout=120)
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited: {log_path.read_text()[-2000:]}")
            try:
                if client.get("/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        row["listen_s"] = round(time.perf_counter() - t_spawn, 3)
        body = {"path": str(repo.resolve()), "name": repo.name, "vectors": True}
        t0 = time.perf_counter()
        r = client.post("/v1/repos", json=body)
        r.raise_for_status()
        job_id = r.json()["id"]

        def since() -> float:
            return round(time.perf_counter() - t0, 3)

        question = {"repo": repo.name, "query": args.question, "budget_tokens": args.budget}
        timeline: list[dict[str, Any]] = []
        job: dict[str, Any] = {}
        status: dict[str, Any] | None = None
        model_ready = first = complete = done_at = None
        changed_at, attempts = t0, 0
        deadline = t0 + args.timeout
        while time.perf_counter() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited: {log_path.read_text()[-2000:]}")
            if model_ready is None:
                ready = client.get("/readyz", timeout=30)
                if ready.json().get("model", {}).get("loaded"):
                    model_ready = round(time.perf_counter() - t_spawn, 3)
            s = client.get(f"/v1/repos/{repo.name}", timeout=30)
            status = s.json() if s.status_code == 200 else None
            word, share = vector_state(status)
            if not timeline or (word, share) != (timeline[-1]["vectors"], timeline[-1]["share"]):
                timeline.append({"t": since(), "vectors": word, "share": share})
                changed_at = time.perf_counter()
            if first is None:
                attempts += 1
                q0 = time.perf_counter()
                a = client.post("/v1/context", json=question, timeout=60)
                if a.status_code == 200:
                    pack = a.json()
                    first = since()
                    s = client.get(f"/v1/repos/{repo.name}", timeout=30)  # as of the answer
                    status = s.json() if s.status_code == 200 else status
                    word, share = vector_state(status)
                    row["first_answer"] = {
                        "request_s": round(time.perf_counter() - q0, 3),
                        "attempts": attempts,
                        "items": len(pack.get("items", ())),
                        "tokens_used": pack.get("tokens_used"),
                        "vectors": word,
                        "share": share,
                        "degraded": list(pack.get("degraded", ())),
                    }
                elif a.status_code not in NOT_YET:
                    row.setdefault("query_errors", []).append(
                        [since(), a.status_code, a.text[:300]]
                    )
            if complete is None and (word == "complete" or (share is not None and share >= 1)):
                complete = since()
            job = client.get(f"/v1/jobs/{job_id}", timeout=30).json()
            if job.get("state") == "failed":
                row["job_error"] = job.get("error")
                break
            if done_at is None and job.get("state") == "done":
                done_at = since()
            if first is not None and done_at is not None:
                if complete is not None:
                    break
                if time.perf_counter() - changed_at > args.stall:
                    row["stalled"] = {"vectors": word, "share": share}  # e.g. the model failed
                    break
            time.sleep(POLL if first is None else 2 * POLL)
        else:
            row["timed_out"] = True
        row["job_done_s"] = done_at
        row["first_answer_s"] = first
        row["vectors_complete_s"] = complete
        row["model_ready_s"] = model_ready
        row["vector_timeline"] = timeline
        result = job.get("result") or {}
        st = stages(result)
        embedded = result.get("chunks_embedded", 0)
        row |= {
            "stages_s": st,
            "chunks": result.get("chunks", (status or {}).get("chunks")),
            "chunks_embedded": embedded,
            "files_indexed": result.get("files_indexed"),
            "vectors": result.get("vectors"),
            "job_chunks_per_s": round(embedded / st["embed"], 2) if st.get("embed") else None,
            "job_progress": job.get("progress"),
        }
        m = _metrics(client.get("/metrics", timeout=30).text)
        if m.get("ctxsvc_embed_seconds_total"):
            row["metrics_chunks_per_s"] = round(
                m["ctxsvc_embedded_chunks_total"] / m["ctxsvc_embed_seconds_total"], 2
            )
        # The job's summary if it timed the embedding, else the server's counters (vectors
        # filled in after the job, say).
        row["embed_chunks_per_s"] = row["job_chunks_per_s"] or row.get("metrics_chunks_per_s")
        row["final_status"] = status
    finally:
        client.close()
        row |= sampler.stop()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if not args.keep and "job_error" not in row and "timed_out" not in row:
            shutil.rmtree(home, ignore_errors=True)
            row.pop("server_log")
    return row


NUMBERS = [
    ("listen_s", "listen s"), ("model_ready_s", "model s"), ("first_answer_s", "first answer s"),
    ("vectors_complete_s", "vectors s"), ("discover_s", "discover"), ("parse_s", "parse"),
    ("embed_s", "embed"), ("write_s", "write"), ("commit_s", "commit"),
    ("chunks_embedded", "chunks"), ("embed_chunks_per_s", "chunks/s"),
    ("parse_files_per_s_1", "files/s 1p"), ("parse_files_per_s_2", "files/s 2p"),
    ("tree_peak_rss_mb", "peak RSS MB"), ("other_cores", "others' cores"),
    ("parse_other_cores", "others' cores (parse)"),
]  # fmt: skip


def flat(serve: dict[str, Any], parses: list[dict[str, Any]]) -> dict[str, Any]:
    out = {k: serve.get(k) for k, _ in NUMBERS if k in serve}
    out |= {f"{k}_s": v for k, v in serve.get("stages_s", {}).items()}
    out |= {f"parse_files_per_s_{p['processes']}": p.get("files_per_s") for p in parses}
    out["parse_other_cores"] = max((p.get("other_cores", 0) for p in parses), default=None)
    return out


def median(rows: list[dict[str, Any]]) -> dict[str, Any]:
    keys = {k for r in rows for k in r}
    out = {}
    for k in sorted(keys):
        vals = [r[k] for r in rows if isinstance(r.get(k), int | float)]
        out[k] = round(statistics.median(vals), 3) if vals else None
    return out


def cell(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def save(out: Path, report: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str))
    tmp.replace(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("repos", nargs="+", type=Path)
    ap.add_argument("--label", default="run")
    ap.add_argument(
        "--out", type=Path, help="JSON (default benchmarks/results/index_perf-LABEL.json)"
    )
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--python", default=sys.executable, help="the interpreter of the subprocesses")
    ap.add_argument("--pythonpath", help="a checkout whose ctxsvc the subprocesses run")
    ap.add_argument("--question", default="where are errors handled and how are they reported")
    ap.add_argument("--budget", type=int, default=4000)
    ap.add_argument("--parse-processes", default="1,2", help="counts for the CLI parse runs")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per served cold index")
    ap.add_argument("--compare", type=Path, help="an earlier JSON of this script, shown beside")
    ap.add_argument(
        "--stall", type=float, default=120, help="seconds without vector progress after the job"
    )
    ap.add_argument(
        "--env", action="append", default=[], metavar="CTXSVC_X=V", help="for every subprocess"
    )
    ap.add_argument(
        "--quiet-wait", type=float, default=300, help="most seconds to wait for an idle machine"
    )
    ap.add_argument(
        "--max-others", type=float, default=0.25, help="cores other processes may take in a run"
    )
    ap.add_argument("--attempts", type=int, default=3, help="tries per measurement at most")
    ap.add_argument("--only", choices=("parse", "serve"), help="one of the two measurements")
    ap.add_argument("--keep", action="store_true", help="keep the data directories")
    args = ap.parse_args()
    out = args.out or Path(__file__).parent / "results" / f"index_perf-{args.label}.json"
    console = Console(width=220)

    extra = dict(kv.split("=", 1) for kv in args.env)
    code = Code(args.python, args.pythonpath, extra)
    found = code.probe()
    console.print(f"ctxsvc from {found['ctxsvc']} (commit {found['commit']}, "
                  f"{found['dirty_files']} changed files)")  # fmt: skip
    counts = [int(n) for n in args.parse_processes.split(",") if n]
    report: dict[str, Any] = {
        "label": args.label,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "code": {k: v for k, v in found.items() if k != "settings"},
        "parse_processes_setting": "parse_processes" in found["settings"],
        "args": {k: str(v) for k, v in vars(args).items()},
        "load": {"start": load()},
        "repos": {},
        "complete": False,
    }
    for repo in args.repos:
        runs: list[dict[str, Any]] = []
        warm(repo)
        for i in range(args.runs):
            if args.only != "serve":
                console.print(f"[bold]{repo.name}[/] run {i + 1}/{args.runs}: parse runs {counts}")
            parses = [
                clean(partial(parse_run, code, repo, n, args.keep), args, console)
                for n in (counts if args.only != "serve" else [])
            ]
            serve: dict[str, Any] = {}
            if args.only != "parse":
                console.print(f"[bold]{repo.name}[/] run {i + 1}/{args.runs}: served cold index")
                serve = clean(partial(serve_run, code, repo, args), args, console)
            runs.append({"parse": parses, "serve": serve, "numbers": flat(serve, parses)})
            console.print(json.dumps(runs[-1]["numbers"]))
            report["repos"][repo.name] = {
                "path": str(repo),
                "runs": runs,
                "summary": median([r["numbers"] for r in runs]),
            }
            save(out, report)  # so far: a killed run keeps what it measured
    report["load"]["end"] = load()
    report["complete"] = True

    table = Table(title=f"cold index, {args.label} ({found['source']}, median of {args.runs})")
    table.add_column("repo")
    for _, title in NUMBERS:
        table.add_column(title, justify="right")
    for name, r in report["repos"].items():
        table.add_row(name, *(cell(r["summary"].get(k)) for k, _ in NUMBERS))
    console.print(table)

    if args.compare:
        old = json.loads(args.compare.read_text())
        report["compare"] = {"file": str(args.compare), "label": old["label"],
                             "summaries": {n: r["summary"] for n, r in old["repos"].items()}}  # fmt: skip
        for name, r in report["repos"].items():
            was = old["repos"].get(name, {}).get("summary", {})
            t = Table(title=f"{name}: {old['label']} → {args.label}")
            for c in ("metric", old["label"], args.label, "ratio"):
                t.add_column(c, justify="right")
            for k, title in NUMBERS:
                a, b = was.get(k), r["summary"].get(k)
                ratio = (
                    f"{b / a:.2f}x" if isinstance(a, int | float) and a and b is not None else "-"
                )
                t.add_row(title, cell(a), cell(b), ratio)
            console.print(t)

    save(out, report)
    console.print(f"wrote {out}")
    shutil.rmtree(code.cwd, ignore_errors=True)


if __name__ == "__main__":
    main()
