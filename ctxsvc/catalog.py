"""The catalog of indexes: resolve, index, load views, freshness, status, drop.

Every other part reads an index through the catalog: :meth:`Catalog.current`
gives the loaded view of an index with what changed on disk since it was
built (re-indexing first when asked). Index runs are published: a listener
subscribed with :meth:`Catalog.subscribe` sees the view before and after each
run of a repository it watches (the workspace log turns that into renamed and
removed symbols).
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ctxsvc.branches import BranchViews, head_moved
from ctxsvc.checkpoints import IndexFacts
from ctxsvc.errors import (
    InvalidPath,
    InvalidRequest,
    ReadOnly,
    RepoNotFound,
    RootChanged,
    StoreCorrupt,
    StoreError,
)
from ctxsvc.indexers.discover import discover, root_identity
from ctxsvc.indexers.embed import Embedder
from ctxsvc.indexing import NullReporter, Reporter, index_repository
from ctxsvc.limits import NAME
from ctxsvc.models import BranchSnapshot, Freshness, IndexSummary, RepoStatus, Symbol
from ctxsvc.settings import Settings
from ctxsvc.stores.lance import IndexMeta, LanceStore, OutdatedIndex
from ctxsvc.stores.locks import FileLock, held
from ctxsvc.tokens import TokenCounter
from ctxsvc.vector_fill import Filler
from ctxsvc.view import RepoView
from ctxsvc.views import Views, trim_heap

log = logging.getLogger(__name__)
ADDED_TTL_SECONDS = 2.0  # how stale the list of added files may be (changed files: never)
REFRESH_EMBEDS = 16  # chunks a query's refresh embeds itself when nothing fills behind


class IndexListener(Protocol):
    """Told of each index run of a repository it watches."""

    def watches(self, repo: str) -> bool:
        """Whether runs of ``repo`` concern it (its view before a run is loaded only then)."""

    def indexed(self, before: RepoView, after: RepoView) -> None:
        """``repo`` was re-indexed from ``before`` to ``after``."""


@dataclass(frozen=True)
class Current:
    """An index as a query sees it: its view, its freshness and what is degraded."""

    meta: IndexMeta
    view: RepoView
    fresh: Freshness
    degraded: list[str]
    refreshed: tuple[str, ...] = ()  # files changed on disk that a refresh re-indexed first


def repo_name_for(root: Path) -> str:
    """A valid index name derived from a directory name."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", root.name).strip("-.") or "repo"
    return name[:64]


