"""An in-memory view of one committed index version, built once per version.

Queries must answer in tens of milliseconds, so everything but full-text
search is held in memory: chunks by file, definitions by name, the code graph
and a vector matrix aligned with the chunks (brute-force cosine over a few
thousand rows is faster than any index). A view is immutable; a new index
generation gets a new view.

A view checks every chunk's text against its content hash as it loads: a
chunk whose stored text changed after it was written (a damaged or edited
data file) is never served, and neither is the rest of its file, so that no
answer holds a file's text with a hole in it. ``RepoView.damaged`` names those
files; the catalog reports them as degraded and in ``damaged()``.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import threading
import time
from collections import OrderedDict, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

from ctxsvc.graph import CodeGraph, build_graph, node_key
from ctxsvc.history import History, load
from ctxsvc.history import key as history_key
from ctxsvc.models import Chunk, FileRecord, Reference, Symbol, embed_text
from ctxsvc.resolve import Resolver
from ctxsvc.stores.blobs import Blobs
from ctxsvc.stores.lance import IndexMeta, RepoReader
from ctxsvc.stores.lance_ann import AnnIndex

log = logging.getLogger("ctxsvc.view")
# The line maps a view keeps, of the files read last (a query reads a file many
# times): at most this many files, and this many lines in all (some 30 MB).
LINES_KEPT = 256
LINES_KEPT_TOTAL = 200_000
_NO_LINES: Mapping[int, str] = MappingProxyType({})


@dataclass
class RepoView:
    """Everything a query needs of one index version."""

    reader: RepoReader
    meta: IndexMeta
    chunks: list[Chunk]
    chunk_index: dict[str, int]  # chunk id -> position
    by_path: dict[str, list[int]]  # path -> chunk positions, by start line
    files: dict[str, FileRecord]
    symbols: list[Symbol]
    defs_by_name: dict[str, list[int]]  # lower-cased name -> symbol positions
    graph: CodeGraph
    chunk_nodes: list[list[int]]  # chunk position -> graph nodes it holds
    node_pairs: tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]  # (chunk, node) arrays
    refs_by_name: dict[str, list[Reference]]
    refs_by_path: dict[str, list[Reference]]
    # A row per chunk (zeros where missing); None without vectors, or where the index
    # is searched through its approximate index (``ann``), which holds them on disk.
    vectors: npt.NDArray[np.float32] | None
    has_vector: npt.NDArray[np.bool_] | None
    ann: AnnIndex | None = None
    # Vectors of the table that are no chunk's of this view (changed text not yet
    # pruned, a branch snapshot's): an approximate search asks for this many more.
    ann_foreign: int = 0
    load_seconds: float = 0.0
    # path -> why its text is not served: stored chunks that fail their content hash
    damaged: Mapping[str, str] = field(default_factory=dict)
    # Git history read at the commit indexed (see ``history``), and where its file is
    # with the file's stamp then (``Blobs.stamp``; None: no file).
    _history: History = field(default=History.EMPTY, repr=False)
    _history_file: tuple[Blobs, tuple[int, int, int] | None] | None = field(
        default=None, repr=False, compare=False
    )
    _symbols_by_path: dict[str, list[Symbol]] | None = field(default=None, repr=False)
    _resolver: Resolver | None = field(default=None, repr=False)
    _symbol_positions: dict[str, int] | None = field(default=None, repr=False)
    _hash_positions: dict[str, list[int]] | None = field(default=None, repr=False)
    # path -> (its lines, its last line number), least recently used first
    _lines: OrderedDict[str, tuple[Mapping[int, str], int]] = field(
        default_factory=OrderedDict, repr=False, compare=False
    )
    _lines_total: int = field(default=0, repr=False, compare=False)
    _lines_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @classmethod
    def load(cls, reader: RepoReader) -> RepoView:
        t0 = time.perf_counter()
        chunks, damaged = _checked(reader.chunks())
        chunks.sort(key=lambda c: (c.path, c.start_line))
        chunk_index = {c.id: i for i, c in enumerate(chunks)}
        by_path: dict[str, list[int]] = defaultdict(list)
        for i, c in enumerate(chunks):
            by_path[c.path].append(i)
        symbols = reader.symbols()
        defs_by_name: dict[str, list[int]] = defaultdict(list)
        for i, s in enumerate(symbols):
            defs_by_name[s.name.lower()].append(i)
        refs = reader.references()
        refs_by_name: dict[str, list[Reference]] = defaultdict(list)
        refs_by_path: dict[str, list[Reference]] = defaultdict(list)
        for r in refs:
            refs_by_name[r.name].append(r)
            refs_by_path[r.path].append(r)
        graph = build_graph(symbols, refs, reader.imports())
        chunk_nodes = [_nodes_of(c, graph) for c in chunks]
        vectors, has_vector, ann, foreign = _align_vectors(reader, chunks)
        history, history_file = _history(reader)
        view = cls(
            reader=reader,
            meta=reader.meta,
            chunks=chunks,
            chunk_index=chunk_index,
            by_path=dict(by_path),
            files=reader.files(),
            symbols=symbols,
            defs_by_name=dict(defs_by_name),
            graph=graph,
            chunk_nodes=chunk_nodes,
            node_pairs=(
                np.array([i for i, ns in enumerate(chunk_nodes) for _ in ns], dtype=np.int64),
                np.array([n for ns in chunk_nodes for n in ns], dtype=np.int64),
            ),
            refs_by_name=dict(refs_by_name),
            refs_by_path=dict(refs_by_path),
            vectors=vectors,
            has_vector=has_vector,
            ann=ann,
            ann_foreign=foreign,
            damaged=MappingProxyType(damaged),
            _history=history,
            _history_file=history_file,
        )
        view.load_seconds = time.perf_counter() - t0
        log.info(
            "view loaded",
            extra={
                "repo": reader.meta.name,
                "generation": reader.meta.generation,
                "chunks": len(chunks),
                "graph_nodes": len(graph),
                "graph_edges": graph.edges,
                "damaged_files": len(damaged),
                "vector_search": "approximate" if ann else "exact",
                "seconds": round(view.load_seconds, 3),
            },
        )
        return view

    def with_vectors(self, reader: RepoReader) -> RepoView:
        """This view with the vectors ``reader`` pins: a fill committed more of them
        over the same text (``IndexMeta.text_pins`` equal), so nothing else is read."""
        t0 = time.perf_counter()
        vectors, has_vector, ann, foreign = _align_vectors(reader, self.chunks)
        view = replace(
            self, reader=reader, meta=reader.meta, vectors=vectors, has_vector=has_vector, ann=ann,
            ann_foreign=foreign,
            _lines=OrderedDict(), _lines_total=0, _lines_lock=threading.Lock(),
        )  # fmt: skip
        view.load_seconds = time.perf_counter() - t0
        return view

    def relabelled(self, reader: RepoReader) -> RepoView:
        """This view under the row ``reader`` opened, which pins the same versions: a run
        that changed no file (HEAD moved) commits a new branch, commit and generation."""
        return replace(
            self, reader=reader, meta=reader.meta, _lines=OrderedDict(), _lines_total=0,
            _lines_lock=threading.Lock(),
        )  # fmt: skip

    @property
    def history(self) -> History:
        """The git history of the commit indexed; ``History.EMPTY`` when none is stored.

        An index run stores it just after its text commit, and one run after HEAD
        moved with no file changed keeps this view (the same text): so a history
        file rewritten since the view loaded (one stat a call) is read again.
        """
        at = self._history_file
        if at is None:
            return self._history
        blobs, stamp = at
        now = _stamp(blobs, self.meta.name)
        if now != stamp:  # a race reads it twice; both are equal
            self._history_file = (blobs, now)
            got = _read_history(blobs, self.meta.name, self.meta.root, None)
            if got is not None:
                self._history = got
        return self._history

    def indexed_hashes(self) -> dict[str, str]:
        """The content hash of every indexed file (skipped files left out)."""
        return {p: r.sha256 for p, r in self.files.items() if r.status == "indexed"}

    def chunk_at(self, path: str, line: int) -> int | None:
        """The position of the chunk of ``path`` that holds ``line``, if any."""
        positions = self.by_path.get(path)
        if not positions:
            return None
        starts = [self.chunks[i].start_line for i in positions]
        k = bisect.bisect_right(starts, line) - 1
        if k >= 0 and self.chunks[positions[k]].end_line >= line:
            return positions[k]
        return None

    def file_lines(self, path: str) -> Mapping[int, str]:
        """The lines of ``path`` as indexed, by number, up to its last chunk's end.

        Byte for byte the file's lines (``\\r``, tabs and trailing spaces
        kept): chunks hold every line that is not empty, so a line outside
        them is exactly "". Empty when ``path`` has no chunks. Read-only, and
        shared: the view keeps the maps of the files read last.
        """
        return self._file(path)[0]

    def lines(self, path: str, start: int, end: int) -> str | None:
        """Lines ``start..end`` of ``path`` as indexed, joined by "\\n"; None past its end."""
        got, last = self._file(path)
        if not got or end > last:
            return None
        return "\n".join(got.get(n, "") for n in range(start, end + 1))

    def _file(self, path: str) -> tuple[Mapping[int, str], int]:
        """The lines of ``path`` and its last line number, from the memo or its chunks."""
        with self._lines_lock:
            got = self._lines.get(path)
            if got is not None:
                self._lines.move_to_end(path)
                return got
        positions = self.by_path.get(path)
        if not positions:  # not kept: the path may come from a request
            return _NO_LINES, 0
        # Built outside the lock: a race builds one file twice, and both are equal.
        last = max(self.chunks[i].end_line for i in positions)
        out = dict.fromkeys(range(1, last + 1), "")
        for i in positions:
            c = self.chunks[i]
            out.update(enumerate(c.text.split("\n"), start=c.start_line))
        got = (MappingProxyType(out), last)
        with self._lines_lock:
            if path not in self._lines:
                self._lines[path] = got
                self._lines_total += last
            self._lines.move_to_end(path)
            while len(self._lines) > LINES_KEPT or (
                self._lines_total > LINES_KEPT_TOTAL and len(self._lines) > 1
            ):
                self._lines_total -= self._lines.popitem(last=False)[1][1]
        return got

    def symbols_of(self, path: str) -> list[Symbol]:
        """The definitions of ``path`` by start line, an outer one before an inner one."""
        if self._symbols_by_path is None:  # built on first use; a race builds it twice
            by_path: dict[str, list[Symbol]] = defaultdict(list)
            for s in self.symbols:
                by_path[s.path].append(s)
            for syms in by_path.values():
                syms.sort(key=lambda s: (s.start_line, -s.end_line))
            self._symbols_by_path = dict(by_path)
        return self._symbols_by_path.get(path, [])

    def resolver(self) -> Resolver:
        """Resolves references to definitions; built on first use (expand, symbols)."""
        if self._resolver is None:  # a race builds it twice
            self._resolver = Resolver(self.symbols, self.reader.imports(), self.file_lines)
        return self._resolver

    def symbol_position(self, symbol_id: str) -> int | None:
        """The position in ``symbols`` of the definition ``path::qualname``, if any."""
        if self._symbol_positions is None:  # built on first use; a race builds it twice
            self._symbol_positions = {s.id: i for i, s in enumerate(self.symbols)}
        return self._symbol_positions.get(symbol_id)

    def chunks_overlapping(self, path: str, start: int, end: int) -> list[int]:
        return [
            i
            for i in self.by_path.get(path, [])
            if self.chunks[i].start_line <= end and self.chunks[i].end_line >= start
        ]

    def nearest(self, query: npt.NDArray[np.float32], limit: int) -> list[tuple[int, float]]:
        """Chunk positions by cosine similarity to ``query`` (unit vectors): exact over
        the matrix, or the approximate index's answer (``ann``)."""
        if self.has_vector is None or not self.has_vector.any():
            return []
        if self.ann:
            # Foreign vectors may take places: ask for more until ``limit`` are this view's.
            ask = limit + min(self.ann_foreign, limit)
            positions = self._positions_of_hash()
            while True:
                got = self.reader.vector_search(query, ask, approximate=self.ann)
                out = [(i, sim) for h, sim in got for i in positions.get(h, ())]
                if len(out) >= limit or len(got) < ask or ask >= limit + self.ann_foreign:
                    return out[:limit]
                ask = min(2 * ask, limit + self.ann_foreign)
        if self.vectors is None:
            return []
        sims = self.vectors @ query.astype(np.float32)
        sims[~self.has_vector] = -2.0
        k = min(limit, len(sims))
        top = np.argpartition(-sims, k - 1)[:k]
        top = top[np.argsort(-sims[top])]
        return [(int(i), float(sims[i])) for i in top if self.has_vector[i]]

    def cosines(
        self, positions: Sequence[int], query: npt.NDArray[np.float32]
    ) -> npt.NDArray[np.float32] | None:
        """The cosine similarity of each of these chunks to ``query`` (0 where a chunk
        has no vector); None without vectors."""
        if self.has_vector is None:
            return None
        q = query.astype(np.float32)
        if self.ann:
            has = self.has_vector
            got = self.reader.vectors_of([self.chunks[i].content_hash for i in positions if has[i]])
            cos = np.zeros(len(positions), dtype=np.float32)
            for row, i in enumerate(positions):
                v = got.get(self.chunks[i].content_hash)
                if v is not None:
                    cos[row] = float(v @ q)
            return cos
        if self.vectors is None:
            return None
        idx = np.asarray(positions, dtype=np.int64)
        cos = self.vectors[idx] @ q
        cos[~self.has_vector[idx]] = 0.0
        return cos

    def _positions_of_hash(self) -> dict[str, list[int]]:
        if self._hash_positions is None:
            out: dict[str, list[int]] = defaultdict(list)
            for i, c in enumerate(self.chunks):
                out[c.content_hash].append(i)
            self._hash_positions = dict(out)
        return self._hash_positions


