"""What an import binds, and which files of the repository a module names.

Every file's imports are kept as written; a name they bind is looked up when a
use needs it (the first import of a name binds it), as a :class:`Bound`: a
module itself, or a name of it. A module maps to files by its key, a path
without extension: relative imports (Python's dots, ``./`` and ``../``,
Rust's ``self::`` and ``super::``) exactly, others by their trailing parts, an
``__init__``, ``index`` or ``mod`` file standing for its directory. A Go
import names a package: every file of its directory, which shares its
top-level names (:func:`container`). A module that is no file of the
repository names no files.

A top-level definition of a module is found in its files, else through the
names they import in turn (re-exports, followed to ``MAX_DEPTH``).

Like the resolver it serves, an :class:`Imports` is shared by threads: its
tables are built once and only read, what it learns is computed outside its
lock and stored under it.
"""

from __future__ import annotations

import posixpath
import threading
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from ctxsvc.models import Import, Symbol

MAX_DEPTH = 8  # of base classes, re-exports and subclasses followed
_JS = (".js", ".jsx", ".mjs", ".cjs", ".ts", ".tsx", ".mts", ".cts")
_INDEX_STEMS = ("/__init__", "/index", "/mod")

_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")


def container(path: str) -> str:
    """Where top-level names are shared: a Go package's directory, else the file."""
    return posixpath.dirname(path) if path.endswith(".go") else path


def memo(lock: threading.Lock, cache: dict[_K, _V], key: _K, compute: Callable[[], _V]) -> _V:
    """``cache[key]``, computed (outside ``lock``) when missing; the first stored wins, so
    threads sharing the cache never see a half-built entry."""
    try:
        return cache[key]
    except KeyError:
        pass
    value = compute()
    with lock:
        return cache.setdefault(key, value)


@dataclass(frozen=True)
class Bound:
    """What an imported name stands for: ``module`` itself (``name`` None) or a name of it."""

    importer: str
    module: str
    name: str | None

    def join(self, part: str) -> Bound:
        """The submodule ``part`` of this module."""
        m = self.module
        if "/" in m or self.importer.endswith(_JS):
            return Bound(self.importer, f"{m.rstrip('/')}/{part}", None)
        if "::" in m:
            return Bound(self.importer, f"{m}::{part}", None)
        return Bound(self.importer, f"{m}{'' if m.endswith('.') else '.'}{part}", None)


