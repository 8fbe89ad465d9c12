"""The index pipeline: discover -> read -> parse -> chunk -> store -> commit.

A run commits text, symbols and the graph without waiting for the model: the
index answers at once, and its vectors fill in behind it
(:mod:`ctxsvc.vector_fill`). Incremental: a file whose size and mtime match
its stored record is not read again; a changed file is re-parsed and
re-chunked, and only chunks whose content hash has no stored vector need
embedding (so a renamed or reverted file reuses its vectors). Crash-safe: see
:mod:`ctxsvc.stores.lance`.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from ctxsvc import history
from ctxsvc.errors import ModelMismatch, RepoNotFound, StoreCorrupt
from ctxsvc.indexers.discover import discover
from ctxsvc.indexers.embed import Embedder
from ctxsvc.indexers.gitref import read_head, settle
from ctxsvc.indexers.terms import code_terms, path_terms
from ctxsvc.models import (
    Chunk,
    FileRecord,
    Import,
    IndexSummary,
    Reference,
    SkippedFile,
    SkipReason,
    SourceFile,
    StageTiming,
    Symbol,
)
from ctxsvc.parsing import Parsed, parse_files, skipped_record
from ctxsvc.settings import Settings
from ctxsvc.stores.lance import SCHEMA_VERSION, IndexMeta, LanceStore, OutdatedIndex, RepoWriter
from ctxsvc.stores.lance_snapshots import carry, dropped_note
from ctxsvc.stores.locks import FileLock
from ctxsvc.tokens import TokenCounter

log = logging.getLogger("ctxsvc.index")

# How long a run waits for the repository lock: the vector filler holds it only to
# store a batch, an index run for as long as it runs (then IndexBusy).
LOCK_PATIENCE = 15.0


class Reporter(Protocol):
    """Receives progress; the CLI draws bars, tests and servers ignore or log it."""

    def start(self, stage: str, total: int | None) -> None: ...

    def advance(self, stage: str, n: int = 1) -> None: ...

    def finish(self, stage: str) -> None: ...


class NullReporter:
    def start(self, stage: str, total: int | None) -> None:
        pass

    def advance(self, stage: str, n: int = 1) -> None:
        pass

    def finish(self, stage: str) -> None:
        pass


@dataclass
class _Run:
    """What one run has learned so far."""

    files: list[FileRecord] = field(default_factory=list)
    chunks: list[Chunk] = field(default_factory=list)
    symbols: list[Symbol] = field(default_factory=list)
    refs: list[Reference] = field(default_factory=list)
    imports: list[Import] = field(default_factory=list)
    removed: set[str] = field(default_factory=set)
    timings: list[StageTiming] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @contextmanager
    def stage(self, name: str, reporter: Reporter, total: int | None = None) -> Iterator[list[int]]:
        items = [0]
        reporter.start(name, total)
        t0 = time.perf_counter()
        yield items
        seconds = time.perf_counter() - t0
        reporter.finish(name)
        self.timings.append(StageTiming(name, seconds, items[0]))
        log.info(
            "stage done", extra={"stage": name, "seconds": round(seconds, 3), "items": items[0]}
        )

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        log.warning(message)

    def add(self, parsed: Parsed) -> None:
        """Take the rows of one parsed file (it replaces whatever was stored of it)."""
        self.removed.add(parsed.source.path)
        self.files.append(parsed.record)
        self.chunks.extend(parsed.chunks)
        self.symbols.extend(parsed.symbols)
        self.refs.extend(parsed.refs)
        self.imports.extend(parsed.imports)
        for w in parsed.warnings:
            self.warn(w)


def index_repository(
    store: LanceStore,
    root: Path,
    name: str,
    settings: Settings,
    counter: TokenCounter,
    embedder: Embedder | None,
    *,
    vectors: str = "complete",
    reembed: bool = False,
    rebuild: bool = False,
    reporter: Reporter | None = None,
    existing: bool = False,
) -> IndexSummary:
    """Index ``root`` under ``name``: text, symbols and the graph, committed without
    embedding. ``embedder`` names the model whose vectors the index holds (the
    chunks without one are left to :func:`ctxsvc.vector_fill.fill_vectors`;
    ``vectors`` in the summary is then "partial"). ``vectors`` says why
    ``embedder`` may be None: "disabled" (asked for) or "missing" (the model
    failed to load).

    Holds the repository lock for the whole run; a second concurrent run
    fails with :class:`IndexBusy` after ``LOCK_PATIENCE`` seconds. With ``rebuild`` every file is
    parsed again into a new set of tables, reading nothing of the old one but
    its vectors (the same model's serve again; unreadable ones are embedded
    again, with a warning), and the commit swaps readers over: until then they
    keep the old index, so a damaged index is repaired this way. An index of
    an older schema version is rebuilt so too (a warning in the summary says
    so), keeping its vectors unless this run embeds with another model; its
    row is replaced only at the commit, so a killed rebuild leaves it (readers
    get ``StoreCorrupt`` with the rebuild hint) and the vectors stored so far.
    One of a newer version raises ``StoreCorrupt`` unless ``rebuild``.
    ``existing``: only re-index an index ``name`` of ``root``; ``RepoNotFound`` if,
    once the lock is held, there is none (dropped or re-pointed while this run
    waited for it), so that a watcher never builds again an index dropped under it.
    """
    reporter = reporter or NullReporter()
    lock = settings.locks_path / f"{name}.lock"
    with FileLock(lock, f"index {name!r}", patience=LOCK_PATIENCE):
        if existing and _root_of(store, name) != root:
            raise RepoNotFound(
                f"no index {name!r} of {root} to re-index: it was dropped or re-pointed",
                hint=f"index it again with `ctxsvc index {root}` to follow it",
            )
        run = _Run()
        old, keep = _outdated(store, name, embedder, run, reembed, rebuild)
        previous = store.meta(name) if old is None else None
        # Whose vectors are stored, and of what dimension.
        held = previous or (old if keep else None)
        prior = previous.model if previous else old.model if old and keep else None
        if embedder is not None and prior and prior != embedder.name and not reembed:
            raise ModelMismatch(
                f"index {name!r} holds vectors of {prior}, this run embeds with {embedder.name}",
                hint=f"pass --reembed to replace them all, or --model {prior.split('@')[0]}",
            )
        if embedder is None and vectors == "missing":
            run.warn(
                "the embedding model is unavailable: indexing full text and symbols only; "
                "vectors are missing until a later run with a working model fills them in"
            )

        # HEAD again at the commit: a run that saw it move (a checkout under way writes
        # the files first, HEAD last) may hold two commits' files.
        start = read_head(root)
        with run.stage("discover", reporter) as n:
            # The directory indexed before, unless re-pointed: one replaced since
            # (moved, now a link) raises RootChanged and nothing under it is read.
            same = previous is not None and not rebuild and Path(previous.root) == root
            expect = tuple(previous.root_identity) if same and previous else ()
            found = discover(
                root,
                max_file_bytes=settings.max_file_bytes,
                expect=(expect[0], expect[1]) if len(expect) == 2 else None,
            )
            n[0] = len(found.files) + len(found.skipped)
        dimension = embedder.dimension if embedder else (held.dimension if held else None)
        drop_vectors = (reembed and embedder is not None) or (old is not None and not keep)
        writer = store.writer(name, dimension=dimension, drop_vectors=drop_vectors, rebuild=rebuild)
        if writer.vectors_lost is not None:
            run.warn(
                f"the stored vectors of {name!r} cannot be read ({writer.vectors_lost}): "
                + (
                    "embedding again"
                    if embedder is not None
                    else "dropped; a run with the embedding model embeds them again"
                )
            )
        stored = writer.files()

        seen: set[str] = set()
        todo: list[SourceFile] = []
        files, skipped = _storable(found.files, found.skipped)
        for sf in files:
            seen.add(sf.path)
            rec = stored.get(sf.path)
            if rec is None or (rec.size, rec.mtime_ns) != (sf.size, sf.mtime_ns):
                todo.append(sf)
        for sk in skipped:
            seen.add(sk.path)
            rec = stored.get(sk.path)
            if rec is None or rec.status != "skipped" or rec.reason != sk.reason.value:
                run.removed.add(sk.path)
                run.files.append(skipped_record(sk))
        deleted = [p for p in stored if p not in seen]
        run.removed.update(deleted)

        with run.stage("parse", reporter, len(todo)) as n:
            parsed = parse_files(
                root, todo, settings, counter, found.identity, processes=settings.parse_processes
            )
            try:
                for one in parsed:
                    run.add(one)
                    reporter.advance("parse")
                    n[0] += 1
            finally:
                parsed.close()  # stops the workers when a file fails the run

        with run.stage("write", reporter) as n:
            terms = [_terms(c) for c in run.chunks]
            writer.replace_paths(
                run.removed, run.files, run.chunks, run.symbols, run.refs, run.imports, terms
            )
            n[0] = len(run.chunks)

        with run.stage("commit", reporter):
            have = writer.vector_hashes()
            hashes = writer.chunk_hash_list()
            embedded = sum(1 for h in hashes if h in have)
            reused = sum(1 for c in run.chunks if c.content_hash in have)
            vectors_status = vectors
            # Vectors of a model this index holds: as complete as the chunks they cover,
            # also when this run has no model (a query's refresh without one, a model
            # that failed to load): its new chunks wait for a run with it.
            model = embedder.name if embedder else (held.model if held else None)
            if model and writer.has_vectors and (embedder is not None or vectors == "missing"):
                vectors_status = "complete" if embedded == len(hashes) else "partial"
            stats = {**_totals(writer), "embedded": embedded}
            cold = previous is None
            branch, commit, moved = settle(found, start, read_head(root))
            settled = moved is None
            if moved is not None:
                run.warn(moved)
            meta = IndexMeta(
                name=name,
                root=str(root),
                commit=commit,
                indexed_at=datetime.now(UTC).isoformat(timespec="seconds"),
                model=model,
                dimension=dimension,
                tokenizer=counter.name,
                vectors=vectors_status,
                versions={},
                stats=stats,
                generation=(previous.generation + 1) if previous else 1,
                root_identity=list(found.identity),
                run_id=uuid.uuid4().hex,
                branch=branch,
                # The row this one replaces is kept when the working tree left its branch.
                snapshots=carry(
                    previous, branch, commit, settings.branch_snapshots, settled=settled
                ),
                head_moved=not settled,
            )
            if writer.changes_nothing(meta) and writer.previous is not None:
                meta = writer.previous  # every file as indexed: the row stands
            else:
                meta = writer.commit(
                    meta, rebuild_fts=cold or len(run.chunks) > 0.2 * max(stats["chunks"], 1)
                )
            for note in dropped_note(name, writer.snapshots_lost):
                run.warn(note)
        # After the text commit, so that it never delays the first answer.
        _store_history(store, root, name, commit, run, reporter, again=rebuild)

        return IndexSummary(
            repo=name,
            root=str(root),
            commit=commit,
            files_seen=len(seen),
            files_indexed=sum(1 for r in run.files if r.status == "indexed"),
            files_unchanged=len(seen)
            - len(todo)
            - sum(1 for sk in skipped if sk.path in run.removed),
            files_deleted=len(deleted),
            skipped=dict(stats["skipped"]),
            files_with_syntax_errors=stats["syntax_error_files"],
            symbols=stats["symbols"],
            references=stats["refs"],
            chunks=stats["chunks"],
            tokens=stats["tokens"],
            chunks_embedded=0,
            chunks_reused=reused,
            vectors=vectors_status,
            vectors_missing=len(hashes) - embedded if vectors_status == "partial" else 0,
            model=meta.model,
            timings=tuple(run.timings),
            warnings=tuple(run.warnings + list(found.notes)),
            version=meta.generation,
            branch=meta.branch,
        )


def _root_of(store: LanceStore, name: str) -> Path | None:
    """The root of index ``name`` (of any schema version), None if there is none."""
    found = store.find(name)
    return None if found is None else Path(found.root)


def _store_history(
    store: LanceStore, root: Path, name: str, head: str | None, run: _Run,
    reporter: Reporter, *, again: bool,
) -> None:  # fmt: skip
    """Read and store the git history of ``root`` unless the stored one was read at
    ``head`` (``again``: read it anyway). Outside git there is none to read."""
    if head is None:
        return
    if not again:
        try:
            if history.load(store.blobs, name, root=str(root), head=head) is not None:
                log.info("git history current", extra={"repo": name, "head": head})
                return
        except ValueError as exc:
            log.warning("stored git history unreadable: reading it again", extra={"why": str(exc)})
    with run.stage("history", reporter) as n:
        try:
            got = history.read_history(root)
        except (ValueError, IndexError, UnicodeError, OSError) as exc:  # an odd log: no history
            run.warn(f"the git history of {name!r} could not be read ({exc}): ranked without it")
            return
        n[0] = got.commits
        try:
            history.save(store.blobs, name, got, str(root))
        except OSError as exc:
            run.warn(
                f"the git history of {name!r} could not be stored ({exc}): queries rank "
                "without it until a later run stores it"
            )
            return
    log.info(
        "git history stored",
        extra={"repo": name, "head": got.head, "commits": got.commits, "capped": got.capped},
    )


def _outdated(
    store: LanceStore, name: str, embedder: Embedder | None, run: _Run, reembed: bool,
    rebuild: bool,
) -> tuple[OutdatedIndex | None, bool]:  # fmt: skip
    """Index ``name`` if it is of an older schema version (this run rebuilds it), and
    whether its vectors are kept; ``StoreCorrupt`` if it is of a newer one, unless
    ``rebuild`` (then it is replaced, vectors and all)."""
    old = store.outdated(name)
    if old is None:
        return None, False
    if old.schema_version > SCHEMA_VERSION:
        if rebuild:
            return old, False
        raise StoreCorrupt(
            f"index {name!r} has schema version {old.schema_version}, newer than this"
            f" ctxsvc's {SCHEMA_VERSION}: not overwritten",
            hint=f"upgrade ctxsvc, or replace it with `ctxsvc index {old.root} --rebuild`",
        )
    # Vectors are keyed by content hash: the same model's serve the rebuilt chunks.
    # Without a model (--no-vectors, or it failed to load) they are kept for a
    # later run: they are hours of embedding on a large repository. Another
    # model's go only with --reembed (else the caller raises ModelMismatch).
    keep = embedder is None or old.model == embedder.name or not reembed
    if not old.model:
        note = ""
    elif keep:
        note = ", reusing its vectors" if embedder else f", keeping its vectors of {old.model}"
    else:
        note = f", dropping its vectors of {old.model}"
    run.warn(
        f"index {name!r} had schema version {old.schema_version}, this ctxsvc writes"
        f" {SCHEMA_VERSION}: rebuilt from scratch{note}"
    )
    return old, keep


def _storable(
    files: Sequence[SourceFile], skipped: Sequence[SkippedFile]
) -> tuple[list[SourceFile], list[SkippedFile]]:
    """Files whose names cannot be stored as UTF-8 become skipped, under a
    printable form of their name (the same from run to run)."""
    ok: list[SourceFile] = []
    out = [replace(sk, path=_printable(sk.path)) for sk in skipped]
    for sf in files:
        if _printable(sf.path) == sf.path:
            ok.append(sf)
        else:
            reason = "file name is not valid UTF-8"
            out.append(SkippedFile(_printable(sf.path), SkipReason.UNREADABLE, reason))
    return ok, out


def _printable(path: str) -> str:
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _terms(c: Chunk) -> str:
    words = path_terms(c.path) + code_terms(c.header) + code_terms(c.text)
    for s in c.symbols:
        words.extend(code_terms(s))
    return " ".join(words)


def _totals(writer: RepoWriter) -> dict[str, Any]:
    files = writer.files()
    return {
        "files": sum(1 for r in files.values() if r.status == "indexed"),
        "skipped": dict(Counter(r.reason for r in files.values() if r.status == "skipped")),
        "syntax_error_files": sum(1 for r in files.values() if r.syntax_errors),
        "lossy_files": sum(1 for r in files.values() if r.lossy),
        "chunks": sum(r.chunks for r in files.values()),
        "tokens": sum(r.tokens for r in files.values()),
        **writer.counts(("symbols", "refs")),
    }
