"""Packing: faithful blocks, no silent holes, no scraps, and never over budget.

Pure tests build blocks over a hand-made file (``Source``) and pack them; the
service tests index files that reproduce each defect with the real chunker.
"""

from __future__ import annotations

import itertools
import random
import re
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import git, write_tree

from ctxsvc.blocks import Block, Source, body_runs, fenced, snippet
from ctxsvc.drift import render_warnings
from ctxsvc.models import (
    ContextPack,
    DeliveredSpan,
    DriftWarning,
    Symbol,
    WorkspaceEvent,
    span_hash,
)
from ctxsvc.packing import MAX_OMITTED, pack
from ctxsvc.retrieval import RetrievalConfig
from ctxsvc.service import ContextService
from ctxsvc.tokens import TiktokenCounter

COUNTER = TiktokenCounter("cl100k_base")

# -- a file by hand --------------------------------------------------------------------

BODY = [
    f"        total += self.step_{i}(items, weight={i}, label='part {i}')" for i in range(5, 61)
]
BIG = "\n".join(
    [
        "class Big:",
        '    """A class with one long method."""',
        "",
        "    def run(self, items):",
        *BODY,
        "        return total",
        "",
    ]
)  # lines: 1 class, 4 def, 5-60 body, 61 return
BIG_SYMBOLS = [
    Symbol("Big", "Big", "class", "big.py", 1, 61, "class Big", head_start=1, head_end=1),
    Symbol("run", "Big.run", "method", "big.py", 4, 61, "def run(self, items)", parent="Big",
           head_start=4, head_end=4),
]  # fmt: skip


def source(text: str = BIG, symbols: list[Symbol] = BIG_SYMBOLS, path: str = "big.py") -> Source:
    lines = dict(enumerate(text.split("\n"), start=1))
    return Source(path, "python", lines, sorted(symbols, key=lambda s: (s.start_line, -s.end_line)))


def block(src: Source, start: int, end: int, score: float = 1.0) -> Block:
    return snippet(
        src.path, start, end, src.text(start, end), language="python", score=score, source=src
    )


def fence(text: str) -> list[str]:
    """The lines of the first code fence of ``text`` (its fence may be longer than three)."""
    lines = text.split("\n")
    first = next(i for i, line in enumerate(lines) if re.match(r"^`{3,}", line))
    close = re.match(r"^`+", lines[first])
    assert close is not None
    last = next(i for i in range(first + 1, len(lines)) if lines[i] == close.group(0))
    return lines[first + 1 : last]


def is_elision(line: str) -> bool:
    return line.lstrip(" \t").startswith("# …")


def check_faithful(pack: ContextPack, lines_of: dict[str, list[str]]) -> None:
    """Each snippet's fence is its runs, verbatim, with exactly one elision between two."""
    for item in pack.items:
        if item.kind != "snippet":
            continue
        got = fence(item.text)
        want: list[str] = []
        for i, (a, z) in enumerate(item.lines):
            if i:
                want.append("<elision>")
            want += lines_of[item.path][a - 1 : z]
        assert ["<elision>" if is_elision(x) else x for x in got] == want, item.text


def silent_holes(pack: ContextPack, symbols: dict[str, list[Symbol]]) -> list[str]:
    """Pairs of blocks of one file with unmarked lines between them inside one definition."""
    by_path: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for item in pack.items:
        if item.kind == "snippet":
            by_path[item.path].append((item.lines[0][0], item.lines[-1][1]))
    out = []
    for path, spans in by_path.items():
        spans.sort()
        for (_, last), (first, _) in itertools.pairwise(spans):
            out += [
                f"{path}:{last + 1}-{first - 1} inside {s.qualname}"
                for s in symbols.get(path, [])
                if s.start_line <= last and first <= s.end_line
            ]
    return out


# -- holes ---------------------------------------------------------------------------------


