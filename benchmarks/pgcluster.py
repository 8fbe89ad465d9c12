"""A throwaway PostgreSQL cluster for the tests and benchmarks: ``initdb`` and ``pg_ctl`` in a
temp dir.

The server binaries come from the Debian ``postgresql`` package (or any
``initdb`` on PATH). ``initdb`` refuses to run as root, so as root the
cluster is made and run as ``nobody`` (its directory handed to that user);
otherwise as the current user. It listens on no TCP port, only on a Unix
socket in its own directory (mode 0700: no other local user can reach it,
root aside), with trust authentication there for the one superuser
``ctxsvc``, and fsync off (a test cluster: durability across power loss is
PostgreSQL's own). Its URL is ``postgresql://ctxsvc@/postgres?host=DIR&port=N``.

The directory records the process that made it; a cluster whose maker is
gone (a test session killed before it could stop it) is stopped and removed
by the next one to start. Where the binaries are absent the tests that need
it are skipped, saying so, unless ``CTXSVC_REQUIRE_POSTGRES=1`` (``.ci/run``
sets it): then they fail.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import quote

USER = "ctxsvc"
PORT = 5432  # names the socket file only: the directory is the cluster's own
PREFIX = "ctxsvc-pg-"
CREATOR = "creator"  # in the cluster's directory: "PID START" of the process that made it
LEGACY_S = 3600  # a directory without a creator file this old is a leftover too


def binaries() -> Path | None:
    """The directory of ``initdb`` and ``pg_ctl``, newest version first; None if absent."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    on_path = shutil.which("initdb")
    for candidate in [*found, *([on_path] if on_path else [])]:
        bindir = Path(candidate).parent
        if (bindir / "pg_ctl").exists():
            return bindir
    return None


def required() -> bool:
    return os.environ.get("CTXSVC_REQUIRE_POSTGRES", "") not in ("", "0")


def _started(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, from /proc), None if it is gone:
    with the pid, it tells a live maker from a new process that reuses its pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state is field 3
    return None if fields[0] in ("Z", "X") else fields[19]  # a zombie is gone; 22: start


class PostgresServer:
    """One cluster, started by :meth:`start` and removed by :meth:`stop`."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.as_root = os.geteuid() == 0
        # Not under pytest's tmp dir: as root that is 0700, which ``nobody`` cannot enter.
        self.dir = Path(tempfile.mkdtemp(prefix=PREFIX))
        (self.dir / CREATOR).write_text(f"{os.getpid()} {_started(os.getpid())}\n")
        self.data = self.dir / "data"
        self.port = PORT
        self.url = self.url_for("postgres")

    def url_for(self, database: str) -> str:
        """The URL of ``database`` on this server, through its socket."""
        return f"postgresql://{USER}@/{database}?host={quote(str(self.dir))}&port={self.port}"

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return _run(self.bindir, self.dir, self.as_root, *args, timeout=timeout)

    def start(self) -> PostgresServer:
        reap(self.bindir)
        self.dir.chmod(0o700)
        if self.as_root:
            shutil.chown(self.dir, "nobody", "nogroup")
        made = self._run(
            "initdb", "-D", str(self.data), "-U", USER, "--auth-local=trust",
            "--auth-host=reject", "--no-sync", "-E", "UTF8", "--locale=C.UTF-8",
        )  # fmt: skip
        if made.returncode != 0:
            raise RuntimeError(f"initdb failed: {made.stderr.strip() or made.stdout.strip()}")
        self._start()
        return self

    def _start(self) -> None:
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses='' -c fsync=off"
            " -c max_connections=200"
        )
        started = self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.dir / "log"), "-o", options, "-w",
            "-t", "60", "start",
        )  # fmt: skip
        if started.returncode != 0:
            log = self.dir / "log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {started.stderr.strip()}\n{tail}")

    def stop(self) -> None:
        """Stop the server if it runs, and remove its directory (safe if never started)."""
        if self.data.exists():
            self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def kill(self) -> None:
        """Stop the server at once (as a crash would), keeping its files."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def restart(self) -> None:
        """Start the server again after :meth:`kill`."""
        self._start()

    def new_database(self) -> str:
        """A fresh, empty database on this server: its URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as con:
                    con.execute(f"CREATE DATABASE {name}")
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        return self.url_for(name)


def _run(
    bindir: Path, cwd: Path, as_root: bool, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    cmd = [str(bindir / args[0]), *args[1:]]
    if as_root:
        cmd = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *cmd]
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd,
        env={**os.environ, "LC_ALL": "C.UTF-8"},
    )  # fmt: skip


def reap(bindir: Path) -> list[Path]:
    """Stop and remove the clusters in the temp dir whose maker is gone; those removed."""
    as_root = os.geteuid() == 0
    ours = {os.geteuid(), *([_uid("nobody")] if as_root else [])}
    reaped = []
    for found in Path(tempfile.gettempdir()).glob(f"{PREFIX}*"):
        try:
            if not found.is_dir() or found.stat().st_uid not in ours or not _orphaned(found):
                continue
        except OSError:
            continue
        if (found / "data").exists():
            _run(bindir, found, as_root, "pg_ctl", "-D", str(found / "data"), "-m", "immediate",
                 "-w", "stop")  # fmt: skip
        shutil.rmtree(found, ignore_errors=True)
        reaped.append(found)
    return reaped


def _orphaned(found: Path) -> bool:
    try:
        pid, start = (found / CREATOR).read_text().split()
    except (FileNotFoundError, ValueError):  # made before creator files, or being made now
        return time.time() - found.stat().st_mtime > LEGACY_S
    if start == "None":  # no /proc: whether the pid lives at all
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, another user's
            pass
        return False
    return _started(int(pid)) != start


def _uid(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_uid
