"""The HTTP API adapter: ``create_app(service)`` (FastAPI), see ``ctxsvc.http.app``."""

from ctxsvc.http.app import create_app

__all__ = ["create_app"]
