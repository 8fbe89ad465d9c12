"""The promise of a context, as properties: never over budget, and what it quotes is the file.

One repository is indexed once for the module with the real indexer (tree-sitter,
LanceDB in a temporary directory, the hash embedder): the language fixtures,
files of this checkout, and generated files that are legal but hostile to a
careless quoter (tabs, CRLF lines, trailing spaces, whitespace-only lines, long
signatures, unicode). Hypothesis then asks for random queries at budgets
0-5,000 and every detail level, alone, as a session that asked before, and as
a session of a workspace where another session posted events (drift warnings),
and checks each answer against the cl100k count and the bytes on disk.
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import git
from fakes import HashEmbedder
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from ctxsvc.compose import build_service
from ctxsvc.models import ContextItem, ContextPack
from ctxsvc.service import ContextService
from ctxsvc.settings import Settings
from ctxsvc.tokens import TiktokenCounter

HERE = Path(__file__).resolve().parent
CHECKOUT = HERE.parent
FIXTURES = HERE / "fixtures" / "languages"
# Files of this checkout, as they are when the test runs.
REAL_FILES = (
    "ctxsvc/models.py",
    "ctxsvc/view.py",
    "ctxsvc/drift.py",
    "ctxsvc/tokens.py",
    "ctxsvc/limits.py",
    "ctxsvc/errors.py",
    "indexers/discover.py",
    "tests/fakes.py",
    "pyproject.toml",
    "Makefile",
)
DETAILS = ("snippets", "skeleton", "map", "full")
REPO = "faithful"

# The comment leader of each fence language (an elision is a comment of the file's language).
_LEADER = {
    **dict.fromkeys(("python", "ruby", "bash"), "#"),
    **dict.fromkeys(
        ("go", "rust", "javascript", "typescript", "tsx", "java", "c", "cpp", "csharp", "php",
         "kotlin"),
        "//",
    ),
    "markdown": "<!--",
}  # fmt: skip
# A fence may be longer than three backticks (to quote a ``` line); only a line of
# the same backticks closes it.
_FENCE = re.compile(r"^(`{3,})([\w+-]*)$")


# -- the repository -----------------------------------------------------------------------


_WORDS = ("größe", "naïve", "café", "データ", "π", "ok", "raw", "tab", "crlf", "ω")


class _Writer:
    """Generated lines with the whitespace a normalising quoter gets wrong."""

    def __init__(self, seed: int) -> None:
        self.rnd = random.Random(seed)

    def word(self) -> str:
        return self.rnd.choice(_WORDS)

    def trail(self, line: str) -> str:
        """``line``, sometimes with trailing spaces or tabs."""
        return line + self.rnd.choice(("", "", "", " ", "  ", "\t", " \t"))

    def blank(self) -> list[str]:
        """Now and then a blank or whitespace-only line."""
        return [self.rnd.choice(("", " ", "\t", "  \t  "))] if self.rnd.random() < 0.3 else []

    def file(self, lines: list[str], crlf: float) -> bytes:
        """The lines, a share ``crlf`` of them ending in CRLF."""
        ends = ["\r\n" if self.rnd.random() < crlf else "\n" for _ in lines]
        return "".join(map(str.__add__, lines, ends)).encode()


def _python(w: _Writer) -> list[str]:
    out = ['"""Generated: tabs for indentation, unicode, long signatures."""', ""]
    out += [
        "from typing import overload",
        "",
        "π = 3.14159",
        'ÉMOJI = "🙂 👩\u200d💻 <|endoftext|>"',
    ]
    for i in range(14):
        name = f"handle_{w.word()}_{i}"
        params = ", ".join(f"p{j}: int = {j}" for j in range(w.rnd.randint(0, 18)))
        out += ["", ""]
        if i % 3 == 0:  # a decorated stub, its signature long on one line
            out += ["@overload", f"def {name}(self_like, /, {params or 'x: int'}, *, "
                    "flag: bool = False, **values: object) -> str: ..."]  # fmt: skip
        if i % 4 == 1:  # a signature over several lines, with the markers a rewrite drops
            out += [f"def {name}(", "\tfirst: int,", "\t*,", "\tsecond: str = 'ü',",
                    "\t**values: object,", ") -> str:"]  # fmt: skip
        else:
            out += [f"def {name}({params}) -> str:"]
        out += [f'\t"""Return the {w.word()} of a value, tab-indented."""']
        for k in range(w.rnd.randint(2, 12)):
            out += [w.trail(f"\tv{k} = '{w.word()}' * {k}"), *w.blank()]
        out += [f"\treturn v0 + '{w.word()}'"]
    out += ["", "", "class Größe:", '\t"""A class with tab-indented methods."""']
    for i in range(8):
        out += ["\t", w.trail(f"\tdef measure_{i}(self, unit: str = 'µm') -> float:"),
                w.trail(f"\t\treturn {i} * 0.5  # 単位 {w.word()}")]  # fmt: skip
    return out


def _go(w: _Writer) -> list[str]:
    out = ["// Package hostile is gofmt-style Go: tabs, some CRLF lines.", "package hostile", "",
           'import "fmt"', "", "type Server struct {", "\tName string", "}"]  # fmt: skip
    for i in range(12):
        args = ", ".join(f"arg{j} int" for j in range(w.rnd.randint(1, 16)))
        out += ["", f"// Handle{i} answers {w.word()}.",
                f"func (s *Server) Handle{i}({args}) (string, error) {{"]  # fmt: skip
        for k in range(w.rnd.randint(2, 10)):
            out += [w.trail(f'\tv{k} := fmt.Sprintf("%d {w.word()}", {k})'), f"\t_ = v{k}"]
        out += ['\treturn "ok", nil', "}"]
    return out


def _javascript(w: _Writer) -> list[str]:
    out = ["// Express-style assignments of functions, mixed line endings.", "'use strict';"]
    for i in range(10):
        opts = "".join(f", opt{j}" for j in range(w.rnd.randint(0, 14)))
        out += ["", f"res.send{i} = function send{i}(body{opts}) {{"]
        out += [w.trail(f"\tconst v{k} = '{w.word()}'.repeat({k});") for k in range(2, 9)]
        out += ["\treturn this;", "};"]
    args = ", ".join(f"arg_{c}" for c in "abcdefghijklmnopqrstuvwxyz")
    return [*out, "", f"exports.long = ({args}) => arg_a;"]


def _rust(w: _Writer) -> list[str]:
    out = ["//! Rust with unicode strings and long generic signatures."]
    for i in range(8):
        out += ["", f"pub fn convert_{i}<T: Clone + Send + Sync + 'static, U: From<T> + Default>"
                "(input: &[T], scale: f64, label: &str, extra: Option<Vec<U>>) -> Vec<U> {"]  # fmt: skip
        out += [w.trail(f'    let v{k} = "{w.word()} → ✓";') for k in range(w.rnd.randint(2, 8))]
        out += ["    Vec::new()", "}"]
    return out


_GUIDE = [
    "# Guide", "", "Install it, then call it:", "", "```python", "import hostile",
    "hostile.handle(1)", "```", "", "A longer fence quotes a fence:", "", "````markdown",
    "```go", "func main() {}", "```", "````", "", "## Notes", "", "Inline ``` is text too.",
]  # fmt: skip


def _fences_py(w: _Writer) -> list[str]:
    """Python whose docstrings quote Markdown fences, as doctest-style docs do."""
    out = ['"""Helpers documented with fenced examples.', "", "```python",
           ">>> render('x')", "'x'", "```", '"""', ""]  # fmt: skip
    for i in range(6):
        out += ["", f"def render_{i}(text: str) -> str:", '    """Wrap ``text``:', "",
                "    ```text", f"    {w.word()} {i}", "    ```", '    """']  # fmt: skip
        out += [f"    v{k} = text * {k}  # {w.word()}" for k in range(w.rnd.randint(2, 8))]
        out += ["    return '```' + text + '```'"]
    return out


