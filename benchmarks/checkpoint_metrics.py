"""What the two checkpoint benchmarks share: the facts they know, how a summary is
scored against them, and the service they checkpoint with.

``checkpoints.py`` (generated sessions) and ``checkpoints_real.py`` (real
mini-SWE-agent trajectories) each import this module, never each other.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # fakes (make_service) and conftest helpers


@dataclass
class KnownFacts:
    """The facts of a transcript known mechanically, never from the summarizer's rules."""

    edited_files: set[str] = field(default_factory=set)
    symbols: set[str] = field(default_factory=set)
    failing_commands: set[str] = field(default_factory=set)


def present(fact: str, text: str, *, path: bool = False) -> bool:
    """Whether ``text`` states ``fact``: a path or identifier as a whole word, else verbatim.

    A path must not be the tail of a longer one ("test_foo.py" is not stated by
    "testing/test_foo.py"); an identifier may be qualified ("serialize" is
    stated by "EnumSerializer.serialize"). Whitespace is collapsed first, since
    a summary puts a command on one line.
    """
    if path:
        return re.search(rf"(?<![\w/.-]){re.escape(fact)}(?![\w/-])", text) is not None
    if re.fullmatch(r"[A-Za-z_][\w.]*", fact):
        return re.search(rf"(?<!\w){re.escape(fact)}(?!\w)", text) is not None
    return " ".join(fact.split()) in " ".join(text.split())


def score(rendered: str, facts: Mapping[str, Collection[str]]) -> dict[str, float | None]:
    """The share of each kind of fact present in ``rendered`` (None for no facts)."""
    out: dict[str, float | None] = {}
    for kind, items in facts.items():
        hits = sum(present(x, rendered, path=kind == "edited_files") for x in items)
        out[kind] = round(hits / len(items), 3) if items else None
    return out


def make_service(home: Path, counter: Any) -> Any:
    """A service on a fresh store under ``home``, with the deterministic fake embedder."""
    from fakes import HashEmbedder

    from ctxsvc.compose import build_service
    from ctxsvc.settings import Settings

    return build_service(Settings.from_env({}, home=home), tokens=counter, embedder=HashEmbedder())