def test_a_cheap_hole_inside_a_definition_is_filled() -> None:
    src = source()
    p = pack("r", "q", [block(src, 4, 25), block(src, 36, 61)], 5000, COUNTER)
    (item,) = p.items
    assert item.lines == ((1, 1), (4, 61)) and item.gaps == ()
    assert (item.start_line, item.end_line) == (4, 61)
    assert fence(item.text) == ["class Big:", "    # … lines 2-3 omitted", *BIG.split("\n")[3:61]]
    assert not [o for o in p.omitted if o.reason == "gap"]


def test_a_costly_hole_is_marked_in_place_with_its_tokens() -> None:
    src = source()
    budget = 800  # the hole (lines 9-56) is more than a quarter of it and than either side
    p = pack("r", "q", [block(src, 4, 8), block(src, 57, 61, 0.9)], budget, COUNTER)
    (item,) = p.items
    cost = src.estimate(COUNTER, 9, 56)
    assert abs(cost - COUNTER.count(src.text(9, 56))) <= 0.1 * cost
    assert item.lines == ((1, 1), (4, 8), (57, 61)) and item.gaps == ((9, 56),)
    assert f"        # … lines 9-56 omitted ({cost} tokens): expand Big.run" in fence(item.text)
    (hole,) = [o for o in p.omitted if o.reason == "gap"]
    assert (hole.path, hole.start_line, hole.end_line, hole.tokens) == ("big.py", 9, 56, cost)
    assert hole.symbol == "Big.run"
    check_faithful(p, {"big.py": BIG.split("\n")})
    assert COUNTER.count(p.rendered) <= budget


def test_a_hole_the_budget_cannot_pay_for_is_marked() -> None:
    src = source()
    whole = pack("r", "q", [block(src, 4, 25), block(src, 36, 61)], 9999, COUNTER)
    assert whole.items[0].gaps == ()
    small = whole.tokens_used - 40  # the two chunks fit, the lines between them do not
    p = pack("r", "q", [block(src, 4, 25), block(src, 36, 61)], small, COUNTER)
    (item,) = p.items
    assert item.gaps == ((26, 35),) and p.tokens_used <= small


def test_a_chunk_in_a_hole_splits_it_and_the_title_names_the_method() -> None:
    src = source()
    p = pack("r", "q", [block(src, 4, 8), block(src, 57, 61), block(src, 30, 33)], 500, COUNTER)
    (item,) = p.items
    assert item.gaps == ((9, 29), (34, 56))
    assert item.text.startswith("lines 4-61 (Big.run):")
    check_faithful(p, {"big.py": BIG.split("\n")})


def test_separate_definitions_stay_separate_blocks() -> None:
    text = "\n".join(
        [f"def f{i}(x):\n    y = x + {i}\n    z = y * {i}\n    return z\n\n" for i in range(6)]
    )
    syms = [Symbol(f"f{i}", f"f{i}", "function", "m.py", 1 + 6 * i, 4 + 6 * i, f"def f{i}(x)")
            for i in range(6)]  # fmt: skip
    src = source(text, syms, "m.py")
    p = pack("r", "q", [block(src, 1, 4), block(src, 25, 28)], 2000, COUNTER)
    assert [i.lines for i in p.items] == [((1, 4),), ((25, 28),)]
    assert all(i.gaps == () for i in p.items) and "omitted" not in p.rendered


def one_class(methods: int, path: str = "c.py") -> Source:
    """A class of ``methods`` four-line methods, a blank line after each."""
    lines, syms = ["class Wide:"], []
    for i in range(methods):
        first = len(lines) + 1
        lines += [f"    def m{i}(self, x):", f"        y = x * {i} + self.base", "        z = y - 1",
                  "        return z", ""]  # fmt: skip
        syms.append(Symbol(f"m{i}", f"Wide.m{i}", "method", path, first, first + 3,
                           f"def m{i}(self, x)", parent="Wide", head_start=first, head_end=first))  # fmt: skip
    syms.append(Symbol("Wide", "Wide", "class", path, 1, len(lines) - 1, "class Wide",
                       head_start=1, head_end=1))  # fmt: skip
    return source("\n".join(lines), syms, path)


