"""Resolution of references through receivers and imports, on files parsed by tree-sitter."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

import pytest

from ctxsvc import resolve
from ctxsvc.imports import module_key
from ctxsvc.indexers.symbols import extract
from ctxsvc.models import Import, Reference, Symbol
from ctxsvc.resolve import Resolver, base_names, receivers

LANGUAGE = {".py": "python", ".ts": "typescript", ".go": "go", ".java": "java"}

FILES = {
    "src/pkg/__init__.py": "from .core import Engine, run\n",
    "src/pkg/core.py": """import os.path


class Base:
    def start(self):
        pass

    def stop(self):
        self.start()


class Engine(Base):
    def start(self):
        super().start()
        os.path.join("a", "b")


class Turbo(Engine):
    def start(self):
        pass


def run(engine: Engine):
    engine.stop()
    run(engine)


def build() -> Engine:
    return Engine()


def use():
    t = build()
    t.stop()
""",
    "src/pkg/helpers.py": "def run(x):\n    return x\n",
    "src/app.py": """from pkg import Engine, run
from pkg import helpers


def main():
    e = Engine()
    e.start()
    run(e)
    helpers.run(1)
    thing.start()
""",
    "web/util.ts": "export function fetchJson(url: string) {\n  return url;\n}\n",
    "web/main.ts": """import { fetchJson } from "./util";
import * as u from "./util";

export function load() {
  fetchJson("/a");
  u.fetchJson("/b");
}
""",
    "svc/Worker.java": """package svc;

class Worker {
    void run() {
        step();
    }

