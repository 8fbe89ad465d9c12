"""The API's docs, served offline: Swagger UI at ``/docs``, ReDoc at ``/redoc``.

Both pages load their scripts, styles and icon from the package's own copies
(``ctxsvc/data/static``, served at :data:`ASSETS_PATH`; ``LICENSES`` there names
their versions), never from a CDN, so they work without network access, and their
Content-Security-Policy keeps images to this server too. The pages, the assets and
``/openapi.json`` need the bearer token when one is set, or in a browser the
inspector's login cookie, which the edge accepts on their reads (see
:mod:`ctxsvc.http.edge`). Swagger UI's *Authorize*
button takes the token (the ``bearer`` security scheme the operations declare), and
its *Try it out* then sends it with each request.

The OpenAPI document's own words (its description, its tags, the fallback for an
operation's id) are here too; each route gives its ``operation_id`` and ``summary``.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from starlette.staticfiles import StaticFiles

ASSETS_DIR = Path(__file__).resolve().parent.parent / "data" / "static"
ASSETS_PATH = "/static/apidocs"
SWAGGER_JS = "swagger-ui-bundle.js"
SWAGGER_CSS = "swagger-ui.css"
REDOC_JS = "redoc.standalone.js"
FAVICON = "favicon-32x32.png"
# Swagger UI's defaults as FastAPI has them, without the call to the online validator
# (validator.swagger.io), and with each operation's id shown (the name clients use).
SWAGGER_PARAMETERS: dict[str, object] = {"validatorUrl": None, "displayOperationId": True}
# Images from this server only: ReDoc's sidebar shows Redocly's logo from their CDN (the
# bundle's one external URL; offline the image hides itself), and nothing else of either
# page needs one from elsewhere.
CSP = "img-src 'self' data: blob:"


def apidocs_routes(app: FastAPI, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """Serve Swagger UI at ``docs_url`` and ReDoc at ``redoc_url`` from the packaged assets,
    for an app made with ``docs_url=None, redoc_url=None`` (FastAPI's pages use a CDN)."""
    openapi_url = app.openapi_url
    assert openapi_url is not None, "the docs need the app's OpenAPI document"
    oauth2_redirect = app.swagger_ui_oauth2_redirect_url
    app.mount(ASSETS_PATH, StaticFiles(directory=ASSETS_DIR), name="apidocs-assets")

    @app.get(docs_url, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = _root(request)
        page = get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{ASSETS_PATH}/{SWAGGER_JS}",
            swagger_css_url=f"{root}{ASSETS_PATH}/{SWAGGER_CSS}",
            swagger_favicon_url=f"{root}{ASSETS_PATH}/{FAVICON}",
            oauth2_redirect_url=root + oauth2_redirect if oauth2_redirect else None,
            swagger_ui_parameters=SWAGGER_PARAMETERS,
        )
        page.headers["Content-Security-Policy"] = CSP
        return page

    if oauth2_redirect:

        @app.get(oauth2_redirect, include_in_schema=False)
        async def swagger_ui_redirect() -> HTMLResponse:
            return get_swagger_ui_oauth2_redirect_html()

    @app.get(redoc_url, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = _root(request)
        page = get_redoc_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS_PATH}/{REDOC_JS}",
            redoc_favicon_url=f"{root}{ASSETS_PATH}/{FAVICON}",
            with_google_fonts=False,
        )
        page.headers["Content-Security-Policy"] = CSP
        return page


def _root(request: Request) -> str:
    # Behind a proxy that serves the app under a prefix (--root-path), as FastAPI's own pages.
    return str(request.scope.get("root_path", "")).rstrip("/")


# -- the OpenAPI document's own words ----------------------------------------------------

DESCRIPTION = """\
Start with `POST /v1/context`, or `GET /v1/repos/{name}/map` in a repository you do not
know; read more with `POST /v1/expand`. Budgets are in tokens, counted with cl100k_base.

**Token.** When the server has one (`CTXSVC_TOKEN`), every path but `/healthz`,
`/readyz` and the inspector's login form and assets needs `Authorization: Bearer <token>`,
these docs too (in a browser, the inspector's login at `/ui/login` opens them). In Swagger UI (`/docs`),
*Authorize* takes it, and *Try it out* sends it.

**Errors.** Every failure is an RFC 9457 problem (`application/problem+json`) with a
stable `code`, whether a retry helps (`retryable`, with `Retry-After`), a `hint` and the
`request_id` the server's log carries.
"""

TAGS: list[dict[str, object]] = [
    {
        "name": "context",
        "description": "The code a task needs: packed context, expansion, search, the map, "
        "symbols, dependents, references, definitions and file lines.",
    },
    {
        "name": "repos",
        "description": "The indexes: list, status, register and re-index (background jobs), "
        "delete.",
    },
    {
        "name": "checkpoints",
        "description": "Agent memory: sessions, checkpoints, and what to read to resume after "
        "a context reset.",
    },
    {"name": "workspaces", "description": "The log that parallel sessions of a workspace share."},
    {"name": "health", "description": "Liveness, readiness and Prometheus metrics."},
]


def operation_id(route: APIRoute) -> str:
    """The operationId of a route that names none (every route of the API names its own):
    its function's name in camelCase, which stays as long as the function does."""
    head, *rest = route.name.strip("_").split("_")
    return head + "".join(word.capitalize() for word in rest)