def test_sibling_methods_stay_separate_blocks_with_nothing_unranked_between() -> None:
    src = one_class(60)
    picked = random.Random(3).sample(range(2, 60, 2), 20)  # no two touch, nor the class line
    cands = [block(src, 2 + 5 * i, 6 + 5 * i, 1 - k / 20) for k, i in enumerate(picked)]
    p = pack("r", "q", cands, 30000, COUNTER)
    assert len(p.items) == 20 and all(i.gaps == () for i in p.items)
    for item in p.items:  # the class line above, then one method: nothing else
        (head, (a, z)) = item.lines
        assert head == (1, 1) and z - a == 4 and (a - 2) % 5 == 0
    assert not [o for o in p.omitted if o.reason == "gap"] and "expand Wide" not in p.rendered


def test_holes_inside_a_class_in_a_function_name_the_function() -> None:
    lines = ["def outer():", "    class Inner:", "        def a(self):", "            return 1",
             "", "        def b(self):", "            return 2", "", "    return Inner", ""]  # fmt: skip
    syms = [
        Symbol("outer", "outer", "function", "o.py", 1, 9, "def outer()"),
        Symbol("Inner", "outer.Inner", "class", "o.py", 2, 7, "class Inner"),
        Symbol("a", "outer.Inner.a", "method", "o.py", 3, 4, "def a(self)"),
        Symbol("b", "outer.Inner.b", "method", "o.py", 6, 7, "def b(self)"),
    ]
    src = source("\n".join(lines), syms, "o.py")
    assert src.body_of(5, 5) is not None and src.body_of(5, 5).qualname == "outer"
    assert src.innermost(5, 5) is not None and src.innermost(5, 5).qualname == "outer.Inner"
    assert src.body_of(4, 4) is not None and src.body_of(4, 4).qualname == "outer.Inner.a"
    # Two sibling methods: the class holds both, so they stay two blocks.
    p = pack("r", "q", [block(src, 3, 4), block(src, 6, 7)], 0 + 2000, COUNTER)
    assert len(p.items) == 2
    # The function's own code on both sides of the class: one block, the hole the function's.
    wide = "\n".join(["def outer():", *[f"    v{i} = {i} * 3 + base" for i in range(40)],
                      "    class Inner:", "        pass", *[f"    w{i} = {i}" for i in range(4)], ""])  # fmt: skip
    syms = [Symbol("outer", "outer", "function", "w.py", 1, 47, "def outer()"),
            Symbol("Inner", "outer.Inner", "class", "w.py", 42, 43, "class Inner")]  # fmt: skip
    src = source(wide, syms, "w.py")
    p = pack("r", "q", [block(src, 1, 4), block(src, 44, 47)], 120, COUNTER)
    (item,) = p.items
    assert item.gaps and all(
        "expand outer" in line for line in fence(item.text) if "omitted" in line
    )


def test_unranked_lines_never_push_out_a_ranked_candidate() -> None:
    src = source()
    other = source("def other(a):\n    b = a + 1\n    c = b * 2\n    return c\n",
                   [Symbol("other", "other", "function", "o.py", 1, 4, "def other(a)")], "o.py")  # fmt: skip
    cands = [block(src, 4, 25), block(src, 36, 61, 0.9), block(other, 1, 4, 0.5)]
    roomy = pack("r", "q", cands, 9999, COUNTER)
    assert [i.gaps for i in roomy.items] == [(), ()]  # room left over: the hole is filled
    # Short of all three with the hole filled by less than the third costs alone.
    budget = roomy.tokens_used - 25
    assert pack("r", "q", cands[2:], 9999, COUNTER).tokens_used > 25
    p = pack("r", "q", cands, budget, COUNTER)
    assert [i.path for i in p.items] == ["big.py", "o.py"] and p.items[0].gaps == ((26, 35),)
    assert p.tokens_used <= budget


