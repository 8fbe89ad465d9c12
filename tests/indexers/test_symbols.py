"""ctxsvc.indexers.symbols.extract against one fixture per language, plus edge cases."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from ctxsvc.errors import ConfigError
from ctxsvc.indexers import languages
from ctxsvc.indexers.grammar_specs import SPECS
from ctxsvc.indexers.symbols import extract
from ctxsvc.models import ParsedFile, Span

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "languages"


@dataclass(frozen=True)
class Expect:
    file: str
    symbols: set[tuple[str, str]]  # (qualname, kind) that must be present
    span: tuple[str, int, int, str]  # qualname, start, end, signature
    refs: set[tuple[str, str]]  # (name, kind) that must be present
    imports: set[tuple[str, tuple[str, ...]]]  # (module, names) that must be present
    doc: tuple[str, str]  # qualname, text its docstring starts with


CASES = [
    Expect(
        "python.py",
        {
            ("MAX_ITEMS", "constant"),
            ("normalise", "function"),
            ("Inventory", "class"),
            ("Inventory.LIMIT", "constant"),
            ("Inventory.__init__", "method"),
            ("Inventory.total", "method"),
            ("Inventory.add", "method"),
            ("Inventory.add.check", "function"),
            ("report", "function"),
        },
        ("Inventory.add", 28, 38, "def add(self, item: str, amount: int = 1) -> int"),
        {("normalise", "call"), ("join", "call"), ("MAX_ITEMS", "use"), ("Inventory", "use")},
        {("os.path", ()), ("collections", ("dd", "OrderedDict"))},
        ("Inventory.add", "Add an item and return its new count."),
    ),
    Expect(
        "javascript.jsx",
        {
            ("TAX_RATE", "constant"),
            ("cartTotal", "function"),
            ("priceLabel", "function"),
            ("Cart", "class"),
            ("Cart.addLine", "method"),
            ("Cart.empty", "method"),
            ("CartView", "function"),
            ("CartView.toggle", "function"),
        },
        ("cartTotal", 11, 14, "function cartTotal(lines)"),
        {("cartTotal", "call"), ("push", "call"), ("Cart", "call"), ("TAX_RATE", "use")},
        {("react", ("React", "useState")), ("./utils", ("formatPrice",)), ("path", ("path",))},
        ("cartTotal", "Sum of line prices including tax."),
    ),
    Expect(
        "typescript.ts",
        {
            ("MAX_RETRIES", "constant"),
            ("TaskId", "type"),
            ("Task", "interface"),
            ("Task.run", "method"),
            ("State", "enum"),
            ("sleep", "function"),
            ("Queue", "class"),
            ("Queue.drain", "method"),
            ("Queue.drain.attempt", "function"),
            ("makeQueue", "function"),
        },
        ("sleep", 21, 23, "function sleep(ms: number): Promise<void>"),
        {("sleep", "call"), ("run", "call"), ("Logger", "use"), ("MAX_RETRIES", "use")},
        {("events", ("EventEmitter",)), ("fs", ("fs",)), ("./logger", ("Logger",))},
        ("Queue.drain", "Run every task, retrying failures."),
    ),
    Expect(
        "tsx.tsx",
        {
            ("DEFAULT_COLOR", "constant"),
            ("BadgeProps", "interface"),
            ("Size", "type"),
            ("sizeClass", "function"),
            ("Badge", "function"),
            ("BadgeList", "class"),
            ("BadgeList.render", "method"),
            ("BadgeList.render.renderItem", "function"),
        },
        ("sizeClass", 15, 17, "function sizeClass(size: Size): string"),
        {("sizeClass", "call"), ("classNames", "call"), ("map", "call"), ("Badge", "use")},
        {("react", ("React",)), ("./css", ("classNames",))},
        ("sizeClass", "Pick a css class for a size."),
    ),
    Expect(
        "go.go",
        {
            ("DefaultPort", "constant"),
            ("started", "constant"),
            ("Handler", "interface"),
            ("Server", "struct"),
            ("NewServer", "function"),
            ("Server.Start", "method"),
            ("formatAddr", "function"),
            ("Port", "type"),
        },
        ("Server.Start", 34, 42, "func (s *Server) Start() error"),
        {
            ("formatAddr", "call"),
            ("Println", "call"),
            ("ListenAndServe", "call"),
            ("Server", "use"),
        },
        {("fmt", ()), ("net/http", ("nethttp",))},
        ("Server.Start", "Start begins listening."),
    ),
    Expect(
        "rust.rs",
        {
            ("LIMIT", "constant"),
            ("GREETING", "constant"),
            ("Counter", "struct"),
            ("Level", "enum"),
            ("Describe", "trait"),
            ("Describe.describe", "method"),
            ("Counter.new", "method"),
            ("Counter.bump", "method"),
            ("Counter.fmt", "method"),
            ("clamp", "function"),
            ("clamp.inner", "function"),
            ("Table", "type"),
            ("tests", "module"),
            ("tests.helper", "function"),
        },
        ("Counter", 10, 13, "pub struct Counter"),  # from the #[derive] line
        {("clamp", "call"), ("entry", "call"), ("write", "call"), ("HashMap", "use")},
        {("std::collections::HashMap", ("HashMap",)), ("std::fmt", ("self", "Display"))},
        ("Counter", "Counts named events."),
    ),
    Expect(
        "java.java",
        {
            ("Shelf", "class"),
            ("Shelf.CAPACITY", "constant"),
            ("Shelf.Book", "class"),
            ("Shelf.Book.getTitle", "method"),
            ("Shelf.add", "method"),
            ("Shelf.spare", "method"),
            ("Catalog", "interface"),
            ("Genre", "enum"),
        },
        ("Shelf.add", 31, 37, "public boolean add(Book book)"),
        {("max", "call"), ("size", "call"), ("ArrayList", "call"), ("CAPACITY", "use")},
        {("java.util.List", ("List",)), ("java.lang.Math.max", ("max",))},
        ("Shelf.add", "Add a book if there is room."),
    ),
    Expect(
        "c.c",
        {
            ("RING_SIZE", "macro"),
            ("MIN", "macro"),
            ("ring", "struct"),
            ("ring_t", "type"),
            ("color", "enum"),
            ("ZERO", "constant"),
            ("ring_push", "function"),
            ("dump", "function"),
            ("main", "function"),
        },
        ("ring_push", 20, 25, "int ring_push(ring_t *r, int value)"),
        {("ring_push", "call"), ("printf", "call"), ("MIN", "call"), ("ring_t", "use")},
        {("<stdio.h>", ()), ('"ring.h"', ())},
        ("ring_push", "Push a value, overwriting the oldest."),
    ),
    Expect(
        "cpp.cpp",
        {
            ("PI", "constant"),
            ("Shape", "class"),
            ("Shape.area", "method"),
            ("Circle", "class"),
            ("Circle.area", "method"),
            ("Circle.square", "method"),
            ("Point", "struct"),
            ("Points", "type"),
            ("total_area", "function"),
            ("main", "function"),
        },
        ("total_area", 35, 41, "double total_area(const std::vector<Shape*>& shapes)"),
        {("square", "call"), ("area", "call"), ("total_area", "call"), ("Shape", "use")},
        {("<vector>", ()), ('"shape.hpp"', ())},
        ("Circle", "A circle of a given radius."),
    ),
    Expect(
        "csharp.cs",
        {
            ("Line", "class"),
            ("IPriced", "interface"),
            ("IPriced.Total", "method"),
            ("Currency", "enum"),
            ("Invoice", "class"),
            ("Invoice.VatRate", "constant"),
            ("Invoice.Add", "method"),
            ("Invoice.Total", "method"),
            ("Invoice.Total.Gross", "function"),
            ("Money", "struct"),
        },
        ("Invoice.Add", 33, 36, "public void Add(Line line)"),
        {("Gross", "call"), ("Round", "call"), ("Add", "call"), ("VatRate", "use")},
        {("System", ()), ("System.Collections.Generic", ())},
        ("Invoice", "Collects lines and totals them."),
    ),
    Expect(
        "ruby.rb",
        {
            ("GREETING", "constant"),
            ("Greeters", "module"),
            ("Greeters.Polite", "class"),
            ("Greeters.Polite.DEFAULT_NAME", "constant"),
            ("Greeters.Polite.greet", "method"),
            ("Greeters.Polite.build", "method"),
            ("Greeters.Polite.format_name", "method"),
            ("main", "function"),
        },
        ("Greeters.Polite.greet", 18, 22, "def greet(times)"),
        {("format_name", "call"), ("build", "call"), ("parse", "call"), ("GREETING", "use")},
        {("json", ()), ("support/helpers", ())},
        ("Greeters.Polite", "Greets people politely."),
    ),
    Expect(
        "php.php",
        {
            ("MAX_RECIPIENTS", "constant"),
            ("Logs", "trait"),
            ("Logs.logSent", "method"),
            ("Sender", "interface"),
            ("SmtpMailer", "class"),
            ("SmtpMailer.PORT", "constant"),
            ("SmtpMailer.send", "method"),
            ("normalize_address", "function"),
            ("Priority", "enum"),
        },
        ("SmtpMailer.send", 38, 46, "public function send(string $to, string $body): bool"),
        {("normalize_address", "call"), ("logSent", "call"), ("trim", "call"), ("Sender", "use")},
        {("App\\Contracts\\Mailer", ("Mailer",)), ("Psr\\Log\\LoggerInterface", ("Logger",))},
        ("SmtpMailer.send", "Send one message."),
    ),
    Expect(
        "kotlin.kt",
        {
            ("MAX_NOTES", "constant"),
            ("Note", "class"),
            ("Store", "interface"),
            ("Tag", "enum"),
            ("MemoryStore", "class"),
            ("MemoryStore.add", "method"),
            ("MemoryStore.nextId", "method"),
            ("MemoryStore.nextId.base", "function"),
            ("Defaults", "class"),
            ("NoteList", "type"),
            ("summarize", "function"),
        },
        ("MemoryStore.add", 24, 28, "fun add(text: String): Note"),
        {("nextId", "call"), ("now", "call"), ("joinToString", "call"), ("MAX_NOTES", "use")},
        {("java.time.Instant", ("Instant",)), ("kotlin.collections.List", ("KList",))},
        ("MemoryStore", "Keeps notes in memory."),
    ),
    Expect(
        "bash.sh",
        {
            ("BACKUP_DIR", "constant"),
            ("RETENTION_DAYS", "constant"),
            ("log_msg", "function"),
            ("backup_dir", "function"),
            ("backup_dir.cleanup", "function"),
            ("main", "function"),
        },
        ("backup_dir", 15, 23, "function backup_dir"),
        {("log_msg", "call"), ("backup_dir", "call"), ("tar", "call"), ("BACKUP_DIR", "use")},
        {("./lib/common.sh", ()), ("$HOME/.backuprc", ())},
        ("log_msg", "Print a timestamped message."),
    ),
]


def _parse(name: str) -> ParsedFile:
    lang = languages.language_for(name)
    assert lang is not None
    return extract(name, (FIXTURES / name).read_text(), lang)


def _walk(spans: tuple[Span, ...]) -> list[Span]:
    out, todo = [], list(spans)
    while todo:
        span = todo.pop()
        out.append(span)
        todo.extend(span.children)
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.file for c in CASES])
def test_fixture(case: Expect) -> None:
    pf = _parse(case.file)
    assert pf.syntax_errors == 0
    found = {(s.qualname, s.kind) for s in pf.symbols}
    assert case.symbols <= found, case.symbols - found

    by_qual = {s.qualname: s for s in pf.symbols}
    qual, start, end, signature = case.span
    sym = by_qual[qual]
    assert (sym.start_line, sym.end_line, sym.signature) == (start, end, signature)
    assert sym.name == qual.rsplit(".", 1)[-1]
    assert sym.parent == (qual.rsplit(".", 1)[0] if "." in qual else None)
    assert all(s.path == case.file for s in pf.symbols)

    refs = {(r.name, r.kind) for r in pf.references}
    assert case.refs <= refs, case.refs - refs
    assert len({(r.name, r.line, r.kind) for r in pf.references}) == len(pf.references)
    assert all(len(r.name) > 1 for r in pf.references)
    # A definition's own name is not a reference to it.
    lines = (FIXTURES / case.file).read_text().splitlines()
    defs_at = {
        (s.name, s.start_line) for s in pf.symbols if lines[s.start_line - 1].count(s.name) == 1
    }
    assert not [r for r in pf.references if (r.name, r.line) in defs_at and r.kind == "use"]

    imports = {(i.module, i.names) for i in pf.imports}
    assert case.imports <= imports, case.imports - imports

    doc_qual, doc = case.doc
    assert by_qual[doc_qual].docstring.startswith(doc)

    # The outline names every definition that is directly in a file or body.
    outlined = {s.symbol for s in _walk(pf.outline) if s.symbol}
    assert {qual, doc_qual} <= outlined


def test_reference_scope_and_method_receiver() -> None:
    go = _parse("go.go")
    calls = {(r.name, r.scope) for r in go.references if r.kind == "call"}
    assert ("formatAddr", "Server.Start") in calls
    py = _parse("python.py")
    assert ("MAX_ITEMS", "use", "Inventory.add.check") in {
        (r.name, r.kind, r.scope) for r in py.references
    }
    # Keywords that parse as identifiers are not references.
    assert "self" not in {r.name for r in py.references}


@pytest.mark.parametrize("case", CASES, ids=[c.file for c in CASES])
def test_outline_invariants(case: Expect) -> None:
    pf = _parse(case.file)
    assert pf.outline
    lines = (FIXTURES / case.file).read_text().count("\n") + 1
    parents = [Span(1, lines, None, pf.outline)]
    while parents:
        parent = parents.pop()
        prev_end = parent.start_line - 1
        for child in parent.children:
            assert parent.start_line <= child.start_line <= child.end_line <= parent.end_line
            assert child.start_line > prev_end, (parent, child)
            prev_end = child.end_line
            parents.append(child)
    # Methods written inside their class are children of the class's span
    # (Go methods and Rust impl blocks stand apart from the type).
    spans = {s.symbol: s for s in _walk(pf.outline) if s.symbol}
    methods = [
        s
        for s in pf.symbols
        if s.kind == "method"
        and s.parent in spans
        and spans[s.parent].start_line <= s.start_line <= spans[s.parent].end_line
    ]
    for method in methods:
        assert method.qualname in {c.symbol for c in spans[method.parent].children}


def test_outline_splits_bodies_into_statements() -> None:
    pf = _parse("python.py")
    spans = {s.symbol: s for s in _walk(pf.outline) if s.symbol}
    add = spans["Inventory.add"]
    assert [c.symbol for c in add.children] == [None, None, "Inventory.add.check"] + [None] * 3
    assert add.children[2].children == (Span(33, 33),)


BROKEN = {
    "python": "def good(a):\n    return a\n\ndef broken(:\n    pass\n",
    "javascript": "function good() { return 1; }\nfunction broken( { \n",
    "typescript": "function good(): number { return 1; }\nclass Broken { method( }\n",
    "tsx": "function good() { return <div>hi</div>; }\nconst x = <span>\n",
    "go": "package p\n\nfunc good() int { return 1 }\n\nfunc broken( {\n",
    "rust": "fn good() -> u32 { 1 }\n\nfn broken( {\n",
    "java": "class Good { void ok() {} }\nclass Broken { void m( }\n",
    "c": "int good(void) { return 1; }\nint broken( { \n",
    "cpp": "int good() { return 1; }\nclass Broken { void m( };\n",
    "csharp": "class Good { void Ok() {} }\nclass Broken { void M( }\n",
    "ruby": "def good\n  1\nend\n\ndef broken(\n",
    "php": "<?php\nfunction good() { return 1; }\nfunction broken( {\n",
    "kotlin": "fun good(): Int = 1\n\nfun broken( {\n",
    "bash": "good() {\n  echo ok\n}\nbroken() {\n  if then\n",
}


@pytest.mark.parametrize("language", sorted(BROKEN))
def test_syntax_errors_keep_partial_tree(language: str) -> None:
    pf = extract("broken", BROKEN[language], language)
    assert pf.syntax_errors > 0
    names = {s.name for s in pf.symbols}
    assert names & {"good", "Good"}, names


def test_every_language_has_a_fixture_and_case() -> None:
    assert {c.file for c in CASES} == {p.name for p in FIXTURES.iterdir()}
    assert {languages.language_for(c.file) for c in CASES} == set(languages.LANGUAGES)


@pytest.mark.parametrize("language", sorted(SPECS))
def test_spec_node_types_exist_in_grammar(language: str) -> None:
    lang = languages.get_language(language)
    spec = SPECS[language]
    types = set(spec.defs) | spec.idents | set(spec.calls) | set(spec.members)
    types |= set(spec.imports) | spec.comments | spec.wrappers | spec.attributes
    missing = {t for t in types if lang.id_for_node_kind(t, True) is None}
    assert not missing


def test_deep_nesting_does_not_recurse() -> None:
    depth = 3000
    src = "def f():\n    return " + "(" * depth + "value" + ")" * depth + "\n"
    pf = extract("deep.py", src, "python")
    assert [s.qualname for s in pf.symbols] == ["f"]
    assert [(r.name, r.scope) for r in pf.references] == [("value", "f")]
    js = "const g = () => " + "[" * depth + "item" + "]" * depth + ";\n"
    pf = extract("deep.js", js, "javascript")
    assert [s.qualname for s in pf.symbols] == ["g"]
    assert {r.name for r in pf.references} == {"item"}


def test_deeply_nested_definitions() -> None:
    depth = 150
    src = "".join("    " * i + f"def f{i}():\n" for i in range(depth)) + "    " * depth + "pass\n"
    pf = extract("nested.py", src, "python")
    assert len(pf.symbols) == depth
    assert pf.symbols[-1].parent == pf.symbols[-2].qualname
    span = pf.outline[0]
    for _ in range(depth - 1):
        span = span.children[0]
    assert span.symbol == pf.symbols[-1].qualname


@pytest.mark.parametrize("language", languages.LANGUAGES)
def test_empty_file(language: str) -> None:
    for text in ("", "\n\n   \n"):
        pf = extract("empty", text, language)
        assert (pf.symbols, pf.references, pf.imports, pf.outline) == ((), (), (), ())
        assert pf.syntax_errors == 0
        assert pf.language == language


def test_unknown_language() -> None:
    with pytest.raises(ConfigError, match="cobol"):
        extract("x.cob", "", "cobol")
    with pytest.raises(ConfigError):
        languages.get_parser("cobol")


def test_docstrings() -> None:
    py = {s.qualname: s.docstring for s in _parse("python.py").symbols}
    assert py["normalise"] == "Return a lower-case, trimmed item name."
    assert py["Inventory"] == "Keeps item counts per shelf."
    assert py["report"] == ""
    rust = {s.qualname: s.docstring for s in _parse("rust.rs").symbols}
    assert rust["LIMIT"] == "Upper bound for every counter."
    assert rust["Counter.new"] == "Create an empty counter."
    java = {s.qualname: s.docstring for s in _parse("java.java").symbols}
    assert java["Shelf"] == "A shelf of books."
    cs = {s.qualname: s.docstring for s in _parse("csharp.cs").symbols}
    assert cs["Invoice.Add"] == "Add a line."
    # A comment separated by a blank line does not document the definition.
    src = "# unrelated\n\ndef f():\n    pass\n"
    assert extract("a.rb", "# unrelated\n\ndef f\nend\n", "ruby").symbols[0].docstring == ""
    assert extract("a.py", src, "python").symbols[0].docstring == ""
    long = '"""' + "word " * 400 + '"""'
    pf = extract("a.py", f"def f():\n    {long}\n", "python")
    assert 0 < len(pf.symbols[0].docstring) <= 500


def test_signature_is_one_capped_line_cut_between_tokens() -> None:
    params = ", ".join(f"argument_{i}: int" for i in range(60))
    pf = extract("a.py", f"def wide(\n    {params},\n) -> None:\n    pass\n", "python")
    sig = pf.symbols[0].signature
    assert "\n" not in sig and sig.startswith("def wide(argument_0: int,")
    assert len(sig) <= 200 and sig.endswith(" …")
    # Cut between words, never inside one ("subdoma…").
    full = f"def wide({params}) -> None".split()
    assert sig.removesuffix(" …").split() == full[: len(sig.split()) - 1]
    # A long run without spaces is cut where a token ends.
    value = "+".join(f"subdomain_{i}" for i in range(40))
    sig = extract("b.py", f"def f(x={value}):\n    pass\n", "python").symbols[0].signature
    assert len(sig) <= 200 and sig.endswith(" …")
    assert sig.removesuffix(" …").removeprefix("def f(x=") in {
        "+".join(f"subdomain_{i}" for i in range(n)) + tail for n in range(40) for tail in ("", "+")
    }


def test_signature_keeps_every_parameter_of_a_multiline_header() -> None:
    src = (
        "class Flask(App):\n"
        "    def url_for(\n"
        "        self,\n"
        "        /,\n"
        "        endpoint: str,  # the endpoint\n"
        "        *,\n"
        "        _anchor: str | None = None,\n"
        "        **values: t.Any,\n"
        "    ) -> str:\n"
        '        return ""\n'
    )
    syms = {s.qualname: s for s in extract("app.py", src, "python").symbols}
    assert syms["Flask.url_for"].signature == (
        "def url_for(self, /, endpoint: str, *, _anchor: str | None = None, **values: t.Any) -> str"
    )
    # The body opener may go, nothing else: "Flask(App)" keeps its parenthesis.
    assert syms["Flask"].signature == "class Flask(App)"
    js = "/* a */ function f(a, /* b */ b,\n  // c\n  ...rest) {\n}\n"
    assert extract("a.js", js, "javascript").symbols[0].signature == "function f(a, b, ...rest)"


# (qualname, head_start, head_end) of one or two definitions per fixture.
HEADS = {
    "python.py": [("Inventory.total", 25, 25), ("Inventory.add", 28, 28)],
    "c.c": [("ring_push", 20, 21)],
    "csharp.cs": [("Invoice", 19, 20), ("Invoice.Add", 33, 34)],
    "rust.rs": [("Counter", 11, 11)],
    "php.php": [("SmtpMailer.send", 38, 39)],
    "go.go": [("Server.Start", 34, 34)],
    "ruby.rb": [("Greeters", 8, 8), ("Greeters.Polite.greet", 18, 18)],
}


@pytest.mark.parametrize("case", CASES, ids=[c.file for c in CASES])
def test_header_lines(case: Expect) -> None:
    pf = _parse(case.file)
    lines = (FIXTURES / case.file).read_text().split("\n")
    for s in pf.symbols:
        assert s.start_line <= s.head_start <= s.head_end <= s.end_line, s
        assert s.name in lines[s.head_start - 1], s  # the keyword or name line
        assert s.id == f"{case.file}::{s.qualname}"
    heads = {s.qualname: (s.head_start, s.head_end) for s in pf.symbols}
    for qual, start, end in HEADS.get(case.file, []):
        assert heads[qual] == (start, end), qual


HEAD_CASES = [
    # Decorators before the keyword, a header over several lines, ":" on the last.
    ("python", "@t.overload\n@cache\ndef f(\n    a,\n    *,\n    **kw,\n) -> int:\n    return 1\n", 1, 3, 7),
    # An annotation inside the node, the body's brace on a line of its own.
    ("java", "class A {\n  @Override\n  public void f(int a,\n      int b)\n  {\n  }\n}\n", 2, 3, 5),
    # A member's decorator is a sibling before it.
    ("typescript", 'class A {\n  @HostListener("click")\n  onClick(e: Event): void {\n  }\n}\n', 2, 3, 3),
    ("csharp", "class A {\n  [HttpGet]\n  [Route(\"x\")]\n  public int Get()\n  {\n    return 1;\n  }\n}\n", 2, 4, 5),
    # An expression body begins after "=>".
    ("javascript", "const f = (a) =>\n  a + 1;\n", 1, 1, 1),
    # Without a body, the value stands for it; without either, all of it is header.
    ("typescript", "interface I {\n  run(\n    a: string,\n  ): void;\n}\n", 2, 2, 4),
]  # fmt: skip


@pytest.mark.parametrize(("language", "src", "start", "head_start", "head_end"), HEAD_CASES)
def test_header_lines_past_decorations(
    language: str, src: str, start: int, head_start: int, head_end: int
) -> None:
    sym = max(extract("x", src, language).symbols, key=lambda s: s.start_line)
    assert (sym.start_line, sym.head_start, sym.head_end) == (start, head_start, head_end)


EXPRESS = """\
'use strict';

