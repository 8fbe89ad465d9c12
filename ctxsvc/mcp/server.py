"""The MCP adapter: ctxsvc's tools for coding agents, over stdio or streamable HTTP.

Like the CLI and the HTTP API, it only parses, calls the service and renders
(the tools are in ``ctxsvc.mcp.tools``). A tool's result is text for the
model plus the HTTP API's data as ``structuredContent``, described by the
tool's output schema, without the fields the text already carries (the code
is sent once). A :class:`CtxError` comes back as a tool error
(``isError``) whose first line names the code and says whether retrying can
help. Built on the official SDK's low-level ``Server``, which leaves argument
validation and error rendering to this module.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager, redirect_stdout
from functools import partial
from typing import Any

import anyio
import anyio.to_thread
import mcp_types as types
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from pydantic import TypeAdapter, ValidationError
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from ctxsvc import __version__
from ctxsvc.errors import CtxError
from ctxsvc.mcp.startup import HandshakeFront, PendingService
from ctxsvc.mcp.tools import INSTRUCTIONS, TOOLS, Tool, ToolContext
from ctxsvc.service import ContextService
from ctxsvc.settings import ServedNames

log = logging.getLogger("ctxsvc.mcp")

# -- the server ------------------------------------------------------------------------


def _clean(schema: dict[str, Any]) -> dict[str, Any]:
    """An input schema as a model should read it: no titles, optional fields without null."""
    out = {k: v for k, v in schema.items() if k != "title"}
    options = out.get("anyOf")
    if isinstance(options, list) and "default" in out and out["default"] is None:
        rest = [o for o in options if o != {"type": "null"}]
        if len(rest) == 1:
            del out["anyOf"], out["default"]
            out = {**rest[0], **out}
    for key in ("properties", "$defs"):
        if isinstance(out.get(key), dict):
            out[key] = {name: _clean(sub) for name, sub in out[key].items()}
    if isinstance(out.get("items"), dict):
        out["items"] = _clean(out["items"])
    return out


def input_schema(tool: Tool, default_repo: str | None) -> dict[str, Any]:
    schema = _clean(tool.args.model_json_schema())
    repo = schema.get("properties", {}).get("repo")
    if repo is not None:
        if default_repo is not None:
            repo["description"] += f" Default: {default_repo}."
        elif tool.name != "index_status":
            schema["required"] = ["repo", *schema.get("required", [])]
    return schema


def output_schema(tool: Tool, adapter: TypeAdapter[Any]) -> dict[str, Any]:
    """The schema of ``tool``'s structured result: its output type without ``tool.omit``."""
    schema = adapter.json_schema(mode="serialization")
    if tool.omit:
        _omit(schema, tool.omit, schema.get("$defs", {}))
    return schema


def _omit(schema: dict[str, Any], exclude: Mapping[str, Any], defs: dict[str, Any]) -> None:
    """Drop the fields ``exclude`` names (pydantic's form) from the object ``schema`` describes.

    Definitions are edited in place: a type left out of one place is left out
    everywhere, which holds for the tools' results (items of a pack, its
    rendered text, a summary's rendered text, wherever they appear).
    """
    target = _object(schema, defs)
    props, required = target.get("properties", {}), target.get("required", [])
    for name, sub in exclude.items():
        if sub is True:
            props.pop(name, None)
            if name in required:
                required.remove(name)
        elif name in props:
            field = _object(props[name], defs)
            if "__all__" in sub:  # every item of a list
                _omit(field["items"], sub["__all__"], defs)
            else:
                _omit(field, sub, defs)