def test_the_manifest_puts_what_the_budget_left_out_first() -> None:
    text = "\n".join(["def long(q):", *[f"    s{i} = q.step({i}, mode='x', n={i * 7})" for i in range(400)],
                      "    return q", ""])  # fmt: skip
    src = source(text, [Symbol("long", "long", "function", "l.py", 1, 402, "def long(q)")], "l.py")
    picks = [block(src, 2 + 12 * i, 3 + 12 * i, 1 - i / 40) for i in range(33)]
    others = [block(src, 8 + 12 * i, 8 + 12 * i, 0.1) for i in range(30)]  # one line each, low
    p = pack("r", "q", [*picks, *others], 1400, COUNTER)
    reasons = [o.reason for o in p.omitted]
    assert "budget" in reasons and "gap" in reasons
    assert reasons == sorted(reasons, key=lambda r: r != "budget")  # budget ones first
    assert reasons.count("gap") <= MAX_OMITTED and reasons.count("budget") <= MAX_OMITTED
    holes = [g for i in p.items for g in i.gaps]
    assert len(holes) > MAX_OMITTED and reasons.count("gap") == MAX_OMITTED
    assert all(o.symbol == "long" and o.tokens > 0 for o in p.omitted if o.reason == "gap")


@pytest.mark.parametrize("budget", [-1, -5000])
def test_a_negative_budget_is_an_empty_pack(budget: int) -> None:
    src = source()
    p = pack("r", "q", [block(src, 4, 25)], budget, COUNTER, already_sent=[
        DeliveredSpan("a.py", 1, 4, "0" * 64, 10)])  # fmt: skip
    assert p.rendered == "" and p.items == () and p.tokens_used == 0 and p.budget_tokens == 0


def test_source_answers_as_a_scan_of_its_definitions_would() -> None:
    rnd = random.Random(7)
    spans: list[tuple[int, int]] = []

    def nest(lo: int, hi: int, depth: int) -> None:
        at = lo
        while at < hi and depth < 4:
            a = rnd.randint(at, hi)
            z = rnd.randint(a, min(hi, a + 60))
            spans.append((a, z))
            if z > a + 2:
                nest(a + 1, z, depth + 1)
            at = z + 1 + rnd.randint(0, 5)

    for _ in range(30):
        spans.clear()
        nest(1, 300, 0)
        syms = [Symbol(f"s{i}", f"s{i}", rnd.choice(("function", "class", "method", "constant")),
                       "r.py", a, z, "s") for i, (a, z) in enumerate(spans)]  # fmt: skip
        lines = {n: f"    x_{n} = {'y' * (n % 7)} + {n}" for n in range(1, 320)}
        src = Source("r.py", "python", lines, list(reversed(syms)))  # any order comes sorted
        for _ in range(40):
            a = rnd.randint(1, 310)
            z = rnd.randint(a, min(a + 80, 315))
            held = [s for s in src.symbols if s.start_line <= a and z <= s.end_line]
            assert src.enclosing(a, z) == [s for s in held if (s.start_line, s.end_line) != (a, z)]
            assert src.innermost(a, z) == (held[-1] if held else None)
            bodies = [s for s in held if s.kind in ("function", "method")
                      or (s.kind == "constant" and s.end_line > s.start_line)]  # fmt: skip
            assert src.body_of(a, z) == (bodies[-1] if bodies else None)
            assert list(src.starting(a, z)) == [s for s in src.symbols if a <= s.start_line <= z]
            want = sum(COUNTER.count_many([lines.get(n, "") + "\n" for n in range(a, z + 1)]))
            assert src.estimate(COUNTER, a, z) == want


def test_a_fence_is_longer_than_any_backtick_run_in_the_code() -> None:
    assert fenced("t", "python", "x = 1") == "t:\n```python\nx = 1\n```\n"
    code = 'doc = """\n```python\nprint(1)\n```\n"""\n# ````` five'
    text = fenced("lines 1-6", "python", code)
    lines = text.split("\n")
    assert lines[1] == "``````python" and lines[-2] == "``````"
    assert fence(text) == code.split("\n")