def _history(reader: RepoReader) -> tuple[History, tuple[Blobs, tuple[int, int, int] | None]]:
    """The git history stored for ``reader``'s commit (EMPTY, with a warning, when
    absent or unreadable: a query never fails for it) and its file's stamp."""
    meta, blobs = reader.meta, reader.blobs
    stamp = _stamp(blobs, meta.name)
    if meta.commit is None:
        return History.EMPTY, (blobs, stamp)  # not a git work tree: nothing to read
    got = _read_history(blobs, meta.name, meta.root, meta.commit)
    if got is None:
        log.warning(
            "no git history stored for this commit: ranking goes without it until an index run",
            extra={"repo": meta.name, "commit": meta.commit},
        )
    return got or History.EMPTY, (blobs, stamp)


def _read_history(blobs: Blobs, name: str, root: str, head: str | None) -> History | None:
    """The history of index ``name`` if it is of ``root`` (and ``head``, unless None)."""
    try:
        got = load(blobs, name, root=root, head=head)
    except ValueError as exc:
        log.warning(
            "git history unreadable: ranking goes without it; the next index run reads it again",
            extra={"repo": name, "why": str(exc)},
        )
        return History.EMPTY
    return got


def _stamp(blobs: Blobs, name: str) -> tuple[int, int, int] | None:
    try:
        return blobs.stamp(history_key(name))
    except Exception:  # OSError, or Arrow's own for a store it cannot reach: no history
        log.warning("git history not reachable", extra={"repo": name}, exc_info=True)
        return None


