"""What the sync and async clients share, without I/O: retrying and errors.

A :class:`Call` is one logical call of an endpoint: the request, how to read
the answer, and whether it may be sent again after it may have reached the
server (``ctxsvc.client.calls`` builds one per endpoint). :class:`Attempts`
is the retry loop of one call as a state machine under a :class:`RetryPolicy`:
the clients (``sync``, ``aio``) only send, sleep and ask it what next. Problems become
``ctxsvc.errors`` classes, chosen by the problem's ``code``.
"""

from __future__ import annotations

import contextlib
import email.utils
import ipaddress
import logging
import os
import random
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

import httpx

from ctxsvc.errors import (
    ConfigError,
    CtxError,
    InvalidRequest,
    NotFound,
    Unreachable,
    UserError,
)

log = logging.getLogger("ctxsvc.client")

T = TypeVar("T")

# "Not now": the server did not act on the request, so any call may come again.
REFUSED = frozenset({429, 503})
# A gateway gave up on the server: the request may have reached it.
GATEWAY = frozenset({502, 504})
# Transport failures before the request left: the server cannot have seen it.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# Failures once it was (perhaps partly) sent: the server may have acted on it.
MAYBE_SENT = (
    httpx.ReadError,
    httpx.ReadTimeout,
    httpx.WriteError,
    httpx.WriteTimeout,
    httpx.CloseError,
    httpx.RemoteProtocolError,
)


@dataclass(frozen=True)
class RetryPolicy:
    """How much a client may retry one call, and how it waits in between.

    ``attempts`` counts every try, the first included (1: never retry).
    ``timeout`` bounds the whole call in seconds, tries and waits together:
    each try's own timeout is cut to what is left, and a wait that would end
    past it is not started. Before retry ``n`` the client sleeps a uniform
    random time in ``[0, min(max_backoff, backoff * 2**(n-1))]`` (exponential
    backoff, full jitter), on top of the server's ``Retry-After`` when it sends
    one, so that clients told the same delay do not all come back at once.
    """

    attempts: int = 6
    timeout: float = 60.0
    backoff: float = 0.5
    max_backoff: float = 10.0

    def __post_init__(self) -> None:
        if not (self.attempts >= 1 and self.timeout > 0 and 0 <= self.backoff <= self.max_backoff):
            raise ConfigError(
                f"invalid {self!r}", hint="attempts >= 1, timeout > 0, 0 <= backoff <= max_backoff"
            )

    def wait(
        self, retry: int, retry_after: float | None = None, rng: random.Random | None = None
    ) -> float:
        """Seconds to sleep before retry number ``retry`` (1 is the first retry)."""
        ceiling = min(self.max_backoff, self.backoff * 2 ** min(retry - 1, 64))
        return (retry_after or 0.0) + (rng or _RNG).uniform(0.0, ceiling)


_RNG = random.Random()


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """A ``Retry-After`` header in seconds (delta-seconds or an HTTP date), or None."""
    value = (value or "").strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _subclasses(cls: type[CtxError]) -> Iterator[type[CtxError]]:
    yield cls
    for sub in cls.__subclasses__():
        yield from _subclasses(sub)


# API codes that name no class of their own.
ALIASES: dict[str, type[CtxError]] = {"validation_error": InvalidRequest}


def error_class(code: str, status: int | None = None) -> type[CtxError]:
    """The ``ctxsvc.errors`` class of a problem ``code``; by HTTP status when unknown."""
    for cls in _subclasses(CtxError):
        if cls.__dict__.get("code") == code:
            return cls
    if code in ALIASES:
        return ALIASES[code]
    if status == 404:
        return NotFound
    if status == 422:
        return InvalidRequest
    return UserError if status is not None and 400 <= status < 500 else CtxError


def make_error(
    code: str,
    message: str,
    *,
    hint: str = "",
    retryable: bool | None = None,
    status: int | None = None,
    request_id: str | None = None,
    problem: dict[str, Any] | None = None,
) -> CtxError:
    """An instance of the class for ``code``, carrying the server's own values."""
    error = error_class(code, status)(message, hint=hint)
    error.code = code
    if retryable is not None:
        error.retryable = retryable
    if status is not None:
        error.http_status = status
    error.request_id = request_id
    error.problem = problem
    if problem is not None:
        error.restore(problem)
    return error


def problem_error(response: httpx.Response, what: str) -> CtxError:
    """The error a failed response stands for: its problem+json body says which."""
    status = response.status_code
    rid = response.headers.get("x-request-id")
    body: Any = None
    with contextlib.suppress(ValueError):
        body = response.json()
    if not (isinstance(body, dict) and isinstance(body.get("code"), str)):
        text = " ".join(response.text.split())[:200]
        return make_error(
            "http_error",
            f"{what} answered HTTP {status}" + (f": {text}" if text else ""),
            hint="is base_url the address of a ctxsvc server?",
            retryable=status in REFUSED | GATEWAY,
            status=status,
            request_id=rid,
        )
    return make_error(
        body["code"],
        str(body.get("detail") or body.get("title") or f"HTTP {status}"),
        hint=str(body.get("hint") or ""),
        retryable=bool(body.get("retryable", status in REFUSED)),
        status=status,
        request_id=str(body.get("request_id") or rid or "") or None,
        problem=body,
    )