class Catalog:
    """The indexes under one data directory.

    Safe to share between threads: a view loads once per index generation.
    ``embedder`` (optional) embeds chunks when indexing; without it an index
    run stores full text and symbols and marks its vectors missing. A run
    commits before it embeds; with ``fill_behind`` (a server) the vectors then
    fill in a background thread whenever a run leaves some missing, else only
    when the caller waits for them (``index(wait=True)``).
    """

    def __init__(
        self,
        settings: Settings,
        store: LanceStore,
        tokens: TokenCounter,
        embedder: Embedder | None = None,
        *,
        fill_behind: bool = False,
    ) -> None:
        self.settings = settings
        self.store = store
        self.tokens = tokens
        self.embedder = embedder
        self.filler = Filler(store, settings, embedder) if embedder is not None else None
        self.fill_behind = fill_behind
        self._listeners: list[IndexListener] = []
        self.views = Views(store, settings.view_wait_ms / 1000)
        self._checked: set[tuple[str, object]] = set()  # (name, pins) opened by damaged()
        # (name, generation) -> when the added files were listed, and them
        self._added: dict[tuple[str, int], tuple[float, tuple[str, ...]]] = {}
        self.branches = BranchViews(store)

    def subscribe(self, listener: IndexListener) -> None:
        """Tell ``listener`` of every later index run of a repository it watches."""
        self._listeners.append(listener)

    # -- index runs -------------------------------------------------------------------

    def index(
        self,
        path: str | Path,
        name: str | None = None,
        *,
        vectors: bool = True,
        reembed: bool = False,
        rebuild: bool = False,
        reporter: Reporter | None = None,
        wait: bool = True,
        existing: bool = False,
    ) -> IndexSummary:
        """Index (or re-index incrementally) the directory at ``path``.

        ``path`` may also name an index (``ctxsvc index --rebuild NAME``). A
        rebuild parses everything again into new tables and swaps readers over
        at its commit (see ``index_repository``): views keep answering from the
        old index until then, and a damaged index is repaired. The index
        answers from its commit on; with ``wait`` this call then embeds the
        chunks that have no vector yet, else they fill in behind (with
        ``fill_behind``) or wait for a later run. With ``existing`` it only
        re-indexes an index of ``path`` (``RepoNotFound`` once it is dropped: a watcher's).
        """
        self._writable("index")
        root, name = self.index_target(path, name, rebuild=rebuild)
        # An index of an older schema is rebuilt by the run (index_repository)
        # and has no view to compare with; nor has a rebuild (it may re-point the name).
        outdated = self.store.outdated(name) is not None
        watching = [li for li in self._listeners if li.watches(name)]
        meta = self.store.meta(name) if watching and not outdated and not rebuild else None
        before = self.view(meta) if meta is not None else None
        status = "complete" if vectors and self.embedder else ("missing" if vectors else "disabled")
        summary = index_repository(
            self.store, root, name, self.settings, self.tokens,
            self.embedder if vectors else None, vectors=status, reembed=reembed, rebuild=rebuild,
            reporter=reporter, existing=existing,
        )  # fmt: skip
        self._forget_added(name)
        trim_heap()  # a run's parse trees and chunks are garbage now
        # A view held here is loaded again now: a query after the run sees what it wrote.
        if before is not None or self.views.holds(name):
            after = self.view(self.resolve(name))
            if before is not None:
                for listener in watching:
                    listener.indexed(before, after)
        fill = vectors and (
            summary.vectors == "partial"
            or (
                summary.vectors == "complete"
                and (wait or self.fill_behind)
                and self.filler is not None
                and self.filler.index_wanted(name)
            )
        )
        if fill and self.filler is not None:
            if wait:
                summary = self.filler.now(summary, reporter or NullReporter())
            elif self.fill_behind:
                self.filler.behind(name)
        return summary

    def fill_pending(self) -> list[str]:
        """Fill behind the vectors every index of this model still lacks (a run killed
        mid-embedding, or one that left them to a server); the names it took on."""
        if self.filler is None or not self.fill_behind:
            return []
        names = [
            m.name
            for m in self.store.list_meta()
            if m.vectors == "partial" and m.model == self.filler.embedder.name
        ]
        for name in names:
            self.filler.behind(name)
        return names

    def index_target(
        self, path: str | Path, name: str | None = None, *, rebuild: bool = False
    ) -> tuple[Path, str]:
        """The root and index name that :meth:`index` would use, checked without indexing.

        Raises what ``index`` raises for a bad path or name, so that an adapter
        can refuse a request before it starts a background run.
        """
        known = self._named(path) if rebuild else None
        if known is not None:
            # By name, a rebuild repairs: it must not follow a root replaced since.
            _same_root(known)
            root, name = _directory(known.root), name or known.name
        else:
            root = _directory(path)
            name = name or repo_name_for(root)
        if not NAME.match(name):
            raise InvalidRequest(
                f"invalid index name {name!r}",
                hint="use letters, digits, '.', '_' or '-', 64 characters at most",
            )
        existing = self.store.find(name)
        if existing is not None and Path(existing.root) != root and not rebuild:
            if Path(existing.root).resolve() == root:
                raise RootChanged(
                    f"{existing.root} is not the directory that was indexed: it is now a link "
                    f"to {root}; nothing under it was read",
                    hint=f"if it was replaced on purpose, index it again with "
                    f"`ctxsvc index {existing.root} --rebuild`",
                )
            raise InvalidRequest(
                f"the name {name!r} already indexes {existing.root}",
                hint="choose another name, or rebuild (--rebuild) to re-point it",
            )
        return root, name

    def _forget_added(self, name: str, *, before: int | None = None) -> None:
        """Drop the added files listed for ``name`` (those of generations before ``before``)."""
        for key in [k for k in list(self._added) if k[0] == name]:  # list(): other threads add
            if before is None or key[1] < before:
                self._added.pop(key, None)

    def _named(self, path: str | Path) -> IndexMeta | OutdatedIndex | None:
        """The index named ``path``, when no such file or directory exists (what
        ``ctxsvc index --rebuild NAME`` means)."""
        text = str(path)
        if not NAME.match(text) or Path(text).exists():
            return None
        return self.store.find(text)

    def damaged(self) -> dict[str, str]:
        """Indexes found damaged when opened or read (name -> what is wrong, one line),
        until a run commits them again (``ctxsvc index --rebuild NAME`` repairs one).
        A loaded view whose stored text fails its content hashes counts too.
        Each committed index is opened (and its files checked) once per commit,
        so that a damaged index is named before a query meets it."""
        for meta in self.store.list_meta():
            pins = (meta.name, meta.pins())
            if pins in self._checked:
                continue
            try:
                self.store.reader(meta.name)  # opening checks every pinned table's files
            except StoreCorrupt:
                pass  # the store remembers it: listed below
            except StoreError:
                continue  # transient: checked again next time
            self._checked.add(pins)
        found = self.store.damaged()
        for view in self.views.held():
            if view.damaged and view.meta.name not in found:
                current = self.store.current(view.meta.name)
                if current is not None and current.pins() == view.meta.pins():
                    found[view.meta.name] = _damage_notes(view.meta.name, view.damaged)[0]
        return dict(sorted(found.items()))

    def drop(self, name_or_path: str) -> str:
        """Delete an index and forget its cached view; returns its name.

        Fails with :class:`IndexBusy` while a run holds the repository's lock,
        so an index is never deleted under a running indexer.
        """
        self._writable("delete")
        name = self._find(name_or_path).name  # an outdated index can be dropped too
        with FileLock(self.settings.locks_path / f"{name}.lock", f"index {name!r}"):
            self.store.drop(name)
        self.views.forget(name)
        self._forget_added(name)
        return name

    def _writable(self, what: str) -> None:
        if self.settings.read_only:
            raise ReadOnly(
                f"cannot {what} an index here: this is a read-only replica (CTXSVC_READ_ONLY)",
                hint="the indexer host writes: POST /v1/repos here queues an index job it "
                "runs; delete, or run the command, there",
            )

    # -- reading ----------------------------------------------------------------------

    def repos(self) -> list[IndexMeta]:
        """Every readable index, by name (one of another schema version is left out)."""
        return self.store.list_meta(stale_ok=True)

    def names(self) -> list[str]:
        """Every index name, those of another schema version too: what a status lists."""
        return sorted([m.name for m in self.repos()] + [o.name for o in self.store.list_outdated()])

    def resolve(self, name_or_path: str) -> IndexMeta:
        """The index named ``name_or_path``, or the one whose root is that directory.

        ``StoreCorrupt``, with the rebuild hint, if that index is of another
        schema version; ``RepoNotFound`` if there is none.
        """
        got = self._find(name_or_path)
        if isinstance(got, OutdatedIndex):
            raise got.error()
        return got

    def _find(self, name_or_path: str) -> IndexMeta | OutdatedIndex:
        # A read: on an object store, the registry as read up to a second ago will do.
        got = self.store.find(name_or_path, stale_ok=True) if NAME.match(name_or_path) else None
        if got is not None:
            return got
        candidate = _expand(name_or_path)
        if candidate is not None and candidate.is_dir():
            root = str(candidate.resolve())
            every: list[IndexMeta | OutdatedIndex] = [*self.store.list_meta(stale_ok=True)]
            every.extend(self.store.list_outdated(stale_ok=True))  # raises for its root only
            for m in every:
                if m.root == root:
                    return m
        raise RepoNotFound(
            f"no index named or rooted at {name_or_path!r}",
            hint="run `ctxsvc index PATH` first; `ctxsvc status` lists what is indexed",
        )

    def view(self, meta: IndexMeta, *, wait: bool = True) -> RepoView:
        """The in-memory view of ``meta``'s generation, loaded once (see ``Views.get``:
        without ``wait``, possibly of the generation before while this one loads)."""
        return self.views.get(meta, wait=wait)

    def current(
        self, name_or_path: str, *, refresh: bool = False, branch: str | None = None
    ) -> Current:
        """The index and how fresh it is; with ``refresh``, files changed on disk re-indexed first.

        With ``branch`` (or a detached commit) other than the working tree's, the
        snapshot the index keeps of it, as stored (``BranchNotIndexed`` if none).
        """
        meta = self.resolve(name_or_path)
        kept = self.branches.view(meta, branch) if branch is not None else None
        if kept is not None:
            view, note = kept
            degraded = [note, *_damage_notes(meta.name, view.damaged)]
            return Current(view.meta, view, Freshness((), (), ()), degraded)
        # A query is answered from the view held while a new generation loads; the
        # files that generation changed are stale to it, and listed as such.
        view = self.view(meta, wait=refresh)  # a refresh starts from the newest
        fresh = self.freshness(view.meta, view=view)
        refreshed: tuple[str, ...] = ()
        read_only: list[str] = []
        if refresh and fresh.stale and self.settings.read_only:
            read_only.append(
                "refresh: this server is a read-only replica (CTXSVC_READ_ONLY): the files "
                "changed since the index are listed as such; a refresh job "
                f"(POST /v1/repos/{meta.name}/refresh), run by the indexer host, brings them in"
            )
        elif refresh and fresh.stale:
            # A query does not wait for embedding: the few chunks of a small edit are
            # embedded at once where nothing fills behind (the CLI), the rest later.
            summary = self.index(
                meta.root, meta.name, vectors=meta.vectors != "disabled", wait=False
            )
            if (
                not self.fill_behind
                and self.filler is not None
                and 0 < summary.vectors_missing <= REFRESH_EMBEDS
            ):
                self.filler.now(summary, NullReporter())
            meta = self.resolve(meta.name)
            view = self.view(meta)  # what this request indexed: waited for
            stale, fresh = fresh.all, self.freshness(meta, full=True, view=view)
            refreshed = tuple(p for p in stale if p not in fresh.all)
        degraded = [*fresh.degraded, *read_only, *_damage_notes(meta.name, view.damaged)]
        if view.meta.generation < meta.generation:
            degraded.append(
                f"index: answered from generation {view.meta.generation} while generation "
                f"{meta.generation}, committed since, loads; the files it changed are listed "
                "as changed since"
            )
        return Current(view.meta, view, fresh, degraded, refreshed)

    def facts(self, repo: str) -> IndexFacts:
        """File hashes and symbols of ``repo`` now; empty when it is no longer indexed, or
        its index is of an older schema (a checkpoint or an event must not wait on a rebuild)."""
        try:
            view = self.view(self.resolve(repo))
        except (RepoNotFound, StoreCorrupt):
            return IndexFacts({}, {})
        symbols: dict[str, list[Symbol]] = {}
        for sym in view.symbols:
            symbols.setdefault(sym.path, []).append(sym)
        return IndexFacts(view.indexed_hashes(), symbols)

    def freshness(
        self, meta: IndexMeta, *, full: bool = False, view: RepoView | None = None
    ) -> Freshness:
        """Files changed, added or deleted on disk since ``meta`` was indexed (or since
        ``view``'s generation, which is then ``meta``'s).

        Changed and deleted files are found by a stat of every indexed file, on
        every call; added files need a discovery walk, which is cached for
        ``ADDED_TTL_SECONDS`` unless ``full``.
        """
        root = Path(meta.root)
        if not root.is_dir():
            return Freshness((), (), (), (f"root {meta.root} no longer exists",))
        expect = _identity(meta)
        try:
            _same_root(meta)
        except (InvalidPath, OSError) as exc:
            # Nothing under a replaced root is stat'ed or listed: it may be a link to /etc.
            why = exc.message if isinstance(exc, InvalidPath) else str(exc)
            return Freshness((), (), (), (
                f"root changed: {why}; answers come from the index as it was (index it "
                f"again with `ctxsvc index {meta.root} --rebuild` if it was replaced on "
                "purpose)",
            ))  # fmt: skip
        files = (view if view is not None else self.view(meta)).files
        moved = head_moved(meta)  # a checkout or a commit with no file changed is stale too
        notes = (moved,) if moved else ()
        changed: list[str] = []
        deleted: list[str] = []
        base = str(root) + os.sep
        for path, rec in files.items():
            try:
                st = os.stat(base + path)  # not pathlib: this runs on every query
            except OSError:
                if rec.status == "indexed":
                    deleted.append(path)
                continue
            if rec.status == "indexed" and (st.st_size, st.st_mtime_ns) != (rec.size, rec.mtime_ns):
                changed.append(path)
        cached = self._added.get((meta.name, meta.generation))
        if full or cached is None or time.monotonic() - cached[0] > ADDED_TTL_SECONDS:
            try:
                found = discover(root, max_file_bytes=self.settings.max_file_bytes, expect=expect)
            except Exception as exc:  # freshness is advice: a failed walk degrades, never fails
                log.warning("looking for added files failed", exc_info=True)
                why = f"freshness: added files unknown ({type(exc).__name__}: {exc})"
                return Freshness(
                    tuple(sorted(changed)), (), tuple(sorted(deleted)), (why, *notes), bool(notes)
                )
            added = tuple(f.path for f in found.files if f.path not in files)
            self._added[(meta.name, meta.generation)] = (time.monotonic(), added)
            self._forget_added(meta.name, before=meta.generation - 1)  # the view held may answer
        else:
            added = cached[1]
        return Freshness(tuple(sorted(changed)), added, tuple(sorted(deleted)), notes, bool(notes))

    def status(self, name_or_path: str, *, full: bool = True) -> RepoStatus:
        """What is indexed, how fresh it is, and what is degraded; without ``full``, files
        added on disk come from the cached discovery walk (``freshness``).

        An index of another schema version is not read: its status is what
        its row says, degraded as needing a rebuild, with the command to run;
        so is a damaged one, degraded as damaged.
        """
        meta = self._find(name_or_path)
        if isinstance(meta, OutdatedIndex):
            return _needs_rebuild(meta)
        try:
            fresh = self.freshness(meta, full=full)
        except StoreCorrupt as exc:  # a damaged index still has a status: what its row says
            fresh = Freshness((), (), (), (f"damaged: {exc.message}; {exc.hint}",))
        degraded = list(fresh.degraded)
        share = meta.vectors_share()
        if meta.vectors == "partial":
            filling = (self.filler is not None and self.filler.filling(meta.name)) or held(
                self.settings.locks_path / f"{meta.name}.fill.lock"
            )
            degraded.append(
                f"vectors: partial {meta.vectors_percent()}"
                + ("; filling in" if filling else "; `ctxsvc index` fills in the rest")
            )
        elif meta.vectors != "complete":
            degraded.append(f"vectors {meta.vectors}: vector search is off or partial")
        problem = self.filler.problem(meta.name) if self.filler is not None else None
        if problem and meta.vectors != "complete":
            degraded.append(f"vectors: filling stopped: {problem}")
        stats = meta.stats
        return RepoStatus(
            name=meta.name, root=meta.root, commit=meta.commit, indexed_at=meta.indexed_at,
            files=int(stats.get("files", 0)), chunks=int(stats.get("chunks", 0)),
            symbols=int(stats.get("symbols", 0)), model=meta.model, dimension=meta.dimension,
            tokenizer=meta.tokenizer, vectors=meta.vectors, changed=fresh.changed,
            added=fresh.added, deleted=fresh.deleted, degraded=tuple(degraded),
            skipped=dict(stats.get("skipped", {})), version=meta.generation, vectors_share=share,
            branch=meta.branch, snapshots=tuple(
                BranchSnapshot(s.branch, s.commit, s.indexed_at, s.generation)
                for s in meta.snapshots
            ),
        )  # fmt: skip


