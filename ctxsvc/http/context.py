"""The context routes: context, expand, search, the map, symbols and file lines."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from ctxsvc.errors import InvalidPath
from ctxsvc.http.errors import ERRORS, json_response
from ctxsvc.http.observability import annotate
from ctxsvc.http.params import AUTHORIZED_ROUTE, IndexName, JsonRoute
from ctxsvc.http.workers import Workers
from ctxsvc.impact import MAX_DEPTH, MAX_PER_DEPTH
from ctxsvc.limits import MAX_BUDGET, MAX_FILE_LINES, MAX_LINE, MAX_RESULTS, MAX_SYMBOL_CHARS
from ctxsvc.models import ContextPack, FileLines, Impact, Links, SearchResult, SymbolUses
from ctxsvc.schemas import ContextRequest, ExpandRequest, SearchRequest, Text
from ctxsvc.service import ContextService

SYMBOL_QUERY = (
    "A definition's id ('app/store.py::Store.get', as search results give it), qualified "
    "name ('Store.get') or name ('get')."
)
SymbolQuery = Annotated[
    Text,
    Query(
        alias="name",
        min_length=1,
        max_length=MAX_SYMBOL_CHARS,
        description=SYMBOL_QUERY,
        examples=["Store.get"],
    ),
]
# Optional parameters: the bounds are the value's, the description the parameter's (a Query
# in a union's member describes only that member).
OptionalLine = Annotated[int, Query(ge=1, le=MAX_LINE)] | None
OptionalPath = Annotated[Text, Query(min_length=1, max_length=4096)] | None


def context_routes(service: ContextService, work: Workers) -> APIRouter:
    r = APIRouter(
        prefix="/v1", responses=ERRORS, tags=["context"], route_class=JsonRoute,
        dependencies=AUTHORIZED_ROUTE,
    )  # fmt: skip

    def packed(pack: ContextPack) -> Response:
        annotate(repo=pack.repo, tokens_used=pack.tokens_used)
        return json_response(asdict(pack))

    @r.post(
        "/context", response_model=ContextPack, operation_id="context",
        summary="Get the code relevant to a task",
    )  # fmt: skip
    async def context_(body: ContextRequest) -> Response:
        """The code most relevant to a task, packed within a token budget."""
        return await work.run(lambda: packed(
            service.context(
                body.repo, body.query, body.budget_tokens, detail=body.detail,
                session_id=body.session_id, include=body.include, exclude=body.exclude,
                refresh=body.refresh, diff=body.diff, branch=body.branch, repos=body.repos,
            )
        ))  # fmt: skip

    @r.post(
        "/expand", response_model=ContextPack, operation_id="expand",
        summary="Expand a symbol or a line range",
    )  # fmt: skip
    async def expand(body: ExpandRequest) -> Response:
        """One symbol or line range, optionally with callers and callees, within a budget."""
        return await work.run(lambda: packed(
            service.expand(
                body.repo, symbol=body.symbol, path=body.path, start_line=body.start_line,
                end_line=body.end_line, budget_tokens=body.budget_tokens, callers=body.callers,
                callees=body.callees, session_id=body.session_id, branch=body.branch,
            )
        ))  # fmt: skip

    @r.post(
        "/search", response_model=SearchResult, operation_id="search",
        summary="Search files and symbols",
    )  # fmt: skip
    async def search(body: SearchRequest) -> Response:
        """Ranked files and symbols with their scores; nothing is packed."""
        annotate(repo=",".join(filter(None, [body.repo, *(body.repos or ())])))
        return await work.run(
            lambda: json_response(asdict(service.search(
                body.repo, body.query, body.limit, branch=body.branch, repos=body.repos
            )))
        )  # fmt: skip

    @r.get(
        "/repos/{name}/map", response_model=ContextPack, operation_id="repoMap",
        summary="Map a repository",
    )  # fmt: skip
    async def repo_map(
        name: IndexName,
        budget_tokens: Annotated[
            int,
            Query(
                ge=0,
                le=MAX_BUDGET,
                description="Most tokens (cl100k_base) of map to return.",
                examples=[2000],
            ),
        ] = 2000,
    ) -> Response:
        """A map of the repository: files by PageRank over the code graph, with their central symbols."""
        return await work.run(lambda: packed(service.repo_map(name, budget_tokens)))

    @r.get(
        "/repos/{name}/symbols", response_model=SymbolUses, operation_id="symbols",
        summary="Find a symbol's definitions and uses",
    )  # fmt: skip
    async def symbols(
        name: IndexName,
        symbol: SymbolQuery,
        limit: Annotated[
            int,
            Query(
                ge=1,
                le=MAX_RESULTS,
                description="Most definitions and most uses to list.",
                examples=[100],
            ),
        ] = 100,
    ) -> Response:
        """Definitions a name, qualified name or id (path::Qualified.name) can mean, and uses.

        References that resolve to them through receivers and imports come first
        (``resolved_references`` of them), then those that match by name only.
        """
        annotate(repo=name)
        return await work.run(
            lambda: json_response(asdict(service.symbol_uses(name, symbol, limit)))
        )

    @r.get(
        "/repos/{name}/impact", response_model=Impact, operation_id="impact",
        summary="List who depends on a symbol",
    )  # fmt: skip
    async def impact(
        name: IndexName,
        symbol: SymbolQuery,
        depth: Annotated[
            int,
            Query(
                ge=1,
                le=MAX_DEPTH,
                description=f"Levels of dependents to follow (1 to {MAX_DEPTH}).",
                examples=[2],
            ),
        ] = 2,
        limit: Annotated[
            int,
            Query(
                ge=1,
                le=MAX_PER_DEPTH,
                description="Dependents listed (and followed) per depth, resolved ones first.",
                examples=[100],
            ),
        ] = 100,
    ) -> Response:
        """Who depends on a symbol, grouped by depth; each link resolved or matched by name."""
        annotate(repo=name)
        found = service.impact
        return await work.run(lambda: json_response(asdict(found(name, symbol, depth, limit))))

    @r.get(
        "/repos/{name}/references", response_model=Links, operation_id="references",
        summary="List the uses of a symbol",
    )  # fmt: skip
    async def references(
        name: IndexName,
        symbol: SymbolQuery,
        limit: Annotated[
            int, Query(ge=1, le=MAX_RESULTS, description="Most uses to list.", examples=[100])
        ] = 100,
    ) -> Response:
        """The uses of a symbol, resolved ones first, each with how it was resolved."""
        annotate(repo=name)
        return await work.run(
            lambda: json_response(asdict(service.references(name, symbol, limit)))
        )

    @r.get(
        "/repos/{name}/definition", response_model=Links, operation_id="definition",
        summary="Go to the definition of a name",
    )  # fmt: skip
    async def definition(
        name: IndexName,
        symbol: Annotated[
            Text,
            Query(
                alias="name",
                min_length=1,
                max_length=MAX_SYMBOL_CHARS,
                description="The name as it is used (a qualified one narrows it).",
                examples=["Store.get"],
            ),
        ],
        path: Annotated[
            OptionalPath,
            Query(
                description="The file of the use (repository-relative).", examples=["app/main.py"]
            ),
        ] = None,
        line: Annotated[
            OptionalLine,
            Query(description="The line of the use (1-based, with path).", examples=[12]),
        ] = None,
    ) -> Response:
        """What a name means where it is used at path:line (go to definition)."""
        annotate(repo=name)
        return await work.run(
            lambda: json_response(asdict(service.definition(name, symbol, path, line)))
        )

    @r.get(
        "/repos/{name}/files/{path:path}", response_model=FileLines, operation_id="fileLines",
        summary="Read lines of an indexed file",
    )  # fmt: skip
    async def file(
        request: Request,
        name: IndexName,
        path: Annotated[
            str,
            PathParam(
                description="The file's repository-relative POSIX path, as in the index "
                "(slashes not encoded).",
                examples=["app/store.py"],
            ),
        ],
        start: Annotated[
            OptionalLine, Query(description="First line (1-based; default: 1).", examples=[1])
        ] = None,
        end: Annotated[
            OptionalLine,
            Query(
                description=f"Last line, inclusive (default: the end; at most {MAX_FILE_LINES} "
                "lines are returned).",
                examples=[40],
            ),
        ] = None,
    ) -> Response:
        """Lines of an indexed file, as indexed: read from the index, never from disk."""
        _check_rel_path(path, request.scope.get("raw_path", b""))
        annotate(repo=name)
        last = (start or 1) + MAX_FILE_LINES - 1  # bounded result size
        found = await work.run(
            lambda: service.file_lines(name, path, start, min(end or last, last))
        )
        if found is None:
            raise HTTPException(404, f"{path} is not an indexed file of {name}")
        return json_response(asdict(found))

    return r


def _check_rel_path(path: str, raw_path: bytes) -> None:
    """Refuse anything but a plain relative path; the lookup is in the index anyway."""
    tail = raw_path.split(b"/files/", 1)[-1].lower()
    if any(enc in tail for enc in (b"%2f", b"%5c", b"%00", b"%2e")):
        raise InvalidPath("encoded separators or dots are not allowed in a file path")
    parts = path.split("/")
    if (
        not path
        or path.startswith("/")
        or "\\" in path
        or "\x00" in path
        or any(p in ("", ".", "..") for p in parts)
        or any(ord(ch) < 32 for ch in path)
    ):
        raise InvalidPath(
            f"{path!r} is not a relative path inside the repository",
            hint="use the repository-relative POSIX path, as in the index",
        )
