"""Issue 14's attacks, replayed against whatever ctxsvc this directory imports.

    cd CHECKOUT && python -m benchmarks.hostile --label before --out /tmp/bench
    python -m benchmarks.hostile --only swap_race,gitignore_bomb --seconds 3 --timeout 20

So that it runs on an old checkout too, it touches ctxsvc only through the
CLI (``python -m ctxsvc`` with ``CTXSVC_HOME`` set, ``PYTHONPATH`` the
checkout, no other ``CTXSVC_*`` variable), the HTTP API of ``ctxsvc serve``,
and ``ctxsvc.indexers.discover.discover`` / ``read_text``. Every attack is bounded in
time (a frozen command is killed after ``--timeout``). One row per attack (or
per form of it): what happened, a verdict (held, escaped, froze, 5xx,
traceback) and seconds; the table is printed and written as
``hostile-<label>.json``, with the server's log beside it.

swap_race       a child swaps ``pkg/`` with a symlink out of the root
                (renameat2 RENAME_EXCHANGE) while discover + read_text loop
gitignore_bomb  ``*a*a*a*a*a*a*a*a*a*a*a*a*b`` beside ``a``*60 + ``.py``: index, status, query
damaged_index   truncated / deleted data file, garbled manifest, no ``_versions``: query
dns_rebinding   ``Host: evil.example`` and its ``Origin``: register, context, file read
slow_bodies     135 bodies trickling 1 byte/s; /healthz and /v1/context beside them
rebuild_load    4 clients on /v1/context and /v1/search while ``index --rebuild`` runs twice
costs           median seconds of 5 ``discover()`` of a walked corpus (tokio, else this code)
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

import ctxsvc.indexers.discover as disc
from benchmarks.paths import CORPORA
from ctxsvc.errors import CtxError

RESULTS = Path(__file__).parent / "results"
CHECKOUT = Path(disc.__file__).resolve().parents[1]
ATTACKS = (
    "swap_race",
    "gitignore_bomb",
    "rebuild_load",
    "dns_rebinding",
    "damaged_index",
    "slow_bodies",
    "costs",
)
SERVED = ("rebuild_load", "dns_rebinding", "slow_bodies")
NAME = "hostrepo"
QUERY = "where is the cache entry invalidated when its token expires"
MAX_BYTES = 1_000_000
SECRET = "HOSTILE-SECRET-0xC0FFEE"
BOMB = "*a*a*a*a*a*a*a*a*a*a*a*a*b"

# Run by the child of swap_race: exchange two paths for argv[3] seconds.
SWAPPER = r"""
import ctypes, os, sys, time
a, b, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
libc = ctypes.CDLL(None, use_errno=True)
fn = getattr(libc, "renameat2", None)
if fn is not None:
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
def swap():
    if fn is not None and fn(-100, a.encode(), -100, b.encode(), 2) == 0:  # RENAME_EXCHANGE
        return "renameat2"
    os.rename(a, a + ".swap"); os.rename(b, a); os.rename(a + ".swap", b)
    return "rename pairs"
n, end, mode = 0, time.monotonic() + seconds, ""
while time.monotonic() < end:
    mode = swap(); n += 1
if n % 2:
    swap(); n += 1
