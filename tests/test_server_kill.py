"""Kill -9 of a real ``ctxsvc serve`` during checkpoint, workspace-event and index writes.

Writers post checkpoints and events concurrently, each with its own
Idempotency-Key, and note every acknowledged write (201 and its body). The
server is killed with SIGKILL mid-stream and restarted on the same state.
Then: every acknowledged checkpoint and event reads back exactly as
acknowledged, numbering has no gap and nothing half-written is visible, and
retrying the writes whose answer was lost (same key) leaves exactly one
record per key.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import cli_env, free_port, run_cli, start_server, stop_server
from test_crash import copy_source

pytestmark = pytest.mark.slow

WRITERS = 3
MIN_ACKED = 24


def messages(key: str) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": f"Task {key}: make Store.put atomic in app/store.py"},
        {
            "role": "assistant",
            "content": f"I decided to use os.replace because of {key}.\nTODO: test {key}",
        },
    ]


def post(c: httpx.Client, kind: str, sid: str, key: str) -> httpx.Response:
    """One write of the session ``sid``: a checkpoint, or a decision in the workspace log."""
    if kind == "event":
        body = {"text": f"decided {key}", "session_id": sid, "kind": "decision"}
        return c.post("/v1/workspaces/ws/events", json=body, headers={"Idempotency-Key": key})
    return c.post(
        f"/v1/sessions/{sid}/checkpoints",
        json={"messages": messages(key)},
        headers={"Idempotency-Key": key},
    )


def test_acknowledged_writes_survive_server_kill_9(repo: Path, tmp_path: Path) -> None:
    env = cli_env(tmp_path / "home", CTXSVC_ALLOWED_ROOTS=str(tmp_path))
    assert run_cli(env, "index", str(repo), "--no-vectors").returncode == 0
    port, log = free_port(), tmp_path / "server.log"
    base = f"http://127.0.0.1:{port}"
    proc = start_server(env, port, log)
    sessions = [
        httpx.post(
            f"{base}/v1/sessions", json={"repo": "demo", "task": f"t{i}", "workspace": "ws"}
        ).json()["id"]
        for i in range(WRITERS)
    ]
    acked: dict[str, dict[str, Any]] = {}  # key -> the acknowledged checkpoint
    acked_events: dict[str, dict[str, Any]] = {}
    lost: dict[str, tuple[str, str]] = {}  # key -> (kind, session) whose answer never came
    lock = threading.Lock()
    stop = threading.Event()

    def write(w: int) -> None:
        sid, n = sessions[w], 0
        with httpx.Client(base_url=base, timeout=30) as c:
            while not stop.is_set():
                n += 1
                key = f"w{w}-{n}"
                kind = "event" if n % 4 == 0 else "checkpoint"
                try:
                    r = post(c, kind, sid, key)
                except httpx.TransportError:
                    with lock:
                        lost[key] = (kind, sid)
                    return
                assert r.status_code == 201, r.text
                with lock:
                    (acked_events if kind == "event" else acked)[key] = r.json()

    threads = [threading.Thread(target=write, args=(w,)) for w in range(WRITERS)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 120
    while len(acked) < MIN_ACKED and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stop.set()
    for t in threads:
        t.join()
    assert len(acked) >= MIN_ACKED and acked_events
    print(
        f"killed after {len(acked)} checkpoints, {len(acked_events)} events; {len(lost)} in flight"
    )

    proc = start_server(env, port, log)
    try:
        with httpx.Client(base_url=base, timeout=30) as c:
            # Every acknowledged checkpoint reads back exactly as acknowledged.
            for cp in acked.values():
                got = c.get(f"/v1/sessions/{cp['session_id']}/checkpoints/{cp['number']}")
                assert got.status_code == 200 and got.json() == cp
            events = {e["seq"]: e for e in c.get("/v1/workspaces/ws/events?limit=1000").json()}
            for e in acked_events.values():
                assert events[e["seq"]] == e
            # No gap, nothing half-written: every stored checkpoint parses in full.
            for sid in sessions:
                listed = c.get(f"/v1/sessions/{sid}/checkpoints", params={"transcript": True})
                numbers = [cp["number"] for cp in listed.json()]
                assert numbers == list(range(1, len(numbers) + 1))
                assert all(cp["summary"]["rendered"] for cp in listed.json())
            # Writes whose answer was lost: a retry with the same key makes exactly one.
            for key, (kind, sid) in lost.items():
                r = post(c, kind, sid, key)
                assert r.status_code == 201, r.text
            keys = [
                cp["idempotency_key"]
                for sid in sessions
                for cp in c.get(f"/v1/sessions/{sid}/checkpoints").json()
            ]
            assert len(keys) == len(set(keys))
            assert set(keys) == set(acked) | {k for k, (kind, _) in lost.items() if kind != "event"}
            logged = c.get("/v1/workspaces/ws/events?limit=1000").json()
            decided = [e["text"] for e in logged if e["source"] == "agent"]
            assert len(decided) == len(set(decided))
    finally:
        stop_server(proc)


def test_kill_9_during_reindex_keeps_acked_writes_and_a_consistent_index(
    tmp_path: Path,
) -> None:
    root = tmp_path / "big"
    for i in range(4):  # a few copies of this project's source: a re-index takes seconds
        copy_source(root / f"copy{i}")
    env = cli_env(tmp_path / "home", CTXSVC_ALLOWED_ROOTS=str(tmp_path))
    assert run_cli(env, "index", str(root), "--no-vectors").returncode == 0
    port, log = free_port(), tmp_path / "server.log"
    base = f"http://127.0.0.1:{port}"
    proc = start_server(env, port, log)
    c = httpx.Client(base_url=base, timeout=30)
    sid = c.post("/v1/sessions", json={"repo": "big", "task": "t"}).json()["id"]
    edited = sorted(root.rglob("*.py"))[::3]
    for f in edited:
        f.write_text(f.read_text() + "\n\ndef added_by_the_edit():\n    return 1\n")
    job = c.post("/v1/repos/big/refresh").json()
    acked: list[dict[str, Any]] = []
    state = job["state"]
    while state in ("queued", "running") and len(acked) < 40:
        key = f"k{len(acked)}"
        r = post(c, "checkpoint", sid, key)
        assert r.status_code == 201, r.text
        acked.append(r.json())
        state = c.get(f"/v1/jobs/{job['id']}").json()["state"]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    c.close()
    print(f"killed with the re-index job {state}, after {len(acked)} checkpoints")
    assert acked

    proc = start_server(env, port, log)
    try:
        with httpx.Client(base_url=base, timeout=60) as c:
            for cp in acked:
                got = c.get(f"/v1/sessions/{sid}/checkpoints/{cp['number']}")
                assert got.status_code == 200 and got.json() == cp
            # The index answers from one committed version, old or new.
            status = c.get("/v1/repos/big").json()
            assert status["version"] in (1, 2)
            ctx = c.post(
                "/v1/context",
                json={"repo": "big", "query": "discover files", "budget_tokens": 1000},
            )
            assert ctx.status_code == 200 and ctx.json()["items"]
            # The interrupted re-index completes on the next run, as a clean index would.
            job = c.post("/v1/repos/big/refresh").json()
            while job["state"] in ("queued", "running"):
                time.sleep(0.2)
                job = c.get(f"/v1/jobs/{job['id']}").json()
            assert job["state"] == "done", job
            found = c.get("/v1/repos/big/symbols", params={"name": "added_by_the_edit"}).json()
            after = c.get("/v1/repos/big").json()
    finally:
        stop_server(proc)
    clean_env = cli_env(tmp_path / "clean")
    assert run_cli(clean_env, "index", str(root), "--no-vectors").returncode == 0
    clean = json.loads(run_cli(clean_env, "status", "big", "--json").stdout)[0]
    assert (after["files"], after["chunks"], after["symbols"]) == (
        clean["files"], clean["chunks"], clean["symbols"],
    )  # fmt: skip
    assert found["total_definitions"] == len(edited)  # the list itself stops at `limit`