var res = Object.create(http.ServerResponse.prototype);

/**
 * Send a response.
 */
res.send = function send(body) {
  var chunk = body;
  return this;
};

exports.json = (obj) => JSON.stringify(obj);

module.exports.render = function (view, options) {
  return view;
};

module.exports = {
  init() {
    return 1;
  },
  handle: function (req, res) {
    return req;
  },
  name: 'app',
};

Router.prototype.route = function route(path) {
  return new Route(path);
};

Router.prototype = {
  use: function use(fn) {},
};

Foo.Bar = class {
  run() {}
};

function Layer(path) {
  this.handle = function () {};
}

items[0].x = function () {};
configure({ onClick: function () {} });
res.locals = {};

module.exports = function createApplication() {
  var app = function (req, res, next) {};
  req.onload = () => {};
  Router.prototype.reset = function () {};
  return app;
};

module.exports = () => {};
"""


@pytest.mark.parametrize("language", ["javascript", "typescript"])
def test_javascript_assignments_of_functions_are_definitions(language: str) -> None:
    pf = extract("lib/response.js", EXPRESS, language)
    found = {s.qualname: (s.kind, s.start_line, s.end_line, s.parent) for s in pf.symbols}
    assert found == {
        "res.send": ("method", 8, 11, "res"),
        "json": ("function", 13, 13, None),
        "render": ("function", 15, 17, None),
        "init": ("method", 20, 22, None),
        "handle": ("method", 23, 25, None),
        "Router.route": ("method", 29, 31, "Router"),
        "Router.use": ("method", 34, 34, "Router"),
        "Foo.Bar": ("class", 37, 39, "Foo"),
        "Foo.Bar.run": ("method", 38, 38, "Foo.Bar"),
        "Layer": ("function", 41, 43, None),
        "Layer.handle": ("method", 42, 42, "Layer"),
        # express's main export, by the function's own name; inside it, a callback
        # set on an object (req.onload) is no definition, a prototype's method is.
        "createApplication": ("function", 49, 54, None),
        "createApplication.app": ("function", 50, 50, "createApplication"),
        "Router.reset": ("method", 52, 52, "Router"),
    }
    send = next(s for s in pf.symbols if s.qualname == "res.send")
    assert send.signature == "res.send = function send(body)"
    assert send.docstring == "Send a response."
    assert send.id == "lib/response.js::res.send"
    # The object assigned to stays a reference; the outline knows the definitions.
    refs = {(r.name, r.line) for r in pf.references}
    assert ("res", 8) in refs and ("send", 8) not in refs
    outlined = {s.symbol for s in _walk(pf.outline) if s.symbol}
    assert {"res.send", "json", "Router.route", "Layer"} <= outlined


NON_NAMES = [
    ("go", "package p\n\nvar _ http.Handler = (*Engine)(nil)\n\nconst (\n\t_ = iota\n\tA\n)\n", {"A"}),
    ("javascript", "const _ = 1;\nconst $ = 2;\nconst ok = 3;\n", {"ok"}),
    ("rust", "const _: () = ();\nconst OK: u8 = 1;\n", {"OK"}),
    ("ruby", "class V\n  def +(o); end\n  def ==(o); end\nend\n", {"V", "V.=="}),
]  # fmt: skip


@pytest.mark.parametrize(("language", "src", "names"), NON_NAMES)
def test_names_that_are_not_names_are_not_symbols(language: str, src: str, names: set[str]) -> None:
    assert {s.qualname for s in extract("x", src, language).symbols} == names
