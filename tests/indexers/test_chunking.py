"""AST-aligned chunking over every language fixture, plus size and text rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctxsvc.indexers.chunking import chunk_file
from ctxsvc.indexers.languages import language_for
from ctxsvc.indexers.symbols import extract
from ctxsvc.models import Chunk
from ctxsvc.tokens import TiktokenCounter

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "languages"
COUNTER = TiktokenCounter()


def chunks_of(path: str, text: str, target: int = 256, max_tokens: int = 512) -> list[Chunk]:
    lang = language_for(path)
    parsed = extract(path, text, lang) if lang else None
    return chunk_file(path, text, parsed, COUNTER, target_tokens=target, max_tokens=max_tokens)


def assert_tiles(text: str, chunks: list[Chunk]) -> None:
    """Chunks are ordered, disjoint and verbatim; every line that is not "" is in one,
    so the file's lines can be rebuilt byte for byte from its chunks."""
    lines = text.split("\n")
    covered: dict[int, str] = {}
    prev_end = 0
    for c in chunks:
        assert c.start_line > prev_end, "chunks overlap or are out of order"
        assert c.text == "\n".join(lines[c.start_line - 1 : c.end_line])
        assert lines[c.start_line - 1] and lines[c.end_line - 1], "an edge line is empty"
        covered.update(enumerate(c.text.split("\n"), start=c.start_line))
        prev_end = c.end_line
    rebuilt = [covered.get(n, "") for n in range(1, len(lines) + 1)]
    missing = [n for n, line in enumerate(lines, 1) if line and n not in covered]
    assert not missing, [repr(lines[n - 1]) for n in missing]
    assert rebuilt == lines


@pytest.mark.parametrize("fixture", sorted(p.name for p in FIXTURES.iterdir()))
@pytest.mark.parametrize(("target", "max_tokens"), [(256, 512), (32, 64)])
def test_fixture_chunks_tile_the_file(fixture: str, target: int, max_tokens: int) -> None:
    text = (FIXTURES / fixture).read_text()
    chunks = chunks_of(fixture, text, target, max_tokens)
    assert chunks
    assert_tiles(text, chunks)
    for c in chunks:
        assert c.language == language_for(fixture)
        assert c.tokens == COUNTER.count(c.embed_text)
        single_line = c.start_line == c.end_line
        assert c.tokens <= max_tokens + COUNTER.count(c.header) + 8 or single_line
    assert len({c.id for c in chunks}) == len(chunks)


def test_small_functions_stay_whole_and_merge() -> None:
    text = "\n".join(f"def f{i}(x):\n    return x + {i}\n" for i in range(4))
    chunks = chunks_of("m.py", text)
    assert len(chunks) == 1  # small neighbours merge up to the target
    assert set(chunks[0].symbols) == {"f0", "f1", "f2", "f3"}


def test_large_method_splits_at_statements_with_scope_header() -> None:
    body = "\n".join(f"        total += compute_{i}(value, {i})" for i in range(120))
    text = (
        "class Engine:\n"
        '    """Runs things."""\n\n'
        "    def run(self, value: int) -> int:\n"
        "        total = 0\n"
        f"{body}\n"
        "        return total\n"
    )
    chunks = chunks_of("engine.py", text, target=128, max_tokens=256)
    assert len(chunks) > 3
    assert_tiles(text, chunks)
    inner = [c for c in chunks if c.start_line > 5]
    assert inner and all(
        c.header == "class Engine\ndef run(self, value: int) -> int" for c in inner
    )
    assert all(c.symbols == ("Engine.run",) for c in inner)
    assert all(c.tokens <= 256 for c in chunks)


def test_markdown_chunks_by_heading_with_trail() -> None:
    text = "# Guide\n\nIntro.\n\n## Install\n\npip install x\n\n## Use\n\n" + "word " * 400 + "\n"
    chunks = chunks_of("README.md", text, target=64, max_tokens=128)
    assert chunks[0].start_line == 1 and chunks[0].language is None
    install = next(c for c in chunks if "pip install" in c.text)
    assert install.text.startswith("## Install") and install.header == "# Guide"
    assert_tiles(text, chunks)