def _checked(chunks: Sequence[Chunk]) -> tuple[list[Chunk], dict[str, str]]:
    """The chunks whose text matches their content hash, and the files of those that
    do not (every chunk of such a file left out), with the lines that failed."""
    failed: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for c in chunks:
        text = embed_text(c.header, c.text).encode("utf-8", "surrogatepass")
        if hashlib.sha256(text).hexdigest() != c.content_hash:
            failed[c.path].append((c.start_line, c.end_line))
    if not failed:
        return list(chunks), {}
    damaged = {
        path: "stored text fails its content hash at lines "
        + ", ".join(f"{a}-{b}" for a, b in sorted(spans))
        for path, spans in failed.items()
    }
    log.error("index text fails its content hash", extra={"files": sorted(damaged)[:20]})
    return [c for c in chunks if c.path not in failed], damaged


def _nodes_of(c: Chunk, graph: CodeGraph) -> list[int]:
    keys = [node_key(c.path, q) for q in c.symbols] or [node_key(c.path, None)]
    return [graph.index[k] for k in keys if k in graph.index]


def _align_vectors(
    reader: RepoReader, chunks: Sequence[Chunk]
) -> tuple[npt.NDArray[np.float32] | None, npt.NDArray[np.bool_] | None, AnnIndex | None, int]:
    """(matrix, which chunks have a vector, the approximate index that answers if any,
    how many stored vectors are no chunk's): with the index, only the hashes are read."""
    if (ann := reader.ann()) is not None:
        held = set(reader.vector_hashes() or ())
        has = np.array([c.content_hash in held for c in chunks], dtype=bool)
        return None, has, ann, len(held - {c.content_hash for c in chunks})
    stored = reader.vectors()
    if stored is None:
        return None, None, None, 0
    hashes, matrix = stored
    row = {h: i for i, h in enumerate(hashes)}
    out = np.zeros((len(chunks), matrix.shape[1]), dtype=np.float32)
    has = np.zeros(len(chunks), dtype=bool)
    for i, c in enumerate(chunks):
        j = row.get(c.content_hash)
        if j is not None:
            out[i] = matrix[j]
            has[i] = True
    return out, has, None, 0
