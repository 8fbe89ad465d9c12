"""The MCP adapter: ``ctxsvc mcp`` over stdio, and ``McpHttp`` to mount over HTTP."""