def hostile_files(seed: int = 13) -> dict[str, bytes]:
    """Legal files that a quoter which normalises anything gets wrong, in six languages;
    two quote Markdown fences (a fence inside a fence must not end it early)."""
    w = _Writer(seed)
    python = _python(w)
    return {
        "hostile/tabs.py": w.file(python, crlf=0.0),
        "hostile/crlf.py": w.file(python, crlf=1.0),
        "hostile/server.go": w.file(_go(w), crlf=0.4),
        "hostile/mixed.js": w.file(_javascript(w), crlf=0.5),
        "hostile/lib.rs": w.file(_rust(w), crlf=0.1),
        "hostile/guide.md": w.file(_GUIDE, crlf=0.0),
        "hostile/fences.py": w.file(_fences_py(w), crlf=0.0),
        "hostile/notes.txt": w.file(
            [w.trail(f"{w.word()}\t{w.word()}  col\t{i}") for i in range(40)], crlf=0.3
        ),
    }


def corpus_files() -> dict[str, bytes]:
    """The repository's files: the language fixtures, files of this checkout, hostile ones."""
    files = {f"fixtures/{p.name}": p.read_bytes() for p in sorted(FIXTURES.iterdir())}
    for rel in REAL_FILES:
        src = CHECKOUT / rel
        if src.is_file():
            files[f"real/{rel}"] = src.read_bytes()
    return {**files, **hostile_files()}


