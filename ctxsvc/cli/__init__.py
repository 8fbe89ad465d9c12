"""The ``ctxsvc`` command line (``ctxsvc.cli.main``): parse, call the service, render."""

from ctxsvc.cli.main import main

__all__ = ["main"]
