"""The Python client's configuration from the environment: CTXSVC_URL, CTXSVC_TOKEN, and the
address ``ctxsvc serve`` binds (CTXSVC_HOST, CTXSVC_PORT) when no URL is given."""

from __future__ import annotations

import httpx
import pytest

from ctxsvc.client import AsyncClient, Client
from ctxsvc.client.core import resolve_target
from ctxsvc.errors import ConfigError

VARS = ("CTXSVC_URL", "CTXSVC_TOKEN", "CTXSVC_HOST", "CTXSVC_PORT")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARS:
        monkeypatch.delenv(name, raising=False)


def sent(requests: list[httpx.Request]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(200, json={"status": "ok"})

    return httpx.MockTransport(handle)


def one_call(**kwargs: object) -> httpx.Request:
    """The request ``Client(**kwargs).health()`` sends."""
    requests: list[httpx.Request] = []
    with Client(transport=sent(requests), **kwargs) as ctx:  # type: ignore[arg-type]
        assert ctx.health() is True
    assert len(requests) == 1
    return requests[0]


def test_nothing_set_is_the_servers_default_address_without_a_token() -> None:
    request = one_call()
    assert str(request.url) == "http://127.0.0.1:8765/healthz"
    assert "authorization" not in request.headers


def test_the_environment_gives_the_url_and_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTXSVC_URL", "https://ctx.example:9443/prefix/")
    monkeypatch.setenv("CTXSVC_TOKEN", "s3cret")
    request = one_call()
    assert str(request.url) == "https://ctx.example:9443/prefix/healthz"
    assert request.headers["authorization"] == "Bearer s3cret"


def test_without_a_url_the_client_follows_the_servers_port_and_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CTXSVC_PORT", "9123")
    assert str(one_call().url) == "http://127.0.0.1:9123/healthz"
    monkeypatch.setenv("CTXSVC_HOST", "0.0.0.0")  # a server on every address: loopback reaches it
    assert str(one_call().url) == "http://127.0.0.1:9123/healthz"
    monkeypatch.setenv("CTXSVC_HOST", "::")
    assert str(one_call().url) == "http://[::1]:9123/healthz"
    monkeypatch.setenv("CTXSVC_HOST", "10.1.2.3")
    assert str(one_call().url) == "http://10.1.2.3:9123/healthz"
    monkeypatch.setenv("CTXSVC_URL", "http://other:1")  # a whole URL wins over host and port
    assert str(one_call().url) == "http://other:1/healthz"


def test_empty_variables_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARS:
        monkeypatch.setenv(name, "")
    request = one_call()
    assert str(request.url) == "http://127.0.0.1:8765/healthz"
    assert "authorization" not in request.headers


def test_arguments_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTXSVC_URL", "http://from-env:1")
    monkeypatch.setenv("CTXSVC_PORT", "2")
    monkeypatch.setenv("CTXSVC_TOKEN", "env-token")
    request = one_call(base_url="http://given:3", token="given-token")
    assert str(request.url) == "http://given:3/healthz"
    assert request.headers["authorization"] == "Bearer given-token"
    # An empty token given sends none, whatever the environment says.
    assert "authorization" not in one_call(base_url="http://given:3", token="").headers
    # Only the URL given: the environment's token, set for its own server, is not sent there.
    assert "authorization" not in one_call(base_url="http://given:3").headers
    # The URL and the token both from the environment.
    assert one_call().headers["authorization"] == "Bearer env-token"


def test_an_explicit_url_is_used_even_when_the_environments_is_malformed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CTXSVC_URL", "not a url")
    monkeypatch.setenv("CTXSVC_PORT", "many")
    assert str(one_call(base_url="http://given:3").url) == "http://given:3/healthz"


@pytest.mark.parametrize(
    "url",
    ["localhost:8765", "127.0.0.1", "ftp://host/x", "http://", "http://host:port", "http://h:0",
     "http://h:70000", "/just/a/path"],
)  # fmt: skip
def test_a_malformed_ctxsvc_url_is_a_config_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("CTXSVC_URL", url)
    with pytest.raises(ConfigError) as caught:
        Client()
    assert "CTXSVC_URL" in caught.value.message and repr(url) in caught.value.message
    assert "http://127.0.0.1:8765" in caught.value.hint
    with pytest.raises(ConfigError, match="CTXSVC_URL"):
        AsyncClient()


@pytest.mark.parametrize("port", ["many", "0", "-1", "65536"])
def test_a_port_no_client_can_reach_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, port: str
) -> None:
    monkeypatch.setenv("CTXSVC_PORT", port)
    with pytest.raises(ConfigError, match="CTXSVC_PORT") as caught:
        Client()
    assert "CTXSVC_URL" in caught.value.hint


def test_a_malformed_base_url_argument_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="base_url 'localhost:8765'"):
        Client("localhost:8765")


def test_resolve_target_reads_a_given_mapping() -> None:
    env = {"CTXSVC_URL": "http://h:5/", "CTXSVC_TOKEN": " t "}
    assert resolve_target(None, None, env) == ("http://h:5", "t")
    assert resolve_target("http://x:6", "", env) == ("http://x:6", None)


@pytest.mark.anyio
async def test_the_async_client_reads_the_same_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CTXSVC_PORT", "9124")
    monkeypatch.setenv("CTXSVC_TOKEN", "async-token")
    requests: list[httpx.Request] = []

    async def handle(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(200, json={"status": "ok"})

    async with AsyncClient(transport=httpx.MockTransport(handle)) as ctx:
        assert await ctx.health() is True
    assert str(requests[0].url) == "http://127.0.0.1:9124/healthz"
    assert requests[0].headers["authorization"] == "Bearer async-token"
