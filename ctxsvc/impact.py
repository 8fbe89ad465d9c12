"""What a change reaches: a working diff's blast radius, and a symbol's dependents by depth.

Both walk the index's references as :mod:`ctxsvc.resolve` resolves them
(through receivers, imports and scopes): a link is ``resolved`` when the
resolver proved it, ``name`` when it only matches by name (a guess, marked as
one). A dependent is the definition a reference sits in; a reference at a
module's top level is a dependent of its own (the file), and the walk stops
there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from ctxsvc.candidates import find_definitions
from ctxsvc.diffs import WorkingDiff
from ctxsvc.errors import InvalidRequest
from ctxsvc.models import Dependent, Hit, Impact, Link, Links, Reference, Symbol
from ctxsvc.ranking import TEST_PATH
from ctxsvc.tokens import TokenCounter
from ctxsvc.view import RepoView

MAX_DEPTH = 5
MAX_PER_DEPTH = 500  # dependents listed at one depth (how many there are is said)
MAX_WHY = 4  # links said per item


@dataclass(frozen=True)
class DiffWeights:
    """How diff context ranks what a change reaches against what the query finds.

    A link scores by its distance from the change, a resolved link (first of
    each pair) over one matched by name only (second); an item's link score
    is its best link's. ``combine`` says how the query joins in: ``"sum"``
    adds ``query`` times the item's query score over the query's best (1.0
    for its top hit), so what both find comes first and a strong query hit
    outranks a weak link; ``"max"`` ranks by the better of the link score and
    ``query`` times the raw query score (before tuning: every link first).

    The defaults are the best of a small grid on the training repositories
    of ``benchmarks.training_set`` (``benchmarks.diff_context --weights``;
    README, "Diff-aware context"), never on the six held-out ones.
    """

    changed: float = 1.0  # the chunks the diff touches
    caller: tuple[float, float] = (0.8, 0.5)
    callee: tuple[float, float] = (0.7, 0.4)
    second: tuple[float, float] = (0.45, 0.25)  # callers of the callers
    test_bonus: float = 0.05
    cochange: float = 0.35  # times the share of the file's commits that change both
    # The query's own ranking is the stronger evidence of what else a task touches:
    # twice the weight of a changed chunk, links decide among what it ranks alike.
    query: float = 2.0
    combine: Literal["max", "sum"] = "sum"
    # Shares of the budget: the diff's text, and the chunks of the changed files that
    # rank by their links (the agent has those files; past the share only the query
    # ranks them). None: no cap.
    preface: float = 0.125
    own_files: float | None = 0.125


DIFF_WEIGHTS = DiffWeights()


def impact(view: RepoView, name: str, depth: int, limit: int = MAX_PER_DEPTH) -> Impact:
    """The dependents of the definitions ``name`` can mean, to ``depth`` levels; the first
    ``limit`` of each level are listed (resolved ones first) and followed."""
    if not 1 <= depth <= MAX_DEPTH:
        raise InvalidRequest(f"depth must be between 1 and {MAX_DEPTH}, got {depth}")
    if not 1 <= limit <= MAX_PER_DEPTH:
        raise InvalidRequest(f"limit must be between 1 and {MAX_PER_DEPTH}, got {limit}")
    targets = find_definitions(view, name)
    if not targets:
        raise InvalidRequest(
            f"{name!r} is defined nowhere in {view.meta.name!r}",
            hint="see `ctxsvc search` for the names it defines",
        )
    levels: list[tuple[Dependent, ...]] = []
    totals: list[int] = []
    seen = {view.symbols[i].id for i in targets}
    frontier = [(i, True) for i in targets]
    for d in range(1, depth + 1):
        found: dict[str, tuple[Dependent, int | None]] = {}
        sure_of = dict(frontier)
        for ref, target, sure in uses_of(view, list(sure_of)):
            parent_sure = sure_of[target]
            owner = enclosing(view, ref)
            key = ref.path if owner is None else view.symbols[owner].id
            if key in seen:
                continue
            both = sure and parent_sure
            dep = Dependent(
                d, key, ref.path, ref.line, ref.kind, view.symbols[target].id,
                "resolved" if both else "name", bool(TEST_PATH.search(ref.path)),
            )  # fmt: skip
            old = found.get(key)
            if old is None or (both and old[0].resolution == "name"):
                found[key] = (dep, owner)
        seen.update(found)
        ordered = sorted(
            found.values(), key=lambda x: (x[0].resolution != "resolved", x[0].path, x[0].line)
        )
        totals.append(len(ordered))
        levels.append(tuple(dep for dep, _ in ordered[:limit]))
        frontier = [
            (o, dep.resolution == "resolved") for dep, o in ordered[:limit] if o is not None
        ]  # what is not listed is not followed either
        if not frontier:
            break
    return Impact(
        view.meta.name, name, tuple(view.symbols[i].id for i in targets), depth, tuple(levels),
        tuple(totals), view.meta.commit,
    )  # fmt: skip


def uses_of(view: RepoView, targets: Sequence[int]) -> list[tuple[Reference, int, bool]]:
    """References that resolve (True) or match by name (False) to one of ``targets``,
    with the target; a definition's uses of itself are not listed."""
    resolver = view.resolver()
    want = set(targets)
    out: list[tuple[Reference, int, bool]] = []
    for name in dict.fromkeys(view.symbols[i].name for i in targets):
        for r in view.refs_by_name.get(name, []):
            meant = resolver.resolve(r)
            hit = sorted((not sure, i) for i, sure in meant.items() if i in want)
            if not hit:
                continue
            _, target = hit[0]
            own = view.symbols[target]
            if r.path == own.path and own.start_line <= r.line <= own.end_line:
                continue
            out.append((r, target, meant[target]))
    return out