# -- headers and titles --------------------------------------------------------------------


def test_scope_headers_are_the_files_lines_with_an_elision_where_they_do_not_touch() -> None:
    src = source()
    p = pack("r", "q", [block(src, 5, 12)], 2000, COUNTER)
    (item,) = p.items
    lines = BIG.split("\n")
    # The def's line touches the code: no elision between them.
    assert fence(item.text) == ["class Big:", "    # … lines 2-3 omitted", *lines[3:12]]
    assert item.lines == ((1, 1), (4, 12)) and item.text.startswith("lines 5-12 (Big.run):")
    # What it delivers is its body, the header line it touches left out.
    assert body_runs(item.lines, item.start_line, item.end_line) == [(5, 12)]
    assert item.content_hash == span_hash(src.text(5, 12))


def test_multi_line_headers_are_quoted_whole() -> None:
    lines = ["class K(", "    Base,", "):", "    x = 1", "", "    def m(", "        self,",
             "        *,", "        **kw,", "    ) -> str:", "        a = 1", "        b = 2",
             "        return a", ""]  # fmt: skip
    text = "\n".join(lines)
    syms = [
        Symbol("K", "K", "class", "k.py", 1, 13, "class K(Base)", head_start=1, head_end=3),
        Symbol("m", "K.m", "method", "k.py", 6, 13, "def m(self, *, **kw) -> str", head_start=6,
               head_end=10),
    ]  # fmt: skip
    src = source(text, syms, "k.py")
    (item,) = pack("r", "q", [block(src, 12, 13)], 2000, COUNTER).items
    assert fence(item.text) == [*lines[0:3], "    # … lines 4-5 omitted", *lines[5:10],
                                "        # … line 11 omitted", *lines[11:13]]  # fmt: skip


def test_a_merged_block_is_titled_by_every_definition_in_it() -> None:
    text = "\n".join(f"def g{i}(a):\n    return a + {i}\n" for i in range(6))
    syms = [Symbol(f"g{i}", f"g{i}", "function", "g.py", 1 + 3 * i, 2 + 3 * i, f"def g{i}(a)")
            for i in range(6)]  # fmt: skip
    src = source(text, syms, "g.py")
    three = pack("r", "q", [block(src, 1, 3), block(src, 4, 6), block(src, 7, 9)], 2000, COUNTER)
    assert [i.text.split("\n")[0] for i in three.items] == ["lines 1-9 (g0, g1, g2):"]
    every = pack("r", "q", [block(src, 1 + 3 * i, 3 + 3 * i) for i in range(6)], 2000, COUNTER)
    assert every.items[0].text.split("\n")[0] == "lines 1-18 (g0, g1, g2, g3, …):"


# -- the budget holds for everything -----------------------------------------------------


def _warnings(n: int) -> list[DriftWarning]:
    def event(i: int) -> WorkspaceEvent:
        return WorkspaceEvent(
            i, "ws", "r", "s-other", "bob", "agent", "changed",
            f"changed Big.run step {i} to retry", "2024-05-01T10:00:00+00:00",
        )  # fmt: skip

    return [
        DriftWarning(event(i), "Big.run", f"session s-other (bob) at 2024-05-01: step {i}")
        for i in range(1, n + 1)
    ]


@pytest.mark.parametrize("budget", [0, 1, 5, 10, 23, 60, 150, 400, 2000])
def test_notes_and_warnings_count_against_the_budget(budget: int) -> None:
    src = source()
    held = [DeliveredSpan(f"app/f{i}.py", 1, 40, "0" * 64, 100) for i in range(40)]
    warnings = _warnings(30)
    p = pack(
        "r", "q", [block(src, 4, 25), block(src, 36, 61)], budget, COUNTER, session_id="s",
        already_sent=held, preface=lambda cap: render_warnings(warnings, COUNTER, cap),
    )  # fmt: skip
    assert p.tokens_used == COUNTER.count(p.rendered) <= budget
    if budget <= 1:
        assert p.rendered == "" and p.warnings == ()
    # What counts as given is exactly what the text shows in full.
    for w in warnings:
        assert (f"- [{w.subject}] {w.message}\n" in p.rendered) == (w in p.warnings)


