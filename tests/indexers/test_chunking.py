"""AST-aligned chunking over every language fixture, plus size and text rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctxsvc.models import Chunk
from ctxsvc.tokens import TiktokenCounter
from indexers.chunking import chunk_file
from indexers.languages import language_for
from indexers.symbols import extract

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "languages"
COUNTER = TiktokenCounter()


def chunks_of(path: str, text: str, target: int = 256, max_tokens: int = 512) -> list[Chunk]:
    lang = language_for(path)
    parsed = extract(path, text, lang) if lang else None
    return chunk_file(path, text, parsed, COUNTER, target_tokens=target, max_tokens=max_tokens)


def assert_tiles(text: str, chunks: list[Chunk]) -> None:
    """Chunks are ordered, disjoint, verbatim, and cover every non-blank line."""
    lines = text.rstrip("\n").split("\n")
    covered: set[int] = set()
    prev_end = 0
    for c in chunks:
        assert c.start_line > prev_end, "chunks overlap or are out of order"
        assert c.text == "\n".join(lines[c.start_line - 1 : c.end_line])
        covered.update(range(c.start_line, c.end_line + 1))
        prev_end = c.end_line
    missing = [i for i, line in enumerate(lines, 1) if line.strip() and i not in covered]
    assert not missing


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