class Imports:
    """The imports of one index, and the files and top-level definitions they name.

    ``by_name`` lists the positions in ``symbols`` of the definitions of each
    name. Safe to share between threads.
    """

    def __init__(
        self,
        symbols: Sequence[Symbol],
        by_name: Mapping[str, list[int]],
        imports: Iterable[Import],
    ) -> None:
        self.symbols = symbols
        self._by_name = by_name
        by_file: dict[str, list[Import]] = defaultdict(list)
        for imp in imports:
            by_file[imp.path].append(imp)
        stems: dict[str, list[tuple[str, str]]] = defaultdict(list)  # last part -> stem, path
        dirs: dict[str, set[str]] = defaultdict(set)  # last part -> Go package directories
        go_files: dict[str, list[str]] = defaultdict(list)
        for path in {s.path for s in symbols} | set(by_file):
            stem = posixpath.splitext(path)[0]
            for tail in _INDEX_STEMS:
                stem = stem.removesuffix(tail)
            stems[stem.rsplit("/", 1)[-1]].append((stem, path))
            if path.endswith(".go"):
                d = posixpath.dirname(path)
                dirs[d.rsplit("/", 1)[-1]].add(d)
                go_files[d].append(path)
        # Plain dicts from here on: only read, so that no lookup inserts a key.
        self._imports = dict(by_file)
        self._stems = dict(stems)
        self._dirs = dict(dirs)
        self._go_files = dict(go_files)
        self._lock = threading.Lock()
        self._module_cache: dict[tuple[str, str], frozenset[str]] = {}
        self._import_table: dict[str, dict[str, tuple[Import, bool]]] = {}
        self._binding_cache: dict[tuple[str, str], Bound | None] = {}

    def binding(self, path: str, name: str) -> Bound | None:
        """What ``name`` is bound to by the imports of ``path``, if it is imported."""
        return memo(self._lock, self._binding_cache, (path, name), lambda: self._bind(path, name))

    def _bind(self, path: str, name: str) -> Bound | None:
        table = memo(self._lock, self._import_table, path, lambda: self._import_names(path))
        got = table.get(name)
        if got is None:
            return None
        imp, named = got
        if not named:  # the whole module
            module = imp.module if "/" in imp.module else imp.module.split(".")[0]
            return Bound(path, module, None)
        if path.endswith(".go"):  # an alias of the package
            return Bound(path, imp.module, None)
        bound = Bound(path, imp.module, name)
        sub = bound.join(name)  # from . import helpers: a module
        return sub if path.endswith(".py") and self.files(sub) else bound

    def _import_names(self, path: str) -> dict[str, tuple[Import, bool]]:
        """Each name the imports of ``path`` bind: its import, and whether named in it."""
        table: dict[str, tuple[Import, bool]] = {}
        for imp in self._imports.get(path, []):  # the first import of a name binds it
            names = bound_names(imp)
            for n in names:
                table.setdefault(n, (imp, True))
            if not names:
                table.setdefault(_module_name(imp), (imp, False))
        return table

    def stars(self, path: str) -> list[Bound]:
        return [
            Bound(path, imp.module, None)
            for imp in self._imports.get(path, [])
            if "*" in imp.names or "." in imp.names
        ]

    def exported(self, files: frozenset[str], name: str, depth: int = 0) -> list[int]:
        """Top-level definitions ``name`` of ``files``, re-exports followed."""
        found = [
            i
            for i in self._by_name.get(name, [])
            if self.symbols[i].path in files and self.symbols[i].parent is None
        ]
        if found or depth >= MAX_DEPTH:
            return found
        for f in sorted(files):
            bound = self.binding(f, name)
            if bound is not None and bound.name is not None:
                more = self.files(bound)
                if more - files:
                    found.extend(self.exported(more, name, depth + 1))
        return list(dict.fromkeys(found))

    def files(self, bound: Bound) -> frozenset[str]:
        """The files of the repository that a module, imported in a file, names."""
        key = (bound.importer, bound.module)
        return memo(self._lock, self._module_cache, key, lambda: self._module_files(bound))

    def _module_files(self, bound: Bound) -> frozenset[str]:
        key, exact = module_key(bound.importer, bound.module)
        last = key.rsplit("/", 1)[-1]
        if bound.importer.endswith(".go"):
            dirs = [d for d in self._dirs.get(last, ()) if key == d or key.endswith("/" + d)]
            return frozenset(p for d in dirs for p in self._go_files[d])
        return frozenset(
            p
            for s, p in self._stems.get(last, [])
            if s == key or (not exact and s.endswith("/" + key))
        )


def module_key(path: str, module: str) -> tuple[str, bool]:
    """``module`` as a path without extension, and whether it is relative (exact)."""
    here = posixpath.dirname(path)
    if path.endswith(".py") and module.startswith("."):
        dots = len(module) - len(module.lstrip("."))
        base = here
        for _ in range(dots - 1):
            base = posixpath.dirname(base)
        rest = module[dots:].replace(".", "/")
        return (f"{base}/{rest}" if base else rest) if rest else base, True
    if module.startswith(("./", "../")) or module in (".", ".."):
        return posixpath.normpath(posixpath.join(here, module)), True
    if module.startswith(("crate::", "self::", "super::")):
        head, _, rest = module.partition("::")
        base = {"crate": "", "self": here, "super": posixpath.dirname(here)}[head]
        rest = rest.replace("::", "/")
        return (f"{base}/{rest}" if base else rest), head != "crate"
    key = module.replace("::", "/").replace("\\", "/")
    return (key if "/" in key else key.replace(".", "/")), False


def bound_names(imp: Import) -> tuple[str, ...]:
    """The names an import binds, as written ("{ a, b }" split)."""
    out: list[str] = []
    for n in imp.names:
        out.extend(w.split(" as ")[-1].strip() for w in n.strip("{} ").split(","))
    return tuple(w for w in out if w and w not in ("*", "."))


def _module_name(imp: Import) -> str:
    """The name a whole-module import binds: "a" of "a.b.c", "render" of ".../render"."""
    if "/" in imp.module:
        return imp.module.rstrip("/").rsplit("/", 1)[-1]
    return imp.module.split(".")[0].split("::")[-1]
