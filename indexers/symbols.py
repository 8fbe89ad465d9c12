"""Symbols, references, imports and the outline of one source file.

One iterative walk over the tree-sitter tree per file, driven by the
per-language tables of ``grammar_specs``; the tree comes from ``languages``,
the only module that imports ``tree_sitter``.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from typing import Any

from ctxsvc.indexers import languages
from ctxsvc.indexers.grammar_specs import SPECS, TOP, LangSpec, find, text
from ctxsvc.models import Import, ParsedFile, Reference, Span, Symbol

Node = Any

SIGNATURE_MAX = 200
DOCSTRING_MAX = 500

# Names that are keywords or literals in some grammar but parse as identifiers.
_SKIP_NAMES = frozenset(
    b"self this super cls true false null nil None True False undefined Self crate iota".split()
)
_NAME_START = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_$")
_QUAL_SEP = re.compile(r"::|\\|\.")
_GENERICS = re.compile(r"<.*>|\[.*\]", re.S)
_COMMENT_MARK = re.compile(r"^\s*(?:/\*+|\*+/|///?!?|\*|#+)\s?|\s*\*+/\s*$")
_OPEN_SPACE = re.compile(r"([(\[]) ")
_CLOSE_SPACE = re.compile(r",? ([)\]])")
_TOKEN = re.compile(r"[\w$]+|\S")
# Nodes written before a definition's keyword that are not its header.
_DECORATIONS = frozenset(
    {"decorator", "marker_annotation", "annotation", "attribute_list", "attribute_item"}
)
_XML_TAG = re.compile(r"</?(?:summary|remarks|returns|para)>")


@dataclass(slots=True)
class _Scope:
    depth: int
    prefix: str | None  # qualname that children are named under
    scope: str | None  # qualname of the innermost enclosing definition
    member_parent: bool  # a function directly inside is a method
    top_level: bool  # constants count here (module, namespace or class level)


@dataclass(slots=True)
class _Outlined:
    symbol: str | None
    start: int
    end: int
    body: Node | None
    span: Span | None = None


def _end_line(node: Node) -> int:
    # A node ending at column 0 (e.g. a preprocessor line with its newline)
    # does not occupy that line.
    row: int = node.end_point[0]
    col: int = node.end_point[1]
    return row if col == 0 and row > node.start_point[0] else row + 1


def _one_line(s: str, cap: int) -> str:
    """``s`` with whitespace runs joined, cut at a token boundary with " …" past ``cap``."""
    s = " ".join(s[: cap * 4].split())
    s = _CLOSE_SPACE.sub(r"\1", _OPEN_SPACE.sub(r"\1", s))
    if len(s) <= cap:
        return s
    cut = s[: cap - 1]  # room for " …"
    space = cut.rfind(" ")
    if space > cap // 2:
        cut = cut[:space]
    else:  # one long run of code: end it where a name or number ends
        token = max((m.end() for m in _TOKEN.finditer(cut) if m.end() < len(cut)), default=0)
        cut = cut[:token] if token > 0 else cut
    return cut.rstrip() + " …"


def _head_leaf(start: Node, spec: LangSpec) -> Node:
    """The first token of a definition's own header: its keyword or name, past the
    decorators, annotations, attributes and comments written inside its node."""
    skip = spec.comments | _DECORATIONS
    todo = [start]
    while todo:
        node = todo.pop()
        if node.type in skip:
            continue
        if node.child_count == 0:
            return node
        todo.extend(reversed(node.children))
    return start


def _header_start(node: Node, spec: LangSpec) -> Node:
    """``node``, or the declaration around it: "const f = () => ..." reads better
    with its keyword."""
    start = node
    while start.parent is not None and start.parent.type in spec.wrappers:
        if start.parent.type in spec.always_wrap or start.parent.named_child_count != 1:
            break
        start = start.parent
    return start


def _head_end(node: Node, start: Node, body: Node | None, spec: LangSpec) -> int:
    """The line a definition's body begins on: its opener ("{") line, else the line
    of the token before it (Python's ":"). Without a body, the value of a constant or
    alias stands for it; with neither, the whole declaration is its header."""
    if body is not None and body.start_byte > start.start_byte:
        first = body.child(0) if body.child_count else None
        prev = body.prev_sibling
        while prev is not None and prev.type in spec.comments:
            prev = prev.prev_sibling
        if (first is not None and not first.is_named) or prev is None:
            return int(body.start_point[0]) + 1
        return _end_line(prev)
    value = node.child_by_field_name("value") or node.child_by_field_name("right")
    if value is not None and value.start_byte > start.start_byte:
        return int(value.start_point[0]) + 1
    return _end_line(start)


def _signature(start: Node, leaf: Node, body: Node | None, spec: LangSpec, src: bytes) -> str:
    """The header from its first token to the body, comments left out, on one line."""
    begin = leaf.start_byte
    end = body.start_byte if body is not None and body.start_byte > begin else start.end_byte
    end = min(end, begin + SIGNATURE_MAX * 4)
    # Comment nodes inside the header (between parameters, say) are cut out by the
    # tree: a line starting with "*" may be Python's "*," or "**values".
    parts: list[bytes] = []
    pos = begin
    todo = [start]
    while todo:
        n = todo.pop()
        if n.end_byte <= pos or n.start_byte >= end:
            continue
        if n.type in spec.comments:
            parts.append(src[pos : n.start_byte])
            pos = n.end_byte
        elif n.child_count:
            todo.extend(reversed(n.children))
    parts.append(src[pos:end])
    sig = _one_line(b" ".join(parts).decode("utf-8", "replace"), SIGNATURE_MAX)
    if sig.endswith(("{", ":")) and not sig.endswith("::"):  # the body opener
        sig = sig[:-1].rstrip()
    return sig


def is_name(name: str) -> bool:
    """Whether ``name``, or each part of a qualified name, names something.

    "_" (Go's ``var _ Iface = ...``, a throwaway), "__" and a lone punctuation
    mark ("$", "+") do not; operator methods ("==", "<=>", "operator+") do.
    The one rule for what becomes a symbol and what a repository map lists.
    """
    return all(bool(p.strip("_")) and (len(p) > 1 or p.isalnum()) for p in name.split("."))


def _python_docstring(body: Node | None, src: bytes) -> str:
    if body is None or body.named_child_count == 0:
        return ""
    first = body.named_children[0]
    if first.type != "expression_statement" or first.named_child_count != 1:
        return ""
    string = first.named_children[0]
    if string.type != "string":
        return ""
    raw = text(string, src).lstrip("rRbBuUfF")
    for quote in ('"""', "'''", '"', "'"):
        if raw.startswith(quote) and raw.endswith(quote) and len(raw) >= 2 * len(quote):
            raw = raw[len(quote) : -len(quote)]
            break
    return inspect.cleandoc(raw)[:DOCSTRING_MAX]


def _comment_docstring(first: Node, spec: LangSpec, src: bytes) -> str:
    node = first
    # A definition first in a body may have its comment before the body node.
    while node.prev_named_sibling is None and node.parent is not None:
        if node.parent.start_byte != node.start_byte:
            break
        node = node.parent
    lines: list[str] = []
    prev = node.prev_named_sibling
    while prev is not None and prev.type in spec.attributes:
        node, prev = prev, prev.prev_named_sibling
    line = node.start_point[0]
    while prev is not None and prev.type in spec.comments and _end_line(prev) >= line:
        before = prev.prev_sibling
        if before is not None and before.end_point[0] == prev.start_point[0]:
            break  # "x = 1 // note": the comment after the code before, not a doc
        lines[:0] = text(prev, src).splitlines()
        line = prev.start_point[0]
        prev = prev.prev_named_sibling
    if not lines:
        return ""
    cleaned = (_XML_TAG.sub("", _COMMENT_MARK.sub("", ln)).rstrip() for ln in lines)
    doc = "\n".join(cleaned).strip()
    if doc.startswith("!/"):  # a shebang line, not documentation
        return ""
    return doc[:DOCSTRING_MAX]


def _outer(node: Node, spec: LangSpec) -> Node:
    """The node whose extent is the whole definition (decorators, export...)."""
    outer = node
    parent = outer.parent
    while parent is not None and parent.type in spec.wrappers:
        if parent.type not in spec.always_wrap and parent.named_child_count != 1:
            break
        outer, parent = parent, parent.parent
    return outer


def _first_line(outer: Node, spec: LangSpec) -> int:
    start: int = outer.start_point[0] + 1
    if spec.attributes:
        prev = outer.prev_named_sibling
        while prev is not None and prev.type in spec.attributes:
            start = prev.start_point[0] + 1
            prev = prev.prev_named_sibling
    return start


def _build_outline(
    root: Node, spec: LangSpec, records: dict[tuple[int, int], _Outlined]
) -> tuple[Span, ...]:
    skip = spec.comments | spec.attributes

    def spans(parent: Node) -> tuple[Span, ...]:
        out: list[Span] = []
        for child in parent.named_children:
            if child.type in skip:
                continue
            rec = records.get((child.start_byte, child.end_byte))
            span = rec.span if rec is not None and rec.span is not None else None
            if span is None:
                span = Span(child.start_point[0] + 1, _end_line(child))
            if out and span.start_line <= out[-1].end_line:
                # Two statements sharing a line: one span, as the chunker needs
                # line ranges that do not overlap.
                last = out[-1]
                kids = last.children if not span.children else span.children
                kids = kids if not (last.children and span.children) else ()
                span = Span(
                    last.start_line,
                    max(last.end_line, span.end_line),
                    last.symbol or span.symbol,
                    kids,
                )
                out[-1] = span
            else:
                out.append(span)
        return tuple(out)

    # Nested definitions come later in pre-order: build them first.
    for rec in reversed(records.values()):
        kids = spans(rec.body) if rec.body is not None else ()
        kids = tuple(k for k in kids if rec.start <= k.start_line and k.end_line <= rec.end)
        rec.span = Span(rec.start, rec.end, rec.symbol, kids)
    return spans(root)


def extract(path: str, text_: str, language: str) -> ParsedFile:
    """Parse one file and return its symbols, references, imports and outline.

    Never raises on a syntax error: the partial tree is used and
    ``syntax_errors`` counts its ERROR and MISSING nodes. Raises ConfigError
    for an unknown language.
    """
    spec = SPECS.get(language)
    if spec is None:
        languages.get_language(language)  # raises the ConfigError
        raise AssertionError(language)  # pragma: no cover
    src = text_.encode("utf-8", "surrogatepass")
    tree = languages.parse(src, language)
    root = tree.root_node
    check_errors = root.has_error

    symbols: list[Symbol] = []
    imports: list[Import] = []
    refs: dict[tuple[bytes, int, str], str | None] = {}
    records: dict[tuple[int, int], _Outlined] = {}
    def_names: set[int] = set()
    callees: set[int] = set()
    errors = 0

    idents, interesting = spec.idents, spec.interesting
    defs, calls, members, import_fns = spec.defs, spec.calls, spec.members, spec.imports
    stack: list[_Scope] = []
    cursor = tree.walk()
    depth = 0
    while True:
        node = cursor.node
        t = node.type
        descend = True
        if check_errors and (t == "ERROR" or node.is_missing):
            errors += 1
        if t in idents:
            sb = node.start_byte
            if sb not in def_names:
                name = src[sb : node.end_byte]
                if len(name) > 1 and name[0] in _NAME_START and name not in _SKIP_NAMES:
                    kind = "call" if sb in callees else "use"
                    key = (name, node.start_point[0] + 1, kind)
                    if key not in refs:
                        refs[key] = stack[-1].scope if stack else None
            descend = False
        elif t in interesting:
            if t in spec.skip_subtree:
                descend = False
            import_fn = import_fns.get(t)
            found = import_fn(node, src) if import_fn is not None else None
            if found is not None:
                line = node.start_point[0] + 1
                imports.extend(Import(path, line, m, names) for m, names in found)
                descend = False
            callee_path = calls.get(t)
            if descend and callee_path is not None:
                callee = find(node, callee_path)
                while callee is not None and callee.type in members:
                    callee = find(callee, members[callee.type])
                if callee is not None:
                    callees.add(callee.start_byte)
            rule = defs.get(t)
            if rule is not None and descend:
                _define(node, rule, spec, src, path, stack, depth, symbols, records, def_names)
        if descend and cursor.goto_first_child():
            depth += 1
            continue
        while not cursor.goto_next_sibling():
            if not cursor.goto_parent():
                break
            depth -= 1
        else:
            while stack and stack[-1].depth >= depth:
                stack.pop()
            continue
        break

    references = tuple(
        Reference(name.decode("utf-8", "replace"), path, line, kind, scope)
        for (name, line, kind), scope in refs.items()
    )
    return ParsedFile(
        path=path,
        language=language,
        symbols=tuple(symbols),
        references=references,
        imports=tuple(imports),
        outline=_build_outline(root, spec, records),
        syntax_errors=errors,
    )


def _define(
    node: Node,
    rule: Any,
    spec: LangSpec,
    src: bytes,
    path: str,
    stack: list[_Scope],
    depth: int,
    symbols: list[Symbol],
    records: dict[tuple[int, int], _Outlined],
    def_names: set[int],
) -> None:
    """Record the definition at ``node`` (if it is one here) and open its scope."""
    top = stack[-1] if stack else None
    at_top = top is None or top.top_level
    if rule.level == TOP and not at_top:
        return
    kind = rule.kind if rule.refine is None else rule.refine(node, src, at_top)
    if kind is None:
        return
    prefix = top.prefix if top is not None else None
    scope = top.scope if top is not None else None
    body = find(node, rule.body) if rule.body else None
    outer = _outer(node, spec)
    start, end = _first_line(outer, spec), _end_line(outer)
    key = (outer.start_byte, outer.end_byte)

    if rule.namer is not None:
        name_node = rule.namer(node, src)
    else:
        name_node = find(node, rule.name) if rule.name else None
    if name_node is not None:
        # The defining name (all of it, for "a::b" or "A\\B") is not a reference.
        todo = [name_node]
        while todo:
            n = todo.pop()
            def_names.add(n.start_byte)
            todo.extend(n.named_children)
    if body is not None and body.parent is not None:
        # "res.send = function send() {}": the function's own name is no reference.
        own = body.parent.child_by_field_name("name")
        if own is not None and own.type in spec.idents:
            def_names.add(own.start_byte)
    if kind == "scope":
        records.setdefault(key, _Outlined(None, start, end, body))
        stack.append(_Scope(depth, prefix, scope, False, True))
        return
    if name_node is None:
        return
    raw = text(name_node, src)
    if kind == "impl":
        raw = _GENERICS.sub("", raw)
    parts = [p for p in _QUAL_SEP.split(raw.strip()) if p]
    if not parts:
        return
    name = parts[-1].strip()
    if not is_name(name):
        return
    parent = prefix
    if rule.qualifier is not None:
        parent = rule.qualifier(node, src) or parent
    elif len(parts) > 1:
        parent = ".".join(([prefix] if prefix else []) + parts[:-1])
    qualname = f"{parent}.{name}" if parent else name
    if kind == "impl":
        records.setdefault(key, _Outlined(None, start, end, body))
        stack.append(_Scope(depth, qualname, scope, True, True))
        return
    if kind == "function" and top is not None and top.member_parent:
        kind = "method"
    if spec.python_docstrings:
        doc = _python_docstring(body, src)
    else:
        doc = _comment_docstring(outer, spec, src)
    header = _header_start(node, spec)
    leaf = _head_leaf(header, spec)
    head_start = min(max(start, leaf.start_point[0] + 1), end)
    head_end = min(max(head_start, _head_end(node, header, body, spec)), end)
    symbols.append(
        Symbol(
            name=name,
            qualname=qualname,
            kind=kind,
            path=path,
            start_line=start,
            end_line=end,
            signature=_signature(header, leaf, body, spec, src),
            docstring=doc,
            parent=parent,
            head_start=head_start,
            head_end=head_end,
        )
    )
    records.setdefault(key, _Outlined(qualname, start, end, body))
    member = kind in spec.member_parents
    stack.append(_Scope(depth, qualname, qualname, member, member))
