"""Parsing files into rows: read, tree-sitter, chunk; in this process or in a pool.

``parse_file`` turns one discovered file into its record, chunks, symbols,
references and imports. ``parse_files`` does that for many, in the order
given, either here or across worker processes: the rows are the same either
way. Workers are started with "spawn", never "fork" (the parent may hold
threads: the HTTP server, LanceDB's runtime), and import only what parsing
needs (tree-sitter grammars, tiktoken): never LanceDB or torch.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import signal
from collections import deque
from collections.abc import Generator, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ctxsvc.errors import CtxError
from ctxsvc.indexers.chunking import chunk_file
from ctxsvc.indexers.discover import read_text
from ctxsvc.indexers.symbols import extract
from ctxsvc.models import (
    Chunk,
    FileRecord,
    Import,
    ParsedFile,
    Reference,
    SkippedFile,
    SourceFile,
    Symbol,
)
from ctxsvc.tokens import TokenCounter

if TYPE_CHECKING:
    from ctxsvc.settings import Settings

log = logging.getLogger("ctxsvc.index")

# Less work than this (bytes of source) is parsed in this process: starting
# workers (an interpreter each, tiktoken's tables, the grammars) costs about as
# much as parsing this much, measured by benchmarks/parse_speed.py.
POOL_MIN_BYTES = 2 * 1024 * 1024
# A batch is one task of a worker: big enough that sending it costs little next
# to parsing it, small enough that the batches in flight hold little memory.
BATCH_FILES = 32
BATCH_BYTES = 512 * 1024
IN_FLIGHT_PER_PROCESS = 2
# Chunking counts every line's tokens, and lines repeat ("}", blank, "return x"):
# counts of short texts are remembered, at most this many per process.
MEMO_CHARS = 120
MEMO_ENTRIES = 65536


@dataclass(frozen=True)
class Parsed:
    """What parsing one file gives: its record and rows, and warnings."""

    source: SourceFile
    record: FileRecord
    chunks: tuple[Chunk, ...] = ()
    symbols: tuple[Symbol, ...] = ()
    refs: tuple[Reference, ...] = ()
    imports: tuple[Import, ...] = ()
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Limits:
    """The settings parsing reads, small enough to send to every worker."""

    max_file_bytes: int
    max_line_chars: int
    chunk_target_tokens: int
    chunk_max_tokens: int

    @classmethod
    def of(cls, settings: Settings) -> _Limits:
        return cls(
            max_file_bytes=settings.max_file_bytes,
            max_line_chars=settings.max_line_chars,
            chunk_target_tokens=settings.chunk_target_tokens,
            chunk_max_tokens=settings.chunk_max_tokens,
        )


def parse_file(
    root: Path,
    sf: SourceFile,
    settings: Settings,
    counter: TokenCounter,
    identity: tuple[int, int],
) -> Parsed:
    """Read, parse and chunk one file under ``root``.

    A file that turns out not worth indexing (binary, too large, unreadable)
    gives a skipped record and no rows; one the parser fails on is indexed
    as text, with a warning. ``identity`` is the root's, as ``discover``
    found it: a root replaced since raises ``RootChanged``.
    """
    return _parse(root, sf, _Limits.of(settings), counter, identity)


def skipped_record(sk: SkippedFile, sf: SourceFile | None = None) -> FileRecord:
    """The record of a file not indexed, and why (``sf`` when it was discovered)."""
    return FileRecord(
        path=sk.path,
        sha256="",
        size=sf.size if sf else 0,
        mtime_ns=sf.mtime_ns if sf else 0,
        language=sf.language if sf else None,
        status="skipped",
        reason=sk.reason.value,
        detail=sk.detail,
    )


def parse_files(
    root: Path,
    files: Sequence[SourceFile],
    settings: Settings,
    counter: TokenCounter,
    identity: tuple[int, int],
    *,
    processes: int,
    pool_min_bytes: int = POOL_MIN_BYTES,
) -> Generator[Parsed, None, None]:
    """:func:`parse_file` for each of ``files``, yielded in their order.

    ``processes`` workers parse in parallel (0: one per core); with one, or
    less than ``pool_min_bytes`` of source, parsing happens in this process.
    At most a few batches per worker are in flight, so memory stays bounded
    however many files there are. Workers rebuild ``counter`` from its
    pickle; one that cannot be pickled makes parsing happen here, with a
    logged warning.

    A ``CtxError`` raised in a worker (``RootChanged``) is raised here as is;
    a worker that dies (killed, out of memory) raises ``CtxError``. The pool
    is shut down when the iterator is exhausted, closed or fails, so close it
    (or let it be collected) if you stop early.
    """
    limits = _Limits.of(settings)
    workers = min(_resolve(processes), len(files))
    if workers > 1 and sum(sf.size for sf in files) >= pool_min_bytes:
        yield from _pooled(root, files, limits, counter, identity, workers)
    else:
        yield from _here(root, files, limits, counter, identity)


def _here(
    root: Path,
    files: Sequence[SourceFile],
    limits: _Limits,
    counter: TokenCounter,
    identity: tuple[int, int],
) -> Iterator[Parsed]:
    memo = _Memo(counter)
    for sf in files:
        yield _parse(root, sf, limits, memo, identity)


def _resolve(processes: int) -> int:
    if processes > 0:
        return processes
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _pickled(counter: TokenCounter) -> bytes | None:
    # Loaded here first, a counter pickles with what it loaded (tiktoken's
    # encoding, by name): workers then neither try the network nor warn again.
    warm = getattr(counter, "warm", None)
    if callable(warm):
        warm()
    try:
        return pickle.dumps(counter)
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        log.warning(
            "token counter %s cannot be sent to worker processes (%s): parsing in this process",
            counter.name,
            exc,
        )
        return None


def _batches(files: Sequence[SourceFile]) -> Iterator[list[SourceFile]]:
    batch: list[SourceFile] = []
    size = 0
    for sf in files:
        if batch and (len(batch) >= BATCH_FILES or size + sf.size > BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(sf)
        size += sf.size
    if batch:
        yield batch


def _pooled(
    root: Path,
    files: Sequence[SourceFile],
    limits: _Limits,
    counter: TokenCounter,
    identity: tuple[int, int],
    workers: int,
) -> Iterator[Parsed]:
    pool = ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(root, limits, identity),
    )
    try:
        # A task per worker starts them all; they import while the counter loads here.
        for _ in range(workers):
            pool.submit(_ready)
        blob = _pickled(counter)
        if blob is None:
            yield from _here(root, files, limits, counter, identity)
            return
        batches = _batches(files)
        pending: deque[Future[list[Parsed]]] = deque()
        while True:
            while len(pending) < IN_FLIGHT_PER_PROCESS * workers:
                batch = next(batches, None)
                if batch is None:
                    break
                pending.append(pool.submit(_parse_batch, blob, batch))
            if not pending:
                return
            yield from _result(pending.popleft())
    finally:
        # Waits for the batches being parsed (short), drops the queued ones;
        # workers ignore SIGINT, so Ctrl-C here leaves no orphan behind.
        pool.shutdown(wait=True, cancel_futures=True)


def _result(future: Future[list[Parsed]]) -> list[Parsed]:
    try:
        return future.result()
    except BrokenProcessPool as exc:
        raise CtxError(
            f"a parse worker process died (killed, out of memory?): {exc}",
            hint="index again; if it keeps dying, set CTXSVC_PARSE_PROCESSES=1 to parse "
            "in one process",
        ) from exc


# -- in a worker process ------------------------------------------------------

_worker: tuple[Path, _Limits, tuple[int, int]] | None = None
_counter: tuple[bytes, TokenCounter] | None = None  # the last counter sent, and it rebuilt


def _start_worker(root: Path, limits: _Limits, identity: tuple[int, int]) -> None:
    global _worker
    # The parent handles Ctrl-C and shuts the pool down; a worker dying of it
    # mid-batch would only turn that into a broken pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker = (root, limits, identity)


def _ready() -> None:
    """A task that only makes the pool start a worker."""


def _parse_batch(counter: bytes, files: list[SourceFile]) -> list[Parsed]:
    global _counter
    if _worker is None:  # pragma: no cover - the initializer always runs first
        raise RuntimeError("parse worker not initialized")
    root, limits, identity = _worker
    # Every batch carries the counter (a tiktoken one pickles to its name, some
    # 200 bytes), so that the workers can start before the parent loads it.
    if _counter is None or _counter[0] != counter:
        _counter = (counter, _Memo(pickle.loads(counter)))
    return [_parse(root, sf, limits, _counter[1], identity) for sf in files]


class _Memo:
    """A ``TokenCounter`` that remembers the counts of short texts (exact: the same
    text always has the same count)."""

    def __init__(self, inner: TokenCounter) -> None:
        self.name = inner.name
        self._inner = inner
        self._known: dict[str, int] = {}

    def count(self, text: str) -> int:
        return self._inner.count(text)

    def count_many(self, texts: list[str]) -> list[int]:
        known = self._known
        fresh = [t for t in dict.fromkeys(texts) if t not in known]
        if not fresh:
            return [known[t] for t in texts]
        got = dict(zip(fresh, self._inner.count_many(fresh), strict=True))
        out = [got[t] if t in got else known[t] for t in texts]
        if len(known) > MEMO_ENTRIES:
            known.clear()
        known.update((t, n) for t, n in got.items() if len(t) <= MEMO_CHARS)
        return out


# -- one file -------------------------------------------------------------------


def _parse(
    root: Path,
    sf: SourceFile,
    limits: _Limits,
    counter: TokenCounter,
    identity: tuple[int, int],
) -> Parsed:
    got = read_text(
        root,
        sf,
        max_file_bytes=limits.max_file_bytes,
        max_line_chars=limits.max_line_chars,
        expect=identity,
    )
    if isinstance(got, SkippedFile):
        return Parsed(sf, skipped_record(got, sf))
    parsed: ParsedFile | None = None
    detail = ""
    warnings: tuple[str, ...] = ()
    if sf.language:
        try:
            parsed = extract(sf.path, got.text, sf.language)
        except CtxError:
            raise
        except Exception as exc:  # a parser bug on one odd file must not stop the run
            detail = f"parser failed ({type(exc).__name__}: {exc}); indexed as text"
            warnings = (f"{sf.path}: {detail}",)
    chunks = chunk_file(
        sf.path,
        got.text,
        parsed,
        counter,
        target_tokens=limits.chunk_target_tokens,
        max_tokens=limits.chunk_max_tokens,
    )
    if parsed is not None and parsed.syntax_errors:
        detail = f"{parsed.syntax_errors} syntax error node(s): partial tree used"
    record = FileRecord(
        path=sf.path,
        sha256=got.sha256,
        size=sf.size,
        mtime_ns=sf.mtime_ns,
        language=sf.language,
        status="indexed",
        detail=detail,
        syntax_errors=parsed.syntax_errors if parsed else 0,
        lossy=got.lossy,
        chunks=len(chunks),
        tokens=sum(c.tokens for c in chunks),
    )
    return Parsed(
        source=sf,
        record=record,
        chunks=tuple(chunks),
        symbols=parsed.symbols if parsed else (),
        refs=parsed.references if parsed else (),
        imports=parsed.imports if parsed else (),
        warnings=warnings,
    )
