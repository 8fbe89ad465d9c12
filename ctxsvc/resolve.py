"""Which definitions a reference can mean: resolution through receivers and imports.

The index keeps, for every use of a name, its line and the definition it sits
in (``Reference.scope``), and every file's imports; the receiver of a call is
read back from the file's line. A use of ``x`` resolves:

- ``self.x`` (``this``, ``cls``, a Go method's receiver) inside type ``C``: to
  ``C.x``, through ``C``'s bases when ``C`` does not define it, and to its
  overrides in ``C``'s subclasses (the call dispatches there too);
  ``super().x``: from the bases;
- ``a.x`` where ``a`` is an imported module: to ``x`` in that module's files;
  where ``a`` is a type, or a parameter declared with one: to its member
  ``x``; where ``a`` is anything else: by name, to members named ``x``, never
  to a free function;
- a bare ``x``: to a function nested in the enclosing one, a top-level
  definition of the file (or of the Go package: its directory), the name
  imported (re-exports followed), the enclosing type's members in languages
  with an implicit ``this``; else by name, to free functions and types.

A module that is no file of the repository resolves to nothing: ``os.path.join``
is no use of the repository's ``join``, and ``self.x`` never means another
class's ``x``. Each target is marked resolved (True) or matched by name (False).

A :class:`Resolver` is shared by the threads that serve one index: its tables
are built once and only read; what it learns on the way (a file's assignments,
a type's bases, an attribute's type) is computed outside its lock and stored
under it, and no entry is ever a placeholder. What imports bind, and which
files a module names, :class:`ctxsvc.imports.Imports` answers the same way.
"""

from __future__ import annotations

import bisect
import posixpath
import re
import threading
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import cache, lru_cache

from ctxsvc.imports import MAX_DEPTH, Bound, Imports, container, memo
from ctxsvc.models import Import, Reference, Symbol

TYPE_KINDS = frozenset(
    "class struct interface trait enum module type union object impl protocol record".split()
)
SELF_NAMES = frozenset({"self", "this", "cls", "Self", "$this", "static"})
MAX_TYPES = 12  # a type name defined more often than this resolves nothing
LOOK_BACK = 60  # lines above a use searched for the receiver's assignment
CACHED_FILES = 64
RESOLVED_KEPT = 100_000  # references whose answer is kept (then forgotten all at once)
_IMPLICIT_THIS = frozenset(".java .cs .cpp .cc .cxx .hpp .hh .h .kt .kts .scala .swift .rb".split())
_OP = r"(?:\?\.|\.|->|::)"
_AFTER_OP = re.compile(rf"{_OP}\s*$")
_CHAIN = re.compile(rf"((?:[A-Za-z_$][\w$]*\s*(?:\(\s*\))?\s*{_OP}\s*)+)$")
_WORD = re.compile(r"[A-Za-z_$][\w$]*")
_PY_BASES = re.compile(r"^\s*class\s+[\w$]+\s*(?:\[[^\]]*\])?\s*\((.*)\)")
_EXTENDS = re.compile(
    r"\b(?:extends|implements)\s+([\w$.<>,\s]+?)(?=\s+(?:implements|extends)\b|[{(]|$)"
)
_COLON_BASES = re.compile(r"\b(?:class|struct|object|interface)\s+[\w$]+(?:<[^>]*>)?\s*:\s*([^{]+)")
_RUBY_BASE = re.compile(r"^\s*class\s+[\w:]+\s*<\s*([\w:]+)")
_NESTED = re.compile(r"<[^<>]*>|\[[^\[\]]*\]|\([^()]*\)")
_GO_EMBEDDED = re.compile(r"^\s*\*?(?:[A-Za-z_]\w*\.)?([A-Za-z_]\w*)\s*(?:`[^`]*`)?\s*(?://.*)?$")
_RETURNS = re.compile(r"\)\s*(?:->|:)?\s*\*?\s*([A-Za-z_][\w.]*)\s*$")
# self.x = Type(...), self.x: Type = ..., this.x = new Type(...), self.x = param
_SELF_ASSIGNED = re.compile(
    r"(?:self|this)\.([A-Za-z_$][\w$]*)\s*(?::\s*[\"']?([A-Za-z_][\w.]*))?\s*="
    r"\s*(?:new\s+)?([A-Za-z_$][\w$.]*)\s*(\(|;?\s*$)"
)
_MODIFIERS = frozenset("public private protected virtual internal open abstract".split())

