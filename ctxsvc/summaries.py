"""Checkpoint summaries: a state fitted to a token budget, and what changed since.

A checkpoint's *state* (:func:`ctxsvc.checkpoints.extract`) keeps everything
extracted; its *summary* is that state cut to a token budget, dropping the
lowest-priority items first and saying how many of each kind it dropped. On
resume, the anchors of a checkpoint are compared with the index now: files
modified, renamed or deleted, symbols renamed or gone. Pure functions, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from ctxsvc.errors import InvalidRequest
from ctxsvc.models import Symbol
from ctxsvc.records import Anchor, AnchorChange, Summary
from ctxsvc.tokens import TokenCounter
from ctxsvc.transcripts import clip

MIN_BUDGET = 20
SYMBOLS_FIRST = 1  # symbols of an edited file kept with it before the decisions
ERRORS_FIRST = 3  # failures still open kept before the decisions, the newest
DECISIONS_FIRST = 2  # the newest decisions, kept right after those failures
CONSTRAINTS_FIRST = 4  # constraints kept first, in the order they were stated
_LATER = 8  # the priority of the rest of those: after the decisions and steps done

# -- fitting a budget ----------------------------------------------------------------


@dataclass(frozen=True)
class _Item:
    priority: int  # lower is kept first
    order: int  # higher is more recent
    section: str
    text: str
    anchor: Anchor | None = None
    tier: int = 0  # within a priority, lower is kept first


# Sections in the order they are rendered, with the priority of their items.
# What a resumed agent needs most comes first: the user's constraints, the next step,
# what is left, the files edited (with their symbols), what fails and why, the decisions.
_PRIORITY = {
    "constraints": 0, "next": 1, "open_tasks": 2, "edited": 3, "edited_symbols": 4,
    "errors": 5, "decisions": 6, "done": 7, "notes": 7, "facts": 9, "read": 10,
    "read_symbols": 11, "fixed_errors": 12,
}  # fmt: skip
_TITLES = {
    "constraints": "Constraints", "decisions": "Decisions", "open_tasks": "Open tasks",
    "errors": "Errors and blockers", "done": "Done", "notes": "Notes",
}  # fmt: skip


def _items(state: Summary) -> list[_Item]:
    items: list[_Item] = []
    per_file: dict[str, int] = {}
    if state.next_step:
        items.append(_Item(1, 0, "next", state.next_step))
    for i, a in enumerate(state.files):
        if not (a.read or a.edited):  # only named: resume looks at it, the summary does not
            continue
        if a.symbol is None:
            section = "edited" if a.edited else "read"
        else:
            section = "edited_symbols" if a.edited else "read_symbols"
        # An edit to an indexed file before a file made in the session (often scratch).
        tier = int(section == "edited" and not a.sha256)
        priority = _PRIORITY[section]
        if section == "edited_symbols":
            per_file[a.path] = per_file.get(a.path, 0) + 1
            if per_file[a.path] > SYMBOLS_FIRST:  # a file's first symbols; the rest after decisions
                priority = _LATER
        items.append(_Item(priority, i, section, a.symbol or a.path, a, tier))
    for section in ("constraints", "decisions", "open_tasks", "done", "notes", "facts"):
        values = getattr(state, section)
        for i, text in enumerate(values):
            if section == "constraints":
                if text in state.goal:  # the goal says it already
                    continue
                # The first ones stated (the task's own) first; a long list's rest later.
                later = i >= CONSTRAINTS_FIRST
                items.append(_Item(_LATER if later else 0, i, section, text, tier=i))
            elif section == "decisions" and i >= len(values) - DECISIONS_FIRST:
                # The newest decisions right after the newest failures, lest many edits and
                # failures leave no room for why the work went the way it did.
                items.append(_Item(_PRIORITY["errors"], i, section, text, tier=1))
            else:
                items.append(_Item(_PRIORITY[section], i, section, text))
    live = [i for i, text in enumerate(state.errors) if not text.endswith("(fixed later)")]
    recent = set(live[-ERRORS_FIRST:])
    for i, text in enumerate(state.errors):
        section = "fixed_errors" if text.endswith("(fixed later)") else "errors"
        # The newest failures before the decisions; older ones after them.
        priority = _PRIORITY[section] if section != "errors" or i in recent else _LATER
        items.append(_Item(priority, i, section, text))
    # Stable: within a priority the most recent first; decisions and files keep their order.
    return sorted(items, key=lambda it: (it.priority, it.tier, -it.order))


def _render(goal: str, kept: Sequence[_Item], dropped: Mapping[str, int]) -> str:
    by: dict[str, list[_Item]] = {}
    for it in kept:
        by.setdefault(it.section, []).append(it)
    for group in by.values():
        group.sort(key=lambda it: it.order)
    lines = [f"Goal: {goal}"]
    if "constraints" in by:
        lines.append("Constraints:")
        lines.extend(f"- {it.text}" for it in by["constraints"])
    if "next" in by:
        lines.append(f"Next: {by['next'][0].text}")
    for section, title in (("edited", "Edited"), ("read", "Read")):
        symbols: dict[str, list[str]] = {}
        for it in by.get(f"{section}_symbols", ()):
            assert it.anchor is not None
            symbols.setdefault(it.anchor.path, []).append(it.text)
        files = [
            f"{it.text} ({', '.join(symbols[it.text])})" if it.text in symbols else it.text
            for it in by.get(section, ())
        ]
        if files:
            lines.append(f"{title}: " + "; ".join(files))
    for section in ("open_tasks", "errors", "decisions", "done", "notes"):
        group = by.get(section, []) + (by.get("fixed_errors", []) if section == "errors" else [])
        if group:
            lines.append(f"{_TITLES[section]}:")
            lines.extend(f"- {it.text}" for it in group)
    if "facts" in by:
        lines.append("Facts: " + "; ".join(it.text for it in by["facts"]))
    if dropped:
        lines.append(
            "Dropped for the budget: "
            + ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in sorted(dropped.items()))
        )
    return "\n".join(lines)


def fit(state: Summary, budget_tokens: int, counter: TokenCounter) -> Summary:
    """``state`` cut to ``budget_tokens``: lowest-priority items dropped first, counted.

    Priority, highest first: goal, the first ``CONSTRAINTS_FIRST`` constraints (in the
    order stated; one the goal holds is not repeated), next step, open tasks, edited
    files with their first ``SYMBOLS_FIRST`` symbols, the newest ``ERRORS_FIRST`` open
    errors (with why they fail) then the newest ``DECISIONS_FIRST`` decisions, the other
    decisions, steps done and notes, then the rest of the constraints, symbols and open
    errors, facts, files only read, their symbols, errors fixed later. Within a kind, the
    newest first. Files only named, never opened, are left out.
    """
    if budget_tokens < MIN_BUDGET:
        raise InvalidRequest(f"a summary needs a budget of at least {MIN_BUDGET} tokens")
    items = _items(state)
    goal = state.goal or "(not stated)"
    room = budget_tokens - counter.count(f"Goal: {goal}") - 24  # headings and the dropped line
    costs = counter.count_many([it.text for it in items])
    kept: list[_Item] = []
    files_kept: set[str] = set()
    for it, cost in zip(items, costs, strict=True):
        if it.section.endswith("_symbols") and it.anchor and it.anchor.path not in files_kept:
            continue  # a symbol is shown after its file only
        if cost + 2 <= room:
            kept.append(it)
            room -= cost + 2
            if it.section in ("edited", "read"):
                files_kept.add(it.text)

    def dropped_counts() -> dict[str, int]:
        counts: dict[str, int] = {}
        for it in items:
            counts[it.section] = counts.get(it.section, 0) + 1
        for it in kept:
            counts[it.section] -= 1
        return {k: n for k, n in counts.items() if n}

    rendered = _render(goal, kept, dropped_counts())
    tokens = counter.count(rendered)
    while tokens > budget_tokens and kept:
        gone = kept.pop()  # the lowest priority kept
        if gone.section in ("edited", "read"):
            kept = [
                k for k in kept if not (k.anchor and k.anchor.path == gone.text and k.anchor.symbol)
            ]
        rendered = _render(goal, kept, dropped_counts())
        tokens = counter.count(rendered)
    while tokens > budget_tokens and len(goal) > 10:  # the goal alone is too long
        goal = clip(goal, max(10, len(goal) * budget_tokens // tokens - 4))
        rendered = _render(goal, kept, dropped_counts())
        tokens = counter.count(rendered)
    if tokens > budget_tokens:  # a tiny budget: cut the text itself
        rendered = fit_lines(rendered, budget_tokens, counter.count)
        tokens = counter.count(rendered)
    sections = {s: [it for it in kept if it.section == s] for s in _PRIORITY}
    return replace(
        state,
        goal=goal,
        next_step=sections["next"][0].text if sections["next"] else "",
        files=tuple(it.anchor for it in sorted(kept, key=lambda it: it.order) if it.anchor),
        constraints=tuple(
            it.text for it in sorted(sections["constraints"], key=lambda it: it.order)
        ),
        decisions=tuple(it.text for it in sorted(sections["decisions"], key=lambda it: it.order)),
        open_tasks=tuple(it.text for it in sorted(sections["open_tasks"], key=lambda it: it.order)),
        errors=tuple(
            it.text
            for it in sorted(sections["errors"] + sections["fixed_errors"], key=lambda it: it.order)
        ),
        done=tuple(it.text for it in sorted(sections["done"], key=lambda it: it.order)),
        notes=tuple(it.text for it in sorted(sections["notes"], key=lambda it: it.order)),
        facts=tuple(it.text for it in sorted(sections["facts"], key=lambda it: it.order)),
        dropped=dropped_counts(),
        rendered=rendered,
        tokens=tokens,
        budget_tokens=budget_tokens,
    )


# -- what changed since a checkpoint ---------------------------------------------------


def anchor_changes(
    anchors: Sequence[Anchor],
    files: Mapping[str, str],
    symbols: Sequence[Symbol],
    *,
    body: Callable[[Symbol], str] | None = None,
) -> list[AnchorChange]:
    """How each anchored file and symbol differs in the index now.

    A file whose hash changed is "modified", and so is a symbol of it whose
    lines hash (``body``) differs from the anchor's ``body_sha256``; a missing file is "renamed" when
    another path holds the same content, else "deleted". A symbol gone from its
    file is "renamed" when a symbol of the same name exists elsewhere, or one
    with the same signature (bar the name) exists in its file or elsewhere;
    otherwise "symbol_deleted" (not reported again for a deleted file).
    """
    qualnames: dict[str, set[str]] = {}
    by_name: dict[str, list[Symbol]] = {}
    by_key: dict[tuple[str, str], list[Symbol]] = {}
    for s in symbols:
        qualnames.setdefault(s.path, set()).add(s.qualname)
        by_name.setdefault(s.name, []).append(s)
        by_key.setdefault((s.path, s.qualname), []).append(s)
    by_sha: dict[str, list[str]] = {}
    for path, sha in files.items():
        by_sha.setdefault(sha, []).append(path)
    out: list[AnchorChange] = []
    gone: set[str] = set()
    for a in anchors:
        if a.symbol is None:
            if not a.sha256:
                continue  # not indexed at checkpoint time: nothing to compare with
            if a.path in files:
                if files[a.path] != a.sha256:
                    out.append(AnchorChange(a.path, None, "modified"))
                continue
            moved = [p for p in by_sha.get(a.sha256, ()) if p != a.path]
            if moved:
                out.append(AnchorChange(a.path, None, "renamed", new_path=sorted(moved)[0]))
            else:
                out.append(AnchorChange(a.path, None, "deleted"))
                gone.add(a.path)
            continue
        if a.symbol in qualnames.get(a.path, ()):
            # An overloaded name is modified only when none of its definitions is as it was.
            if (
                body and a.body_sha256 and files.get(a.path) != a.sha256
                and all(body(s) != a.body_sha256 for s in by_key[(a.path, a.symbol)])
            ):  # fmt: skip
                out.append(AnchorChange(a.path, a.symbol, "modified"))
            continue
        name = a.symbol.rsplit(".", 1)[-1]
        same = [s for s in by_name.get(name, ()) if (s.path, s.qualname) != (a.path, a.symbol)]
        if not same and a.signature:
            key = signature_key(a.signature, name)
            same = [s for s in symbols if signature_key(s.signature, s.name) == key]
            same.sort(key=lambda s: s.path != a.path)  # the same file first
        if same:
            s = same[0]
            out.append(AnchorChange(a.path, a.symbol, "renamed", s.path, s.qualname))
        elif a.path not in gone:
            out.append(AnchorChange(a.path, a.symbol, "symbol_deleted"))
    return out


def signature_key(signature: str, name: str) -> str:
    """``signature`` with its own name blanked: equal keys mean a renamed symbol."""
    return re.sub(rf"\b{re.escape(name)}\b", "\x00", signature, count=1)


def render_changes(changes: Sequence[AnchorChange]) -> str:
    """The changes as lines an agent reads."""
    if not changes:
        return "## Changed since the checkpoint\nNothing the checkpoint anchored has changed."
    lines = ["## Changed since the checkpoint"]
    for c in changes:
        what = f"{c.path} {c.symbol}" if c.symbol else c.path
        if c.change == "renamed":
            to = f"{c.new_path} {c.new_symbol}" if c.new_symbol else str(c.new_path)
            lines.append(f"- {what}: renamed or moved to {to}")
        else:
            lines.append(f"- {what}: {c.change.replace('_', ' ')}")
    return "\n".join(lines)


def resume_query(summary: Summary, task: str) -> str:
    """What to ask the index for after a reset: the goal, the next step, open tasks."""
    parts = [summary.goal or task, summary.next_step, *summary.open_tasks[-5:]]
    return clip(" ".join(p for p in parts if p), 2000)


def fit_lines(text: str, budget_tokens: int, count: Callable[[str], int]) -> str:
    """``text`` cut at a line boundary to ``budget_tokens`` (a marker says so)."""
    if count(text) <= budget_tokens:
        return text
    lines = text.split("\n")
    while lines and count("\n".join([*lines, "…"])) > budget_tokens:
        lines.pop()
    return "\n".join([*lines, "…"]) if lines else ""
