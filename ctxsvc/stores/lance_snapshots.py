"""Branch snapshots: the index versions kept for branches the working tree left.

When a run commits on another branch than the row it replaces (or on another
commit, when HEAD is detached), that row is kept inside the new one
(``IndexMeta.snapshots``, most recently left first, at most
``Settings.branch_snapshots``; the least recently left goes first). It is
written in the same atomic merge of the ``repos`` row as the run's own pins,
so no crash leaves a snapshot whose versions were never protected, nor
protection for a snapshot that was never written.

For as long as the committed row keeps it, a snapshot protects:

- its table versions: a prune keeps every version at least as young as the
  oldest one a kept snapshot pins (Lance prunes by age; a Lance tag would make
  the prune fail rather than skip the version), so an evicted snapshot's
  versions go at the next prune after the row drops it;
- the vectors of its chunks: stale-vector deletion spares every content hash
  a kept snapshot's chunks use, so that a switch back embeds nothing either
  branch had.

A snapshot is kept only while every table it names is one of the row's own:
a rebuild (a new set of tables) or a re-embed (a new vectors table) releases
them all, and the tables they named are retired with the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ctxsvc.errors import BranchNotIndexed, CtxError
from ctxsvc.models import place
from ctxsvc.stores.lance_reader import TRANSIENT, cause, open_pinned
from ctxsvc.stores.lance_schema import IndexMeta

if TYPE_CHECKING:
    from ctxsvc.stores.lance import LanceStore

log = logging.getLogger("ctxsvc.stores.lance")
# Clock slack when keeping versions by age (Lance stamps versions in local time).
SNAPSHOT_MARGIN = timedelta(minutes=1)
SHORT_COMMIT = 7  # the shortest commit prefix that names a detached snapshot


def carry(
    previous: IndexMeta | None,
    branch: str | None,
    commit: str | None,
    keep: int,
    *,
    settled: bool = True,
) -> tuple[IndexMeta, ...]:
    """The snapshots a run on ``branch`` at ``commit`` keeps over ``previous``, the row it
    replaces: that row itself when it was elsewhere, then the ones it kept, at most ``keep``
    (the least recently left dropped first). None of the place the run is on. A run that
    saw HEAD move (not ``settled``) keeps no new one: it cannot tell where ``previous``
    ended; nor is a row kept whose own run saw HEAD move."""
    if previous is None or keep <= 0:
        return ()
    here = branch or commit
    left = list(previous.snapshots)
    elsewhere = previous.place is not None and previous.place != here
    if elsewhere and settled and not previous.head_moved:
        left.insert(0, replace(previous, snapshots=(), retired={}))
    out: list[IndexMeta] = []
    seen = {here}
    for snap in left:
        if snap.place not in seen:
            out.append(snap)
            seen.add(snap.place)
    return tuple(out[:keep])


def usable(snapshots: Sequence[IndexMeta], tables: Mapping[str, str]) -> tuple[IndexMeta, ...]:
    """The snapshots whose every table is one of ``tables`` (table -> full name)."""
    return tuple(s for s in snapshots if all(tables.get(t) == s.table(t) for t in s.versions))


def find(meta: IndexMeta, branch: str) -> IndexMeta | None:
    """The version of ``meta`` (its own row or a snapshot) of ``branch``: a branch name,
    or a commit (a prefix of ``SHORT_COMMIT`` digits at least) of any of them, ``meta``'s
    own first."""
    for m in (meta, *meta.snapshots):
        if m.place == branch:
            return m
    if len(branch) < SHORT_COMMIT:
        return None
    for m in (meta, *meta.snapshots):
        if m.commit and m.commit.startswith(branch.lower()):
            return m
    return None


def describe(m: IndexMeta) -> str:
    """Where ``m`` is, in words: "branch main, commit 1a2b3c4d5e6f", "detached, commit ..."."""
    return place(m.branch, m.commit)


def not_kept(meta: IndexMeta, branch: str) -> BranchNotIndexed:
    """The error for a query of ``branch``, which ``meta`` keeps no version of."""
    kept = [f"{describe(meta)} (the working tree)"]
    kept += [f"{describe(s)} (indexed {s.indexed_at})" for s in meta.snapshots]
    return BranchNotIndexed(
        f"index {meta.name!r} keeps no version of branch {branch!r}",
        hint="kept: " + "; ".join(kept) + ". Ask for one of those (a detached one by its "
        "commit), or check out the branch and run `ctxsvc index` on it",
    )


def kept_hashes(
    store: LanceStore, snapshots: Sequence[IndexMeta]
) -> tuple[set[str] | None, list[tuple[IndexMeta, str]]]:
    """The content hashes the chunks of ``snapshots`` use, and the snapshots that cannot
    be read (and why), which the commit drops: they would fail every query of their branch
    and, kept, would have to spare every vector. The hashes are None when a read failed
    for want of a resource (then no vector may be deleted as stale this time)."""
    out: set[str] = set()
    lost: list[tuple[IndexMeta, str]] = []
    for snap in snapshots:
        try:
            table = open_pinned(store, snap, "chunks")
            got = table.search().select(["content_hash"]).limit(None).to_arrow()
        except CtxError:
            raise
        except Exception as exc:  # Unreadable, or what Lance raises (see lance_reader)
            why = cause(exc)
            if any(m in why for m in TRANSIENT):
                log.warning(
                    "a branch snapshot's chunks cannot be read now: no vector deleted as stale",
                    extra={"repo": snap.name, "branch": snap.place, "error": why},
                )
                return None, []
            lost.append((snap, why))
            continue
        out.update(got.column("content_hash").to_pylist())
    return out, lost


def dropped_note(name: str, lost: Sequence[tuple[IndexMeta, str]]) -> list[str]:
    """What a commit that drops the unreadable snapshots ``lost`` says of them."""
    return [
        f"the snapshot of {describe(s)} of index {name!r} cannot be read ({why}): dropped; "
        "check out that branch and run `ctxsvc index` to index it again"
        for s, why in lost
    ]


def keep_age(table: Any, full: str, part: str, snapshots: Sequence[IndexMeta]) -> timedelta:
    """How old the versions a prune of ``table`` (``full``, the index's table ``part``)
    keeps must be at least, so that every version a kept snapshot pins stays."""
    pinned = {s.versions[part] for s in snapshots if part in s.versions and s.table(part) == full}
    if not pinned:
        return timedelta(0)
    try:
        stamps = [v["timestamp"] for v in table.list_versions() if v["version"] in pinned]
    except Exception as exc:  # as above: then keep every version this time
        log.warning("listing versions failed: nothing pruned", extra={"error": cause(exc)})
        return timedelta(days=36500)
    if not stamps:
        return timedelta(0)
    oldest: datetime = min(stamps)
    now = datetime.now(UTC)
    if oldest.tzinfo is not None:
        return now - oldest + SNAPSHOT_MARGIN
    # Naive: Lance's local time (an hour that DST repeats is taken at its first, the older
    # reading). Read as UTC too: the longer age is the safe one.
    local, utc = now - oldest.astimezone(UTC), now - oldest.replace(tzinfo=UTC)
    return max(local, utc) + SNAPSHOT_MARGIN
