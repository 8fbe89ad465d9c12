"""``ctxsvc index --rebuild`` beside a real ``ctxsvc serve`` under query load.

Threads post ``/v1/context`` and ``/v1/search`` in a loop while the CLI
rebuilds the index twice, each rebuild in its own process. Every answer must
be a 200: the server keeps answering from the old generation until a rebuild
commits, then from the new one, and never reads a file a rebuild removed.
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import httpx
import pytest
from conftest import cli_env, free_port, run_cli, start_server, stop_server

pytestmark = pytest.mark.slow

CLIENTS = 4
AFTER = 20  # requests each client still sends once the last rebuild has committed


def grow(repo: Path) -> None:
    """Enough code that a rebuild takes a while (parse, write, full-text index)."""
    for i in range(60):
        body = "".join(
            f"def handler_{i}_{j}(request, store):\n"
            f"    '''Handle request kind {j} of module {i} from the store.'''\n"
            f"    return store.get(request.path + '/{i}/{j}')\n\n\n"
            for j in range(12)
        )
        (repo / "app" / f"handlers_{i}.py").write_text(body)


def test_rebuilds_beside_a_serving_process_answer_every_request(repo: Path, tmp_path: Path) -> None:
    grow(repo)
    env = cli_env(tmp_path / "home", CTXSVC_ALLOWED_ROOTS=str(tmp_path))
    done = run_cli(env, "index", str(repo), "--no-vectors", "--json")
    assert done.returncode == 0, done.stderr
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_server(env, port, tmp_path / "server.log")
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    lock = threading.Lock()
    rebuilt = threading.Event()
    after = [0] * CLIENTS

    def load(n: int) -> None:
        bodies = [
            ("/v1/context", {"repo": "demo", "query": "handle a request from the store",
                             "budget_tokens": 400}),
            ("/v1/search", {"repo": "demo", "query": "Store get handler"}),
        ]  # fmt: skip
        with httpx.Client(base_url=base, timeout=60) as c:
            i = 0
            while after[n] < AFTER:
                route, body = bodies[i % 2]
                i += 1
                try:
                    r = c.post(route, json=body)
                except httpx.HTTPError as exc:  # a lost request fails the test too
                    with lock:
                        failures.append(f"{route} {type(exc).__name__}: {exc}")
                    return
                with lock:
                    statuses[r.status_code] += 1
                    if r.status_code != 200:
                        failures.append(f"{route} {r.status_code} {r.text[:300]}")
                if rebuilt.is_set():
                    after[n] += 1

    threads = [threading.Thread(target=load, args=(n,)) for n in range(CLIENTS)]
    try:
        for t in threads:
            t.start()
        during = []
        for k in range(2):
            (repo / "app" / f"added_{k}.py").write_text(
                f"def rebuilt_marker_{k}():\n    return {k}\n"
            )
            before = sum(statuses.values())
            done = run_cli(env, "index", str(repo), "--rebuild", "--no-vectors", "--json")
            assert done.returncode == 0, done.stderr
            during.append(sum(statuses.values()) - before)
        rebuilt.set()
        for t in threads:
            t.join(timeout=300)
        assert not any(t.is_alive() for t in threads)
        print(f"answers {dict(statuses)}; during the two rebuilds: {during}")
        assert not failures, (dict(statuses), failures[:5])
        assert all(n > 0 for n in during), during  # the rebuilds ran under load
        assert after == [AFTER] * CLIENTS, after  # every client kept going to the end

        # The answers come from the last generation, which knows the last file.
        with httpx.Client(base_url=base, timeout=60) as c:
            assert c.get("/v1/repos/demo").json()["version"] == 3
            found = c.get("/v1/repos/demo/symbols", params={"name": "rebuilt_marker_1"})
            assert found.status_code == 200 and found.json()["definitions"], found.text
            pack = c.post(
                "/v1/context",
                json={"repo": "demo", "query": "rebuilt_marker_1", "budget_tokens": 400},
            ).json()
            assert pack["index"]["generation"] == 3
            assert any(item["path"] == "app/added_1.py" for item in pack["items"])
    finally:
        stop_server(proc)
