"""AST-aligned chunks: the unit of retrieval, embedding and packing.

Code follows the outline the parser produced: every top-level statement or
definition is a unit, and the comments and blank lines before it belong to
it (doc comments, decorators). A unit that fits ``max_tokens`` stays whole,
so a function, method or class is one chunk; a larger definition splits at
its body's statements (recursively), each piece headed by the signatures of
the scopes it sits in; a large unit with no inner structure splits into line
windows. Then adjacent small pieces of one scope merge up to ``target``.

Text files split at headings (Markdown ``#``, reStructuredText underlines),
then paragraphs, merged up to ``target``; the heading trail is the header.

Chunk texts are the file's lines byte for byte (lines end at "\\n"; a CRLF
line keeps its "\\r"). Only lines that are exactly "" are left out at chunk
edges, so every other line lies in some chunk and a file's lines can be
rebuilt from its chunks (see ``_cover``). A file of whitespace only has no
chunks.

Sizes are decided on per-line token counts (cheap, and within a few tokens
of the truth); each chunk's stored ``tokens`` is counted exactly.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from ctxsvc.models import Chunk, ParsedFile, Span, Symbol, embed_text
from ctxsvc.tokens import TokenCounter


@dataclass
class _Piece:
    start: int  # 1-based, inclusive
    end: int
    scope: tuple[str, ...]  # qualnames of enclosing definitions, outermost first
    symbol: str | None = None  # the definition this piece is (or starts), if any
    tokens: int = 0


class _Lines:
    """A file's lines with prefix sums of their token counts."""

    def __init__(self, text: str, counter: TokenCounter) -> None:
        self.lines = text.split("\n")
        counts = counter.count_many([line + "\n" for line in self.lines])
        self.prefix = [0]
        for c in counts:
            self.prefix.append(self.prefix[-1] + c)

    def __len__(self) -> int:
        return len(self.lines)

    def tokens(self, start: int, end: int) -> int:
        return self.prefix[end] - self.prefix[start - 1]

    def text(self, start: int, end: int) -> str:
        return "\n".join(self.lines[start - 1 : end])


def chunk_file(
    path: str,
    text: str,
    parsed: ParsedFile | None,
    counter: TokenCounter,
    *,
    target_tokens: int = 256,
    max_tokens: int = 512,
) -> list[Chunk]:
    """Chunks of one file: AST-aligned when ``parsed`` has an outline, else text."""
    if not text.strip():
        return []
    lines = _Lines(text.rstrip("\n"), counter)
    language = parsed.language if parsed else None
    if parsed is not None and parsed.outline:
        symbols = {s.qualname: s for s in parsed.symbols}
        pieces = _code_pieces(parsed.outline, lines, max_tokens, target_tokens)
        pieces = _merge(pieces, target_tokens)
        headers = [_code_header(p.scope, symbols) for p in pieces]
        names = [_piece_symbols(p, parsed.symbols) for p in pieces]
    else:
        pieces, headers = _text_pieces(lines, target_tokens)
        names = [() for _ in pieces]
    return _finish(path, language, lines, pieces, headers, names, counter)


# -- code -------------------------------------------------------------------


def _code_pieces(outline: tuple[Span, ...], lines: _Lines, max_t: int, target: int) -> list[_Piece]:
    out: list[_Piece] = []
    # Work stack of (span-or-None, start, end, scope); iterative so deeply
    # nested code cannot exhaust Python's recursion limit.
    stack = list(reversed(_units(outline, 1, len(lines), ())))
    while stack:
        span, start, end, scope = stack.pop()
        tokens = lines.tokens(start, end)
        symbol = span.symbol if span else None
        if tokens <= max_t:
            out.append(_Piece(start, end, scope, symbol, tokens))
            continue
        children = _inside(span.children, start, end) if span else ()
        if children:
            inner = (*scope, symbol) if symbol else scope
            first = children[0].start_line
            parts: list[tuple[Span | None, int, int, tuple[str, ...]]] = []
            if first > start:  # the signature and docstring before the body
                parts.append((None, start, first - 1, scope))
            parts.extend(_units(children, first, end, inner))
            if parts and symbol:
                head_span, hs, he, hscope = parts[0]
                if head_span is None:
                    parts[0] = (Span(hs, he, symbol), hs, he, hscope)
            stack.extend(reversed(parts))
            continue
        inner = (*scope, symbol) if symbol else scope
        out.extend(_windows(lines, start, end, target, scope, inner, symbol))
    return out


