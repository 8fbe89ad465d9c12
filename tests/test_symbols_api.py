"""Symbols by id, no silent picks, callers that really call, a map that ranks source first.

The fixture reproduces what went wrong on flask and gin: ``register`` defined
in the framework and in the tutorial, ``self.register`` in unrelated classes,
a Go method and a free function both named ``Use``, and a repository whose
test helpers are its most referenced code.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import httpx2
import mcp_types as types
import pytest
from conftest import git, write_tree
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from ctxsvc.candidates import expand_blocks
from ctxsvc.client import AsyncClient
from ctxsvc.errors import AmbiguousSymbol, InvalidRequest
from ctxsvc.http import create_app
from ctxsvc.mcp.server import McpHttp
from ctxsvc.service import ContextService

LIB = {
    "src/flask/blueprints.py": '''"""Blueprints: groups of routes registered on an app later."""


class Blueprint:
    """A group of routes."""

    def __init__(self, name: str) -> None:
        self.name = name

    def register(self, app: "Flask", options: dict) -> None:
        """Register the blueprint on the app."""
        app.blueprints[self.name] = self
        self.record(options)

    def record(self, options: dict) -> None:
        self.options = options
''',
    "src/flask/app.py": '''"""The application object."""
from .blueprints import Blueprint


class Flask:
    """The application."""

    def __init__(self) -> None:
        self.blueprints: dict[str, Blueprint] = {}

    def register_blueprint(self, blueprint: Blueprint, **options: object) -> None:
        """Register a blueprint on the application."""
        blueprint.register(self, options)
''',
    "src/flask/signals.py": '''"""Signals: classes unrelated to blueprints that register things of their own."""


class Namespace:
    """Named signals."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def register(self, name: str) -> None:
        self.names.append(name)

    def signal(self, name: str) -> None:
        """Create a signal and register its name."""
        self.register(name)


class Registry:
    """Keeps items; register is attached at run time."""

    def add(self, item: str) -> None:
        """Add an item through the register hook."""
        self.register(item)
''',
    "examples/tutorial/flaskr/auth.py": '''"""The tutorial's authentication views."""
from flask import Blueprint

bp = Blueprint("auth")


def register() -> str:
    """Register a new user."""
    return "registered"
''',
    "tests/test_blueprints.py": """from flask.blueprints import Blueprint


def test_register(app):
    bp = Blueprint("x")
    bp.register(app, {})
""",
    "tests/test_more.py": """def test_register_twice(app, bp):
    bp.register(app, {})


def test_signal(ns):
    ns.signal("ready")
""",
    "gin/routergroup.go": """package gin

// RouterGroup groups routes under a prefix.
type RouterGroup struct {
\tHandlers []HandlerFunc
}

// Use adds middleware to the group.
func (group *RouterGroup) Use(middleware ...HandlerFunc) *RouterGroup {
\tgroup.Handlers = append(group.Handlers, middleware...)
\treturn group
}

// Group makes a sub-group with the group's middleware.
func (group *RouterGroup) Group() *RouterGroup {
\treturn group.Use()
}
""",
    "gin/gin.go": """package gin

// HandlerFunc handles a request.
type HandlerFunc func()

// Engine is the framework's instance.
type Engine struct {
\tRouterGroup
}

// Use registers a handler for every engine.
func Use(h HandlerFunc) {
\tglobal = append(global, h)
}

// New makes an engine with a logger.
func New() *Engine {
\tengine := &Engine{}
\tengine.Use(Logger())
\tUse(Recovery())
\treturn engine
}

// Logger logs requests.
func Logger() HandlerFunc { return func() {} }

// Recovery recovers from panics.
func Recovery() HandlerFunc { return func() {} }
""",
}

# Test helpers used everywhere: the most referenced code of the repository.
MAPPED = {
    "src/core.py": '''"""Parse and render documents."""


def parse(text: str) -> list[str]:
    """Split a document into lines."""
    return text.split("\\n")


def render(tree: list[str]) -> str:
    """Join lines back into a document."""
    return "\\n".join(tree)
''',
    "src/formats.py": '''"""Formatting values, one function per type."""
from functools import singledispatch


@singledispatch
def fmt(value: object) -> str:
    """Format any value."""
    return str(value)