def _needs_rebuild(old: OutdatedIndex) -> RepoStatus:
    written = old.written  # another version's metadata: read with care
    raw = written.get("stats")
    stats: dict[str, Any] = raw if isinstance(raw, dict) else {}
    why = old.error()
    return RepoStatus(
        name=old.name, root=old.root, commit=written.get("commit"),
        indexed_at=str(written.get("indexed_at", "")), files=int(stats.get("files", 0)),
        chunks=int(stats.get("chunks", 0)), symbols=int(stats.get("symbols", 0)),
        model=old.model, dimension=old.dimension, tokenizer=str(written.get("tokenizer", "")),
        vectors=str(written.get("vectors", "missing")),
        degraded=(f"needs a rebuild: {why.message}; {why.hint}",),
        skipped=dict(stats.get("skipped", {})), version=int(written.get("generation", 0)),
    )  # fmt: skip


def _same_root(meta: IndexMeta | OutdatedIndex) -> None:
    """``RootChanged`` unless ``meta``'s root is still the directory indexed: the same
    (device, inode) when its row says, and no link on the way (roots are stored resolved,
    so a row without the identity is still checked for a link)."""
    root = Path(meta.root)
    expect = _identity(meta) if isinstance(meta, IndexMeta) else None
    now = root.resolve()
    if now != root:
        raise RootChanged(
            f"{meta.root} is not the directory that was indexed: it is now a link to {now}; "
            "nothing under it was read",
            hint=f"if it was replaced on purpose, index it again with "
            f"`ctxsvc index {meta.root} --rebuild`",
        )
    if expect is not None and root_identity(root) != expect:
        raise RootChanged(
            f"{meta.root} is not the directory that was indexed (another directory is there "
            "now); nothing under it was read",
            hint=f"if it was replaced on purpose, index it again with "
            f"`ctxsvc index {meta.root} --rebuild`",
        )


