"""What lets ``ctxsvc mcp`` answer at once: the handshake replayed from a record, and
the service built in the background.

Importing the MCP SDK takes a second, opening the index store one or two more,
loading the model several: an agent waiting that long for ``initialize`` may
give up on the server. So :class:`HandshakeFront` takes over stdin and stdout
first (the protocol's own copies; fd 0 then reads nothing and fd 1 writes to
stderr, so that no library's output reaches the protocol) and answers
``initialize`` and ``tools/list`` from a record of the answers the SDK itself
gave for the same code, default repository and protocol version; every other
message waits. Once the SDK's server runs, the front hands it the conversation:
the ``initialize`` it answered (the SDK's own answer to it is dropped), then
what waited, then the rest as it comes.

The record (``<home>/mcp/handshake-*.json``, one per default repository) is
written from the SDK's answers as they pass. It is used only while a
fingerprint of the code it came from (ctxsvc's modules, the SDK's and
pydantic's versions, by file size and time) still holds, and forgotten as soon
as the SDK answers an ``initialize`` otherwise than it says: the first start
after a change answers once the SDK has loaded, as without a record.

:class:`PendingService` builds the service in a daemon thread; tool calls wait
for it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import queue
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ctxsvc.errors import CtxError

if TYPE_CHECKING:
    from ctxsvc.service import ContextService

log = logging.getLogger("ctxsvc.mcp")

# What the record's answers depend on besides ctxsvc's own modules.
DEPENDENCIES = ("mcp", "mcp_types", "pydantic", "pydantic_core")


class PendingService:
    """A service built in a background thread: the server answers meanwhile, and
    a tool call waits for it (and fails with its error, should building it fail)."""

    def __init__(self, make: Callable[[], ContextService]) -> None:
        self._make = make
        self._future: Future[ContextService] = Future()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @classmethod
    def of(cls, service: ContextService) -> PendingService:
        """A service already built."""
        ready = cls(lambda: service)
        ready._future.set_result(service)
        return ready

    def start(self) -> None:
        """Begin building in a daemon thread; idempotent."""
        with self._lock:
            if self._thread is None and not self._future.done():
                self._thread = threading.Thread(target=self._build, name="service", daemon=True)
                self._thread.start()

    def settle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a build under way; whether none still runs.

        The server waits before it exits: a build cut off by the interpreter's
        exit can be inside a native library as it is torn down, and abort.
        """
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return thread is None or not thread.is_alive()

    def result(self) -> ContextService:
        """The service, once built (building it here if nothing started it)."""
        self.start()
        return self._future.result()

    def _build(self) -> None:
        try:
            service = self._make()
        except BaseException as exc:  # handed to every tool call, which reports it
            if not isinstance(exc, CtxError):
                log.error("the service could not be built", exc_info=exc)
            self._future.set_exception(exc)
            return
        self._future.set_result(service)
        warm = getattr(service.tokens, "warm", None)
        if callable(warm):  # the encoding loads now rather than in the first call
            with contextlib.suppress(Exception):
                warm()


