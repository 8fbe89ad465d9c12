"""ctxsvc.skeleton: headers quoted from the file, elisions in the file's language."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import write_tree

from ctxsvc.indexers import languages
from ctxsvc.indexers.symbols import extract
from ctxsvc.models import Symbol
from ctxsvc.service import ContextService
from ctxsvc.skeleton import MAX_HEAD_LINES, Skeleton, skeleton

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "languages"
LEADS = {"python": "#", "go": "//", "rust": "//", "javascript": "//", "csharp": "//"}


def _skeleton(text: str, language: str, path: str = "x") -> tuple[Skeleton, dict[int, str]]:
    lines = dict(enumerate(text.split("\n"), start=1))
    return skeleton(lines, extract(path, text, language).symbols, language), lines


def _faithful(sk: Skeleton, lines: dict[int, str], language: str) -> list[str]:
    """Check that every line of ``sk`` is a file line of its runs, in order, or a
    comment of ``language``; return the comment lines."""
    quoted = [n for a, b in sk.runs for n in range(a, b + 1)]
    assert quoted == sorted(set(quoted))
    notes: list[str] = []
    pos = 0
    for line in sk.text.split("\n"):
        if pos < len(quoted) and line == lines[quoted[pos]]:
            pos += 1
        else:
            assert line.lstrip(" \t").startswith(LEADS[language] + " "), line
            notes.append(line)
    assert pos == len(quoted)
    # Runs are what the text quotes contiguously: a run's lines follow each other.
    text = "\n".join(sk.text.split("\n"))
    for a, b in sk.runs:
        assert "\n".join(lines[n] for n in range(a, b + 1)) in text
    return notes


GIN = (
    "package gin\r\n"
    "\r\n"
    "// Engine is the framework's instance.\r\n"
    "type Engine struct {\r\n"
    "\tRouterGroup\r\n"
    "\ttrees  methodTrees \r\n"
    "}\r\n"
    "\r\n"
    "var _ IRouter = (*Engine)(nil)\r\n"
    "\r\n"
    "// Use attaches a global middleware to the router.\r\n"
    "func (engine *Engine) Use(middleware ...HandlerFunc) IRoutes {\r\n"
    "\tengine.RouterGroup.Use(middleware...)\r\n"
    "\treturn engine\r\n"
    "}\r\n"
)


def test_go_skeleton_is_verbatim_with_go_comments_and_methods_at_top_level() -> None:
    sk, lines = _skeleton(GIN, "go", "gin.go")
    notes = _faithful(sk, lines, "go")
    text = sk.text.split("\n")
    # The method stands where it is in the file, not under the type before it.
    assert "func (engine *Engine) Use(middleware ...HandlerFunc) IRoutes {\r" in text
    assert "type Engine struct {\r" in text
    assert "// Use attaches a global middleware to the router.\r" in text
    # Elisions are Go comments, indented like the code they stand for (a tab).
    assert "\t// … lines 13-15 omitted" in notes and "\t// … lines 5-10 omitted" in notes
    assert not [line for line in text if line.lstrip().startswith("#")]
    assert "_" not in {s.name for s in extract("gin.go", GIN, "go").symbols}
    assert sk.runs == ((3, 4), (11, 12))


FLASK = '''\
import typing as t


class Flask(App):
    """The flask object implements a WSGI application."""

    @t.overload
    def get(self, rule: str) -> str: ...
    @t.overload
    def get(self, rule: int) -> int: ...

    def url_for(
        self,
        /,
        endpoint: str,
        *,
        _anchor: str | None = None,
        _method: str | None = None,
        _scheme: str | None = None,
        _external: bool | None = None,
        **values: t.Any,
    ) -> str:
        """Generate a URL to the given endpoint with the given values, for the current subdomain or another one if it is given, building it from the rules registered on the application and its blueprints at setup time.

        More text.
        """
        return ""
'''


def test_python_skeleton_keeps_decorators_and_every_parameter() -> None:
    sk, lines = _skeleton(FLASK, "python", "app.py")
    notes = _faithful(sk, lines, "python")
    text = sk.text.split("\n")
    assert text.count("    @t.overload") == 2
    header = FLASK.split("\n")[11:22]  # "def url_for(" to ") -> str:"
    assert header[0] == "    def url_for(" and header[-1] == "    ) -> str:"
    assert "\n".join(header) in sk.text
    assert "class Flask(App):" in text
    # A one-line docstring is quoted; the first line of a longer one is a comment,
    # cut between words with an explicit marker.
    assert '    """The flask object implements a WSGI application."""' in text
    doc = next(n for n in notes if "Generate a URL" in n)
    assert doc.startswith("        # … doc: Generate a URL to the given endpoint") and doc.endswith(
        " …"
    )
    assert doc.removesuffix(" …").split()[-1] in FLASK.split()
    assert notes[-1] == "        # … lines 23-27 omitted"


def test_a_long_header_is_cut_at_a_line_with_an_elision() -> None:
    params = "".join(f"    a{i},\n" for i in range(30))
    src = f"def huge(\n{params}):\n    pass\n"
    sk, lines = _skeleton(src, "python")
    notes = _faithful(sk, lines, "python")
    quoted = [n for a, b in sk.runs for n in range(a, b + 1)]
    assert quoted == [*range(1, MAX_HEAD_LINES), 32]  # the first lines and the last, "):"
    assert f"    # … lines {MAX_HEAD_LINES}-31 omitted" in notes


def test_scopes_that_are_not_definitions_are_quoted_around_their_members() -> None:
    sk, lines = _skeleton((FIXTURES / "rust.rs").read_text(), "rust")
    _faithful(sk, lines, "rust")
    text = sk.text.split("\n")
    assert text.index("impl Counter {") + 2 == text.index("    pub fn new() -> Self {")
    assert "    /// Create an empty counter." in text  # a one-line doc comment, in place
    sk, lines = _skeleton((FIXTURES / "csharp.cs").read_text(), "csharp")
    _faithful(sk, lines, "csharp")
    assert sk.text.startswith("namespace Shop.Billing\n{\n")


def test_nesting_follows_the_lines_not_parent_names() -> None:
    """A symbol's ``parent`` may name a definition elsewhere (Go's receiver type):
    the skeleton does not indent or group by it."""
    src = "package p\n\ntype A struct{}\n\nfunc helper() {\n}\n\nfunc (a A) M() {\n}\n"
    syms = extract("p.go", src, "go").symbols
    assert {s.qualname: s.parent for s in syms}["A.M"] == "A"
    lines = dict(enumerate(src.split("\n"), start=1))
    sk = skeleton(lines, syms, "go")
    assert sk.text.split("\n") == [
        "type A struct{}",
        "",  # one short line between two quoted ones is quoted, not elided
        "func helper() {",
        "// … lines 6-7 omitted",
        "func (a A) M() {",
        "// … line 9 omitted",
    ]


def test_javascript_assignment_definitions_in_the_skeleton() -> None:
    src = (
        "var res = Object.create(http.ServerResponse.prototype);\n"
        "\n"
        "// Send a response.\n"
        "res.send = function send(body) {\n"
        "\treturn this;\n"
        "};\n"
        "\n"
        "module.exports = {\n"
        "  handle: function (req, res) {\n"
        "    return req;\n"
        "  },\n"
        "};\n"
    )
    sk, lines = _skeleton(src, "javascript")
    _faithful(sk, lines, "javascript")
    assert sk.text.split("\n")[:4] == [
        "// Send a response.",
        "res.send = function send(body) {",
        "\t// … lines 5-7 omitted",
        "module.exports = {",
    ]


def test_a_constant_opening_a_string_is_quoted_whole_or_elided_never_left_open() -> None:
    body = "\n".join(f"    line {i}" for i in range(MAX_HEAD_LINES + 4))
    text = f'SQL = """\nselect *\n"""\n\n\ndef f(a):\n    return a\n\n\nBIG = """\n{body}\n"""\n'
    sk, lines = _skeleton(text, "python")
    _faithful(sk, lines, "python")
    quoted = [lines[n] for a, b in sk.runs for n in range(a, b + 1)]
    assert quoted[:3] == ['SQL = """', "select *", '"""']  # short: whole
    assert 'BIG = """' not in quoted  # long: elided, not opened
    assert sum(line.count('"""') for line in sk.text.split("\n")) % 2 == 0