def test_render_warnings_says_which_it_gave_in_full() -> None:
    warnings = _warnings(30)
    text, given = render_warnings(warnings, COUNTER, 120)
    assert 0 < len(given) < 30 and given == tuple(warnings[: len(given)])
    assert f"- … and {30 - len(given)} more" in text and COUNTER.count(text) <= 120
    assert render_warnings(warnings, COUNTER, 5) == ("", ())
    text, given = render_warnings(warnings[:2], COUNTER, 1000)
    assert given == tuple(warnings[:2]) and "more" not in text


# -- through the service: the defects as reported -----------------------------------------

_ALPHA = [f"        alpha_{i} = self.admit(request, 'alpha', {i}, retries=3)" for i in range(13)]
_FILL = [f"        filler_{i} = self.shuffle(queue, 'plain', {i}, mode=None)" for i in range(30)]
_OMEGA = [f"        omega_{i} = self.finish(response, 'omega', {i}, flush=True)" for i in range(13)]
ROUTER = "\n".join(
    ['"""A router."""', "", "", "class Router:", '    """Routes requests."""', "",
     "    def dispatch(self, request, queue, response):", '        """Route one request."""',
     *_ALPHA, *_FILL, *_OMEGA, "        return response", "", "",
     "def reconcile_ledger(entries, accounts):",
     *[f"    balance_{i} = entries.post(accounts, {i}, currency='EUR', rounding=True)"
       for i in range(40)],
     "    return accounts", ""]
)  # fmt: skip


VAULT = "\n".join(
    ["class Vault:", "    def seal(self, item, key):",
     *[f"        zeta_{i} = self.mix(item, 'zeta', {i}, rounds=7)" for i in range(40)],
     *[f"        sigil_{i} = self.stamp(key, 'sigil', {i}, ink='red')" for i in range(13)],
     "        return item", ""]
)  # fmt: skip
ROUTED = {
    "app/router.py": ROUTER,
    "app/vault.py": VAULT,
    "app/other.py": "def other():\n    return 1\n",
}
ROUTED_LINES = {path: text.split("\n") for path, text in ROUTED.items()}


@pytest.fixture
def routed(service: ContextService, tmp_path: Path) -> ContextService:
    root = tmp_path / "routed"
    files: dict[str, str | bytes] = {**ROUTED}
    write_tree(root, files)
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "init")
    service.index(root)
    return service


def _symbols(service: ContextService) -> dict[str, list[Symbol]]:
    view = service.view(service.resolve("routed"))
    return {p: view.symbols_of(p) for p in view.by_path}


def test_a_method_in_three_chunks_arrives_without_a_silent_hole(routed: ContextService) -> None:
    view = routed.view(routed.resolve("routed"))
    dispatch = [c for c in view.chunks if "Router.dispatch" in c.symbols or "alpha_" in c.text
                or "filler_" in c.text or "omega_" in c.text]  # fmt: skip
    assert len(dispatch) >= 3, "the fixture must split the method"
    shapes: set[str] = set()
    for budget in (500, 700, 1200, 4000):
        p = routed.context("routed", "alpha omega admit finish", budget)
        assert p.tokens_used <= budget
        assert silent_holes(p, _symbols(routed)) == []
        check_faithful(p, ROUTED_LINES)
        both = [i for i in p.items if "alpha_0 " in i.text and "omega_12 " in i.text]
        if both:
            (item,) = both
            shapes.add("marked" if item.gaps else "filled")
            holes = [o for o in p.omitted if o.reason == "gap"]
            assert {(o.start_line, o.end_line) for o in holes} == set(item.gaps)
            assert all(o.tokens > 0 and o.symbol == "Router.dispatch" for o in holes)
            for a, z in item.gaps:
                assert f"lines {a}-{z} omitted (" in item.text
    assert shapes == {"marked", "filled"}  # both answers of the rule were exercised


