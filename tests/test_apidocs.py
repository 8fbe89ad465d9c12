"""The API docs, offline (Swagger UI and ReDoc from the package's assets), and the OpenAPI
document they render: every operation named, summarized and described, every input
described with an example."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest

from ctxsvc.http import create_app
from ctxsvc.http.apidocs import ASSETS_DIR
from ctxsvc.service import ContextService

pytestmark = pytest.mark.anyio
TOKEN = "d0cs-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
OPERATION_ID = re.compile(r"^[a-z][A-Za-z]+$")
METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
# What each kind of asset must be served as, and the least it weighs (the real files are
# far larger: a placeholder or an error page is not).
ASSET_TYPES = {
    ".js": (("text/javascript", "application/javascript"), 100_000),
    ".css": (("text/css",), 50_000),
    ".png": (("image/png",), 100),
}


@pytest.fixture
async def client(service: ContextService) -> AsyncIterator[httpx.AsyncClient]:
    """The API with a token, in process (the docs need no index)."""
    app = create_app(service, token=TOKEN)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://localhost", headers=AUTH
    ) as c:
        yield c


@pytest.fixture
async def spec(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.get("/openapi.json")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


class _Links(HTMLParser):
    """Every ``src`` and ``href`` of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls.extend(v for k, v in attrs if k in ("src", "href") and v is not None)


def links(html: str) -> list[str]:
    parser = _Links()
    parser.feed(html)
    return parser.urls


def operations(spec: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{method.upper()} {path}", op)
        for path, item in spec["paths"].items()
        for method, op in item.items()
        if method in METHODS
    ]


def resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    assert ref.startswith("#/components/schemas/"), ref
    found: dict[str, Any] = spec["components"]["schemas"][ref.rsplit("/", 1)[1]]
    return found


@pytest.mark.parametrize(
    ("page", "scripts"),
    [("/docs", {"swagger-ui-bundle.js"}), ("/redoc", {"redoc.standalone.js"})],
)
async def test_docs_pages_load_only_local_assets(
    client: httpx.AsyncClient, page: str, scripts: set[str]
) -> None:
    r = await client.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    urls = links(r.text)
    assert urls, r.text
    # Nothing from a CDN or any other host: relative to this server, and nothing else.
    assert not [u for u in urls if not u.startswith("/") or u.startswith("//")], urls
    assert "http://" not in r.text and "https://" not in r.text  # no URL in the scripts either
    assert "/openapi.json" in r.text
    # ReDoc's bundle shows Redocly's logo from their CDN: the browser is told not to load it.
    assert "img-src 'self'" in r.headers["content-security-policy"]
    assert scripts <= {u.rsplit("/", 1)[-1] for u in urls}, urls
    for url in urls:
        asset = await client.get(url)
        assert asset.status_code == 200, url
        kinds, least = ASSET_TYPES[url[url.rindex(".") :]]
        assert asset.headers["content-type"].split(";")[0] in kinds, (url, asset.headers)
        assert len(asset.content) >= least, url
        assert asset.content == (ASSETS_DIR / url.rsplit("/", 1)[-1]).read_bytes(), url


async def test_swagger_ui_calls_no_online_validator_and_has_its_redirect(
    client: httpx.AsyncClient,
) -> None:
    html = (await client.get("/docs")).text
    assert '"validatorUrl": null' in html  # else Swagger UI asks validator.swagger.io
    redirect = re.search(r"oauth2RedirectUrl: window\.location\.origin \+ '([^']+)'", html)
    assert redirect is not None, html
    r = await client.get(redirect.group(1))
    assert r.status_code == 200 and "oauth2" in r.text


async def test_pages_follow_the_root_path_of_a_proxy(service: ContextService) -> None:
    app = create_app(service)
    transport = httpx.ASGITransport(app=app, root_path="/ctx")
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
        for page in ("/docs", "/redoc"):
            html = (await c.get(f"/ctx{page}")).text
            assert all(u.startswith("/ctx/") for u in links(html)), html
            assert "'/ctx/openapi.json'" in html or '"/ctx/openapi.json"' in html, html