def test_old_symbols_without_header_lines_and_empty_input() -> None:
    sym = Symbol("f", "f", "function", "a.py", 2, 3, "def f()")
    sk = skeleton({1: "", 2: "def f():", 3: "    pass"}, [sym], "python")
    assert (sk.text, sk.runs) == ("def f():\n    # … line 3 omitted", ((2, 2),))
    assert skeleton({}, [sym], "python").runs == ()
    assert skeleton({1: "x = 1"}, [], "python") == Skeleton("", (), 0, 0)


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.iterdir()))
def test_every_fixture_skeleton_quotes_its_headers(name: str) -> None:
    language = languages.language_for(name)
    assert language is not None
    text = (FIXTURES / name).read_text()
    lines = dict(enumerate(text.split("\n"), start=1))
    syms = extract(name, text, language).symbols
    sk = skeleton(lines, syms, language)
    quoted = {n for a, b in sk.runs for n in range(a, b + 1)}
    assert {s.head_start for s in syms} <= quoted
    if language in LEADS:
        _faithful(sk, lines, language)


def test_doc_comments_above_and_comments_after_code() -> None:
    src = (
        "package p\n"
        "\n"
        "const (\n"
        "\tA = 1 // one\n"
        "\tB = 2\n"
        ")\n"
        "\n"
        "// Serve answers requests on the listener until it is closed,\n"
        "// and then returns the error.\n"
        "func Serve() error {\n"
        "\treturn nil\n"
        "}\n"
    )
    syms = {s.qualname: s for s in extract("p.go", src, "go").symbols}
    assert syms["B"].docstring == ""  # "// one" belongs to the line of A
    sk, lines = _skeleton(src, "go")
    notes = _faithful(sk, lines, "go")
    text = sk.text.split("\n")
    # A doc comment of several lines is summed up where it stands, above.
    summary = (
        "// … doc: Serve answers requests on the listener until it is closed, and then returns"
        " the error."
    )
    assert text[text.index("func Serve() error {") - 1] == summary
    assert summary in notes and "const (" in text and "\tB = 2" in text