def _object(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """The object schema ``schema`` stands for: through a ``$ref`` or an optional's ``anyOf``."""
    options = [o for o in schema.get("anyOf", ()) if o != {"type": "null"}]
    if len(options) == 1:
        schema = options[0]
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        found: dict[str, Any] = defs[ref.removeprefix("#/$defs/")]
        return found
    return schema


def build_server(
    service: ContextService | PendingService, default_repo: str | None = None
) -> Server[Any]:
    """The MCP server over ``service``; tools may omit ``repo`` when ``default_repo`` is set.

    With a :class:`PendingService`, ``initialize`` and ``tools/list`` answer at
    once, and tool calls wait for the service to be built.
    """
    pending = service if isinstance(service, PendingService) else PendingService.of(service)
    by_name = {t.name: t for t in TOOLS}
    adapters = {t.name: TypeAdapter(t.output) for t in TOOLS}
    listed = [
        types.Tool(
            name=t.name,
            title=t.title,
            description=t.description,
            input_schema=input_schema(t, default_repo),
            output_schema=output_schema(t, adapters[t.name]),
            annotations=types.ToolAnnotations(
                title=t.title,
                read_only_hint=t.read_only,
                destructive_hint=False,
                idempotent_hint=t.idempotent,
                open_world_hint=False,
            ),
        )
        for t in TOOLS
    ]

    async def list_tools(
        _: Any, params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=listed)

    async def call_tool(_: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        tool = by_name.get(params.name)
        if tool is None:
            return failure(
                "unknown_tool", f"no tool {params.name!r}", hint=f"use {', '.join(by_name)}"
            )
        t0 = time.perf_counter()
        try:
            args = tool.args.model_validate(params.arguments or {})
            # Cancelled (the server stopping), the call returns and leaves the thread to finish.
            ready = await anyio.to_thread.run_sync(pending.result, abandon_on_cancel=True)
            answer = await anyio.to_thread.run_sync(
                partial(tool.run, ToolContext(ready, default_repo), args), abandon_on_cancel=True
            )
        except ValidationError as exc:
            _log(tool.name, t0, "validation_error")
            detail = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}"
                for e in exc.errors()[:10]
            )
            return failure("validation_error", detail, hint="fix the named arguments")
        except CtxError as exc:
            _log(tool.name, t0, exc.code)
            return failure(
                exc.code, exc.message, hint=exc.hint, retryable=exc.retryable,
                extensions=exc.extensions(),
            )  # fmt: skip
        except Exception:  # a bug: logged here, no internals sent (as the HTTP API's 500)
            log.exception("tool %s failed", tool.name)
            return failure("internal", "an internal error occurred; it was logged on the server")
        _log(tool.name, t0, None)
        return types.CallToolResult(
            content=[types.TextContent(text=t) for t in answer.texts],
            structured_content=adapters[tool.name].dump_python(
                answer.data, mode="json", exclude=tool.omit
            ),
        )

    return Server(
        "ctxsvc",
        version=__version__,
        title="ctxsvc: code context for coding agents",
        instructions=INSTRUCTIONS
        + (f"\nDefault repository: {default_repo} (tools may omit repo)." if default_repo else ""),
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


def failure(
    code: str,
    detail: str,
    *,
    hint: str = "",
    retryable: bool = False,
    extensions: Mapping[str, object] | None = None,
) -> types.CallToolResult:
    """A tool error: ``error <code> (retryable: yes|no): <detail>``, then the hint.

    The same fields go in ``_meta`` for programs, with the error's own data
    (an ambiguous symbol's ``candidates``); ``structuredContent`` is kept for
    results that match the tool's output schema.
    """
    retry = "yes, the same call can succeed later" if retryable else "no"
    text = f"error {code} (retryable: {retry}): {detail}" + (f"\nhint: {hint}" if hint else "")
    data = {
        **(extensions or {}),
        "code": code,
        "detail": detail,
        "hint": hint,
        "retryable": retryable,
    }
    return types.CallToolResult(
        content=[types.TextContent(text=text)], is_error=True, _meta={"ctxsvc/error": data}
    )


def _log(tool: str, t0: float, code: str | None) -> None:
    ms = round((time.perf_counter() - t0) * 1000, 1)
    log.info("tool", extra={"tool": tool, "ms": ms, "code": code or "ok"})


# -- transports --------------------------------------------------------------------------


def serve_stdio(
    service: Callable[[], ContextService] | PendingService,
    default_repo: str | None = None,
    *,
    front: HandshakeFront | None = None,
) -> None:
    """Serve MCP on stdin/stdout until stdin closes.

    The server answers ``initialize`` and ``tools/list`` at once: the service
    (its store, its embedding model) is built in a background thread, and tool
    calls wait for it. A service that cannot be built fails each tool call with
    its error (a model that cannot load only degrades queries); the server
    stays up. stdout carries only the protocol: for the whole run, whatever a
    library prints (while the model loads, say) goes to stderr. ``front``: the
    transport that already holds stdin and stdout (and answered the handshake
    while this module loaded); without it, the SDK's own.
    """
    pending = service if isinstance(service, PendingService) else PendingService(service)
    anyio.run(_serve_stdio, build_server(pending, default_repo), pending, front)


async def _serve_stdio(
    server: Server[Any], pending: PendingService, front: HandshakeFront | None
) -> None:
    # Without a front, stdio_server() points fd 1 at stderr (and keeps the protocol's own
    # copy) while it serves; so the service is built only once it has.
    streams: dict[str, Any] = {}
    if front is not None:
        streams = {"stdin": front.lines(), "stdout": front.output()}
    async with stdio_server(**streams) as (read, write):
        with redirect_stdout(sys.stderr):  # Python's sys.stdout too
            pending.start()
            if front is not None:
                front.attach()
            await server.run(read, write, server.create_initialization_options())


class McpHttp:
    """MCP over streamable HTTP, stateless, JSON responses; the CLI mounts it at ``/mcp``.

    Stateless because every tool is one request and one answer (ctxsvc's own
    sessions are a tool argument), so no MCP session outlives a request and any
    server process can answer. Run :meth:`running` in the app's lifespan.
    Requests naming a foreign host, and browsers' cross-site requests, are
    refused (DNS rebinding) by the check the HTTP API's edge makes
    (:class:`~ctxsvc.settings.ServedNames`): ``Host`` must be a loopback name or
    one of ``allowed_hosts``, an ``Origin`` on such a host or one of ``allowed_origins``.
    """

    def __init__(
        self,
        service: ContextService,
        *,
        allowed_origins: Sequence[str] = (),
        allowed_hosts: Sequence[str] = (),
    ) -> None:
        self.manager = StreamableHTTPSessionManager(
            build_server(service), stateless=True, json_response=True
        )
        self.names = ServedNames.of(allowed_hosts, allowed_origins)
        self.started = False
        self.path = "/mcp"

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with self.manager.run():
            self.started = True
            try:
                yield
            finally:
                self.started = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope)
        forbidden = self.names.refusal(headers.get("host"), headers.get("origin"))
        if forbidden is not None:
            refusal = _refusal(403, forbidden.code, forbidden.message, forbidden.hint)
            await refusal(scope, receive, send)
            return
        if not self.started:
            refusal = _refusal(503, "not_started", "the MCP endpoint is not running yet")
            await refusal(scope, receive, send)
            return
        await self.manager.handle_request(scope, receive, send)


def _refusal(status: int, code: str, detail: str, hint: str = "") -> JSONResponse:
    return JSONResponse(
        {
            "status": status,
            "code": code,
            "detail": detail,
            "retryable": status == 503,
            "hint": hint,
        },
        status_code=status,
        media_type="application/problem+json",
    )