def enclosing(view: RepoView, ref: Reference) -> int | None:
    """The position of the innermost definition ``ref`` sits in (None: the top level)."""
    best: Symbol | None = None
    for s in view.symbols_of(ref.path):
        if s.start_line <= ref.line <= s.end_line and s.kind != "constant":
            best = s  # by start line, outer first: the last to hold it is the innermost
    if best is None:
        return None
    return view.symbol_position(best.id)


def changed_definitions(view: RepoView, diff: WorkingDiff) -> list[int]:
    """Positions of the innermost definitions whose lines the diff touches."""
    out: list[int] = []
    for f in diff.files:
        touched = f.touched()
        if not touched or f.path not in view.files:
            continue
        hit = [
            s
            for s in view.symbols_of(f.path)
            if any(s.start_line <= n <= s.end_line for n in touched)
        ]
        for s in hit:
            # Changed itself: a touched line of its own, in none of its touched inner ones.
            inner = [
                t for t in hit
                if t is not s and s.start_line <= t.start_line and t.end_line <= s.end_line
            ]  # fmt: skip
            own = any(
                s.start_line <= n <= s.end_line
                and not any(t.start_line <= n <= t.end_line for t in inner)
                for n in touched
            )
            if own and (p := view.symbol_position(s.id)) is not None:
                out.append(p)
    return out


def diff_hits(
    view: RepoView,
    diff: WorkingDiff,
    query_hits: Iterable[Hit],
    weights: DiffWeights = DIFF_WEIGHTS,
    budget: int | None = None,
) -> list[Hit]:
    """Chunks for a change: what it changed, its callers and callees, their callers, tests
    and co-changed files, by distance and resolution, joined with what the query finds
    as ``weights`` say (``budget`` bounds the changed files' share)."""
    w = weights
    links: dict[int, tuple[float, list[str]]] = {}

    def add(pos: int | None, score: float, why: str) -> None:
        if pos is None or score <= 0:  # a weight of 0 turns a kind of link off
            return
        if TEST_PATH.search(view.chunks[pos].path) and score < w.changed:
            score += w.test_bonus
        old = links.get(pos)
        if old is None:
            links[pos] = (score, [why])
        else:
            keep = why in old[1] or len(old[1]) >= MAX_WHY
            links[pos] = (max(old[0], score), old[1] if keep else [*old[1], why])

    for f in diff.files:
        for n in sorted(f.touched()):
            add(view.chunk_at(f.path, n), w.changed, "changed")
    changed = changed_definitions(view, diff)
    names = {i: view.symbols[i].qualname for i in changed}
    callers: list[int] = []
    for ref, target, sure in uses_of(view, changed):
        add(view.chunk_at(ref.path, ref.line), w.caller[not sure], f"uses {names[target]}")
        if sure and (owner := enclosing(view, ref)) is not None and owner not in names:
            callers.append(owner)
    for ref, target, sure in uses_of(view, list(dict.fromkeys(callers))):
        add(
            view.chunk_at(ref.path, ref.line),
            w.second[not sure],
            f"uses a caller, {view.symbols[target].qualname}",
        )
    resolver = view.resolver()
    for i in changed:
        s = view.symbols[i]
        for ref in view.refs_by_path.get(s.path, []):
            if not s.start_line <= ref.line <= s.end_line:
                continue
            for t, sure in resolver.resolve(ref).items():
                callee = view.symbols[t]
                if t != i and t not in names:
                    add(view.chunk_at(callee.path, callee.start_line), w.callee[not sure],
                        f"called by {s.qualname}")  # fmt: skip
    for name in diff.removed_names():
        if view.defs_by_name.get(name.lower()) and any(
            view.symbols[i].name == name for i in view.defs_by_name[name.lower()]
        ):
            continue  # still defined (moved, or only its body changed)
        for ref in view.refs_by_name.get(name, []):
            add(view.chunk_at(ref.path, ref.line), w.caller[1], f"uses {name}, removed")
    ranked = list(query_hits)
    by_file: dict[str, int] = {}
    for h in ranked:
        by_file.setdefault(h.chunk.path, view.chunk_index[h.chunk.id])
    history = view.history
    for path in diff.paths:
        for other, share in history.cochanged(path).items():
            first = by_file.get(other)
            if first is None:
                first = next(iter(view.by_path.get(other, [])), None)
            add(first, w.cochange * share, f"changes with {path}")
    if w.own_files is not None and budget is not None:
        _cap_own_files(view, diff.paths, links, int(w.own_files * budget))
    found: dict[int, tuple[float, str]] = {}  # the query's score (of the best: "sum"), and why
    top = max((h.score for h in ranked), default=0.0) if w.combine == "sum" else 1.0
    for h in ranked:
        pos = view.chunk_index.get(h.chunk.id)
        if pos is not None and pos not in found and top > 0:
            found[pos] = (h.score / top, ",".join(h.why) or "query")
    best: dict[int, tuple[float, tuple[str, ...]]] = {}
    for pos in dict.fromkeys([*links, *found]):
        link, why = links.get(pos, (0.0, []))
        q, qwhy = found.get(pos, (0.0, ""))
        if w.combine == "sum":
            score = link + w.query * q
        else:  # the better of the two (a test's query score gets the test bonus too)
            q *= w.query
            if q and TEST_PATH.search(view.chunks[pos].path) and q < w.changed:
                q += w.test_bonus
            score = max(link, q)
        if qwhy and qwhy not in why and len(why) < MAX_WHY:
            why = [*why, qwhy]
        if why:
            best[pos] = (score, tuple(why))
    order = sorted(
        best, key=lambda p: (-best[p][0], view.chunks[p].path, view.chunks[p].start_line)
    )
    return [Hit(view.chunks[p], best[p][0], best[p][1]) for p in order]


