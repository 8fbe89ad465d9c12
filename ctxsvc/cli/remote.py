"""The command line through a running ``ctxsvc serve`` of the same data directory.

``ctxsvc serve`` writes ``<home>/server.json`` (its URL, process id, start time
and data directory; mode 0600, written atomically) and removes it when it stops.
``query``, ``expand``, ``status``, ``impact``, ``references`` and ``definition`` read it and, when that process lives and
answers ``/healthz`` within :data:`PROBE_SECONDS`, send their call there through
:class:`ctxsvc.client.Client`: the server has the index open and the model
loaded, so the answer comes without loading either. The answer is rendered as
the command renders its own (the same text, the same ``--json``); a failure is
the ``ctxsvc.errors`` class of the problem's code, so the exit code is the same.

A file whose process is gone or does not answer in time is ignored, and the
command runs in this process. So it does when the server does not know the
repository (the argument may be a directory this process sees and the server
does not) or refuses the request's values: the command then fails, or answers,
with its own words. The bearer token is the command's own ``CTXSVC_TOKEN``,
never read from the file. Opt out with ``--no-server`` or ``CTXSVC_USE_SERVER=0``.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from ctxsvc.errors import CtxError, RepoNotFound, Unauthorized
from ctxsvc.limits import NAME
from ctxsvc.settings import Settings

if TYPE_CHECKING:
    from ctxsvc.client.sync import Client
    from ctxsvc.models import ContextPack, Impact, Links, RepoStatus, SearchResult

SERVER_FILE = "server.json"
PROBE_SECONDS = 0.3  # a live local server answers /healthz in a few milliseconds
T = TypeVar("T")


@dataclass(frozen=True)
class ServerRecord:
    """What ``server.json`` says: where a server of this data directory listens."""

    url: str
    pid: int
    started_at: str
    home: str


def server_file(home: Path) -> Path:
    return home / SERVER_FILE


def url_of(host: str, port: int) -> str:
    """The URL a client on this machine reaches a server bound to ``host:port`` by."""
    wildcard = {"0.0.0.0": "127.0.0.1", "::": "::1"}
    host = wildcard.get(host, host)
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    return f"http://{host}:{port}"


def publish(home: Path, url: str) -> ServerRecord:
    """Write ``server.json`` for this process (0600, atomically: a reader sees all or none)."""
    record = ServerRecord(
        url=url, pid=os.getpid(), started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        home=str(home.resolve()),
    )  # fmt: skip
    home.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".server-", suffix=".json", dir=home)  # mode 0600
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(record), f)
        os.replace(tmp, server_file(home))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return record


def withdraw(home: Path, record: ServerRecord) -> None:
    """Remove ``server.json`` if it is still this server's (another may have replaced it)."""
    if read_record(home) == record:
        with contextlib.suppress(OSError):
            server_file(home).unlink()


def read_record(home: Path) -> ServerRecord | None:
    """The record in ``server.json``, or None when there is none that reads as one."""
    try:
        data = json.loads(server_file(home).read_text(encoding="utf-8"))
        return ServerRecord(
            url=str(data["url"]), pid=int(data["pid"]), started_at=str(data["started_at"]),
            home=str(data["home"]),
        )  # fmt: skip
    except (OSError, ValueError, TypeError, KeyError):
        return None


def connect(settings: Settings, no_server: bool = False) -> Remote | None:
    """The running server of ``settings.home``, when one answers; None to answer here."""
    if no_server or not settings.use_server:
        return None
    record = read_record(settings.home)
    if record is None or record.home != str(settings.home.resolve()) or not _alive(record.pid):
        return None
    if not _answers(record.url):
        return None
    return Remote(record, settings)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process holds that id now
        return False
    return True


def _answers(url: str) -> bool:
    """Whether ``url`` answers ``/healthz`` within :data:`PROBE_SECONDS`.

    With the standard library: a stale file costs no HTTP client's import.
    """
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname is None:
        return False
    deadline = time.monotonic() + PROBE_SECONDS
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=PROBE_SECONDS)
    try:
        conn.request("GET", "/healthz")
        conn.sock.settimeout(max(0.01, deadline - time.monotonic()))
        response = conn.getresponse()
        return response.status == 200 and json.loads(response.read()).get("status") == "ok"
    except (OSError, ValueError, http.client.HTTPException):
        return False
    finally:
        conn.close()