TypeKey = tuple[str, str]  # (container: the path, or a Go package's directory; qualname)


def receivers(line: str, name: str) -> Iterator[tuple[str, ...] | None]:
    """For each use of ``name`` on ``line``: () bare, the receiver's names, or None (unknown)."""
    for m in _word(name).finditer(line):
        before = line[max(0, m.start() - 200) : m.start()]
        if not _AFTER_OP.search(before):
            yield ()
            continue
        chain = _CHAIN.search(before)
        text = chain.group(1) if chain else ""
        words = tuple(_WORD.findall(text))
        # "f().x" is a member of what f returns; only super() names a receiver.
        yield words if words and ("(" not in text or words == ("super",)) else None


@cache
def _word(name: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![\w$]){re.escape(name)}(?![\w$])")


@lru_cache(maxsize=4096)
def _assignment(var: str) -> re.Pattern[str]:
    """``var = Type(...)``, ``var := &Type{...}``, ``var = new Type(...)``: the callee."""
    v = re.escape(var)
    return re.compile(
        rf"(?<![\w$.]){v}\s*(?::[^=]*)?:?=\s*(?:new\s+|&)?([A-Za-z_$][\w$.]*)\s*[({{]"
    )


@lru_cache(maxsize=4096)
def _declarations(var: str, ext: str) -> tuple[re.Pattern[str], ...]:
    """Where a signature declares ``var``'s type: "v: T", Go's "v *T", C-like "T v"."""
    v = re.escape(var)
    found = [re.compile(rf"(?<![\w$]){v}\s*\??\s*:\s*[\"']?\s*([A-Za-z_$][\w$.]*)")]
    if ext == ".go":
        found.append(re.compile(rf"(?<![\w$]){v}\s+(?:\*|\[\]|\.\.\.)*\s*([A-Za-z_][\w.]*)"))
    elif ext in _IMPLICIT_THIS:
        found.append(re.compile(rf"([A-Za-z_][\w.]*)(?:<[^>]*>)?[\s*&]+{v}(?![\w$])"))
    return tuple(found)