    void step() {}
}
""",
}


Parsed = tuple[list[Symbol], list[Reference], list[Import], dict[str, dict[int, str]]]


def parse(files: Mapping[str, str]) -> Parsed:
    symbols: list[Symbol] = []
    refs: list[Reference] = []
    imports: list[Import] = []
    lines = {p: dict(enumerate(t.split("\n"), start=1)) for p, t in files.items()}
    for path, text in files.items():
        parsed = extract(path, text, LANGUAGE[path[path.rindex(".") :]])
        symbols += parsed.symbols
        refs += parsed.references
        imports += parsed.imports
    return symbols, refs, imports, lines


@pytest.fixture(scope="module")
def world() -> tuple[Resolver, list[Reference]]:
    symbols, refs, imports, lines = parse(FILES)
    return Resolver(symbols, imports, lambda p: lines.get(p, {})), refs


def meant(
    world: tuple[Resolver, list[Reference]], path: str, line: int, name: str
) -> dict[str, bool]:
    resolver, refs = world
    (ref,) = [r for r in refs if (r.path, r.line, r.name) == (path, line, name)]
    return {resolver.symbols[i].id: sure for i, sure in resolver.resolve(ref).items()}


@pytest.mark.parametrize(
    ("path", "line", "name", "expected"),
    [
        # self.start() in Base dispatches to Base.start and to the overrides below it.
        ("src/pkg/core.py", 9, "start", {
            "src/pkg/core.py::Base.start": True, "src/pkg/core.py::Engine.start": True,
            "src/pkg/core.py::Turbo.start": True,
        }),
        # super().start() in Engine: from the bases, not Engine's own.
        ("src/pkg/core.py", 14, "start", {"src/pkg/core.py::Base.start": True}),
        # A module outside the repository resolves to nothing.
        ("src/pkg/core.py", 15, "join", {}),
        # A parameter declared an Engine: the method inherited from Base.
        ("src/pkg/core.py", 24, "stop", {"src/pkg/core.py::Base.stop": True}),
        # A bare call: the file's own function, not the helpers' run.
        ("src/pkg/core.py", 25, "run", {"src/pkg/core.py::run": True}),
        # t = build(): the type build() returns.
        ("src/pkg/core.py", 34, "stop", {"src/pkg/core.py::Base.stop": True}),
        # e = Engine(): the class imported through the package's re-export.
        ("src/app.py", 7, "start", {
            "src/pkg/core.py::Engine.start": True, "src/pkg/core.py::Turbo.start": True,
        }),
        ("src/app.py", 8, "run", {"src/pkg/core.py::run": True}),
        # from pkg import helpers: a module; helpers.run is its run.
        ("src/app.py", 9, "run", {"src/pkg/helpers.py::run": True}),
        # Of an unknown receiver: any method of that name, never a function.
        ("src/app.py", 10, "start", {
            "src/pkg/core.py::Base.start": False, "src/pkg/core.py::Engine.start": False,
            "src/pkg/core.py::Turbo.start": False,
        }),
        ("web/main.ts", 5, "fetchJson", {"web/util.ts::fetchJson": True}),
        ("web/main.ts", 6, "fetchJson", {"web/util.ts::fetchJson": True}),
        # Java's implicit this.
        ("svc/Worker.java", 5, "step", {"svc/Worker.java::Worker.step": True}),
    ],
)  # fmt: skip
def test_resolution(
    world: tuple[Resolver, list[Reference]],
    path: str,
    line: int,
    name: str,
    expected: dict[str, bool],
) -> None:
    assert meant(world, path, line, name) == expected


def test_receivers_of_each_use_on_a_line() -> None:
    line = "self.app.register(register(x), bp.register, f().register, super().register)"
    assert list(receivers(line, "register")) == [
        ("self", "app"), (), ("bp",), None, ("super",)
    ]  # fmt: skip
    assert list(receivers("\t$this->run(); Foo::run(); group.Use()", "run")) == [
        ("$this",), ("Foo",)
    ]  # fmt: skip
    assert list(receivers("registered = 1", "register")) == []


@pytest.mark.parametrize(
    ("signature", "bases"),
    [
        ("class Flask(App, metaclass=Meta)", ["App"]),
        ("class Blueprint(sansio.Scaffold)", ["Scaffold"]),
        ("export class Router<T> extends Base<T> implements IRouter, Other", ["Base", "IRouter", "Other"]),
        ("class Worker : public Base, private Mixin", ["Base", "Mixin"]),
        ("class Foo < ActiveRecord::Base", ["Base"]),
        ("class Plain", []),
    ],
)  # fmt: skip
def test_base_names(signature: str, bases: list[str]) -> None:
    assert base_names(signature) == bases


@pytest.mark.parametrize(
    ("path", "module", "key"),
    [
        ("src/flask/app.py", ".blueprints", ("src/flask/blueprints", True)),
        ("src/flask/app.py", "..helpers", ("src/helpers", True)),
        ("src/flask/app.py", "flask.json", ("flask/json", False)),
        ("web/a/main.ts", "../util", ("web/util", True)),
        ("gin.go", "github.com/gin-gonic/gin/render", ("github.com/gin-gonic/gin/render", False)),
        ("src/lib.rs", "crate::foo::bar", ("foo/bar", False)),
    ],
)
def test_module_keys(path: str, module: str, key: tuple[str, bool]) -> None:
    assert module_key(path, module) == key


# Subclasses of Engine in many files: resolving e.start() needs every file's bases,
# and reads more files than the resolver keeps.
MANY = {
    **FILES,
    **{
        f"src/gen/m{k}.py": f"""from pkg.core import Engine


class Sub{k}(Engine):
    def start(self):
        self.stop()


def go{k}(e: Engine):
    e.start()
    s = Sub{k}()
    s.start()
"""
        for k in range(40)
    },
}


def test_one_resolver_shared_by_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    # The view's resolver serves every request thread: what one thread caches
    # (a file's lines, a type's bases) must never break or mislead another.
    monkeypatch.setattr(resolve, "CACHED_FILES", 2)
    symbols, refs, imports, lines = parse(MANY)

    def read(path: str) -> Mapping[int, str]:
        time.sleep(0)  # let another thread run, as a real read does
        return lines.get(path, {})

    expected = [Resolver(symbols, imports, read).resolve(r) for r in refs]
    e_start = [r for r in refs if r.path == "src/gen/m7.py" and r.line == 10]
    assert len(Resolver(symbols, imports, read).resolve(e_start[0])) == 42  # Engine, Turbo, 40
    shared = Resolver(symbols, imports, read)
    threads = 8

    def work(k: int) -> list[dict[int, bool]]:
        order = refs[k::threads] + refs * 4  # each starts elsewhere, then does them all
        return [shared.resolve(r) for r in order]

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        with ThreadPoolExecutor(threads) as pool:
            results = list(pool.map(work, range(threads)))
    finally:
        sys.setswitchinterval(interval)
    for k, got in enumerate(results):
        assert got == expected[k::threads] + expected * 4