def test_rst_underlined_headings_split() -> None:
    text = "Title\n=====\n\nIntro.\n\nSection\n-------\n\nBody text.\n"
    chunks = chunks_of("doc.rst", text, target=8, max_tokens=16)
    assert any(c.text.startswith("Section") and c.header == "Title" for c in chunks)


def test_minified_like_single_long_line_is_one_chunk() -> None:
    text = "x = [" + ", ".join(str(i) for i in range(3000)) + "]\n"
    chunks = chunks_of("data.py", text)
    assert len(chunks) == 1 and chunks[0].start_line == chunks[0].end_line == 1


def test_empty_and_blank_files_have_no_chunks() -> None:
    assert chunks_of("a.py", "") == [] and chunks_of("b.md", "\n\n  \n") == []


def test_content_hash_ignores_path_and_position() -> None:
    a = chunks_of("a/x.py", "def f():\n    return 1\n")
    b = chunks_of("b/y.py", "def f():\n    return 1\n")
    assert a[0].content_hash == b[0].content_hash and a[0].id != b[0].id


# Byte-exact lines: what is not "" is content. Each case fails on chunking that
# trimmed whitespace-only edge lines or dropped whitespace-only pieces.
CRLF_PY = (
    "import os\r\n\r\n\r\nclass A:\r\n    def f(self):\r\n        return 1\r\n\r\n"
    "    def g(self):\r\n\t\treturn 2  \r\n\r\n\r\ndef h():\r\n    pass\r\n"
)
WHITESPACE_BETWEEN = (
    "class A:\n    def f(self):\n        return 1\n    \n\t\n    def g(self):\n"
    "        return 2\n    \n\n\ndef h():  \n    pass\n   \n\t\n"
)
LONE_CR = "def f():\n    return 1\n\r\n\ndef g():\n    x = 1\n\r\n    return x\n\r\n"
GO_TABS = (
    "package x\n\nfunc F() int {\n\tif true {\n\t\treturn 1 \t\n\t}\n\t\n\treturn 0\n}\n"
    "\t\n\nfunc G() {\n\tF()\n}\n\t\n"
)
# A string of whitespace lines larger than max_tokens: windows of whitespace only.
WHITESPACE_STRING = 'X = """\n' + "    \n" * 700 + '"""\n\n\ndef f():\n    return X\n'
MARKDOWN = "# T\n\npara one\n  \n\t\n \npara two\n\n## U\n   \ntext\n\n  \n"
EXACT_CASES = [
    ("crlf.py", CRLF_PY),
    ("between.py", WHITESPACE_BETWEEN),
    ("lone_cr.py", LONE_CR),
    ("tabs.go", GO_TABS),
    ("string.py", WHITESPACE_STRING),
    ("notes.md", MARKDOWN),
]


@pytest.mark.parametrize(("path", "text"), EXACT_CASES, ids=[c[0] for c in EXACT_CASES])
@pytest.mark.parametrize(("target", "max_tokens"), [(256, 512), (16, 32)])
def test_every_line_that_is_not_empty_lies_in_a_chunk(
    path: str, text: str, target: int, max_tokens: int
) -> None:
    chunks = chunks_of(path, text, target, max_tokens)
    assert_tiles(text, chunks)


def test_crlf_chunks_keep_their_carriage_returns_and_parse_alike() -> None:
    crlf = chunks_of("crlf.py", CRLF_PY)
    lf = chunks_of("lf.py", CRLF_PY.replace("\r\n", "\n"))
    assert [c.symbols for c in crlf] == [c.symbols for c in lf]
    assert all(c.text.replace("\r", "") for c in crlf)
    # Blank lines of a CRLF file are "\r": content, kept between the definitions.
    assert "\r\n\r\n    def g(self):\r" in "\n".join(c.text for c in crlf)
    assert max(c.end_line for c in crlf) == len(CRLF_PY.split("\n")) - 1


def test_a_whitespace_only_window_is_absorbed_not_dropped() -> None:
    chunks = chunks_of("string.py", WHITESPACE_STRING, target=64, max_tokens=128)
    string = [c for c in chunks if c.start_line <= 702]
    assert string[0].start_line == 1 and string[-1].end_line >= 702
    assert sum(c.text.count("    \n") + c.text.endswith("    ") for c in string) == 700
