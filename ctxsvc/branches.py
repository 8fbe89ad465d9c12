"""Answers from a branch snapshot: the index version kept for a branch the working tree left.

An index follows the working tree; when it moves to another branch (or
commit), the version it leaves is kept as a snapshot
(``ctxsvc.stores.lance_snapshots``). A query naming that branch is answered
from the snapshot's pinned tables: the text as it was stored then, never
refreshed from disk (the working tree holds another branch's files) and with
no freshness against it, and the answer says so.

Where HEAD is comes from the files under ``.git`` (``ctxsvc.indexers.gitref``): an
index run reads it at its start and at its commit, and a row whose run saw it
move is kept as no branch's snapshot; a query compares it with the row's, so
that a checkout or a commit with no file changed still makes the index stale.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

from ctxsvc.indexers.gitref import Head, read_head
from ctxsvc.models import place
from ctxsvc.stores.lance import IndexMeta, LanceStore, RepoReader
from ctxsvc.stores.lance_snapshots import SHORT_COMMIT, describe, find, not_kept
from ctxsvc.view import RepoView

VIEWS_KEPT = 2  # snapshot views held in memory (each is a whole index's view)


class BranchViews:
    """The views of branch snapshots, the last ``kept`` loaded held; safe across threads:
    concurrent first requests of one snapshot wait for one load (``load``)."""

    def __init__(
        self,
        store: LanceStore,
        kept: int = VIEWS_KEPT,
        *,
        load: Callable[[RepoReader], RepoView] = RepoView.load,
    ) -> None:
        self._store = store
        self._kept = kept
        self._load = load
        self._views: OrderedDict[tuple[str, str, object], RepoView] = OrderedDict()
        self._loading: dict[tuple[str, str, object], Future[RepoView]] = {}
        self._lock = threading.Lock()

    def view(self, meta: IndexMeta, branch: str) -> tuple[RepoView, str] | None:
        """The view of ``meta``'s snapshot of ``branch`` (a branch name, or a commit) and
        what an answer from it says; None when ``branch`` is where ``meta`` itself is, or
        where HEAD is now (the index, stale, answers for it). ``BranchNotIndexed`` when
        ``meta`` keeps no version of it."""
        snap = find(meta, branch)
        if snap is None:
            if names_head(read_head(Path(meta.root)), branch):
                return None
            raise not_kept(meta, branch)
        if snap is meta:
            return None
        key = (meta.name, snap.run_id, snap.pins())
        with self._lock:
            got = self._views.get(key)
            if got is not None:
                self._views.move_to_end(key)
                return got, note(meta, snap)
            loading = self._loading.get(key)
            mine = loading is None
            if loading is None:
                loading = self._loading[key] = Future()
        if not mine:
            return loading.result(), note(meta, snap)
        try:
            got = self._load(RepoReader(self._store, snap, snapshot=True))
        except BaseException as exc:
            with self._lock:
                del self._loading[key]
            loading.set_exception(exc)
            raise
        with self._lock:
            del self._loading[key]
            self._views[key] = got
            while len(self._views) > self._kept:
                self._views.popitem(last=False)
        loading.set_result(got)
        return got, note(meta, snap)


def note(meta: IndexMeta, snap: IndexMeta) -> str:
    """What an answer from ``snap`` says, ``meta`` being the index of the working tree."""
    return (
        f"branch snapshot: answered from {describe(snap)} as indexed {snap.indexed_at}, "
        f"not from the working tree, which is on {describe(meta)}; its text is as stored "
        "then (files changed on disk and refresh do not apply); expand what it omits with "
        "the same branch: impact, references and definition read the working tree's index, "
        "not this snapshot"
    )


def names_head(head: Head, branch: str) -> bool:
    """Whether ``branch`` (a branch name, or a commit prefix) is where ``head`` is."""
    if not head.known:
        return False
    if head.branch is not None and head.branch == branch:
        return True
    short = len(branch) >= SHORT_COMMIT
    return short and head.commit is not None and head.commit.startswith(branch.lower())


def head_moved(meta: IndexMeta) -> str | None:
    """What a freshness says when HEAD is no longer where ``meta`` was indexed; None when
    it is, or cannot be told (an index that saw no git, HEAD unreadable)."""
    if meta.place is None:
        return None
    head = read_head(Path(meta.root))
    if not head.moved_from(meta.branch, meta.commit):
        return None
    return (
        f"HEAD moved: indexed on {describe(meta)}, the working tree is on "
        f"{place(head.branch, head.commit)}; a refreshing query indexes it again"
    )
