"""Region-complete packing: a hit inside a long definition brings the whole of it.

A real index of a small repository (real tree-sitter, real LanceDB, the hash
embedder) whose long function the chunker splits into several chunks.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import git, write_tree
from fakes import HashEmbedder

from ctxsvc.blocks import body_runs
from ctxsvc.candidates import WHOLE_MAX_TOKENS, candidates, whole_cap
from ctxsvc.compose import build_service
from ctxsvc.models import Chunk, ContextPack, Hit
from ctxsvc.packing import pack
from ctxsvc.retrieval import RetrievalConfig
from ctxsvc.service import ContextService
from ctxsvc.settings import Settings
from ctxsvc.tokens import TiktokenCounter
from ctxsvc.view import RepoView

SETTLE = "\n".join(
    ['"""Accounts."""', "", "", "def settle_accounts(ledger, rates):",
     '    """Settle every account of the ledger."""',
     *[f"    opening_{i} = ledger.open(rates, 'opening', {i}, strict=True)" for i in range(20)],
     *[f"    quokka_{i} = ledger.transfer(rates, 'quokka', {i}, fee=None)" for i in range(20)],
     *[f"    closing_{i} = ledger.close(rates, 'closing', {i}, flush=True)" for i in range(20)],
     "    return ledger", "", "",
     "class Registry:", '    """Holds the accounts."""', "",
     "    def audit(self, books):",
     *[f"        entry_{i} = books.check(self.items, 'audit', {i}, deep=True)" for i in range(30)],
     "        return books", "",
     "    def add(self, account):", "        self.items.append(account)",
     "        return account", "",
     "    def drop(self, account):", "        self.items.remove(account)",
     "        return account", "", "",
     "def tiny():", "    return 1", ""]
)  # fmt: skip
FILLER = {  # other code the query matches, more of it than the budgets hold
    f"app/fees_{k}.py": "\n".join(
        [
            f"def charge_{k}(bank, amount):",
            *[f"    fee_{i} = bank.transfer(amount, 'fee', {i}, account={k})" for i in range(14)],
            "    return bank",
            "",
        ]
    )
    for k in range(30)
}
FILES = {"app/accounts.py": SETTLE, "app/other.py": "def other():\n    return 2\n", **FILLER}
LINES = SETTLE.split("\n")
FIRST = LINES.index("def settle_accounts(ledger, rates):") + 1
LAST = LINES.index("    return ledger") + 1


def _index(service: ContextService, tmp_path: Path) -> RepoView:
    root = tmp_path / "accounts"
    write_tree(root, {**FILES})
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "init")
    service.index(root)
    return service.view(service.resolve("accounts"))


@pytest.fixture
def view(service: ContextService, tmp_path: Path) -> RepoView:
    return _index(service, tmp_path)


def _middle(view: RepoView) -> Chunk:
    pieces = [
        c for c in view.chunks if c.path == "app/accounts.py" and FIRST <= c.start_line <= LAST
    ]
    pieces = [c for c in pieces if c.end_line <= LAST]
    assert len(pieces) >= 3, "the fixture must split the function"
    (mid,) = [c for c in pieces if "quokka_10 " in c.text]
    assert mid.start_line > FIRST and mid.end_line < LAST, "the hit must be a middle piece"
    return mid


def _pack(view: RepoView, hits: list[Hit], budget: int, counter: TiktokenCounter,
          **kw: bool) -> ContextPack:  # fmt: skip
    blocks = candidates(view, hits, "snippets", budget_tokens=budget, **kw)
    p = pack("accounts", "quokka", blocks, budget, counter)
    assert p.tokens_used <= budget and counter.count(p.rendered) == p.tokens_used
    for item in p.items:  # every line as in the file, byte for byte
        lines = (FILES[item.path]).split("\n")
        code = item.text.split("\n")[2:-2]  # the title and fences off
        quoted = [lines[n - 1] for a, z in item.lines for n in range(a, z + 1)]
        if not item.gaps and len(item.lines) == 1:
            assert code == quoted
        else:
            assert set(quoted) <= set(code)
    return p


def _delivered(p: ContextPack, path: str = "app/accounts.py") -> set[int]:
    return {
        n
        for i in p.items
        if i.path == path
        for a, z in body_runs(i.lines, i.start_line, i.end_line)
        for n in range(a, z + 1)
    }


def test_a_hit_in_the_middle_brings_the_whole_function(
    view: RepoView, counter: TiktokenCounter
) -> None:
    mid = _middle(view)
    hit = Hit(mid, 1.0, ("fts#1",))
    blocks = candidates(view, [hit], "snippets", budget_tokens=8000)
    assert (blocks[0].start, blocks[0].symbol) == (FIRST, "settle_accounts")
    assert blocks[0].score == 1.0 and blocks[0].why == ["fts#1"]
    assert blocks[0].lines_text() == "\n".join(LINES[FIRST - 1 : blocks[0].end])
    p = _pack(view, [hit], 8000, counter)
    (item,) = p.items
    assert item.start_line == FIRST and item.end_line >= LAST and item.gaps == ()
    assert not any(line.strip() for line in LINES[LAST : item.end_line])  # blank lines after
    assert item.text.split("\n")[2:-2] == LINES[FIRST - 1 : item.end_line]


def test_a_tight_budget_gets_the_fragment_and_never_overruns(
    view: RepoView, counter: TiktokenCounter
) -> None:
    mid = _middle(view)
    hit = Hit(mid, 1.0, ("fts#1",))
    whole = set(range(FIRST, LAST + 1))
    fragments = 0
    for budget in (120, 200, 300, 400, 600, 900):
        got = _delivered(_pack(view, [hit], budget, counter))
        assert got <= whole
        if got and got != whole:
            fragments += 1
            assert set(range(mid.start_line, mid.end_line + 1)) <= got
    assert fragments >= 2


def test_a_definition_over_the_cap_is_completed_later_from_what_room_is_left(
    view: RepoView, counter: TiktokenCounter
) -> None:
    mid = _middle(view)
    budget = 3000  # cap 750: the function costs more, but at most REST_SHARE of the budget
    assert whole_cap(budget) == 750 and whole_cap(10**6) == WHOLE_MAX_TOKENS
    tiny = next(c for c in view.chunks if "def tiny" in c.text)
    hits = [Hit(mid, 1.0, ("fts#1",)), Hit(tiny, 0.5, ("fts#2",))]
    blocks = candidates(view, hits, "snippets", budget_tokens=budget)
    assert (blocks[0].start, blocks[0].end) == (mid.start_line, blocks[0].end)
    assert blocks[0].end < LAST  # the fragment first
    rest = blocks[-1]  # the rest of the function last, after the other hits
    assert (rest.start, rest.symbol, rest.why) == (
        FIRST, "settle_accounts", ["fts#1", "rest of settle_accounts"],
    )  # fmt: skip
    assert any("def tiny" in b.lines_text() for b in blocks[1:-1])
    p = _pack(view, hits, budget, counter)
    assert set(range(FIRST, LAST + 1)) <= _delivered(p)
    # Under a budget it would take more than half of, the rest is not offered.
    small = candidates(view, hits, "snippets", budget_tokens=2000)
    assert not any("rest of settle_accounts" in b.why for b in small)


def test_the_switch_off_sends_the_chunk_as_before(view: RepoView, counter: TiktokenCounter) -> None:
    mid = _middle(view)
    hit = Hit(mid, 1.0, ("fts#1",))
    blocks = candidates(view, [hit], "snippets", budget_tokens=8000, whole_definitions=False)
    (block,) = blocks
    assert (block.start, block.lines_text().rstrip("\n")) == (mid.start_line, mid.text)
    got = _delivered(_pack(view, [hit], 8000, counter, whole_definitions=False))
    assert min(got) == mid.start_line and max(got) < LAST


def test_a_chunk_of_whole_methods_does_not_grow_into_its_class(
    view: RepoView, counter: TiktokenCounter
) -> None:
    (methods,) = [c for c in view.chunks if "def add" in c.text]
    assert "class Registry" not in methods.text, "the fixture must give the methods a chunk"
    on = candidates(view, [Hit(methods, 1.0)], "snippets", budget_tokens=8000)
    off = candidates(view, [Hit(methods, 1.0)], "snippets", budget_tokens=8000,
                     whole_definitions=False)  # fmt: skip
    assert [(b.start, b.end) for b in on] == [(b.start, b.end) for b in off]


def test_the_service_config_switches_it(
    settings: Settings, counter: TiktokenCounter, tmp_path: Path
) -> None:
    rows = {}
    for flag in (True, False):
        service = build_service(
            Settings.from_env({}, home=tmp_path / f"home-{flag}"), embedder=HashEmbedder(),
            tokens=counter, retrieval=RetrievalConfig(whole_definitions=flag, ranker="fusion"),
        )  # fmt: skip
        _index(service, tmp_path / f"repo-{flag}")
        p = service.context("accounts", "quokka transfer fee", 6000)
        assert p.tokens_used <= 6000
        rows[flag] = _delivered(p)
    assert set(range(FIRST, LAST + 1)) <= rows[True]
    assert not set(range(FIRST, LAST + 1)) <= rows[False]
