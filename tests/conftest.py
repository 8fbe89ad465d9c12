from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(1, str(Path(__file__).parent.parent))  # `benchmarks`, for its PostgreSQL cluster

from fakes import HashEmbedder

import ctxsvc
from benchmarks.pgcluster import PostgresServer
from ctxsvc.compose import build_service
from ctxsvc.http import create_app
from ctxsvc.service import ContextService
from ctxsvc.settings import Settings
from ctxsvc.tokens import TiktokenCounter

SAMPLE = {
    "app/server.py": '''"""HTTP server for the demo app."""
import os

from app.store import Store

PORT = 8080


class Server:
    """Serves requests from a store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def handle(self, path: str) -> str:
        """Answer one request."""
        value = self.store.get(path)
        return value or "not found"


def main() -> None:
    Server(Store(os.environ.get("DB", "db.json"))).handle("/")
''',
    "app/store.py": '''"""A tiny key-value store persisted as JSON."""
import json


class Store:
    def __init__(self, path: str) -> None:
        self.path = path
        self.data: dict[str, str] = {}

    def get(self, key: str) -> str | None:
        return self.data.get(key)

    def put(self, key: str, value: str) -> None:
        self.data[key] = value
        with open(self.path, "w") as f:
            json.dump(self.data, f)
''',
    "web/client.ts": """import { fetchJson } from "./http";

export interface User { id: number; name: string }

export async function loadUser(id: number): Promise<User> {
  return fetchJson(`/users/${id}`);
}
""",
    "README.md": "# Demo\n\nA demo app with a server and a store.\n\n## Usage\n\nRun `python -m app.server`.\n",
    "logo.png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64),
}


def write_tree(root: Path, files: dict[str, str | bytes]) -> None:
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)


def git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.email=t@t", "-c", "user.name=t", *args],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def make_repo(root: Path, files: dict[str, str | bytes]) -> Path:
    """A git repository at ``root`` holding ``files``, in one commit."""
    write_tree(root, files)
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "init")
    return root


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "demo", SAMPLE)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_env({}, home=tmp_path / "home")


@pytest.fixture
def counter() -> TiktokenCounter:
    return TiktokenCounter("cl100k_base")


@pytest.fixture
def embedder() -> HashEmbedder:
    return HashEmbedder()


@pytest.fixture
def service(settings: Settings, counter: TiktokenCounter, embedder: HashEmbedder) -> ContextService:
    return build_service(settings, embedder=embedder, tokens=counter)


@pytest.fixture
def indexed(service: ContextService, repo: Path) -> ContextService:
    """The sample repository, indexed (files override it with their own set-up)."""
    service.index(repo)
    return service


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def client(indexed: ContextService, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The HTTP API of ``indexed``, in process."""
    app = create_app(indexed, allowed_roots=[tmp_path])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://localhost"
    ) as c:
        yield c


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    """This environment without CTXSVC_* settings, pointed at ``home``.

    Subprocesses import the ctxsvc these tests import (a worktree's checkout,
    say), not whichever copy is installed, wherever they run.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTXSVC_")}
    source = str(Path(ctxsvc.__file__).resolve().parent.parent)
    path = os.pathsep.join(p for p in (source, env.get("PYTHONPATH", "")) if p)
    return {**env, "CTXSVC_HOME": str(home), "PYTHONPATH": path, **extra}


def run_cli(
    env: dict[str, str], *args: str, timeout: int = 600
) -> subprocess.CompletedProcess[str]:
    """``python -m ctxsvc ARGS`` in a real subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "ctxsvc", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_server(env: dict[str, str], port: int, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    """A real ``ctxsvc serve`` on ``port``, once ``/readyz`` answers 200 (output to ``log``)."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ctxsvc", "serve", "--port", str(port), *extra],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 180
    while True:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the server did not become ready"
        time.sleep(0.2)


def stop_server(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    proc.send_signal(sig)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _pg_binaries() -> Path:
    """The PostgreSQL server binaries; the test skipped, saying why, where they are absent,
    unless CTXSVC_REQUIRE_POSTGRES=1 (CI): then it fails."""
    from benchmarks import pgcluster

    bindir = pgcluster.binaries()
    if bindir is None:
        reason = (
            "PostgreSQL server binaries (initdb, pg_ctl) not found: "
            "install the Debian postgresql package to run these tests"
        )
        if pgcluster.required():
            pytest.fail(reason + " (CTXSVC_REQUIRE_POSTGRES=1)")
        pytest.skip(reason)
    return bindir


@contextmanager
def _pg_cluster(bindir: Path) -> Iterator[PostgresServer]:
    server = PostgresServer(bindir)
    try:
        yield server.start()
    finally:
        server.stop()  # also after a failed start: its directory, and any postmaster


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster for the session (``benchmarks.pgcluster``)."""
    with _pg_cluster(_pg_binaries()) as server:
        yield server


@pytest.fixture
def pg_servers() -> Iterator[Callable[[], PostgresServer]]:
    """Makes PostgreSQL clusters of the test's own (to stop, kill, restart), removed after it."""
    bindir = _pg_binaries()
    with ExitStack() as stack:
        yield lambda: stack.enter_context(_pg_cluster(bindir))


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> str:
    """The URL of a fresh, empty database on the session's PostgreSQL server."""
    return pg_server.new_database()