FILES = corpus_files()
LINES = {path: data.decode().split("\n") for path, data in FILES.items()}  # byte for byte
# (identifier, path) of every name in the files: query words, and what events are about
NAMES = sorted(
    {(w, p) for p, data in FILES.items() for w in re.findall(r"[^\W\d]\w{2,}", data.decode())}
)
WORDS = sorted({w for w, _ in NAMES})


@dataclass(frozen=True)
class Indexed:
    service: ContextService
    root: Path

    def lines(self, path: str) -> list[str]:
        """The file's lines as on disk, byte for byte ("\\r" and all)."""
        with open(self.root / path, "rb") as f:
            return f.read().decode().split("\n")


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> Indexed:
    """FILES indexed as the repository ``REPO``, with the real indexer."""
    base = tmp_path_factory.mktemp("faithful")
    root = base / REPO
    for rel, data in FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "init")
    service = build_service(
        Settings.from_env({}, home=base / "home"),
        embedder=HashEmbedder(),
        tokens=TiktokenCounter("cl100k_base"),
    )
    summary = service.index(root)
    assert summary.files_indexed == len(FILES) and summary.symbols > 100
    return Indexed(service, root)


# -- reading a pack back ------------------------------------------------------------------


def is_elision(line: str, language: str) -> bool:
    """A comment line of ``language`` that says what it stands for: ``# … lines 3-9 omitted``."""
    lead = _LEADER.get(language, "#")
    body = line.lstrip(" \t")
    if not body.startswith(f"{lead} …"):
        return False
    return body.endswith("-->") if lead == "<!--" else True


def fences(text: str) -> Iterator[tuple[str, str | None, list[str]]]:
    """``(language, path, lines)`` of each code fence of ``text``; the path is that of the
    last ``## `` heading before it (None when there is none)."""
    path: str | None = None
    lines = iter(text.split("\n"))
    for line in lines:
        if line.startswith("## "):
            path = line[3:].strip()
        elif m := _FENCE.match(line):
            language, body = m.group(2), []
            for inner in lines:
                if inner == m.group(1):
                    break
                body.append(inner)
            else:
                raise AssertionError(f"an unclosed fence in:\n{text}")
            yield language, path, body


def delivered_runs(item: ContextItem) -> tuple[tuple[int, int], ...]:
    """The runs of file lines the item says it quotes verbatim, in order.

    ``ContextItem.lines`` where the pack has it; before it, a snippet or a whole file
    claimed its range start..end, and a skeleton or map line claimed none.
    """
    runs: tuple[tuple[int, int], ...] | None = getattr(item, "lines", None)
    if runs is not None:
        return runs
    return ((item.start_line, item.end_line),) if item.kind in ("snippet", "file") else ()


def check_verbatim(pack: ContextPack, indexed: Indexed) -> None:
    """Every line an item claims is the file's line, byte for byte, found in order in its
    text, with an elision comment between two runs that do not touch (no silent hole);
    every line of a fence (item or rendered) is such a line, or an elision comment."""
    for item in pack.items:
        lines = indexed.lines(item.path)
        expected: list[tuple[int, str]] = []
        breaks: set[int] = set()  # positions in ``expected`` where lines were left out
        for start, end in delivered_runs(item):
            assert 1 <= start <= end <= len(lines), (item.path, start, end, len(lines))
            if expected and start > expected[-1][0] + 1:
                breaks.add(len(expected))
            expected += [(n, lines[n - 1]) for n in range(start, end + 1)]
        quoted = [(lang, body) for lang, _, body in fences(item.text)]
        assert len(quoted) <= 1, f"{item.path}: more than one fence in an item"
        language, body = quoted[0] if quoted else ("", [])
        at = 0
        marked: set[int] = set()
        for line in body:
            if at < len(expected) and line == expected[at][1]:
                assert at not in breaks or at in marked, (
                    f"{item.path}: lines {expected[at - 1][0] + 1}-{expected[at][0] - 1} are "
                    "left out with no elision comment saying so (a silent hole)"
                )
                at += 1
            elif is_elision(line, language):
                marked.add(at)
            else:
                want = expected[at] if at < len(expected) else (None, "(no more lines claimed)")
                raise AssertionError(
                    f"{item.path}: {line!r} in the fence is neither line {want[0]} of the file "
                    f"({want[1]!r}) nor an elision comment of {language or 'plain text'}"
                )
        assert at == len(expected), (
            f"{item.path}: line {expected[at][0]} ({expected[at][1]!r}) is claimed verbatim "
            "but is not in the item's text"
        )
    for language, path, body in fences(pack.rendered):
        assert path in FILES, f"a fence under {path!r}, which is not a file of the repository"
        known = set(indexed.lines(path))
        for line in body:
            assert line in known or is_elision(line, language), (
                f"{path}: {line!r} in the rendered fence is not a line of the file "
                f"nor an elision comment of {language or 'plain text'}"
            )