async def test_docs_and_their_assets_need_the_token(client: httpx.AsyncClient) -> None:
    for path in (
        "/docs",
        "/redoc",
        "/openapi.json",
        "/docs/oauth2-redirect",
        "/static/apidocs/swagger-ui-bundle.js",
    ):
        r = await client.get(path, headers={"Authorization": ""})
        assert r.status_code == 401, path
    # The third-party licenses ship with the assets, the versions named.
    licenses = (await client.get("/static/apidocs/LICENSES")).text
    assert "swagger-ui-dist 5." in licenses and "redoc 2." in licenses
    for name in ("swagger-ui-dist.LICENSE", "redoc.LICENSE"):
        assert (await client.get(f"/static/apidocs/{name}")).status_code == 200, name


async def test_every_operation_is_named_summarized_and_described(spec: dict[str, Any]) -> None:
    ops = operations(spec)
    assert len(ops) >= 20, [label for label, _ in ops]
    ids = [op.get("operationId", "") for _, op in ops]
    assert len(set(ids)) == len(ids), ids
    for label, op in ops:
        assert OPERATION_ID.match(op.get("operationId", "")), (label, op.get("operationId"))
        summary = op.get("summary", "")
        assert summary and summary == summary.strip() and "  " not in summary, (label, summary)
        assert summary[0].isupper() and not summary.endswith("."), (label, summary)
        assert op.get("description", "").strip(), label
    named = {label: op["operationId"] for label, op in ops}
    assert named["POST /v1/context"] == "context" and named["POST /v1/expand"] == "expand"
    assert named["GET /v1/repos"] == "listRepos" and named["GET /v1/repos/{name}"] == "getRepo"


async def test_every_parameter_is_described_with_an_example(spec: dict[str, Any]) -> None:
    missing = []
    for label, op in operations(spec):
        for param in op.get("parameters", []):
            where = f"{label}: {param['in']} {param['name']}"
            if not param.get("description", "").strip():
                missing.append(f"{where}: no description")
            schema = param.get("schema", {})
            if not (param.get("example") or param.get("examples") or schema.get("examples")):
                missing.append(f"{where}: no example")
    assert not missing, "\n".join(missing)


async def test_every_request_body_field_is_described_with_an_example(
    spec: dict[str, Any],
) -> None:
    missing, bodies = [], 0
    for label, op in operations(spec):
        if "requestBody" not in op:
            continue
        bodies += 1
        schema = resolve(spec, op["requestBody"]["content"]["application/json"]["schema"])
        assert schema.get("properties"), label
        for name, prop in schema["properties"].items():
            if not prop.get("description", "").strip():
                missing.append(f"{label}: {name}: no description")
            if not prop.get("examples"):
                missing.append(f"{label}: {name}: no example")
    assert bodies >= 7 and not missing, "\n".join(missing)


async def test_the_context_request_says_what_each_field_is(spec: dict[str, Any]) -> None:
    props = spec["components"]["schemas"]["ContextRequest"]["properties"]
    for name in ("query", "budget_tokens", "detail", "session_id", "include", "repos", "branch"):
        assert len(props[name]["description"]) > 20 and props[name]["examples"], name
    assert props["budget_tokens"]["default"] == 8000 and props["budget_tokens"]["maximum"] > 0


async def test_the_token_is_declared_where_it_is_needed(spec: dict[str, Any]) -> None:
    """Swagger UI's Authorize button takes the bearer token for the operations that need it."""
    schemes = spec["components"]["securitySchemes"]
    assert schemes == {"bearer": {"type": "http", "scheme": "bearer", "description": ANY_TEXT}}
    for label, op in operations(spec):
        security = op.get("security")
        if label == "GET /healthz":
            assert security is None, label
        elif label == "GET /readyz":  # the token is optional: it says more with it
            assert security == [{}, {"bearer": []}], label
        else:
            assert security == [{"bearer": []}], label


class _AnyText(str):
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and bool(other.strip())

    __hash__ = str.__hash__


ANY_TEXT = _AnyText()