GO_SERVICE = (
    "package web\r\n\r\n"
    "// Router answers requests.\r\n"
    "type Router struct {\r\n\troutes map[string]string\r\n}\r\n\r\n"
    "// Handle registers a route on the router for requests.\r\n"
    "func (r *Router) Handle(path string,\r\n\thandler string) {\r\n"
    "\tr.routes[path] = handler\r\n}\r\n"
)


def test_skeleton_detail_through_the_service(service: ContextService, tmp_path: Path) -> None:
    root = tmp_path / "web"
    write_tree(root, {"router.go": GO_SERVICE.encode()})
    service.index(root)
    pack = service.context("web", "router handle requests route", 2000, detail="skeleton")
    item = next(i for i in pack.items if i.path == "router.go")
    lines = dict(enumerate(GO_SERVICE.split("\n"), start=1))
    text = item.text.split("\n")
    # The header's lines, both of them: the index keeps where headers end.
    assert "func (r *Router) Handle(path string,\r\n\thandler string) {\r" in item.text
    assert "\t// … lines 11-12 omitted" in text
    assert "# L" not in pack.rendered
    # The item names the runs it quotes, and they are the file's lines.
    assert item.lines == ((3, 4), (8, 10))
    for a, b in item.lines:
        assert "\n".join(lines[n] for n in range(a, b + 1)) in item.text