print(mode, n)
"""


@dataclass
class Row:
    attack: str
    happened: str
    verdict: str
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Ran:
    rc: int | None  # None: killed after the timeout
    seconds: float
    out: str
    err: str


class Bench:
    """The working directory, the CLI environment and the server of one run."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args, self.work = args, work
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CTXSVC_")}
        self.env["PYTHONPATH"] = str(CHECKOUT)
        self.home = work / "home"
        self.root = work / NAME
        self.server: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.server_log = work / "server.log"

    def cli(self, *argv: str, home: Path | None = None, timeout: float | None = None) -> Ran:
        env = dict(self.env, CTXSVC_HOME=str(home or self.home))
        return run([sys.executable, "-m", "ctxsvc", *argv], env, timeout or self.args.timeout)

    def start_server(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = dict(self.env, CTXSVC_HOME=str(self.home), CTXSVC_ALLOWED_ROOTS=str(self.work))
        with self.server_log.open("wb") as log:
            self.server = subprocess.Popen(
                [sys.executable, "-m", "ctxsvc", "serve", "--port", str(port)],
                env=env,
                cwd=self.work,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.url = f"http://127.0.0.1:{port}"

    def wait_ready(self, limit: float = 180.0) -> str | None:
        """None when /readyz answers 200, else why not."""
        assert self.server is not None
        end = time.monotonic() + limit
        while time.monotonic() < end:
            if self.server.poll() is not None:
                return f"server exited with {self.server.returncode}"
            try:
                r = httpx.get(self.url + "/readyz", timeout=3)
                if r.status_code == 403 and "127.0.0.1" in self.url:
                    self.url = self.url.replace("127.0.0.1", "localhost")
                    continue
                if r.status_code == 200:
                    return None
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        return f"/readyz not 200 within {limit:.0f} s"

    def stop_server(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.send_signal(signal.SIGTERM)
            try:
                self.server.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.server.pid, signal.SIGKILL)
                self.server.wait()


def run(argv: list[str], env: dict[str, str], timeout: float, cwd: Path | None = None) -> Ran:
    """Run a command in its own process group; kill the group after ``timeout`` seconds."""
    t0 = time.monotonic()
    p = subprocess.Popen(
        argv, env=env, cwd=cwd or tempfile.gettempdir(), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        out, err = p.communicate(timeout=timeout)
        rc: int | None = p.returncode
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        rc = None
    return Ran(
        rc, time.monotonic() - t0, out.decode(errors="replace"), err.decode(errors="replace")
    )


def last_line(text: str, error: bool = False) -> str:
    """The last non-blank line of ``text`` (or its first ``error...`` line), cut to 100."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.lower().startswith("error")] if error else []
    return (errors or lines or [""])[0 if errors else -1][:100]


def make_repo(root: Path, files: int = 60) -> None:
    words = ("cache", "token", "parse", "route", "store", "queue")
    for i in range(files):
        w = words[i % len(words)]
        path = root / f"pkg{i % 6}" / f"{w}_{i}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            f'"""The {w} part number {i}."""\n\n\n'
            f"class {w.title()}{i}:\n"
            f'    """Keeps {w} entries; an entry is invalidated when its token expires."""\n\n'
            f"    def __init__(self, limit: int = {i + 1}) -> None:\n"
            "        self.entries: dict[str, int] = {}\n"
            "        self.limit = limit\n\n"
            f"    def invalidate_{w}(self, key: str) -> bool:\n"
            "        return self.entries.pop(key, None) is not None\n\n\n"
            f"def helper_{i}(value: int) -> int:\n"
            f"    return value * {i} + len('{w}')\n"
        )


# -- the attacks ------------------------------------------------------------------------


def swap_race(b: Bench) -> list[Row]:
    root, outside = b.work / "race_root", b.work / "race_outside"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "mod.py").write_text("INSIDE = 1\n")
    (root / "main.py").write_text("import pkg.mod\n")
    outside.mkdir()
    (outside / "mod.py").write_text(f"PASSWORD = '{SECRET}'\n")
    (outside / "extra_secret.py").write_text(f"TOKEN = '{SECRET}'\n")
    link = b.work / "race_link"
    link.symlink_to(outside, target_is_directory=True)
    seconds = b.args.seconds
    child = subprocess.Popen(
        [sys.executable, "-c", SWAPPER, str(root / "pkg"), str(link), str(seconds)],
        stdout=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    runs = outside_names = outside_runs = secret_reads = reads = 0
    errors: Counter[str] = Counter()
    untyped: Counter[str] = Counter()
    t0 = time.monotonic()
    while child.poll() is None and time.monotonic() - t0 < seconds + 5:
        runs += 1
        try:
            found = disc.discover(root, max_file_bytes=MAX_BYTES)
        except Exception as exc:
            _count(exc, errors, untyped)
            continue
        listed = [f.path for f in found.files] + [s.path for s in found.skipped]
        hits = sum(p.rsplit("/", 1)[-1] == "extra_secret.py" for p in listed)
        outside_names += hits
        outside_runs += hits > 0
        for f in found.files:
            try:
                text = disc.read_text(root, f, max_file_bytes=MAX_BYTES)
            except Exception as exc:
                _count(exc, errors, untyped)
                continue
            reads += 1
            secret_reads += SECRET in getattr(text, "text", "")
    elapsed = time.monotonic() - t0
    try:
        mode, swaps = child.communicate(timeout=10)[0].split()
    except (subprocess.TimeoutExpired, ValueError):
        os.killpg(child.pid, signal.SIGKILL)
        mode, swaps = "?", "?"
    verdict = "escaped" if outside_names or secret_reads else "traceback" if untyped else "held"
    happened = (
        f"{runs} runs, {swaps} swaps ({mode}); outside names {outside_names} "
        f"(in {outside_runs} runs); secret reads {secret_reads}/{reads}; "
        f"untyped exceptions {sum(untyped.values())}" + (f" ({_fmt(untyped)})" if untyped else "")
    )
    details = {
        "runs": runs, "swaps": swaps, "mode": mode, "outside_names": outside_names,
        "outside_runs": outside_runs, "secret_reads": secret_reads, "reads": reads,
        "typed_errors": dict(errors), "untyped_errors": dict(untyped),
    }  # fmt: skip
    return [Row("swap_race", happened, verdict, elapsed, details)]


def _count(exc: Exception, typed: Counter[str], untyped: Counter[str]) -> None:
    name = type(exc).__name__
    if isinstance(exc, CtxError):
        typed[name] += 1
    elif isinstance(exc, OSError) and exc.errno is not None:
        untyped[f"{name} {errno.errorcode.get(exc.errno, exc.errno)}"] += 1
    else:
        untyped[name] += 1


def gitignore_bomb(b: Bench) -> list[Row]:
    root, home = b.work / "bomb", b.work / "bomb_home"
    root.mkdir()
    (root / "ok.py").write_text("def ok():\n    return 1\n")
    (root / ("a" * 60 + ".py")).write_text("X = 1\n")
    # Indexed once without the .gitignore, so that status and query have an index to read.
    pre = b.cli("index", str(root), "--no-vectors", home=home)
    (root / ".gitignore").write_text(BOMB + "\n")
    rows = []
    for what, argv in (
        ("index", ("index", str(root), "--no-vectors")),
        ("status", ("status", "bomb")),
        ("query", ("query", "bomb", "x", "--no-refresh")),
    ):
        r = b.cli(*argv, home=home)
        rows.append(_cli_row(f"gitignore_bomb:{what}", r, b.args.timeout))
        rows[-1].details["names_pattern"] = BOMB in r.out + r.err
        if r.rc is not None:
            rows[-1].happened += f"; names the pattern: {'yes' if BOMB in r.out + r.err else 'no'}"
    rows[0].details["pre_index_rc"] = pre.rc
    return rows


def _cli_row(attack: str, r: Ran, timeout: float) -> Row:
    details = {"rc": r.rc, "stderr_tail": r.err[-2000:]}
    if r.rc is None:
        return Row(attack, f"froze (> {timeout:.0f} s), killed", "froze", r.seconds, details)
    if "Traceback" in r.err:
        return Row(attack, f"exit {r.rc}: {last_line(r.err)}", "traceback", r.seconds, details)
    return Row(attack, f"exit {r.rc} in {r.seconds:.1f} s", "held", r.seconds, details)


def damaged_index(b: Bench, copies: dict[str, Path]) -> list[Row]:
    rows = []
    for form, home in copies.items():
        done = _damage(form, home)
        r = b.cli("query", NAME, "x", "--no-refresh", home=home)
        row = _cli_row(f"damaged_index:{form}", r, b.args.timeout)
        if r.rc == 0:
            row.verdict, row.happened = "escaped", "exit 0: answered from a damaged index"
        elif row.verdict == "held":
            row.happened = f"exit {r.rc}: {last_line(r.err, error=True)}"
        row.details["damage"] = done
        rows.append(row)
    return rows


DAMAGE = ("truncate", "delete_data", "garble_manifest", "no_versions")


def _damage(form: str, home: Path) -> str:
    tables = sorted(
        (home / "lance").glob(f"*{NAME}__chunks.lance"), key=lambda p: p.stat().st_mtime
    )
    if not tables:
        return "no chunks table found"
    table = tables[-1]
    data = sorted((table / "data").glob("*.lance"), key=lambda p: p.stat().st_size)
    if form == "truncate" and data:
        size = data[-1].stat().st_size
        os.truncate(data[-1], size // 2)
        return f"{data[-1].relative_to(home)} {size} -> {size // 2} bytes"
    if form == "delete_data" and data:
        data[-1].unlink()
        return f"deleted {data[-1].relative_to(home)}"
    if form == "garble_manifest":
        manifests = list((table / "_versions").glob("*.manifest"))
        if manifests:
            newest = max(manifests, key=lambda p: _version(p.stem))
            raw = bytearray(newest.read_bytes())
            for i in range(0, len(raw), 7):
                raw[i] ^= 0x5A
            newest.write_bytes(bytes(raw))
            return f"garbled {newest.relative_to(home)}"
    if form == "no_versions":
        shutil.rmtree(table / "_versions")
        return f"deleted {(table / '_versions').relative_to(home)}"
    return f"nothing to damage for {form}"


def _version(stem: str) -> int:
    n = int(stem) if stem.isdigit() else -1
    return 2**64 - 1 - n if n >= 2**63 else n  # Lance's V2 names count down from u64::MAX


def dns_rebinding(b: Bench) -> list[Row]:
    evil = {"Host": "evil.example", "Origin": "http://evil.example"}
    target = b.work / "rebind"
    target.mkdir()
    (target / "loot.py").write_text("def loot():\n    return 'loot'\n")
    first = sorted(p.relative_to(b.root).as_posix() for p in b.root.rglob("*.py"))[0]
    calls: list[tuple[str, str, str, dict[str, Any] | None]] = [
        (
            "register",
            "POST",
            "/v1/repos",
            {"path": str(target), "name": "rebind", "vectors": False},
        ),
        ("context", "POST", "/v1/context", {"repo": NAME, "query": QUERY, "budget_tokens": 800}),
        ("file", "GET", f"/v1/repos/{NAME}/files/{first}", None),
    ]
    statuses: dict[str, int | str] = {}
    t0 = time.monotonic()
    with httpx.Client(base_url=b.url, timeout=10) as c:
        for what, method, path, body in calls:
            try:
                statuses[what] = c.request(method, path, json=body, headers=evil).status_code
            except httpx.HTTPError as exc:
                statuses[what] = type(exc).__name__
        try:  # the same request from a loopback name, to show the route answers at all
            control = c.post("/v1/context", json=calls[1][3]).status_code
        except httpx.HTTPError as exc:
            control = -1
            statuses["control_error"] = type(exc).__name__
    served = [w for w, s in statuses.items() if isinstance(s, int) and 200 <= s < 300]
    fivexx = [w for w, s in statuses.items() if isinstance(s, int) and s >= 500]
    verdict = "escaped" if served else "5xx" if fivexx else "held"
    happened = ", ".join(f"{w} {s}" for w, s in statuses.items()) + f"; loopback control {control}"
    details = {"statuses": statuses, "control": control}
    return [Row("dns_rebinding", happened, verdict, time.monotonic() - t0, details)]


def slow_bodies(b: Bench, seconds: float = 20.0, count: int = 135) -> list[Row]:
    host, port = b.url.split("//")[1].split(":")
    head = (
        f"POST /v1/context HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    ).encode()
    socks: list[socket.socket] = []
    for _ in range(count):
        try:
            s = socket.create_connection((host, int(port)), timeout=5)
            s.sendall(head)
            socks.append(s)
        except OSError:
            break
    stop = threading.Event()
    dropped: set[int] = set()

    def trickle() -> None:
        while not stop.wait(1.0):
            for i, s in enumerate(socks):
                if i not in dropped:
                    try:
                        s.send(b" ")
                    except OSError:
                        dropped.add(i)

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    statuses: dict[str, Counter[str]] = {"healthz": Counter(), "context": Counter()}
    latency: dict[str, list[float]] = {"healthz": [], "context": []}
    body = {"repo": NAME, "query": QUERY, "budget_tokens": 800}
    t0 = time.monotonic()
    with httpx.Client(base_url=b.url, timeout=5) as c:
        while time.monotonic() - t0 < seconds:
            tick = time.monotonic()
            for what, send in (
                ("healthz", lambda: c.get("/healthz")),
                ("context", lambda: c.post("/v1/context", json=body)),
            ):
                _timed(what, send, statuses, latency)
            time.sleep(max(0.0, 0.5 - (time.monotonic() - tick)))
    elapsed = time.monotonic() - t0
    stop.set()
    thread.join(5)
    answered = _answers(socks)
    for s in socks:
        s.close()
    bad = sum(n for st in statuses.values() for k, n in st.items() if not k.startswith("2"))
    fivexx = sum(n for st in statuses.values() for k, n in st.items() if k.startswith("5"))
    stuck = sum(n for st in statuses.values() for k, n in st.items() if not k[0].isdigit())
    verdict = "held" if not bad else "froze" if stuck > fivexx else "5xx" if fivexx else "held"
    med = {w: round(statistics.median(v), 3) if v else None for w, v in latency.items()}
    happened = (
        f"{len(socks)} slow sockets ({sum(answered.values()) - answered['none']} answered: "
        f"{_fmt({k: n for k, n in answered.items() if k != 'none'})}); "
        + "; ".join(f"{w} {_fmt(st)} median {med[w]} s" for w, st in statuses.items())
    )
    details = {
        "slow_sockets": len(socks), "slow_answers": dict(answered),
        "statuses": {w: dict(st) for w, st in statuses.items()}, "median_latency": med,
    }  # fmt: skip
    return [Row("slow_bodies", happened, verdict, elapsed, details)]


def _timed(
    what: str,
    send: Callable[[], httpx.Response],
    statuses: dict[str, Counter[str]],
    latency: dict[str, list[float]],
) -> None:
    t = time.monotonic()
    try:
        statuses[what][str(send().status_code)] += 1
    except httpx.TimeoutException:
        statuses[what]["timeout"] += 1
    except httpx.HTTPError as exc:
        statuses[what][type(exc).__name__] += 1
    latency[what].append(time.monotonic() - t)


def _answers(socks: list[socket.socket]) -> Counter[str]:
    """The status each slow socket was answered with ("none": no answer yet)."""
    ready, _, _ = select.select(socks, [], [], 0.5)
    answered: Counter[str] = Counter()
    for s in socks:
        if s not in ready:
            answered["none"] += 1
            continue
        try:
            data = s.recv(64)
        except OSError:
            data = b""
        parts = data.split(b" ", 2)
        answered[parts[1].decode(errors="replace") if len(parts) > 1 else "closed"] += 1
    return answered


def _fmt(counts: dict[str, int] | Counter[str]) -> str:
    return " ".join(f"{k}x{n}" for k, n in sorted(counts.items())) or "-"


def rebuild_load(b: Bench, clients: int = 4, after: float = 10.0) -> list[Row]:
    stop = threading.Event()
    phase = ["during"]
    counts: dict[str, Counter[str]] = {"during": Counter(), "after": Counter()}
    codes: Counter[str] = Counter()
    lock = threading.Lock()

    def client(k: int) -> None:
        with httpx.Client(base_url=b.url, timeout=10) as c:
            i = k
            while not stop.is_set():
                i += 1
                path = "/v1/context" if i % 2 else "/v1/search"
                body: dict[str, Any] = {"repo": NAME, "query": QUERY}
                if i % 2:
                    body["budget_tokens"] = 800
                try:
                    r = c.post(path, json=body)
                    key = "2xx" if r.is_success else str(r.status_code)
                    if r.status_code >= 500:
                        with lock:
                            codes[_problem_code(r)] += 1
                except httpx.TimeoutException:
                    key = "timeout"
                except httpx.HTTPError:
                    key = "conn_error"
                with lock:
                    counts[phase[0]][key] += 1

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    rebuilds = [b.cli("index", str(b.root), "--rebuild", "--no-vectors") for _ in range(2)]
    phase[0] = "after"
    time.sleep(after)
    stop.set()
    for t in threads:
        t.join(15)
    total = counts["during"] + counts["after"]
    fivexx = sum(n for k, n in total.items() if k.startswith("5"))
    broken = total["conn_error"] + total["timeout"]
    verdict = "5xx" if fivexx else "froze" if broken else "held"
    happened = (
        f"rebuilds exit {[r.rc for r in rebuilds]} ({sum(r.seconds for r in rebuilds):.0f} s); "
        f"during {_fmt(counts['during'])}; {after:.0f} s after {_fmt(counts['after'])}"
        + (f"; 5xx codes {_fmt(codes)}" if codes else "")
    )
    details = {
        "during": dict(counts["during"]), "after": dict(counts["after"]),
        "error_codes": dict(codes), "rebuild_rc": [r.rc for r in rebuilds],
        "rebuild_stderr_tail": [r.err[-1000:] for r in rebuilds],
    }  # fmt: skip
    return [Row("rebuild_load", happened, verdict, time.monotonic() - t0, details)]


def _problem_code(r: httpx.Response) -> str:
    try:
        return str(r.json().get("code", r.status_code))
    except (ValueError, AttributeError):
        return str(r.status_code)


def costs(b: Bench, repeats: int = 5) -> list[Row]:
    tree = b.work / "corpus"
    src = CORPORA / "tokio"
    ignore = shutil.ignore_patterns(".git")
    if src.is_dir():
        shutil.copytree(src, tree, symlinks=True, ignore=ignore)
        what = "tokio"
    else:
        for part in ("ctxsvc", "indexers", "tests"):
            shutil.copytree(CHECKOUT / part, tree / part, symlinks=True, ignore=ignore)
        what = "this checkout's ctxsvc/ indexers/ tests/"
    times, found = [], None
    for _ in range(repeats):
        t = time.monotonic()
        found = disc.discover(tree, max_file_bytes=MAX_BYTES)
        times.append(time.monotonic() - t)
    assert found is not None
    med = statistics.median(times)
    happened = f"{what}: {len(found.files)} files, {len(found.skipped)} skipped, git={found.git}"
    details = {"corpus": what, "times": times, "files": len(found.files)}
    return [Row("costs", happened, "-", med, details)]


# -- the run ----------------------------------------------------------------------------


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=RESULTS, help="writes hostile-<label>.json here")
    p.add_argument("--label", default="current", help="the output is hostile-<label>.json")
    p.add_argument("--only", default=",".join(ATTACKS), help="comma-separated attack names")
    p.add_argument("--seconds", type=float, default=5.0, help="duration of the swap race")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds before a command froze")
    args = p.parse_args()
    only = [a.strip() for a in args.only.split(",") if a.strip()]
    if not only or not set(only) <= set(ATTACKS):
        p.error(f"--only takes some of {', '.join(ATTACKS)}")
    if not 0 < args.seconds <= 120 or not 1 <= args.timeout <= 600:
        p.error("--seconds must be in (0, 120] and --timeout in [1, 600]")
    with tempfile.TemporaryDirectory(prefix="hostile-") as tmp:
        rows = _run(args, set(only), Path(tmp).resolve())
    rows.sort(key=lambda r: ATTACKS.index(r.attack.split(":")[0]))
    print(f"ctxsvc at {CHECKOUT} ({args.label})")
    print(table(rows))
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"hostile-{args.label}.json"
    result = {
        "label": args.label,
        "checkout": str(CHECKOUT),
        "commit": _commit(),
        "args": {k: str(v) for k, v in vars(args).items()},
        "rows": [asdict(r) for r in rows],
    }
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


def _run(args: argparse.Namespace, only: set[str], work: Path) -> list[Row]:
    b = Bench(args, work)
    rows: list[Row] = []
    copies: dict[str, Path] = {}
    if only & {*SERVED, "damaged_index"}:
        make_repo(b.root)
        setup = b.cli("index", str(b.root), "--no-vectors")
        if setup.rc != 0:
            note = f"setup index failed (exit {setup.rc}): {last_line(setup.err)}"
            rows += [Row(a, note, "n/a", 0.0) for a in sorted(only & {*SERVED, "damaged_index"})]
            only -= {*SERVED, "damaged_index"}
        elif "damaged_index" in only:
            for form in DAMAGE:
                copies[form] = work / f"home_{form}"
                shutil.copytree(b.home, copies[form], symlinks=True)
    if only & set(SERVED):
        b.start_server()  # loads its model while the first attacks run
    try:
        if "swap_race" in only:
            rows += swap_race(b)
        if "gitignore_bomb" in only:
            rows += gitignore_bomb(b)
        if "damaged_index" in only:
            rows += damaged_index(b, copies)
        if only & set(SERVED):
            why = b.wait_ready()
            for name, attack in (
                ("dns_rebinding", dns_rebinding),
                ("slow_bodies", slow_bodies),
                ("rebuild_load", rebuild_load),  # last: on old code it breaks the server
            ):
                if name in only:
                    rows += [Row(name, why, "n/a", 0.0)] if why else attack(b)
    finally:
        b.stop_server()
        if b.server_log.exists():
            args.out.mkdir(parents=True, exist_ok=True)
            shutil.copy(b.server_log, args.out / f"hostile-{args.label}-server.log")
    if "costs" in only:
        rows += costs(b)  # alone, so that nothing else runs beside the timing
    return rows


def _commit() -> str | None:
    try:
        return subprocess.run(
            ["git", "-C", str(CHECKOUT), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None


def table(rows: list[Row]) -> str:
    """The rows as an aligned plain-text table."""
    head = ("attack", "verdict", "seconds", "what happened")
    cells = [(r.attack, r.verdict, f"{r.seconds:.2f}", r.happened) for r in rows]
    widths = [max(len(c[i]) for c in [head, *cells]) for i in range(3)]
    lines = []
    for c in [head, *cells]:
        lines.append(
            f"{c[0]:<{widths[0]}}  {c[1]:<{widths[1]}}  {c[2]:>{widths[2]}}  {c[3]}".rstrip()
        )
    lines.insert(1, "  ".join("-" * w for w in widths) + "  " + "-" * 13)
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
