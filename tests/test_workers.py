"""``ctxsvc serve --workers 2``: two real server processes on one port and one data directory.

Any worker answers any request: a job started through one is watched, with
its progress, through the other; a checkpoint written through one is read
through the other; an index a job commits in one is what the other answers
from; a worker killed mid-job leaves the job to the other, which runs it
again, and one frozen past the stale time loses it to the other and stops
(never lost, never doubled). The state database is the SQLite
file of the home or a PostgreSQL database (``benchmarks.pgcluster``). Which process
answered is in each response's ``X-Ctxsvc-Worker``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from conftest import cli_env, free_port, git, start_server, stop_server, write_tree

pytestmark = pytest.mark.slow

STALE = "10"  # seconds without a heartbeat before a running job runs again (the least allowed)


def make_repo(root: Path, files: int) -> Path:
    """A repository of ``files`` small Python modules (enough to index for a while)."""
    write_tree(
        root,
        {
            f"pkg/m{i:04d}.py": (
                f'"""Module {i}."""\n\n\ndef handler_{i}(value: int) -> int:\n'
                f"    return value * {i} + helper_{i}(value)\n\n\n"
                f"def helper_{i}(value: int) -> int:\n    return value - {i}\n"
            )
            for i in range(files)
        },
    )
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "init")
    return root


class Served:
    def __init__(self, base: str, env: dict[str, str], proc: subprocess.Popen[bytes], tmp: Path):
        self.base, self.env, self.proc, self.tmp = base, env, proc, tmp
        # A connection per request: a kept-alive one would stay with the worker that took it.
        no_reuse = httpx.Limits(max_keepalive_connections=0)
        self.http = httpx.Client(base_url=base, timeout=60, limits=no_reuse)

    def until_both_answer(self, deadline: float = 180) -> set[str]:
        seen: set[str] = set()
        give_up = time.monotonic() + deadline
        while len(seen) < 2:
            assert time.monotonic() < give_up, f"only workers {seen} answered"
            seen.add(self.http.get("/readyz").headers["x-ctxsvc-worker"])
        return seen

    def poll_job(
        self, job_id: str, until: Callable[[dict[str, object]], bool]
    ) -> dict[str, object]:
        give_up = time.monotonic() + 300
        while True:
            r = self.http.get(f"/v1/jobs/{job_id}")
            assert r.status_code == 200, r.text
            job: dict[str, object] = r.json()
            if until(job):
                return job
            # An ended job never meets a condition it does not meet now.
            assert job["state"] not in ("done", "failed"), job
            assert time.monotonic() < give_up, job
            time.sleep(0.1)

    def parsing(self, name: str, files: int) -> tuple[Path, str, dict[str, object]]:
        """A repository of ``files`` modules registered as ``name``, once its job parses
        (a stage's start is published at once: the parse of ``files`` modules is the
        window in which a test stops the worker)."""
        root = make_repo(self.tmp / name, files)
        r = self.http.post("/v1/repos", json={"path": str(root), "name": name, "vectors": False})
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        running = self.poll_job(
            job_id, lambda j: j["state"] == "running" and bool(j["progress"].get("parse"))
        )
        return root, job_id, running


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp(f"workers-{request.param}")
    extra = {"CTXSVC_ALLOWED_ROOTS": str(tmp), "CTXSVC_JOB_STALE_SECONDS": STALE}
    if request.param == "postgresql":
        extra["CTXSVC_STATE_URL"] = request.getfixturevalue("pg_server").new_database()
    env = cli_env(tmp / "home", CTXSVC_MODEL=str(tmp / "no-such-model"), **extra)
    port = free_port()
    proc = start_server(env, port, tmp / "server.log", "--workers", "2")
    served = Served(f"http://127.0.0.1:{port}", env, proc, tmp)
    try:
        served.until_both_answer()
        yield served
    finally:
        served.http.close()
        stop_server(proc)
    assert proc.returncode == 0, (tmp / "server.log").read_text()[-3000:]


def test_a_job_started_through_one_worker_is_watched_through_the_other(served: Served) -> None:
    root = make_repo(served.tmp / "small", 40)
    r = served.http.post("/v1/repos", json={"path": str(root), "name": "small", "vectors": False})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    answered: set[str] = set()
    give_up = time.monotonic() + 300
    while True:
        r = served.http.get(f"/v1/jobs/{job_id}")
        assert r.status_code == 200, r.text
        answered.add(r.headers["x-ctxsvc-worker"])
        job = r.json()
        if job["state"] in ("done", "failed") and len(answered) == 2:
            break
        assert time.monotonic() < give_up, (job, answered)
    assert job["state"] == "done" and job["attempts"] == 1, job
    assert job["result"]["files_indexed"] == 40 and job["progress"]["parse"]["done"] == 40
    # Both workers answer from the index the job committed.
    found: set[str] = set()
    while len(found) < 2:
        r = served.http.post("/v1/search", json={"repo": "small", "query": "handler_7", "limit": 3})
        assert r.status_code == 200 and r.json()["files"][0]["path"] == "pkg/m0007.py", r.text
        found.add(r.headers["x-ctxsvc-worker"])


def test_a_checkpoint_written_through_one_worker_is_read_through_the_other(
    served: Served,
) -> None:
    root = make_repo(served.tmp / "notes", 3)
    job = served.http.post("/v1/repos", json={"path": str(root), "name": "notes", "vectors": False})
    served.poll_job(job.json()["id"], lambda j: j["state"] == "done")
    session = served.http.post("/v1/sessions", json={"repo": "notes", "task": "rename handler_1"})
    assert session.status_code == 201, session.text
    sid = session.json()["id"]
    messages = [
        {"role": "user", "content": "Rename handler_1 to handle_one in pkg/m0001.py."},
        {"role": "assistant", "content": "Renamed it. Next I'll update the callers."},
    ]
    written = served.http.post(
        f"/v1/sessions/{sid}/checkpoints", json={"messages": messages},
        headers={"Idempotency-Key": "k-1"},
    )  # fmt: skip
    assert written.status_code == 201, written.text
    writer = written.headers["x-ctxsvc-worker"]
    read: dict[str, dict[str, object]] = {}
    give_up = time.monotonic() + 120
    while len(read) < 2:
        assert time.monotonic() < give_up, read.keys()
        r = served.http.get(f"/v1/sessions/{sid}/checkpoints/latest")
        assert r.status_code == 200, r.text
        read[r.headers["x-ctxsvc-worker"]] = r.json()
    assert writer in read and all(c == written.json() for c in read.values())


def test_a_worker_killed_mid_job_leaves_the_job_to_the_other(served: Served) -> None:
    root, job_id, running = served.parsing("big", 1500)
    victim = int(str(running["worker"]).split(":")[1])
    os.kill(victim, signal.SIGKILL)
    # While it is silent, the job stays the same job: a second submit is not a second job.
    again = served.http.post("/v1/repos", json={"path": str(root), "name": "big", "vectors": False})
    assert again.json()["id"] == job_id
    done = served.poll_job(job_id, lambda j: j["state"] in ("done", "failed"))
    assert done["state"] == "done" and done["attempts"] == 2, done
    assert any("queued again" in e["message"] for e in done["events"])  # type: ignore[attr-defined]
    assert str(done["worker"]) != str(running["worker"])
    assert done["result"]["files_indexed"] + done["result"]["files_unchanged"] == 1500  # type: ignore[index]
    r = served.http.post("/v1/search", json={"repo": "big", "query": "handler_1234", "limit": 3})
    assert r.json()["files"][0]["path"] == "pkg/m1234.py"
    served.until_both_answer()  # the supervisor started a new worker in the dead one's place


def search_both(served: Served, repo: str, query: str) -> dict[str, list[str]]:
    """The paths a search finds through each worker (each opens the index, or reads it)."""
    found: dict[str, list[str]] = {}
    give_up = time.monotonic() + 120
    while len(found) < 2:
        assert time.monotonic() < give_up, found
        r = served.http.post("/v1/search", json={"repo": repo, "query": query, "limit": 3})
        assert r.status_code == 200, r.text
        found[r.headers["x-ctxsvc-worker"]] = [f["path"] for f in r.json()["files"]]
    return found


def test_a_view_held_by_one_worker_follows_the_versions_committed_by_another(
    served: Served,
) -> None:
    root = make_repo(served.tmp / "follow", 5)
    job = served.http.post(
        "/v1/repos", json={"path": str(root), "name": "follow", "vectors": False}
    )
    served.poll_job(job.json()["id"], lambda j: j["state"] == "done")
    before = search_both(served, "follow", "handler_3")
    assert all(paths[0] == "pkg/m0003.py" for paths in before.values()), before
    (root / "pkg" / "m0003.py").write_text(
        '"""Module 3, rewritten."""\n\n\ndef tessellate_quadrant(value: int) -> int:\n'
        "    return value * 3\n"
    )
    r = served.http.post("/v1/repos/follow/refresh")
    assert r.status_code == 202, r.text
    done = served.poll_job(r.json()["id"], lambda j: j["state"] in ("done", "failed"))
    assert done["state"] == "done" and done["result"]["files_indexed"] == 1, done  # type: ignore[index]
    after = search_both(served, "follow", "tessellate_quadrant")
    assert all(paths and paths[0] == "pkg/m0003.py" for paths in after.values()), after


def test_a_worker_frozen_past_the_stale_time_loses_its_job_and_stops(served: Served) -> None:
    _, job_id, running = served.parsing("frozen", 1500)
    frozen = str(running["worker"])
    pid = int(frozen.split(":")[1])
    os.kill(pid, signal.SIGSTOP)
    try:
        # Silent past the stale time: the other worker queues the job again and claims it.
        taken = served.poll_job(job_id, lambda j: j["state"] == "running" and j["worker"] != frozen)
    finally:
        os.kill(pid, signal.SIGCONT)
    # Thawed, the frozen worker's heartbeat is refused and its run stops (releasing the
    # repository's lock); the other's run then goes on, and its outcome is the job's.
    done = served.poll_job(job_id, lambda j: j["state"] in ("done", "failed"))
    events = [str(e["message"]) for e in done["events"]]  # type: ignore[attr-defined]
    assert done["state"] == "done" and done["worker"] == taken["worker"], done
    assert done["attempts"] == 2 and events.count("done") == 1, events
    assert any("sent no heartbeat" in e and "queued again" in e for e in events), events
    assert done["result"]["files_indexed"] + done["result"]["files_unchanged"] == 1500  # type: ignore[index]
    log = served.tmp / "server.log"
    give_up = time.monotonic() + 30
    while "job run stopped: another worker holds the job now" not in log.read_text():
        assert time.monotonic() < give_up, log.read_text()[-3000:]
        time.sleep(0.2)
    r = served.http.post("/v1/search", json={"repo": "frozen", "query": "handler_1234", "limit": 3})
    assert r.json()["files"][0]["path"] == "pkg/m1234.py"