def _cap_own_files(
    view: RepoView, paths: Sequence[str], links: dict[int, tuple[float, list[str]]], cap: int
) -> None:
    """Keep the links of the changed files' chunks, best first, to ``cap`` tokens; the
    rest lose them (what the query finds of them still counts)."""
    own = set(paths)
    mine = sorted(
        (p for p in links if view.chunks[p].path in own),
        key=lambda p: (-links[p][0], view.chunks[p].path, view.chunks[p].start_line),
    )
    used = 0
    for p in mine:
        if used + view.chunks[p].tokens > cap:
            del links[p]  # a smaller one after it may still fit
        else:
            used += view.chunks[p].tokens


def diff_preface(
    diff: WorkingDiff, budget: int, weights: DiffWeights = DIFF_WEIGHTS
) -> Callable[[TokenCounter, int], str]:
    """The diff's text for a pack's preface, within ``weights.preface`` of ``budget``."""
    share = int(weights.preface * budget)
    return lambda counter, cap: diff.render(counter, min(cap, share))


def definition_at(view: RepoView, name: str, path: str | None, line: int | None) -> Links:
    """What ``name`` used at ``path:line`` means, as the resolver reads that use (its
    receiver, the file's imports, the scopes around it); without a place, or when the
    index holds no use of ``name`` there, every definition of the name (marked ``name``)."""
    found: dict[int, bool] = {}
    at = None
    if path is not None:
        if path not in view.files:
            raise InvalidRequest(f"{path!r} is not an indexed file of {view.meta.name!r}")
        at = f"{path}:{line}" if line else path
        short = name.rsplit(".", 1)[-1]
        uses = [
            r for r in view.refs_by_path.get(path, [])
            if r.name == short and (line is None or r.line == line)
        ]  # fmt: skip
        resolver = view.resolver()
        for r in uses:
            for i, sure in resolver.resolve(r).items():
                found[i] = found.get(i, False) or sure
    if not found:
        found = dict.fromkeys(find_definitions(view, name), False)
    order = sorted(
        found, key=lambda i: (not found[i], view.symbols[i].path, view.symbols[i].start_line)
    )
    links = []
    for i in order:
        s = view.symbols[i]
        how = "resolved" if found[i] else "name"
        links.append(Link(s.id, s.path, s.start_line, s.kind, how, s.signature, s.end_line))
    return Links(view.meta.name, name, at, tuple(links), len(links), view.meta.commit)


def references(view: RepoView, name: str, limit: int) -> Links:
    """The uses of the definitions ``name`` can mean, resolved ones first, each with the
    definition it sits in and how it was found."""
    targets = find_definitions(view, name)
    if not targets:
        raise InvalidRequest(
            f"{name!r} is defined nowhere in {view.meta.name!r}",
            hint="see `ctxsvc search` for the names it defines",
        )
    uses = sorted(uses_of(view, targets), key=lambda u: (not u[2], u[0].path, u[0].line))
    links = []
    for ref, _, sure in uses[:limit]:
        owner = enclosing(view, ref)
        where = ref.path if owner is None else view.symbols[owner].id
        links.append(Link(where, ref.path, ref.line, ref.kind, "resolved" if sure else "name"))
    return Links(view.meta.name, name, None, tuple(links), len(uses), view.meta.commit)