def _identity(meta: IndexMeta) -> tuple[int, int] | None:
    """The (st_dev, st_ino) of ``meta``'s root as indexed, when its row says."""
    got = meta.root_identity
    return (got[0], got[1]) if len(got) == 2 else None


def _damage_notes(name: str, damaged: Mapping[str, str]) -> list[str]:
    """What a query says of the files its view refuses to serve (failed content checks)."""
    if not damaged:
        return []
    shown = "; ".join(f"{p}: {why}" for p, why in sorted(damaged.items())[:5])
    more = f"; and {len(damaged) - 5} more" if len(damaged) > 5 else ""
    return [
        f"index damaged: {len(damaged)} file(s) left out, their stored text changed since "
        f"it was indexed ({shown}{more}); run `ctxsvc index --rebuild {name}`"
    ]


def _directory(path: str | Path) -> Path:
    p = _expand(path)
    if p is None:
        raise InvalidPath(f"{path} names an unknown user's home directory")
    if not p.exists():
        raise InvalidPath(f"{p} does not exist")
    if not p.is_dir():
        raise InvalidPath(f"{p} is not a directory", hint="give the repository's root directory")
    return p.resolve()


def _expand(path: str | Path) -> Path | None:
    """``path`` with ``~`` expanded; None when it names an unknown user (``~nobody``)."""
    try:
        return Path(path).expanduser()
    except RuntimeError:
        return None