class Resolver:
    """Resolves references against the definitions and imports of one index.

    ``file_lines`` gives a file's lines by number (a few files are kept).
    Safe to share between threads.
    """

    def __init__(
        self,
        symbols: Sequence[Symbol],
        imports: Iterable[Import],
        file_lines: Callable[[str], Mapping[int, str]],
    ) -> None:
        self.symbols = symbols
        self._read = file_lines
        by_name: dict[str, list[int]] = defaultdict(list)
        by_qual: dict[tuple[str, str], list[int]] = defaultdict(list)
        members: dict[TypeKey, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        types: dict[str, list[int]] = defaultdict(list)
        type_at: dict[TypeKey, list[int]] = defaultdict(list)
        in_path: dict[str, list[int]] = defaultdict(list)
        for i, s in enumerate(symbols):
            in_path[s.path].append(i)
            by_name[s.name].append(i)
            by_qual[(s.path, s.qualname)].append(i)
            if s.parent:
                members[(container(s.path), s.parent)][s.name].append(i)
            if s.kind in TYPE_KINDS:
                types[s.name].append(i)
                type_at[(container(s.path), s.qualname)].append(i)
        # Plain dicts from here on: only read, so that no lookup inserts a key.
        self._by_name = dict(by_name)
        self._by_qual = dict(by_qual)
        self._members = {k: dict(v) for k, v in members.items()}
        self._types = dict(types)
        self._type_at = dict(type_at)
        self._in_path = dict(in_path)
        self._imports = Imports(symbols, self._by_name, imports)
        # What resolving learns, kept under the lock; values are computed outside it.
        self._lock = threading.Lock()
        self._lines: OrderedDict[str, Mapping[int, str]] = OrderedDict()
        self._resolved: dict[Reference, dict[int, bool]] = {}
        self._bases_cache: dict[TypeKey, tuple[TypeKey, ...]] = {}
        self._subclasses: dict[TypeKey, list[TypeKey]] | None = None
        self._assigned: dict[tuple[str, str], tuple[tuple[int, str], ...]] = {}
        self._signature_type: dict[tuple[str, str, str], str | None] = {}
        self._self_assigned: dict[TypeKey, dict[str, tuple[int, int, tuple[str, str, str]]]] = {}
        self._attr_type: dict[tuple[TypeKey, str], str | None] = {}

    def line(self, path: str, n: int) -> str:
        """Line ``n`` of ``path`` ("" past its end)."""
        return self._file(path).get(n, "")

    def _file(self, path: str) -> Mapping[int, str]:
        with self._lock:
            got = self._lines.get(path)
            if got is not None:
                self._lines.move_to_end(path)
                return got
        got = self._read(path)
        with self._lock:
            self._lines[path] = got
            while len(self._lines) > CACHED_FILES:
                self._lines.popitem(last=False)
        return got

    def resolve(self, ref: Reference) -> dict[int, bool]:
        """The definitions ``ref`` can mean: position -> resolved (True) or matched by name."""
        got = self._resolved.get(ref)
        if got is None:
            got = self._resolve(ref)
            with self._lock:
                if len(self._resolved) >= RESOLVED_KEPT:
                    self._resolved.clear()
                self._resolved[ref] = got
        return dict(got)

    def _resolve(self, ref: Reference) -> dict[int, bool]:
        defs = self._by_name.get(ref.name)
        if not defs:
            return {}
        sites = list(receivers(self.line(ref.path, ref.line), ref.name))
        if not sites:  # not on its line (a construct over several lines): anything by name
            return dict.fromkeys(defs, False)
        out: dict[int, bool] = {}
        for site in sites:
            if site is None:
                found = [(i, False) for i in defs if self.symbols[i].parent]
            elif site:
                found = self._member(ref, site)
            else:
                found = self._bare(ref)
            for i, sure in found:
                out[i] = out.get(i, False) or sure
        return out

    # -- the three shapes of a use ----------------------------------------------------

    def _member(self, ref: Reference, chain: tuple[str, ...]) -> list[tuple[int, bool]]:
        head = chain[0]
        by_name = [(i, False) for i in self._by_name.get(ref.name, []) if self.symbols[i].parent]
        if head in SELF_NAMES or head == "super":
            cls = self._enclosing_type(ref)
            if cls is not None and len(chain) == 2 and head != "super":
                typed = self._attribute_type(cls, chain[1])
                keys = self._find_types(typed, ref.path) if typed else ()
                return self._dispatch(keys, ref.name) if keys else by_name
            if cls is None or len(chain) > 1:
                return by_name  # of an attribute whose type is not known
            if head == "super":  # the bases' own, not what overrides them
                return self._dispatch(self._bases(cls), ref.name, overrides=False)
            return self._dispatch((cls,), ref.name)
        declared = self._declared_type(ref, head) if len(chain) == 1 else None
        if declared is not None and (keys := self._find_types(declared, ref.path)):
            return self._dispatch(keys, ref.name)
        bound = self._imports.binding(ref.path, head)
        if bound is not None:
            return self._through_module(bound, chain[1:], ref.name, by_name)
        if len(chain) == 1 and (keys := self._find_types(head, ref.path)):
            return self._dispatch(keys, ref.name)
        return by_name

    def _through_module(
        self, bound: Bound, rest: tuple[str, ...], name: str, fallback: list[tuple[int, bool]]
    ) -> list[tuple[int, bool]]:
        if bound.name is not None:  # from m import C; C.x, or a namespace (import * as ns)
            if keys := self._exported_types(self._imports.files(bound), bound.name):
                return self._dispatch(keys, name) if not rest else fallback
            bound = Bound(bound.importer, bound.module, None)
            if not self._imports.files(bound):
                return []  # a module outside the repository
        for part in rest:
            sub = bound.join(part)
            if not self._imports.files(sub) and (
                keys := self._exported_types(self._imports.files(bound), part)
            ):
                return self._dispatch(keys, name)
            bound = sub
        files = self._imports.files(bound)
        if not files:
            return []  # a module outside the repository
        found = self._imports.exported(files, name) or [
            i for i in self._by_name.get(name, []) if self.symbols[i].path in files
        ]  # members of what the module exports (module.exports = {...}, exports.x = ...)
        return [(i, True) for i in found] or fallback

    def _bare(self, ref: Reference) -> list[tuple[int, bool]]:
        name, path = ref.name, ref.path
        defs = self._by_name.get(name, [])
        scope = ref.scope
        while scope:  # a function nested in the enclosing ones
            at = self._by_qual.get((path, scope))
            if not at or self.symbols[at[0]].kind in TYPE_KINDS:
                break
            if nested := self._by_qual.get((path, f"{scope}.{name}")):
                return [(i, True) for i in nested]
            scope = self.symbols[at[0]].parent
        local = container(path)
        top = [i for i in defs if self.symbols[i].parent is None]
        if same := [i for i in top if container(self.symbols[i].path) == local]:
            return [(i, True) for i in same]
        bound = self._imports.binding(path, name)
        if bound is not None and bound.name is not None:
            return [(i, True) for i in self._imports.exported(self._imports.files(bound), name)]
        implicit = posixpath.splitext(path)[1] in _IMPLICIT_THIS
        cls = self._enclosing_type(ref) if implicit else None
        if cls is not None and (found := self._dispatch((cls,), name)):
            return found
        star = frozenset().union(*(self._imports.files(b) for b in self._imports.stars(path)))
        if star and (found_star := self._imports.exported(star, name)):
            return [(i, True) for i in found_star]
        if path.endswith(".go"):
            return []  # a bare Go name is its package's, a dot import's or a builtin
        return [(i, False) for i in (defs if implicit else top)]

    # -- types: enclosing, declared, bases, members -------------------------------------

    def _enclosing_type(self, ref: Reference) -> TypeKey | None:
        scope = ref.scope
        while scope:
            at = self._by_qual.get((ref.path, scope))
            if not at:
                scope = scope.rpartition(".")[0]
                continue
            s = self.symbols[at[0]]
            if s.kind in TYPE_KINDS:
                return (container(ref.path), s.qualname)
            if s.parent is None:
                return None
            if (ref.path, s.parent) not in self._by_qual:  # a Go method: its receiver's type
                return (container(ref.path), s.parent)
            scope = s.parent
        return None

    def _declared_type(self, ref: Reference, var: str) -> str | None:
        """The type ``var`` is assigned just above ``ref``, or declared with by a signature."""
        scope = ref.scope or ""
        at = self._by_qual.get((ref.path, scope))
        if not at:
            return None
        s = self.symbols[at[0]]
        # v = Type(...), v := &Type{...}, v = new Type(...) a few lines above the use
        seen = memo(
            self._lock, self._assigned, (ref.path, var), lambda: self._assignments(ref.path, var)
        )
        k = bisect.bisect_left(seen, (ref.line, "")) - 1
        if k >= 0 and seen[k][0] >= max(s.start_line, ref.line - LOOK_BACK):
            return self._made_by(seen[k][1].rsplit(".", 1)[-1], ref.path)
        key = (ref.path, scope, var)
        return memo(self._lock, self._signature_type, key, lambda: self._in_signatures(*key))

    def _assignments(self, path: str, var: str) -> tuple[tuple[int, str], ...]:
        """The lines of ``path`` that assign ``var`` a call or a literal, and the callee."""
        pattern = _assignment(var)
        found = (
            (n, m.group(1))
            for n, line in self._file(path).items()
            if var in line and (m := pattern.search(line))
        )
        return tuple(sorted(found))

    def _in_signatures(self, path: str, scope: str, var: str) -> str | None:
        """The type ``var`` is declared with in the signature of ``scope`` or one around it."""
        patterns = _declarations(var, posixpath.splitext(path)[1])
        while scope:
            at = self._by_qual.get((path, scope))
            if not at:
                break
            s = self.symbols[at[0]]
            for p in patterns:
                if m := p.search(s.signature):
                    return m.group(1).rsplit(".", 1)[-1]
            scope = s.parent or ""
        return None

    def _made_by(self, name: str, path: str) -> str:
        """The type a call of ``name`` makes: itself if a type, else the function's return."""
        if name in self._types:
            return name
        funcs = [self.symbols[i] for i in self._by_name.get(name, []) if not self.symbols[i].parent]
        funcs.sort(key=lambda f: container(f.path) != container(path))
        for f in funcs[:1]:
            if m := _RETURNS.search(f.signature):
                return m.group(1).rsplit(".", 1)[-1]
        return name

    def _attribute_type(self, cls: TypeKey, attr: str) -> str | None:
        """The type of ``self.attr`` as the type's own code assigns or declares it."""
        return memo(self._lock, self._attr_type, (cls, attr), lambda: self._typed_attr(cls, attr))

    def _typed_attr(self, cls: TypeKey, attr: str) -> str | None:
        first = memo(self._lock, self._self_assigned, cls, lambda: self._attributes(cls)).get(attr)
        if first is None:
            return None
        owner, n, (declared, value, opener) = first
        if declared:
            return declared.rsplit(".", 1)[-1]
        if opener == "(":
            return value.rsplit(".", 1)[-1]
        # self.store = store: a parameter of the method it is assigned in
        s = self.symbols[owner]
        return self._declared_type(Reference(value, s.path, n, "use", self._scope_at(s, n)), value)

    def _attributes(self, cls: TypeKey) -> dict[str, tuple[int, int, tuple[str, str, str]]]:
        """The first assignment of each ``self.x`` in the type's code: its definition, line,
        and declared type, value and what follows the value."""
        found: dict[str, tuple[int, int, tuple[str, str, str]]] = {}
        for i in self._type_at.get(cls, []):
            s = self.symbols[i]
            lines = self._file(s.path)
            for n in range(s.start_line, min(s.end_line, s.start_line + 2000) + 1):
                line = lines.get(n, "")
                if "=" not in line:
                    continue
                for m in _SELF_ASSIGNED.finditer(line):
                    groups = (m.group(2) or "", m.group(3), m.group(4))
                    found.setdefault(m.group(1), (i, n, groups))
        return found

    def _scope_at(self, owner: Symbol, line: int) -> str:
        """The qualname of the innermost definition of ``owner``'s file holding ``line``."""
        inner = [
            x
            for x in self.symbols_in(owner.path)
            if x.start_line <= line <= x.end_line and x.qualname.startswith(owner.qualname)
        ]
        return max(inner, key=lambda x: x.start_line).qualname if inner else owner.qualname

    def symbols_in(self, path: str) -> list[Symbol]:
        """The definitions of ``path``."""
        return [self.symbols[i] for i in self._in_path.get(path, [])]

    def _find_types(self, name: str, path: str) -> tuple[TypeKey, ...]:
        """The types ``name`` means in ``path``: its own, imported, else any (if few)."""
        keys = list(
            dict.fromkeys(
                (container(self.symbols[i].path), self.symbols[i].qualname)
                for i in self._types.get(name, [])
            )
        )
        local = container(path)
        if mine := [k for k in keys if k[0] == local]:
            return tuple(mine)
        if (local, name) in self._members:  # a Go type defined in another package file
            return ((local, name),)
        bound = self._imports.binding(path, name)
        if bound is not None and bound.name is not None:
            return self._exported_types(self._imports.files(bound), name)
        return tuple(keys) if len(keys) <= MAX_TYPES else ()

    def _exported_types(self, files: frozenset[str], name: str) -> tuple[TypeKey, ...]:
        found = (
            (container(self.symbols[i].path), self.symbols[i].qualname)
            for i in self._imports.exported(files, name)
            if self.symbols[i].kind in TYPE_KINDS
        )
        return tuple(dict.fromkeys(found))

    def _bases(self, key: TypeKey) -> tuple[TypeKey, ...]:
        # Not recursive (a cycle of bases is the caller's to stop), so nothing to mark.
        return memo(self._lock, self._bases_cache, key, lambda: self._direct_bases(key))

    def _direct_bases(self, key: TypeKey) -> tuple[TypeKey, ...]:
        out: list[TypeKey] = []
        for i in self._type_at.get(key, []):
            s = self.symbols[i]
            names = base_names(s.signature)
            if s.path.endswith(".go"):  # embedded types: a field line that is only a type
                body = (self.line(s.path, n) for n in range(s.start_line + 1, s.end_line))
                names += [m.group(1) for line in body if (m := _GO_EMBEDDED.match(line))]
            for base in names:
                out.extend(k for k in self._find_types(base, s.path) if k != key)
        return tuple(dict.fromkeys(out))

    def _dispatch(
        self, keys: Sequence[TypeKey], name: str, *, overrides: bool = True
    ) -> list[tuple[int, bool]]:
        """Members ``name`` of the nearest of ``keys`` and their bases, and overrides below."""
        found: list[int] = []
        level, seen = list(keys), set(keys)
        for _ in range(MAX_DEPTH):
            found = [i for k in level for i in self._members.get(k, {}).get(name, [])]
            if found or not level:
                break
            level = [b for k in level for b in self._bases(k) if b not in seen]
            seen.update(level)
        below, seen = list(keys), set(keys)
        subclasses = self._subclass_map() if overrides else {}
        for _ in range(MAX_DEPTH if overrides else 0):
            below = [s for k in below for s in subclasses.get(k, []) if s not in seen]
            seen.update(below)
            found.extend(i for k in below for i in self._members.get(k, {}).get(name, []))
        return [(i, True) for i in dict.fromkeys(found)]

    def _subclass_map(self) -> dict[TypeKey, list[TypeKey]]:
        subclasses = self._subclasses
        if subclasses is None:
            subs: dict[TypeKey, list[TypeKey]] = defaultdict(list)
            for key in self._type_at:
                for base in self._bases(key):
                    subs[base].append(key)
            with self._lock:
                if self._subclasses is None:
                    self._subclasses = dict(subs)
                subclasses = self._subclasses
        return subclasses


def base_names(signature: str) -> list[str]:
    """The base types a type's signature names (last part of each dotted name)."""
    found: list[str] = []
    for pattern in (_PY_BASES, _EXTENDS, _COLON_BASES, _RUBY_BASE):
        for m in pattern.finditer(signature):
            text = m.group(1)
            while _NESTED.search(text):
                text = _NESTED.sub("", text)
            for part in text.split(","):
                if "=" in part:
                    continue  # metaclass=..., total=False
                words = [w for w in re.split(r"\s+", part.strip()) if w not in _MODIFIERS]
                if words and (names := _WORD.findall(words[-1].replace("::", "."))):
                    found.append(names[-1])
    return list(dict.fromkeys(found))
