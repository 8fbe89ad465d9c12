"""A localization task, and the JSON-lines task files of ``../shared/bench``.

A task is a change taken from a repository's history: the message that
described it (the query), the source files it changed (gold), and the line
ranges of those files it rewrote (regions), all as of ``snapshot``, the
commit it is evaluated on, which never contains the change itself.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctxsvc.errors import InvalidPath, InvalidRequest

Regions = Mapping[str, Sequence[tuple[int, int]]]


@dataclass(frozen=True)
class Task:
    """One task; the fields are those of the shared task files."""

    id: str
    repo: str
    snapshot: str  # the commit to index
    commit: str  # the commit whose message is the query (never indexed)
    query: str
    gold: tuple[str, ...]
    regions: Regions = field(default_factory=dict)  # path -> 1-based inclusive ranges
    name_leak: bool = False  # the query names a gold file's stem
    date: str | None = None  # the commit's date, ISO 8601, when mined here

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "repo": self.repo,
            "snapshot": self.snapshot,
            "commit": self.commit,
            "query": self.query,
            "gold": list(self.gold),
            "name_leak": self.name_leak,
            "regions": {p: [list(r) for r in rs] for p, rs in self.regions.items()},
            "id": self.id,
        }
        if self.date:
            data["date"] = self.date
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Task:
        """A task from one decoded line; ValueError/KeyError/TypeError when malformed."""
        regions = {
            str(p): tuple((int(r[0]), int(r[1])) for r in rs)
            for p, rs in (data.get("regions") or {}).items()
        }
        gold = data["gold"]
        if not isinstance(gold, list) or not all(isinstance(g, str) for g in gold):
            raise TypeError("gold must be a list of paths")
        return cls(
            id=str(data["id"]),
            repo=str(data["repo"]),
            snapshot=str(data["snapshot"]),
            commit=str(data["commit"]),
            query=str(data["query"]),
            gold=tuple(gold),
            regions=regions,
            name_leak=bool(data.get("name_leak")),
            date=data.get("date"),
        )


def load_tasks(path: Path, limit: int | None = None) -> list[Task]:
    """The first ``limit`` tasks of a JSON-lines task file, in file order."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidPath(
            f"cannot read the task file {path}: {exc.strerror or exc}",
            hint="give a JSON-lines file such as ../shared/bench/tasks/click.jsonl",
        ) from None
    tasks: list[Task] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            tasks.append(Task.from_json(json.loads(line)))
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise InvalidRequest(
                f"{path}:{number} is not a task ({type(exc).__name__}: {exc})",
                hint="each line needs id, repo, snapshot, commit, query, gold and regions",
            ) from None
        if limit and len(tasks) == limit:
            break
    return tasks


def dump_tasks(tasks: Iterable[Task], path: Path) -> None:
    """Write tasks as JSON lines, readable by :func:`load_tasks`."""
    path.write_text("".join(json.dumps(t.to_json()) + "\n" for t in tasks), encoding="utf-8")