def _units(
    spans: tuple[Span, ...], lo: int, hi: int, scope: tuple[str, ...]
) -> list[tuple[Span | None, int, int, tuple[str, ...]]]:
    """Cover lines lo..hi with the spans, each widened up to the previous one's end."""
    spans = _inside(spans, lo, hi)
    if not spans:
        return [(None, lo, hi, scope)] if lo <= hi else []
    units: list[tuple[Span | None, int, int, tuple[str, ...]]] = []
    cursor = lo
    for i, span in enumerate(spans):
        end = hi if i == len(spans) - 1 else max(span.end_line, cursor)
        units.append((span, cursor, end, scope))
        cursor = end + 1
    return units


def _inside(spans: tuple[Span, ...], lo: int, hi: int) -> tuple[Span, ...]:
    """Spans within lo..hi, clipped, ordered and made non-overlapping."""
    out: list[Span] = []
    last = lo - 1
    for s in sorted(spans, key=lambda s: s.start_line):
        start, end = max(s.start_line, last + 1), min(s.end_line, hi)
        if start > end:
            continue
        out.append(
            s
            if (start, end) == (s.start_line, s.end_line)
            else Span(start, end, s.symbol, s.children)
        )
        last = end
    return tuple(out)


def _windows(
    lines: _Lines,
    start: int,
    end: int,
    target: int,
    scope: tuple[str, ...],
    inner: tuple[str, ...],
    symbol: str | None,
) -> list[_Piece]:
    out: list[_Piece] = []
    s = start
    while s <= end:
        e = s
        while e < end and lines.tokens(s, e + 1) <= target:
            e += 1
        first = s == start
        out.append(
            _Piece(s, e, scope if first else inner, symbol if first else None, lines.tokens(s, e))
        )
        s = e + 1
    return out


def _merge(pieces: list[_Piece], target: int) -> list[_Piece]:
    """Join adjacent pieces of one scope while the sum stays within target."""
    out: list[_Piece] = []
    for p in pieces:
        prev = out[-1] if out else None
        if (
            prev is not None
            and prev.scope == p.scope
            and prev.end + 1 == p.start
            and prev.tokens + p.tokens <= target
        ):
            prev.end, prev.tokens = p.end, prev.tokens + p.tokens
            prev.symbol = prev.symbol or p.symbol
        else:
            out.append(p)
    return out


def _code_header(scope: tuple[str, ...], symbols: dict[str, Symbol]) -> str:
    return "\n".join(symbols[q].signature for q in scope if q in symbols)


def _piece_symbols(p: _Piece, symbols: tuple[Symbol, ...]) -> tuple[str, ...]:
    """Definitions that start in the piece; else the innermost enclosing one."""
    inside = tuple(s.qualname for s in symbols if p.start <= s.start_line <= p.end)
    if inside:
        return inside
    return (p.scope[-1],) if p.scope else ()


# -- text -------------------------------------------------------------------

_MD_HEADING = re.compile(r"^(#{1,6})\s+\S")
_RST_UNDERLINE = re.compile(r"^([=\-~^\"'*+#`])\1{2,}\s*$")


def _text_pieces(lines: _Lines, target: int) -> tuple[list[_Piece], list[str]]:
    pieces: list[_Piece] = []
    headers: list[str] = []
    trail: list[tuple[int, str]] = []  # (level, heading) of the current section
    rst_levels: list[str] = []
    n = len(lines)
    block_start = 1
    i = 1
    while i <= n:
        line = lines.lines[i - 1]
        nxt = lines.lines[i] if i < n else ""
        heading: tuple[int, str] | None = None
        if m := _MD_HEADING.match(line):
            heading = (len(m.group(1)), line.strip())
        elif (
            line.strip()
            and (u := _RST_UNDERLINE.match(nxt))
            and len(nxt.strip()) >= len(line.strip())
        ):
            if u.group(1) not in rst_levels:
                rst_levels.append(u.group(1))
            heading = (rst_levels.index(u.group(1)) + 1, line.strip())
        if heading and i > block_start:
            _paragraphs(lines, block_start, i - 1, target, _trail(trail), pieces, headers)
            block_start = i
        if heading:
            trail = [t for t in trail if t[0] < heading[0]] + [heading]
        i += 1
    _paragraphs(lines, block_start, n, target, _trail(trail), pieces, headers)
    return pieces, headers