# -- calls and their attempts ------------------------------------------------------------


@dataclass(frozen=True)
class Call(Generic[T]):
    """One logical call of an endpoint; every attempt sends this same request.

    ``replay_safe``: it may be sent again after it may have reached the server
    (reads, writes carrying an idempotency key, writes whose repetition is
    harmless). ``retry``: False for probes, which report the present.
    ``gone_when_replayed``: a 404 after an attempt that may have arrived means
    that attempt did it (a delete).
    """

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: Mapping[str, Any] | None = None
    json: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    replay_safe: bool = True
    retry: bool = True
    ok: frozenset[int] = frozenset({200, 201, 202, 204})
    gone_when_replayed: bool = False
    # One id for every attempt, so that the server's log lines of the retries join up.
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def what(self) -> str:
        return f"{self.method} {self.path}"

    def request(self, http: httpx.Client | httpx.AsyncClient, timeout: float) -> httpx.Request:
        params = {k: v for k, v in (self.params or {}).items() if v is not None}
        return http.build_request(
            self.method,
            self.path,
            params=params,
            json=self.json,
            headers={**self.headers, "X-Request-ID": self.request_id},
            timeout=timeout,
        )


@dataclass(frozen=True)
class Wait:
    """Sleep this long, then send the call again."""

    seconds: float


class Attempts(Generic[T]):
    """The retry loop of one call, without I/O: the client sends and sleeps, this decides.

    A failure is retried, within the policy's attempts and time, when a retry
    can help and cannot do a thing twice:

    - the request never left (connection refused, connect or pool timeout): always;
    - the server declined it for now (a problem with ``retryable: true``, or
      429/503): always, not before ``Retry-After``;
    - it may have reached the server (connection lost or read timeout after
      sending; 502/504 from a gateway): only when the call is replay-safe.

    Everything else raises at once, as the ``ctxsvc.errors`` class of its code.
    """

    def __init__(
        self,
        call: Call[T],
        policy: RetryPolicy,
        timeout: float,
        base_url: str,
        rng: random.Random | None = None,
    ) -> None:
        self.call = call
        self.policy = policy
        self.timeout = timeout
        self.base_url = base_url
        self.rng = rng
        self.started = time.monotonic()
        self.deadline = self.started + policy.timeout
        self.tries = 0
        self.maybe_arrived = False

    def next_timeout(self) -> float:
        """Count a new try; its timeout: the client's, cut to what is left of the budget."""
        self.tries += 1
        return max(0.001, min(self.timeout, self.deadline - time.monotonic()))

    def answered(self, response: httpx.Response) -> T | Wait:
        """The call's result, or how long to wait before the next try; raises if neither."""
        call, status = self.call, response.status_code
        if status in call.ok or (status == 404 and call.gone_when_replayed and self.maybe_arrived):
            return self._parse(response)
        error = problem_error(response, call.what)
        if status in GATEWAY and error.problem is None:
            self.maybe_arrived = True
            if not call.replay_safe:
                raise self._not_replayed(error)
        if not error.retryable:
            raise error
        return self._again(error, retry_after(response.headers.get("retry-after")))

    def failed(self, exc: httpx.RequestError) -> Wait:
        """How long to wait after a transport failure; raises when it is not retried."""
        what = self.call.what
        if isinstance(exc, httpx.TransportError) and not isinstance(exc, NOT_SENT + MAYBE_SENT):
            # An unsupported scheme, a proxy refusing, a request httpx cannot send.
            raise ConfigError(
                f"{what}: {type(exc).__name__}: {exc}", hint=f"check the base URL {self.base_url!r}"
            ) from exc
        if not isinstance(exc, NOT_SENT + MAYBE_SENT):  # e.g. an undecodable body
            raise make_error(
                "bad_response", f"{what}: {type(exc).__name__}: {exc}", hint="see the server's log"
            ) from exc
        arrived = isinstance(exc, MAYBE_SENT)
        self.maybe_arrived |= arrived
        error = Unreachable(
            f"{what}: no answer from {self.base_url} ({type(exc).__name__}: {exc or 'no detail'})",
            hint="is `ctxsvc serve` running there? The client retried within its RetryPolicy",
        )
        if arrived and not self.call.replay_safe:
            raise self._not_replayed(error) from exc
        return self._again(error, None, exc)

    def _not_replayed(self, error: CtxError) -> CtxError:
        # Only the caller can know whether repeating it is right: not retryable for us.
        error.retryable = False
        error.hint = (
            f"the request may have reached the server, and repeating {self.call.what} could "
            "do it twice, so it was not sent again: check the outcome before repeating it"
        )
        return error

    def _again(
        self, error: CtxError, after: float | None, cause: BaseException | None = None
    ) -> Wait:
        if self.call.retry and self.tries < self.policy.attempts:
            seconds = self.policy.wait(self.tries, after, self.rng)
            if time.monotonic() + seconds < self.deadline:
                log.info(
                    "retrying %s in %.2fs after try %d of %d: %s",
                    self.call.what, seconds, self.tries, self.policy.attempts, error.code,
                    extra={"wait": seconds, "try": self.tries, "code": error.code},
                )  # fmt: skip
                return Wait(seconds)
        if self.tries > 1:
            spent = time.monotonic() - self.started
            error.add_note(f"ctxsvc.client: gave up after {self.tries} tries in {spent:.1f}s")
        raise error from cause

    def _parse(self, response: httpx.Response) -> T:
        try:
            return self.call.parse(response)
        except (ValueError, TypeError, KeyError) as exc:
            raise make_error(
                "bad_response",
                f"{self.call.what}: the answer does not match this client ({exc})",
                hint="is base_url a ctxsvc server of the same version as this client?",
                status=response.status_code,
                request_id=response.headers.get("x-request-id"),
            ) from exc