class Remote:
    """The calls of the CLI's commands that read an index, on a running server.

    A call returns None when this process should answer instead: the server
    does not know the repository (it may be a directory only this process
    sees), refuses the token, or its request validation refuses a value (this
    process then says why in its own words). Other failures raise the
    server's typed error.
    """

    def __init__(self, record: ServerRecord, settings: Settings) -> None:
        import httpx

        from ctxsvc.client.core import RetryPolicy
        from ctxsvc.client.sync import Client

        # Past the server's own deadline, a call has failed there: a little more, then give up.
        seconds = settings.request_timeout + 10.0 if settings.request_timeout else 24 * 3600.0
        self.record = record
        self.client: Client = Client(
            record.url, settings.token or None, timeout=seconds,
            retry=RetryPolicy(attempts=3, timeout=seconds),
            # Plain HTTP on this machine: no TLS context to build (a third of a second).
            transport=httpx.HTTPTransport(verify=False),
        )  # fmt: skip

    def __enter__(self) -> Remote:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.client.close()

    def context(self, repo: str, query: str, **call: Any) -> ContextPack | None:
        """``POST /v1/context``, as ``ContextService.context(repo, query, **call)``."""
        ref, body = _sent(repo, call)
        return None if ref is None else _or_here(lambda: self.client.context(ref, query, **body))

    def search(self, repo: str, query: str, **call: Any) -> SearchResult | None:
        """``POST /v1/search``, as ``ContextService.search(repo, query, **call)``."""
        ref, body = _sent(repo, call)
        return None if ref is None else _or_here(lambda: self.client.search(ref, query, **body))

    def expand(self, repo: str, **call: Any) -> ContextPack | None:
        """``POST /v1/expand``, as ``ContextService.expand(repo, **call)``."""
        ref = _reference(repo)
        return None if ref is None else _or_here(lambda: self.client.expand(ref, **call))

    def impact(self, repo: str, name: str, depth: int, limit: int) -> Impact | None:
        """``GET /v1/repos/{repo}/impact``, as ``ContextService.impact``."""
        if not NAME.match(repo):  # a path: these routes take names
            return None
        return _or_here(lambda: self.client.impact(repo, name, depth=depth, limit=limit))

    def references(self, repo: str, name: str, limit: int) -> Links | None:
        """``GET /v1/repos/{repo}/references``, as ``ContextService.references``."""
        if not NAME.match(repo):
            return None
        return _or_here(lambda: self.client.references(repo, name, limit=limit))

    def definition(self, repo: str, name: str, path: str | None, line: int | None) -> Links | None:
        """``GET /v1/repos/{repo}/definition``, as ``ContextService.definition``."""
        if not NAME.match(repo):
            return None
        return _or_here(lambda: self.client.definition(repo, name, path=path, line=line))

    def statuses(self, name: str | None) -> list[RepoStatus] | None:
        """The status of the index ``name``, or of every index the server lists."""
        if name is None:
            return _or_here(lambda: [self.client.status(r.name) for r in self.client.repos()])
        if not NAME.match(name):  # a path: the server's route takes names
            return None
        return _or_here(lambda: [self.client.status(name)])


def _or_here(call: Callable[[], T]) -> T | None:
    """``call()``, or None when this process should answer instead."""
    try:
        return call()
    except CtxError as exc:
        if isinstance(exc, RepoNotFound | Unauthorized) or exc.code == "validation_error":
            return None
        raise


def _sent(repo: str, call: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """``repo`` and ``call`` with every index as the server takes it (``repos`` too);
    None for ``repo`` to answer here."""
    ref, more = _reference(repo), [_reference(r) for r in call.get("repos") or ()]
    if ref is None or None in more:
        return None, call
    return ref, ({**call, "repos": more} if more else call)


def _reference(repo: str) -> str | None:
    """What to send for the CLI's ``repo`` argument, or None to answer here.

    An index name goes as it is (the server resolves it as this process would);
    a path goes absolute, as the server resolves paths from its own directory.
    A name the server does not know may still be a directory here: the server's
    ``RepoNotFound`` then sends the command back to this process.
    """
    if NAME.match(repo):
        return repo
    path = Path(repo).expanduser()
    if not path.is_dir():
        return None
    return str(path.resolve())