@fmt.register
def _(value: int) -> str:
    return hex(value)
''',
    "src/cli.py": '''"""The command line."""
from .core import parse, render
from .formats import fmt


def main(text: str) -> str:
    """Parse, format and render."""
    return render([fmt(x) for x in parse(text)])
''',
    "tests/helpers.py": '''"""Helpers shared by the tests."""


def make_tree() -> list[str]:
    """A small tree."""
    return ["a", "b"]


def check(tree: list[str]) -> None:
    """Assert a tree is well formed."""
    assert all(tree)
''',
    **{
        f"tests/test_{i}.py": (
            "from tests.helpers import check, make_tree\n\n\n"
            + "".join(
                f"def test_{i}_{j}() -> None:\n    check(make_tree())\n    check(make_tree())\n\n\n"
                for j in range(4)
            )
        )
        for i in range(6)
    },
}


def _indexed(service: ContextService, root: Path, files: dict[str, str | bytes]) -> str:
    write_tree(root, files)
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "init")
    return service.index(root).repo


@pytest.fixture
def lib(service: ContextService, tmp_path: Path) -> str:
    return _indexed(service, tmp_path / "lib", LIB)


# -- expand: one target or the candidates -----------------------------------------------


def test_an_ambiguous_name_answers_with_the_candidates(service: ContextService, lib: str) -> None:
    with pytest.raises(AmbiguousSymbol) as caught:
        service.expand(lib, symbol="register")
    err = caught.value
    ids = [c[0] for c in err.candidates]
    assert set(ids) == {
        "src/flask/blueprints.py::Blueprint.register",
        "src/flask/signals.py::Namespace.register",
        "examples/tutorial/flaskr/auth.py::register",
    }
    assert ("examples/tutorial/flaskr/auth.py::register", "function", 7) in err.candidates
    assert "did you mean" in err.message and all(i in err.message for i in ids)
    assert not err.retryable and err.http_status == 422 and isinstance(err, InvalidRequest)
    assert err.to_dict()["code"] == "ambiguous_symbol"


@pytest.mark.parametrize(
    "symbol", ["Blueprint.register", "src/flask/blueprints.py::Blueprint.register"]
)
def test_a_unique_qualified_name_or_an_id_is_one_target(
    service: ContextService, lib: str, symbol: str
) -> None:
    pack = service.expand(lib, symbol=symbol, budget_tokens=2000)
    (item,) = pack.items
    assert (item.path, item.symbol) == ("src/flask/blueprints.py", "Blueprint.register")
    assert "app.blueprints[self.name] = self" in item.text


def test_the_tutorials_register_by_its_id(service: ContextService, lib: str) -> None:
    pack = service.expand(lib, symbol="examples/tutorial/flaskr/auth.py::register")
    assert [(i.path, i.symbol) for i in pack.items] == [
        ("examples/tutorial/flaskr/auth.py", "register")
    ]


def test_an_unknown_id_is_refused_with_suggestions(service: ContextService, lib: str) -> None:
    with pytest.raises(InvalidRequest, match="no definition named") as caught:
        service.expand(lib, symbol="src/flask/app.py::Flask.nope_register")
    assert not isinstance(caught.value, AmbiguousSymbol)
    assert "Blueprint.register" in caught.value.hint


# -- callers and callees resolved through receivers and imports ---------------------------


def _related(
    service: ContextService, repo: str, symbol: str, *, callers: bool = False
) -> list[tuple[str, int, str]]:
    """What expand adds to ``symbol`` before packing: (path, first line, why) of each."""
    view = service.view(service.resolve(repo))
    blocks = expand_blocks(
        view, symbol=symbol, path=None, start_line=None, end_line=None, callers=callers,
        callees=not callers,
    )  # fmt: skip
    return [(b.path, b.start, b.why[0]) for b in blocks[1:]]


def test_callers_are_resolved_not_every_self_register(service: ContextService, lib: str) -> None:
    # The app calls it on a parameter declared a Blueprint, a test on a variable
    # assigned one: resolved. Another test calls it on a parameter of no known type:
    # a name match, left out when resolved callers exist. self.register in
    # Namespace and Registry is theirs, not the blueprint's.
    assert _related(service, lib, "Blueprint.register", callers=True) == [
        ("src/flask/app.py", 1, "calls Blueprint.register at line 13 (resolved)"),
        ("tests/test_blueprints.py", 1, "calls Blueprint.register at line 6 (resolved)"),
    ]
    pack = service.expand(lib, symbol="Blueprint.register", callers=True, budget_tokens=4000)
    assert pack.items[0].symbol == "Blueprint.register"
    assert {i.path for i in pack.items} == {
        "src/flask/blueprints.py", "src/flask/app.py", "tests/test_blueprints.py"
    }  # fmt: skip
    # Where nothing resolves, the name matches come, marked as such.
    assert _related(service, lib, "Namespace.signal", callers=True) == [
        ("tests/test_more.py", 1, "calls Namespace.signal at line 6 (name match)"),
    ]


def test_callers_of_a_method_called_on_self(service: ContextService, lib: str) -> None:
    # Registry.add's self.register (line 23) is not Namespace's.
    assert _related(service, lib, "Namespace.register", callers=True) == [
        ("src/flask/signals.py", 1, "calls Namespace.register at line 15 (resolved)"),
    ]
    # The lookup lists the test's untyped bp.register too: it could be this one.
    uses = service.symbol_uses(lib, "Namespace.register")
    assert [(r.path, r.line) for r in uses.references] == [
        ("src/flask/signals.py", 15), ("tests/test_more.py", 2)
    ]  # fmt: skip
    assert uses.resolved_references == 1


def test_callees_resolve_self_calls_and_skip_other_classes(
    service: ContextService, lib: str
) -> None:
    assert _related(service, lib, "Flask.register_blueprint") == [
        ("src/flask/blueprints.py", 10, "called at line 13 (resolved)")
    ]
    assert _related(service, lib, "Blueprint.register") == [
        ("src/flask/blueprints.py", 15, "called at line 13 (resolved)")
    ]
    pack = service.expand(lib, symbol="Flask.register_blueprint", callees=True)
    assert [i.symbol for i in pack.items] == ["Flask.register_blueprint", "Blueprint.register"]


def test_go_method_and_free_function_of_one_name(service: ContextService, lib: str) -> None:
    method = service.symbol_uses(lib, "RouterGroup.Use")
    free = service.symbol_uses(lib, "gin/gin.go::Use")
    both = service.symbol_uses(lib, "Use")
    assert method.ids == ("gin/routergroup.go::RouterGroup.Use",)
    assert free.ids == ("gin/gin.go::Use",) and free.definitions[0].kind == "function"
    # group.Use() resolves through the receiver, engine.Use() through the Engine
    # that engine is assigned and the RouterGroup it embeds; never to the function.
    assert [(r.path, r.line) for r in method.references] == [
        ("gin/gin.go", 19), ("gin/routergroup.go", 16)
    ]  # fmt: skip
    assert method.resolved_references == 2 and method.total_references == 2
    assert [(r.path, r.line) for r in free.references] == [("gin/gin.go", 20)]
    assert free.resolved_references == 1
    # A lookup by the bare name lists every definition, and the uses of each.
    assert set(both.ids) == {*method.ids, *free.ids} and both.total_references == 3


def test_symbols_lookup_lists_every_definition(service: ContextService, lib: str) -> None:
    uses = service.symbol_uses(lib, "register")
    assert uses.total_definitions == 3 and len(uses.ids) == 3
    assert uses.ids == tuple(d.id for d in uses.definitions)
    # Registry.add's self.register resolves to nothing: no use of any of them.
    lines = {(r.path, r.line) for r in uses.references}
    assert ("src/flask/signals.py", 15) in lines and ("src/flask/signals.py", 23) not in lines


# -- the same through HTTP, the client and MCP ----------------------------------------------

CANDIDATES = [
    {"id": "examples/tutorial/flaskr/auth.py::register", "kind": "function", "line": 7},
    {"id": "src/flask/blueprints.py::Blueprint.register", "kind": "method", "line": 10},
    {"id": "src/flask/signals.py::Namespace.register", "kind": "method", "line": 10},
]


@pytest.fixture
async def api(service: ContextService, lib: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    app = create_app(service, allowed_roots=[tmp_path])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://localhost"
    ) as c:
        yield c


@pytest.mark.anyio
async def test_http_ambiguous_symbol_is_a_problem_with_the_ids(
    api: httpx.AsyncClient, lib: str
) -> None:
    r = await api.post("/v1/expand", json={"repo": lib, "symbol": "register"})
    body = r.json()
    assert r.status_code == 422 and body["code"] == "ambiguous_symbol"
    assert (
        body["retryable"] is False
        and "src/flask/blueprints.py::Blueprint.register" in (body["detail"])
    )
    # The candidates as data too: an extension member of the problem (RFC 9457).
    assert sorted(body["candidates"], key=lambda c: c["id"]) == CANDIDATES
    r = await api.post(
        "/v1/expand", json={"repo": lib, "symbol": "src/flask/blueprints.py::Blueprint.register"}
    )
    assert r.status_code == 200 and r.json()["items"][0]["symbol"] == "Blueprint.register"


@pytest.mark.anyio
async def test_http_symbols_and_search_expose_ids(api: httpx.AsyncClient, lib: str) -> None:
    r = await api.get(f"/v1/repos/{lib}/symbols", params={"name": "gin/gin.go::Use"})
    body = r.json()
    assert r.status_code == 200 and body["ids"] == ["gin/gin.go::Use"]
    assert body["resolved_references"] == 1 and body["total_references"] == 1
    r = await api.post("/v1/search", json={"repo": lib, "query": "register a blueprint"})
    symbols = r.json()["symbols"]
    assert symbols and all(
        s["id"] == f"{s['symbol']['path']}::{s['symbol']['qualname']}" for s in symbols
    )


# -- the repository map ----------------------------------------------------------------------


@pytest.fixture
def mapped(service: ContextService, tmp_path: Path) -> str:
    return _indexed(service, tmp_path / "mapped", MAPPED)


def test_map_ranks_source_over_the_most_referenced_tests(
    service: ContextService, mapped: str
) -> None:
    paths = [i.path for i in service.repo_map(mapped, 2000).items]
    # Every source file first, then the test helpers that every test calls.
    assert sorted(paths[:3]) == ["src/cli.py", "src/core.py", "src/formats.py"]
    assert paths[3] == "tests/helpers.py" and len(paths) == 10


def test_map_lines_name_no_non_names(service: ContextService, mapped: str) -> None:
    (formats,) = [i for i in service.repo_map(mapped, 2000).items if i.path == "src/formats.py"]
    assert formats.text.rstrip().endswith("symbols: fmt")  # not "fmt, _"


@pytest.mark.anyio
async def test_the_client_rebuilds_the_candidates(
    service: ContextService, lib: str, tmp_path: Path
) -> None:
    app = create_app(service, allowed_roots=[tmp_path])
    async with AsyncClient("http://localhost", transport=httpx.ASGITransport(app=app)) as client:
        with pytest.raises(AmbiguousSymbol) as caught:
            await client.expand(lib, symbol="register")
    got = [{"id": i, "kind": k, "line": n} for i, k, n in sorted(caught.value.candidates)]
    assert got == CANDIDATES and caught.value.code == "ambiguous_symbol"


@pytest.mark.anyio
async def test_mcp_ambiguous_symbol_carries_the_candidates(
    service: ContextService, lib: str, tmp_path: Path
) -> None:
    app = create_app(service, allowed_roots=[tmp_path], mounts=[McpHttp(service)])
    async with (
        app.router.lifespan_context(app),
        httpx2.AsyncClient(
            transport=httpx2.ASGITransport(app=app), base_url="http://localhost"
        ) as c,
        streamable_http_client("http://localhost/mcp", http_client=c) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        result = await session.call_tool("expand", {"repo": lib, "symbol": "register"})
    assert isinstance(result, types.CallToolResult) and result.is_error and result.meta
    data = result.meta["ctxsvc/error"]
    assert data["code"] == "ambiguous_symbol"
    assert sorted(data["candidates"], key=lambda c: c["id"]) == CANDIDATES
    (content,) = result.content
    assert isinstance(content, types.TextContent)
    assert all(c["id"] in content.text for c in CANDIDATES)