# -- asking -------------------------------------------------------------------------------


_ids = itertools.count()


@dataclass(frozen=True)
class Ask:
    query: str
    budget: int
    detail: str
    session: str  # "none", "new", "asked" (the query once before) or "drift"
    before: int | None  # the budget of the same ask once before, if any ("asked", "drift")
    events: list[tuple[str, str]]  # (name, path) changed by another session ("drift")


def ask(service: ContextService, a: Ask) -> ContextPack:
    note(repr(a))  # the example, as hypothesis here prints its arguments blank
    if a.session == "none":
        return service.context(REPO, a.query, a.budget, detail=a.detail)
    workspace = f"ws{next(_ids)}" if a.session == "drift" else None
    me = service.start_session(REPO, "faithful", agent="me", workspace=workspace)
    if a.before is not None:
        service.context(REPO, a.query, a.before, detail=a.detail, session_id=me.id)
    if workspace is not None:
        other = service.start_session(REPO, "edits", agent="other", workspace=workspace)
        for name, path in a.events:
            service.record_event(
                workspace, f"changed {name} in {path} to take a timeout", session_id=other.id
            )
    return service.context(REPO, a.query, a.budget, detail=a.detail, session_id=me.id)


# A few names of the files, with some random text among them.
queries = st.lists(
    st.one_of(
        st.sampled_from(WORDS),
        st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=20),
    ),
    min_size=1,
    max_size=6,
).map(lambda parts: " ".join(parts) if "".join(parts).strip() else "handle")
# Small budgets are where the fixed parts of a pack (headings, notes, warnings) overrun.
budgets = st.one_of(st.integers(0, 64), st.integers(0, 5000))


@st.composite
def asks(draw: st.DrawFn) -> Ask:
    query, budget, detail = draw(queries), draw(budgets), draw(st.sampled_from(DETAILS))
    session = draw(st.sampled_from(("none", "new", "asked", "drift")))
    before: int | None = None
    events: list[tuple[str, str]] = []
    if session == "asked":
        before = draw(budgets)
    elif session == "drift":  # with or without an ask before the other session's events
        before = draw(st.none() | budgets)
        # about anything, and about what the query names (a warning the answer must carry)
        named = [n for n in NAMES if n[0] in query.split()]
        about = st.sampled_from(NAMES) | st.sampled_from(named) if named else st.sampled_from(NAMES)
        events = draw(st.lists(about, min_size=1, max_size=30))
    return Ask(query, budget, detail, session, before, events)


EXAMPLES = settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


@EXAMPLES
@given(a=asks())
def test_the_rendered_text_never_exceeds_the_budget(indexed: Indexed, a: Ask) -> None:
    pack = ask(indexed.service, a)
    used = TiktokenCounter("cl100k_base").count(pack.rendered)
    assert used <= a.budget, f"{used} tokens rendered for a budget of {a.budget}:\n{pack.rendered}"
    assert pack.tokens_used == used


@EXAMPLES
@given(a=asks())
def test_every_delivered_line_is_the_files_line(indexed: Indexed, a: Ask) -> None:
    check_verbatim(ask(indexed.service, a), indexed)


def test_the_repository_is_hostile_enough() -> None:
    """The properties above are only as good as the files: make sure they hold the traps."""
    every = [line for lines in LINES.values() for line in lines]
    assert any(line.endswith("\r") for line in every)
    assert any(line.startswith("\t") for line in every)
    assert any(line and not line.strip() for line in every)  # whitespace only
    assert any(line != line.rstrip() and line.strip() for line in every)  # trailing blanks
    assert any(len(line) > 200 for line in every)
    assert any(not line.isascii() for line in every)
    assert {p.split("/")[0] for p in FILES} == {"fixtures", "real", "hostile"}
    fence = re.compile(r"^\s*```")
    assert {p for p, lines in LINES.items() if any(map(fence.match, lines))} >= {
        "hostile/guide.md",
        "hostile/fences.py",
    }  # a fence inside the code
