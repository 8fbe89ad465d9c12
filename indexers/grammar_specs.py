"""Per-language node-type tables driving the generic walker in ``symbols``.

Each language is one ``LangSpec``: which node types define what kind of
symbol, how to reach a definition's name and body, which nodes are calls,
identifiers, imports and comments. Nodes are ``tree_sitter.Node`` objects,
typed ``Any`` so that this module does not import ``tree_sitter``.

Constants, by language: Python module- or class-level assignments to an
UPPER_CASE name; JS/TS top-level ``const`` (a ``const`` bound to an arrow or
function expression is a function at any level); Go top-level const and var;
Rust const/static; Java ``static final`` fields; C/C++ top-level ``const`` or
``constexpr`` declarations and ``#define`` (kind macro); C# ``const`` fields;
Kotlin ``const val``; Ruby constant assignments; PHP ``const``; bash
top-level UPPER_CASE assignments. Namespaces (C++, C#, PHP) and C
preprocessor conditionals are scopes for the outline only: they add no
symbol and no qualname part.

JavaScript and TypeScript functions assigned rather than declared are
definitions too, named by what they are assigned to: ``res.send = function
send() {}`` is the method ``res.send``, ``Foo.prototype.bar = ...`` the method
``Foo.bar``; ``exports.x = () => ...`` and ``module.exports.x = ...`` are the
module's function ``x``; ``module.exports = function createApplication() {}``
is the function by its own name (an anonymous one is none). Such an assignment
defines only at the module's top level, or inside a function on ``this`` or a
prototype (``this.handle = function () {}`` in a constructor): ``req.onload =
() => {}`` in a function body is a callback set, not a definition. The function
members of an object literal assigned or
declared (``module.exports = { a() {}, b: function () {} }``, ``Foo.prototype =
{...}``) are methods, of ``Foo`` for a prototype, else unowned (or of the
``const`` declared). A class assigned (``Foo.Bar = class {}``) is the class
``Foo.Bar``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Node = Any
# A compiled path from a node to a descendant: ("f", field) | ("t", types)
# | ("i", index among named children) | ("d", "") declarator chain | (".", "").
Step = tuple[str, Any]
Path = tuple[Step, ...]
Refine = Callable[[Node, bytes, bool], "str | None"]
ImportFn = Callable[[Node, bytes], "list[tuple[str, tuple[str, ...]]] | None"]

ANY, TOP = 0, 1  # where a definition counts: anywhere, or module/class level only


def P(*specs: str) -> tuple[Path, ...]:
    """Compile path specs: ``"name"``, ``"@a|b"`` (first named child of a
    type), ``"@0"``/``"@-1"`` (named child by index), ``"decl"``, ``"."``,
    joined with ``/``. Several specs are alternatives, tried in order."""
    out: list[Path] = []
    for spec in specs:
        steps: list[Step] = []
        for part in spec.split("/"):
            if part == ".":
                steps.append((".", ""))
            elif part == "decl":
                steps.append(("d", ""))
            elif part.startswith("@") and part[1:].lstrip("-").isdigit():
                steps.append(("i", int(part[1:])))
            elif part.startswith("@"):
                steps.append(("t", frozenset(part[1:].split("|"))))
            else:
                steps.append(("f", part))
        out.append(tuple(steps))
    return tuple(out)


def find(node: Node, paths: tuple[Path, ...]) -> Node | None:
    """Follow the first path of ``paths`` that resolves from ``node``."""
    for path in paths:
        cur = node
        for op, arg in path:
            if op == "f":
                cur = cur.child_by_field_name(arg)
            elif op == "t":
                cur = next((c for c in cur.named_children if c.type in arg), None)
            elif op == "i":
                kids = cur.named_children
                cur = kids[arg] if -len(kids) <= arg < len(kids) else None
            elif op == "d":
                nxt = cur.child_by_field_name("declarator")
                while nxt is not None:
                    cur, nxt = nxt, nxt.child_by_field_name("declarator")
            if cur is None:
                break
        if cur is not None:
            return cur
    return None


@dataclass(frozen=True, slots=True)
class Def:
    """How a node type defines a symbol.

    ``kind`` "impl" pushes a qualname part (Rust impl) and "scope" only
    shapes the outline; neither is a symbol.
    """

    kind: str
    name: tuple[Path, ...] = P("name")
    body: tuple[Path, ...] = P("body")
    refine: Refine | None = None  # decides the kind from the node, or None: not a definition
    level: int = ANY
    qualifier: Callable[[Node, bytes], str | None] | None = None  # e.g. Go receiver type
    namer: Callable[[Node, bytes], Node | None] | None = None  # the name, where no path does


@dataclass(frozen=True)
class LangSpec:
    defs: dict[str, Def]
    idents: frozenset[str]
    calls: dict[str, tuple[Path, ...]]  # call node -> its callee
    members: dict[str, tuple[Path, ...]]  # member access -> the member's name node
    imports: dict[str, ImportFn]
    comments: frozenset[str]
    wrappers: frozenset[str] = frozenset()  # parents taken into a definition's extent
    always_wrap: frozenset[str] = frozenset()  # ... even with several named children
    attributes: frozenset[str] = frozenset()  # preceding siblings that belong to a definition
    skip_subtree: frozenset[str] = frozenset()
    python_docstrings: bool = False
    member_parents: frozenset[str] = frozenset({"class", "struct", "interface", "trait", "enum"})
    interesting: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        keys = set(self.defs) | set(self.calls) | set(self.imports) | self.skip_subtree
        object.__setattr__(self, "interesting", frozenset(keys))


def text(node: Node, src: bytes) -> str:
    """The source text of a node."""
    return src[node.start_byte : node.end_byte].decode("utf-8", "replace")


def _unquote(s: str) -> str:
    return s.strip().strip("'\"`")


def _is_upper(name: str) -> bool:
    return name.upper() == name and any(c.isalpha() for c in name)


# --- kind refinements ------------------------------------------------------


def _py_const(node: Node, src: bytes, top: bool) -> str | None:
    left = node.child_by_field_name("left")
    if top and left is not None and left.type == "identifier" and _is_upper(text(left, src)):
        return "constant"
    return None


_JS_FUNCS = frozenset({"arrow_function", "function_expression", "function", "generator_function"})
_JS_KIND = {"class": "class"} | dict.fromkeys(_JS_FUNCS, "function")


def _js_var(node: Node, src: bytes, top: bool) -> str | None:
    value = node.child_by_field_name("value")
    if node.child_by_field_name("name").type != "identifier":
        return None
    if value is not None and value.type in _JS_FUNCS:
        return "function"
    decl = node.parent
    if not top or decl is None or decl.type != "lexical_declaration":
        return None
    if decl.child(0).type != "const" or value is None:
        return None
    if value.type == "call_expression" and text(value, src).startswith("require("):
        return None
    return "constant"


_JS_CHAIN = re.compile(r"[A-Za-z_$][\w$]*(?:\s*\.\s*[A-Za-z_$][\w$]*)*")
# Parts of an assignment target that name no owner: "Foo.prototype.bar" is
# "Foo.bar", "module.exports.x" and "exports.x" are the module's own "x".
_JS_NOT_OWNERS = frozenset({"prototype", "this", "module", "exports"})


def _js_owner(target: Node | None, src: bytes) -> str | None:
    """The qualname an object path assigned to stands for, or None (the module's own)."""
    if target is None:
        return None
    written = text(target, src)
    if not _JS_CHAIN.fullmatch(written):
        return None
    parts = [p.strip() for p in written.split(".")]
    return ".".join(p for p in parts if p not in _JS_NOT_OWNERS) or None


def _js_assign(node: Node, src: bytes, top: bool) -> str | None:
    left, right = node.child_by_field_name("left"), node.child_by_field_name("right")
    if left is None or right is None or left.type != "member_expression":
        return None
    if right.type != "class" and right.type not in _JS_FUNCS:
        return None
    if _js_module_exports(left, src):  # the module's main export, by its own name
        return None if right.child_by_field_name("name") is None else _JS_KIND[right.type]
    prop = left.child_by_field_name("property")
    if prop is None or prop.type != "property_identifier":
        return None
    target = left.child_by_field_name("object")
    written = text(target, src) if target is not None else ""
    if not _JS_CHAIN.fullmatch(written):
        return None  # "a[i].f = ...", "f().g = ...": no name to give it
    if not top and written != "this" and not written.endswith(".prototype"):
        return None  # "req.onload = () => {}" in a function: a callback, no definition
    if right.type == "class":
        return "class"
    return "method" if _js_owner(target, src) or written == "this" else "function"


def _js_module_exports(left: Node, src: bytes) -> bool:
    """Whether an assignment's target is ``module.exports`` itself."""
    return "".join(text(left, src).split()) == "module.exports"


def _js_assign_name(node: Node, src: bytes) -> Node | None:
    """``module.exports = function f() {}``: f; else the property assigned to."""
    left = node.child_by_field_name("left")
    if left is not None and _js_module_exports(left, src):
        return node.child_by_field_name("right").child_by_field_name("name")
    return find(node, P("left/property"))


def _js_assign_owner(node: Node, src: bytes) -> str | None:
    left = node.child_by_field_name("left")
    return _js_owner(left.child_by_field_name("object") if left is not None else None, src)


def _js_named_object(obj: Node | None) -> Node | None:
    """The assignment or declarator that names the object literal ``obj``, if one does."""
    if obj is None or obj.type != "object" or obj.parent is None:
        return None
    holder = obj.parent
    side = {"assignment_expression": "right", "variable_declarator": "value"}.get(holder.type)
    value = holder.child_by_field_name(side) if side else None
    return holder if value is not None and value.start_byte == obj.start_byte else None


def _js_pair(node: Node, src: bytes, top: bool) -> str | None:
    key, value = node.child_by_field_name("key"), node.child_by_field_name("value")
    if key is None or value is None or key.type != "property_identifier":
        return None
    if value.type not in _JS_FUNCS or _js_named_object(node.parent) is None:
        return None
    return "method"


def _js_member_owner(node: Node, src: bytes) -> str | None:
    """The owner of a member of ``Foo.prototype = {...}`` or ``exports.x = {...}``."""
    holder = _js_named_object(node.parent)
    if holder is None or holder.type != "assignment_expression":
        return None
    return _js_owner(holder.child_by_field_name("left"), src)


def _go_type(node: Node, src: bytes, top: bool) -> str:
    t = node.child_by_field_name("type")
    return {"struct_type": "struct", "interface_type": "interface"}.get(t.type, "type")


def _go_receiver(node: Node, src: bytes) -> str | None:
    recv = node.child_by_field_name("receiver")
    param = find(recv, P("@parameter_declaration/type")) if recv is not None else None
    if param is None:
        return None
    name = text(param, src).lstrip("*&")
    return name.split("[", 1)[0].strip() or None


def _has_body(kind: str) -> Refine:
    def refine(node: Node, src: bytes, top: bool) -> str | None:
        return kind if node.child_by_field_name("body") is not None else None

    return refine


def _modifiers(node: Node, src: bytes, types: frozenset[str]) -> str:
    return " ".join(text(c, src) for c in node.children if c.type in types)


_JAVA_MODS = frozenset({"modifiers"})


def _java_const(node: Node, src: bytes, top: bool) -> str | None:
    mods = _modifiers(node, src, _JAVA_MODS).split()
    return "constant" if "static" in mods and "final" in mods else None


def _c_const(node: Node, src: bytes, top: bool) -> str | None:
    if not top:
        return None
    quals = _modifiers(node, src, frozenset({"type_qualifier"}))
    decl = node.child_by_field_name("declarator")
    if ("const" in quals or "constexpr" in quals) and decl is not None:
        return "constant" if decl.type == "init_declarator" else None
    return None


def _cpp_field(node: Node, src: bytes, top: bool) -> str | None:
    decl = node.child_by_field_name("declarator")
    return "method" if decl is not None and decl.type == "function_declarator" else None


def _cs_const(node: Node, src: bytes, top: bool) -> str | None:
    return "constant" if "const" in _modifiers(node, src, frozenset({"modifier"})) else None


def _kt_class(node: Node, src: bytes, top: bool) -> str:
    for child in node.children:
        if child.type == "interface":
            return "interface"
        if child.type == "modifiers" and "enum" in text(child, src).split():
            return "enum"
    return "class"


def _kt_prop(node: Node, src: bytes, top: bool) -> str | None:
    mods = _modifiers(node, src, frozenset({"modifiers"})).split()
    return "constant" if "const" in mods else None


def _ruby_const(node: Node, src: bytes, top: bool) -> str | None:
    left = node.child_by_field_name("left")
    return "constant" if top and left is not None and left.type == "constant" else None


def _bash_var(node: Node, src: bytes, top: bool) -> str | None:
    name = node.child_by_field_name("name")
    return "constant" if top and name is not None and _is_upper(text(name, src)) else None


# --- imports -----------------------------------------------------------------

ImportList = list[tuple[str, tuple[str, ...]]]


def _py_import(node: Node, src: bytes) -> ImportList:
    if node.type == "future_import_statement":
        return [("__future__", tuple(text(n, src) for n in node.children_by_field_name("name")))]
    names: list[str] = []
    for n in node.children_by_field_name("name"):
        if n.type == "aliased_import":
            names.append(text(n.child_by_field_name("alias"), src))
        else:
            names.append(text(n, src))
    if node.type == "import_statement":
        return [(n, ()) for n in names]
    module = node.child_by_field_name("module_name")
    if any(c.type == "wildcard_import" for c in node.named_children):
        names = ["*"]
    return [(text(module, src) if module is not None else "", tuple(names))]


def _js_import(node: Node, src: bytes) -> ImportList | None:
    if node.type == "call_expression":
        fn = node.child_by_field_name("function")
        args = node.child_by_field_name("arguments")
        if fn is None or text(fn, src) != "require" or args is None or args.named_child_count != 1:
            return None
        arg = args.named_children[0]
        if arg.type != "string":
            return None
        decl = node.parent
        names: tuple[str, ...] = ()
        if decl is not None and decl.type == "variable_declarator":
            names = (text(decl.child_by_field_name("name"), src),)
        return [(_unquote(text(arg, src)), names)]
    source = node.child_by_field_name("source")
    if source is None:
        return None
    bound: list[str] = []
    clause = next((c for c in node.named_children if c.type == "import_clause"), None)
    if clause is not None:
        for c in clause.named_children:
            if c.type == "identifier":
                bound.append(text(c, src))
            elif c.type == "namespace_import":
                bound.extend(text(i, src) for i in c.named_children)
            elif c.type == "named_imports":
                for spec in c.named_children:
                    alias = spec.child_by_field_name("alias") or spec.child_by_field_name("name")
                    if alias is not None:
                        bound.append(text(alias, src))
    return [(_unquote(text(source, src)), tuple(bound))]


def _go_import(node: Node, src: bytes) -> ImportList:
    path = node.child_by_field_name("path")
    alias = node.child_by_field_name("name")
    names = (text(alias, src),) if alias is not None else ()
    return [(_unquote(text(path, src)), names)] if path is not None else []


def _rust_use(node: Node, src: bytes) -> ImportList:
    arg = node.child_by_field_name("argument")
    if arg is None:
        return []
    if arg.type == "scoped_use_list":
        path = arg.child_by_field_name("path")
        items = arg.child_by_field_name("list")
        names = [text(i, src).rsplit("::", 1)[-1].split(" as ")[-1] for i in items.named_children]
        return [(text(path, src) if path is not None else "", tuple(names))]
    if arg.type == "use_as_clause":
        alias = arg.child_by_field_name("alias")
        return [(text(arg.child_by_field_name("path"), src), (text(alias, src),))]
    module = text(arg, src)
    return [(module, (module.rsplit("::", 1)[-1],))]


def _java_import(node: Node, src: bytes) -> ImportList:
    module = next((text(c, src) for c in node.named_children if c.type != "asterisk"), "")
    star = any(c.type == "asterisk" for c in node.named_children)
    return [(module, ("*",) if star else (module.rsplit(".", 1)[-1],))]


def _c_include(node: Node, src: bytes) -> ImportList:
    path = node.child_by_field_name("path")
    return [(text(path, src), ())] if path is not None else []


def _cs_using(node: Node, src: bytes) -> ImportList:
    alias = node.child_by_field_name("name")
    target = [c for c in node.named_children if c.type in ("identifier", "qualified_name")]
    if not target:
        return []
    module = text(target[-1], src)
    if alias is not None and alias.start_byte == target[-1].start_byte:
        alias = None
    return [(module, (text(alias, src),) if alias is not None else ())]


_RUBY_REQUIRE = frozenset({"require", "require_relative", "load"})


def _ruby_require(node: Node, src: bytes) -> ImportList | None:
    method = node.child_by_field_name("method")
    if node.child_by_field_name("receiver") is not None or method is None:
        return None
    if text(method, src) not in _RUBY_REQUIRE:
        return None
    args = node.child_by_field_name("arguments")
    if args is None or args.named_child_count == 0:
        return None
    return [(_unquote(text(args.named_children[0], src)), ())]


def _php_use(node: Node, src: bytes) -> ImportList:
    if node.type != "namespace_use_declaration":
        arg = node.named_children[0] if node.named_child_count else None
        return [(_unquote(text(arg, src)), ())] if arg is not None else []
    out: ImportList = []
    for clause in node.named_children:
        if clause.type != "namespace_use_clause":
            continue
        alias = clause.child_by_field_name("alias")
        target = next(
            (c for c in clause.named_children if c.type in ("qualified_name", "name")), None
        )
        if target is None:
            continue
        module = text(target, src)
        bound = text(alias, src) if alias is not None else module.rsplit("\\", 1)[-1]
        out.append((module, (bound,)))
    return out


def _kotlin_import(node: Node, src: bytes) -> ImportList:
    ids = node.named_children
    if not ids:
        return []
    module = text(ids[0], src)
    if len(ids) > 1:
        return [(module, (text(ids[-1], src),))]
    star = text(node, src).rstrip().endswith("*")
    return [(module, ("*",) if star else (module.rsplit(".", 1)[-1],))]


def _bash_source(node: Node, src: bytes) -> ImportList | None:
    name = node.child_by_field_name("name")
    if name is None or text(name, src) not in ("source", "."):
        return None
    arg = node.child_by_field_name("argument")
    return [(_unquote(text(arg, src)), ())] if arg is not None else None


# --- the tables --------------------------------------------------------------

_FUNC = Def("function")
_CLASS = Def("class")
_METHOD = Def("method")

_PYTHON = LangSpec(
    defs={
        "function_definition": _FUNC,
        "class_definition": _CLASS,
        "assignment": Def("constant", P("left"), (), _py_const, TOP),
    },
    idents=frozenset({"identifier"}),
    calls={"call": P("function")},
    members={"attribute": P("attribute")},
    imports={
        "import_statement": _py_import,
        "import_from_statement": _py_import,
        "future_import_statement": _py_import,
    },
    comments=frozenset({"comment"}),
    wrappers=frozenset({"decorated_definition", "expression_statement"}),
    always_wrap=frozenset({"decorated_definition"}),
    python_docstrings=True,
)

_JS_DEFS = {
    "function_declaration": _FUNC,
    "generator_function_declaration": _FUNC,
    "class_declaration": _CLASS,
    "method_definition": Def("method", qualifier=_js_member_owner),
    "variable_declarator": Def("constant", body=P("value/body"), refine=_js_var),
    "assignment_expression": Def(
        "function",
        body=P("right/body"),
        refine=_js_assign,
        qualifier=_js_assign_owner,
        namer=_js_assign_name,
    ),
    "pair": Def("method", P("key"), P("value/body"), _js_pair, qualifier=_js_member_owner),
}
_JS_COMMON: dict[str, Any] = {
    "calls": {"call_expression": P("function"), "new_expression": P("constructor")},
    "members": {"member_expression": P("property")},
    "imports": {
        "import_statement": _js_import,
        "export_statement": _js_import,
        "call_expression": _js_import,
    },
    "comments": frozenset({"comment", "html_comment"}),
    "wrappers": frozenset(
        {"export_statement", "lexical_declaration", "variable_declaration", "expression_statement"}
    ),
    "always_wrap": frozenset({"export_statement"}),
    "attributes": frozenset({"decorator"}),  # of a class member, written before it
}
_JS_IDENTS = frozenset({"identifier", "property_identifier", "shorthand_property_identifier"})
_JAVASCRIPT = LangSpec(defs=_JS_DEFS, idents=_JS_IDENTS, **_JS_COMMON)
_TYPESCRIPT = LangSpec(
    defs={
        **_JS_DEFS,
        "abstract_class_declaration": _CLASS,
        "interface_declaration": Def("interface"),
        "type_alias_declaration": Def("type", body=()),
        "enum_declaration": Def("enum"),
        "method_signature": Def("method", body=()),
        "abstract_method_signature": Def("method", body=()),
        "function_signature": Def("function", body=()),
        "internal_module": Def("module"),
    },
    idents=_JS_IDENTS | {"type_identifier"},
    **_JS_COMMON,
)

_GO = LangSpec(
    defs={
        "function_declaration": _FUNC,
        "method_declaration": Def("method", qualifier=_go_receiver),
        "type_spec": Def("type", body=P("type/@field_declaration_list", "type"), refine=_go_type),
        "type_alias": Def("type", body=()),
        "const_spec": Def("constant", body=(), level=TOP),
        "var_spec": Def("constant", body=(), level=TOP),
    },
    idents=frozenset({"identifier", "field_identifier", "type_identifier", "package_identifier"}),
    calls={"call_expression": P("function")},
    members={"selector_expression": P("field")},
    imports={"import_spec": _go_import},
    comments=frozenset({"comment"}),
    skip_subtree=frozenset({"package_clause"}),
    wrappers=frozenset({"type_declaration", "const_declaration", "var_declaration"}),
)

_RUST = LangSpec(
    defs={
        "function_item": _FUNC,
        "function_signature_item": Def("function", body=()),
        "struct_item": Def("struct"),
        "union_item": Def("struct"),
        "enum_item": Def("enum"),
        "trait_item": Def("trait"),
        "type_item": Def("type", body=()),
        "const_item": Def("constant", body=(), level=TOP),
        "static_item": Def("constant", body=(), level=TOP),
        "mod_item": Def("module"),
        "macro_definition": Def("macro", body=()),
        "impl_item": Def("impl", name=P("type")),
    },
    idents=frozenset({"identifier", "field_identifier", "type_identifier"}),
    calls={"call_expression": P("function"), "macro_invocation": P("macro")},
    members={
        "field_expression": P("field"),
        "scoped_identifier": P("name"),
        "generic_function": P("function"),
    },
    imports={"use_declaration": _rust_use},
    comments=frozenset({"line_comment", "block_comment"}),
    attributes=frozenset({"attribute_item"}),
)

_JAVA = LangSpec(
    defs={
        "class_declaration": _CLASS,
        "record_declaration": _CLASS,
        "interface_declaration": Def("interface"),
        "annotation_type_declaration": Def("interface"),
        "enum_declaration": Def("enum"),
        "method_declaration": _METHOD,
        "constructor_declaration": _METHOD,
        "compact_constructor_declaration": _METHOD,
        "field_declaration": Def("constant", P("declarator/name"), (), _java_const, TOP),
        "constant_declaration": Def("constant", P("declarator/name"), (), level=TOP),
    },
    idents=frozenset({"identifier", "type_identifier"}),
    calls={"method_invocation": P("name"), "object_creation_expression": P("type")},
    members={"generic_type": P("@type_identifier"), "scoped_type_identifier": P("@-1")},
    imports={"import_declaration": _java_import},
    comments=frozenset({"line_comment", "block_comment"}),
    skip_subtree=frozenset({"package_declaration"}),
)

_C_DEFS = {
    "function_definition": Def("function", P("decl")),
    "struct_specifier": Def("struct", refine=_has_body("struct")),
    "union_specifier": Def("struct", refine=_has_body("struct")),
    "enum_specifier": Def("enum", refine=_has_body("enum")),
    "type_definition": Def("type", P("decl"), ()),
    "preproc_def": Def("macro", body=()),
    "preproc_function_def": Def("macro", body=()),
    "declaration": Def("constant", P("decl"), (), _c_const, TOP),
    "preproc_ifdef": Def("scope", name=(), body=P(".")),
    "preproc_if": Def("scope", name=(), body=P(".")),
    "linkage_specification": Def("scope", name=(), body=P("body")),
}
_C_COMMON: dict[str, Any] = {
    "imports": {"preproc_include": _c_include},
    "comments": frozenset({"comment"}),
}
_C = LangSpec(
    defs=_C_DEFS,
    idents=frozenset({"identifier", "field_identifier", "type_identifier"}),
    calls={"call_expression": P("function")},
    members={"field_expression": P("field")},
    **_C_COMMON,
)
_CPP = LangSpec(
    defs={
        **_C_DEFS,
        "class_specifier": Def("class", refine=_has_body("class")),
        "namespace_definition": Def("scope", body=P("body")),
        "alias_declaration": Def("type", body=()),
        "field_declaration": Def("method", P("decl"), (), _cpp_field),
    },
    idents=frozenset({"identifier", "field_identifier", "type_identifier", "namespace_identifier"}),
    calls={"call_expression": P("function")},
    members={
        "field_expression": P("field"),
        "qualified_identifier": P("name"),
        "template_function": P("name"),
    },
    wrappers=frozenset({"template_declaration"}),
    always_wrap=frozenset({"template_declaration"}),
    **_C_COMMON,
)

_CSHARP = LangSpec(
    defs={
        "class_declaration": _CLASS,
        "record_declaration": _CLASS,
        "struct_declaration": Def("struct"),
        "interface_declaration": Def("interface"),
        "enum_declaration": Def("enum"),
        "method_declaration": _METHOD,
        "constructor_declaration": _METHOD,
        "local_function_statement": _FUNC,
        "delegate_declaration": Def("type", body=()),
        "field_declaration": Def(
            "constant", P("@variable_declaration/@variable_declarator/name"), (), _cs_const
        ),
        "namespace_declaration": Def("scope", body=P("body")),
        "file_scoped_namespace_declaration": Def("scope", body=()),
    },
    idents=frozenset({"identifier"}),
    calls={"invocation_expression": P("function"), "object_creation_expression": P("type")},
    members={
        "member_access_expression": P("name"),
        "generic_name": P("@identifier"),
        "qualified_name": P("name"),
    },
    imports={"using_directive": _cs_using},
    comments=frozenset({"comment"}),
)

_RUBY = LangSpec(
    defs={
        "class": _CLASS,
        "module": Def("module"),
        "method": _FUNC,
        "singleton_method": _METHOD,
        "assignment": Def("constant", P("left"), (), _ruby_const, TOP),
    },
    idents=frozenset({"identifier", "constant"}),
    calls={"call": P("method")},
    members={},
    imports={"call": _ruby_require},
    comments=frozenset({"comment"}),
    member_parents=frozenset({"class", "module"}),
)

_PHP_REQUIRES = ("require", "require_once", "include", "include_once")
_PHP = LangSpec(
    defs={
        "class_declaration": _CLASS,
        "interface_declaration": Def("interface"),
        "trait_declaration": Def("trait"),
        "enum_declaration": Def("enum"),
        "function_definition": _FUNC,
        "method_declaration": _METHOD,
        "const_element": Def("constant", P("@name"), (), level=TOP),
        "namespace_definition": Def("scope", body=P("body")),
    },
    idents=frozenset({"name"}),
    calls={
        "function_call_expression": P("function"),
        "member_call_expression": P("name"),
        "nullsafe_member_call_expression": P("name"),
        "scoped_call_expression": P("name"),
        "object_creation_expression": P("@name|qualified_name"),
    },
    members={"qualified_name": P("@name")},
    imports={
        "namespace_use_declaration": _php_use,
        **{f"{r}_expression": _php_use for r in _PHP_REQUIRES},
    },
    comments=frozenset({"comment"}),
    wrappers=frozenset({"const_declaration"}),
    skip_subtree=frozenset({"variable_name"}),
)

_KT_BODY = P("@class_body|enum_class_body")
_KOTLIN = LangSpec(
    defs={
        "class_declaration": Def("class", body=_KT_BODY, refine=_kt_class),
        "object_declaration": Def("class", body=_KT_BODY),
        "function_declaration": Def("function", body=P("@function_body/@block")),
        "property_declaration": Def(
            "constant", P("@variable_declaration/@identifier"), (), _kt_prop, TOP
        ),
        "type_alias": Def("type", P("type"), ()),
    },
    idents=frozenset({"identifier"}),
    calls={"call_expression": P("@0")},
    members={"navigation_expression": P("@-1")},
    imports={"import": _kotlin_import},
    comments=frozenset({"line_comment", "block_comment"}),
    skip_subtree=frozenset({"package_header"}),
)

_BASH = LangSpec(
    defs={
        "function_definition": _FUNC,
        "variable_assignment": Def("constant", body=(), refine=_bash_var, level=TOP),
    },
    idents=frozenset({"command_name", "variable_name"}),
    calls={"command": P("name")},
    members={},
    imports={"command": _bash_source},
    comments=frozenset({"comment"}),
    wrappers=frozenset({"declaration_command"}),
)

SPECS: dict[str, LangSpec] = {
    "python": _PYTHON,
    "javascript": _JAVASCRIPT,
    "typescript": _TYPESCRIPT,
    "tsx": _TYPESCRIPT,
    "go": _GO,
    "rust": _RUST,
    "java": _JAVA,
    "c": _C,
    "cpp": _CPP,
    "csharp": _CSHARP,
    "ruby": _RUBY,
    "php": _PHP,
    "kotlin": _KOTLIN,
    "bash": _BASH,
}