def fingerprint() -> str:
    """What the SDK's answers to the handshake are a function of, as a digest."""
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parents[1]
    for path in sorted(package.rglob("*.py")):
        st = path.stat()
        digest.update(f"{path.relative_to(package)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    for name in DEPENDENCIES:
        spec = importlib.util.find_spec(name)  # a top-level name: found, not imported
        origin = spec.origin if spec is not None else None
        found = os.stat(origin) if origin else None
        size, mtime = (found.st_size, found.st_mtime_ns) if found else (None, None)
        digest.update(f"{name}:{origin}:{size}:{mtime}\n".encode())
    return digest.hexdigest()


class Record:
    """The SDK's answers to ``initialize`` and ``tools/list``, by protocol version asked."""

    def __init__(self, path: Path, key: str, stamp: str) -> None:
        self.path = path
        self.key = key
        self.stamp = stamp
        self.initialize: dict[str, Any] = {}
        self.tools: dict[str, Any] = {}

    @classmethod
    def load(cls, directory: Path, key: str) -> Record:
        """The record for ``key`` in ``directory``, empty when none is valid for this code."""
        name = "handshake-" + hashlib.sha256(key.encode()).hexdigest()[:16] + ".json"
        record = cls(directory / name, key, fingerprint())
        try:
            data = json.loads(record.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return record
        if isinstance(data, dict) and data.get("stamp") == record.stamp and data.get("key") == key:
            record.initialize = dict(data.get("initialize") or {})
            record.tools = dict(data.get("tools") or {})
        return record

    def save(self) -> None:
        """Write the record atomically (0600); a data directory it cannot write to keeps none."""
        data = {"key": self.key, "stamp": self.stamp, "initialize": self.initialize,
                "tools": self.tools}  # fmt: skip
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".handshake-", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump(data, f)
                os.replace(tmp, self.path)
            except OSError:
                os.unlink(tmp)
                raise

    def forget(self) -> None:
        self.initialize.clear()
        self.tools.clear()
        with contextlib.suppress(OSError):
            self.path.unlink()


class HandshakeFront:
    """The stdio transport of ``ctxsvc mcp``: answers the handshake from a
    :class:`Record` until the SDK's server takes the conversation (:meth:`lines`
    and :meth:`output` are the streams to give ``mcp.server.stdio.stdio_server``).

    Use it as a context manager: on leaving, fd 0 and fd 1 are the wire again.
    """

    def __init__(self, record: Record) -> None:
        self.record = record
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._to_sdk: queue.Queue[str | None] = queue.Queue()
        self._waiting: list[str | None] = []  # lines for the SDK before it runs
        self._attached = False
        self._version: str | None = None  # the protocol version the client asked for
        self._answered_init: Any = None  # the id of an initialize answered from the record
        self._drop: set[Any] = set()  # ids whose SDK answers the client already has
        self._capture: dict[Any, tuple[str, str]] = {}  # id -> (method, version)
        self._in = os.dup(0)
        self._out = os.dup(1)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        os.dup2(2, 1)
        self._reader = threading.Thread(target=self._read, name="mcp-stdin", daemon=True)
        self._reader.start()

    def __enter__(self) -> HandshakeFront:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Our copies stay open: the reader may still block on one, a late answer use the other.
        os.dup2(self._out, 1)
        os.dup2(self._in, 0)

    # -- stdin ------------------------------------------------------------------------

    def _read(self) -> None:
        with os.fdopen(self._in, "rb", closefd=False) as wire:
            for raw in wire:
                self._received(raw.decode("utf-8", errors="replace"))
        with self._lock:
            (self._to_sdk.put if self._attached else self._waiting.append)(None)

    def _received(self, line: str) -> None:
        message = _json(line)
        with self._lock:
            answer = None if self._attached else self._early(message)
            if answer is None or message.get("method") == "initialize":
                self._note(message)  # the SDK sees initialize, answered or not
                (self._to_sdk.put if self._attached else self._waiting.append)(line)
        if answer is not None:
            self._write(answer)

    def _early(self, message: dict[str, Any]) -> dict[str, Any] | None:
        """The recorded answer to ``message``, or None to leave it to the SDK."""
        method, id_, params = message.get("method"), message.get("id"), message.get("params")
        if id_ is None or not isinstance(params, dict | None):
            return None
        if method == "initialize" and self._version is None:
            version = (params or {}).get("protocolVersion")
            result = self.record.initialize.get(version) if isinstance(version, str) else None
            if result is None:
                return None
            self._answered_init = id_
            self._drop.add(id_)
            return {"jsonrpc": "2.0", "id": id_, "result": result}
        if method == "tools/list" and self._answered_init is not None and not params:
            result = self.record.tools.get(self._version or "")
            return None if result is None else {"jsonrpc": "2.0", "id": id_, "result": result}
        return None

    def _note(self, message: dict[str, Any]) -> None:
        """Remember which SDK answers to record: initialize, and a plain tools/list."""
        method, id_, params = message.get("method"), message.get("id"), message.get("params")
        if id_ is None:
            return
        if method == "initialize" and self._version is None and isinstance(params, dict):
            version = params.get("protocolVersion")
            if isinstance(version, str):
                self._version = version
                self._capture[id_] = ("initialize", version)
        elif method == "tools/list" and self._version is not None and not params:
            self._capture[id_] = ("tools/list", self._version)

    # -- the SDK's side ------------------------------------------------------------------

    def attach(self) -> None:
        """Hand the conversation to the SDK: what waited goes first, then the rest."""
        with self._lock:
            for line in self._waiting:
                self._to_sdk.put(line)
            self._waiting.clear()
            self._attached = True

    def lines(self) -> _Lines:
        """stdin for the SDK: the lines it is to read, as an async iterator."""
        return _Lines(self._to_sdk)

    def output(self) -> _Output:
        """stdout for the SDK: its answers, recorded, and dropped when already sent."""
        return _Output(self)

    def _sdk_wrote(self, text: str) -> None:
        message = _json(text)
        id_ = message.get("id")
        is_answer = "method" not in message and ("result" in message or "error" in message)
        if is_answer and id_ is not None:
            with self._lock:
                captured = self._capture.pop(id_, None)
                dropped = id_ in self._drop
                self._drop.discard(id_)
            if captured is not None and "result" in message:
                self._record(*captured, message["result"])
            elif captured is not None and captured[0] == "initialize":
                self.record.forget()  # refused now: never answer it from the record again
            if dropped:
                return
        self._write_text(text)

    def _record(self, method: str, version: str, result: Any) -> None:
        record = self.record
        if method == "initialize":
            known = record.initialize.get(version)
            if known is not None and known != result:
                log.info("the recorded MCP handshake is out of date: forgotten")
                record.forget()
                return
            if known is None:
                record.initialize[version] = result
                record.save()
        elif "nextCursor" not in result and record.tools.get(version) != result:
            record.tools[version] = result
            record.save()

    # -- stdout -------------------------------------------------------------------------

    def _write(self, message: dict[str, Any]) -> None:
        self._write_text(json.dumps(message, ensure_ascii=False))

    def _write_text(self, text: str) -> None:
        data = (text.rstrip("\n") + "\n").encode("utf-8")
        with self._write_lock:
            view = memoryview(data)
            while view:
                view = view[os.write(self._out, view) :]


class _Lines:
    """An async iterator over the lines the front passes on (None: end of input)."""

    def __init__(self, lines: queue.Queue[str | None]) -> None:
        self._lines = lines
        self._done = False

    def __aiter__(self) -> _Lines:
        return self

    async def __anext__(self) -> str:
        import anyio.to_thread

        if self._done:
            raise StopAsyncIteration
        line = await anyio.to_thread.run_sync(self._lines.get, abandon_on_cancel=True)
        if line is None:
            self._done = True
            raise StopAsyncIteration
        return line


class _Output:
    """The async file the SDK writes its messages to, one line each."""

    def __init__(self, front: HandshakeFront) -> None:
        self._front = front

    async def write(self, text: str) -> None:
        self._front._sdk_wrote(text)

    async def flush(self) -> None:
        return None


def _json(line: str) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