def test_a_lone_signature_is_not_sent_alone(routed: ContextService) -> None:
    view = routed.view(routed.resolve("routed"))
    start = ROUTER.split("\n").index("def reconcile_ledger(entries, accounts):") + 1
    (sig,) = [c for c in view.chunks if c.start_line == start]
    assert sig.end_line == start, "the fixture must give the signature a chunk of its own"
    p = routed.context("routed", "reconcile_ledger entries accounts", 3000)
    (item,) = [i for i in p.items if i.start_line <= start <= i.end_line]
    assert item.end_line >= start + 2
    symbols = _symbols(routed)
    for i in p.items:  # no scrap: three lines of code at least, or a whole definition
        body = [n for a, z in body_runs(i.lines, i.start_line, i.end_line) for n in range(a, z + 1)]
        solid = [n for n in body if ROUTED_LINES[i.path][n - 1].strip()]
        whole = any(
            i.start_line <= s.start_line and s.end_line <= i.end_line for s in symbols[i.path]
        )
        assert len(solid) >= 3 or whole, i.text


def test_the_ledger_records_the_body_not_the_scope_headers(routed: ContextService) -> None:
    # Ranked by the fusion: this test is about what the ledger records, not about ranking.
    fusion = replace(routed.queries, retrieval=RetrievalConfig(ranker="fusion"))
    p = fusion.context("routed", "sigil stamp key ink red", 330, session_id="s-body")
    item = next(i for i in p.items if "sigil_12 " in i.text)
    lines = ROUTED_LINES[item.path]
    # The scope headers are quoted above the body, verbatim.
    assert item.text.split("\n")[2:4] == ["class Vault:", "    def seal(self, item, key):"]
    assert item.lines[0] == (1, 2) and item.start_line > 3
    body = body_runs(item.lines, item.start_line, item.end_line)
    text = "\n".join(lines[n - 1] for a, z in body for n in range(a, z + 1))
    assert item.content_hash == span_hash(text)
    assert routed.queries.ledger is not None
    spans = {(s.path, s.start_line, s.end_line, s.content_hash)
             for s in routed.queries.ledger.delivered("s-body", "routed")}  # fmt: skip
    assert {(item.path, a, z, span_hash("\n".join(lines[a - 1 : z]))) for a, z in body} <= spans
    assert not any(s[0] == item.path and s[1] <= 2 for s in spans)  # no header claimed


def test_a_line_of_prose_grows_into_its_neighbours_or_stays_out(
    service: ContextService, tmp_path: Path
) -> None:
    overview = [f"The overview paragraph {i} talks about lanterns and rivers." for i in range(12)]
    usage = [f"Pass option {i} to the runner to see how it behaves." for i in range(3)]
    readme = "\n".join(["# Overview", "", *overview, "", "## Install", "", "pip install quokka-zeta",
                        "", "## Usage", "", *usage, ""])  # fmt: skip
    root = tmp_path / "prose"
    write_tree(root, {"README.md": readme, "lone.md": "## Zeta\n\nquokka-zeta only\n"})
    service.index(root)
    view = service.view(service.resolve("prose"))
    (tiny,) = [c for c in view.chunks if c.path == "README.md" and "quokka-zeta" in c.text]
    assert sum(1 for line in tiny.text.split("\n") if line.strip()) < 3, tiny
    lines = readme.split("\n")
    for budget in (60, 90, 120, 2000):
        p = service.context("prose", "install quokka-zeta", budget)
        for i in p.items:  # no line of prose alone, unless it is its whole file
            if i.path != "README.md":
                continue
            runs = body_runs(i.lines, i.start_line, i.end_line)
            assert sum(1 for a, z in runs for n in range(a, z + 1) if lines[n - 1].strip()) >= 3
    # A file of one small chunk is whole: it goes as it is.
    assert any(i.path == "lone.md" for i in service.context("prose", "quokka-zeta only", 500).items)