def _trail(trail: list[tuple[int, str]]) -> str:
    return " > ".join(h for _, h in trail[:-1]) if len(trail) > 1 else ""


def _paragraphs(
    lines: _Lines,
    lo: int,
    hi: int,
    target: int,
    header: str,
    pieces: list[_Piece],
    headers: list[str],
) -> None:
    """Split a section at blank lines, merge paragraphs up to target, window big ones."""
    start = lo
    cur: _Piece | None = None
    for i in range(lo, hi + 2):
        if i <= hi and lines.lines[i - 1].strip():
            continue
        if i - 1 >= start:  # a paragraph start..i-1, with its trailing blank line
            end = min(i, hi)
            for w in _windows(lines, start, end, target, (), (), None):
                if cur is not None and cur.tokens + w.tokens <= target:
                    cur.end, cur.tokens = w.end, cur.tokens + w.tokens
                else:
                    cur = w
                    pieces.append(cur)
                    headers.append(header)
        start = i + 1
    # Blank lines that belong to no paragraph still belong to the file.
    if cur is not None and cur.end < hi:
        cur.end = hi


# -- output -----------------------------------------------------------------


def _cover(lines: _Lines, pieces: list[_Piece]) -> list[int]:
    """Keep spans tight, yet give every line that is not "" a piece.

    Only lines that are exactly "" are trimmed from a piece's edges: a line
    of spaces, tabs or a lone "\\r" (a blank line of a CRLF file) is content,
    quoted byte for byte. A piece of whitespace only is dropped and its lines
    go to the piece before it (the first piece takes those before it), so a
    line outside every chunk is exactly "" and a file's lines can be rebuilt
    from its chunks. Pieces are ordered and disjoint; returns the positions
    of those kept, adjusted in place.
    """
    text = lines.lines
    kept: list[int] = []
    for k, p in enumerate(pieces):
        while p.start < p.end and not text[p.start - 1]:
            p.start += 1
        while p.end > p.start and not text[p.end - 1]:
            p.end -= 1
        if any(line.strip() for line in text[p.start - 1 : p.end]):
            kept.append(k)
    for i, k in enumerate(kept):
        p = pieces[k]
        if i == 0:
            p.start = next(n for n in range(1, p.start + 1) if text[n - 1])
        stop = pieces[kept[i + 1]].start if i + 1 < len(kept) else len(text) + 1
        p.end = next(n for n in range(stop - 1, p.end - 1, -1) if text[n - 1])
    return kept


def _finish(
    path: str,
    language: str | None,
    lines: _Lines,
    pieces: list[_Piece],
    headers: list[str],
    names: list[tuple[str, ...]],
    counter: TokenCounter,
) -> list[Chunk]:
    chunks: list[Chunk] = []
    kept = _cover(lines, pieces)
    pieces = [pieces[k] for k in kept]
    headers = [headers[k] for k in kept]
    names = [names[k] for k in kept]
    texts = [lines.text(p.start, p.end) for p in pieces]
    embeds = [embed_text(h, t) for h, t in zip(headers, texts, strict=True)]
    counts = counter.count_many(embeds)
    for p, header, body, embed, tokens, syms in zip(
        pieces, headers, texts, embeds, counts, names, strict=True
    ):
        content_hash = hashlib.sha256(embed.encode("utf-8", "surrogatepass")).hexdigest()
        ident = hashlib.sha256(
            f"{path}\0{p.start}\0{p.end}\0{content_hash}".encode("utf-8", "surrogatepass")
        )
        chunks.append(
            Chunk(
                id=ident.hexdigest()[:32],
                path=path,
                language=language,
                start_line=p.start,
                end_line=p.end,
                header=header,
                text=body,
                symbols=syms,
                tokens=tokens,
                content_hash=content_hash,
            )
        )
    return chunks
