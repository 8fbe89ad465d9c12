"""ctxsvc: context management and retrieval for AI coding agents."""

from importlib import metadata

try:
    __version__ = metadata.version("ctxsvc")
except metadata.PackageNotFoundError:  # imported from a checkout that was never installed
    __version__ = "0+unknown"