DEFAULT_HOST = "127.0.0.1"  # what `ctxsvc serve` binds unless CTXSVC_HOST or --host says
DEFAULT_PORT = 8765  # and its port, unless CTXSVC_PORT or --port says
DEFAULT_URL = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}"
Messages = Sequence[Mapping[str, Any]]

# The variables a client reads when its arguments leave them out. The client cannot import
# ctxsvc.settings (it carries none of the server's dependencies), so it reads these itself,
# as the server does: an empty variable counts as unset.
URL_VAR = "CTXSVC_URL"
TOKEN_VAR = "CTXSVC_TOKEN"
HOST_VAR = "CTXSVC_HOST"
PORT_VAR = "CTXSVC_PORT"
_WILDCARD = {"0.0.0.0": "127.0.0.1", "::": "::1"}  # a server bound to every address


def checked_url(url: str, source: str) -> str:
    """``url`` without a trailing slash, or a ConfigError naming ``source`` if it is not an
    absolute http(s) URL."""
    url = url.strip()
    hint = f"give the server's base URL, e.g. {DEFAULT_URL}"
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError if the port is not a number in 0..65535
    except ValueError as exc:
        raise ConfigError(f"{source} {url!r} is not a URL ({exc})", hint=hint) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"{source} {url!r} is not an http:// or https:// URL with a host", hint=hint
        )
    if port == 0:
        raise ConfigError(f"{source} {url!r} names port 0, which no server listens on", hint=hint)
    return url.rstrip("/")


def url_from_env(env: Mapping[str, str]) -> str:
    """The server's base URL by the environment: ``CTXSVC_URL``, else the address
    ``ctxsvc serve`` binds by ``CTXSVC_HOST`` and ``CTXSVC_PORT`` (each by default the
    server's: 127.0.0.1 and 8765; a wildcard host is reached at loopback)."""
    if url := env.get(URL_VAR, "").strip():
        return checked_url(url, URL_VAR)
    host = env.get(HOST_VAR, "").strip() or DEFAULT_HOST
    port_text = env.get(PORT_VAR, "").strip()
    port = DEFAULT_PORT
    if port_text:
        try:
            port = int(port_text)
        except ValueError:
            port = -1
        if not 1 <= port <= 65535:
            raise ConfigError(
                f"{PORT_VAR} {port_text!r} is not a port a client can reach (1 to 65535)",
                hint=f"set {PORT_VAR} to the port `ctxsvc serve` listens on, or {URL_VAR} "
                "to its whole base URL",
            )
    host = _WILDCARD.get(host, host)
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    return checked_url(f"http://{host}:{port}", f"{HOST_VAR}/{PORT_VAR}")


def resolve_target(
    base_url: str | None, token: str | None, env: Mapping[str, str] | None = None
) -> tuple[str, str | None]:
    """The base URL and token a client uses: each argument given, else the environment's
    (``env``, by default ``os.environ``): see :func:`url_from_env` and ``CTXSVC_TOKEN``.

    ``CTXSVC_TOKEN`` is read only when the URL comes from the environment too: a token
    set for one server is never sent to a URL given in code. ``token=""`` sends none.
    """
    env = os.environ if env is None else env
    if base_url is not None:
        return checked_url(base_url, "base_url"), token or None
    url = url_from_env(env)
    if token is None:
        token = env.get(TOKEN_VAR, "").strip() or None
    return url, token or None


class BaseClient:
    """Configuration both clients share: where, who, how long, how much retrying.

    ``base_url`` and ``token`` left out (None) come from the environment, as
    :func:`resolve_target` says; a malformed URL is a :class:`ConfigError`.
    """

    def __init__(
        self,
        base_url: str | None,
        token: str | None,
        timeout: float,
        retry: RetryPolicy | None,
        headers: Mapping[str, str] | None,
    ) -> None:
        self.base_url, token = resolve_target(base_url, token)
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self._rng = random.Random()
        self._headers = {"User-Agent": "ctxsvc-client", **(headers or {})}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"

    def _attempts(self, call: Call[T]) -> Attempts[T]:
        return Attempts(call, self.retry, self.timeout, self.base_url, self._rng)
