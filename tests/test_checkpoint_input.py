"""Checkpoint input no store can keep is refused by agent memory itself, so that HTTP,
MCP and the CLI refuse it alike (a 422 over HTTP, not a 500)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from ctxsvc.errors import InvalidRequest, NotFound
from ctxsvc.service import ContextService

SURROGATE_BODY = b'{"messages": [{"role": "user", "content": "fix \\ud800 in a.py"}]}'
DEEP_BODY = (
    b'{"messages": [{"role": "user", "content": "x", "tool": '
    + b"[" * 500
    + b"1"
    + b"]" * 500
    + b"}]}"
)


@pytest.mark.parametrize(
    ("messages", "says"),
    [
        ([{"role": "user", "content": "fix \ud800"}], "messages[0].content is not valid Unicode"),
        ([{"role": "tool", "content": "ok", "\ud800": "x"}], "a key of messages[0]"),
        ([{"role": "tool", "content": "ok", "score": float("nan")}], "messages[0].score is nan"),
        ([{"role": "tool", "content": "ok", "n": [float("inf")]}], "messages[0].n[0] is inf"),
        (
            [
                {
                    "role": "assistant",
                    "content": "editing",
                    "tool_calls": [
                        {"function": {"name": "edit", "arguments": {"a": {"b": [1, [2, [3]]]}}}}
                    ],
                }
            ],
            None,
        ),
    ],
)
def test_memory_refuses_what_it_cannot_store(
    indexed: ContextService, messages: list[dict[str, Any]], says: str | None
) -> None:
    session = indexed.start_session("demo", "fix the store")
    if says is None:  # ordinary nesting is kept
        cp, new = indexed.store_checkpoint(session.id, messages)
        assert new and cp.number == 1
        return
    with pytest.raises(InvalidRequest, match=says.replace("[", r"\[")):
        indexed.store_checkpoint(session.id, messages)
    # Refused before the session is looked up, as HTTP validates a body first.
    with pytest.raises(InvalidRequest):
        indexed.store_checkpoint("s-none", messages)
    with pytest.raises(NotFound):
        indexed.checkpoint(session.id)  # nothing was written


def test_memory_refuses_deep_nesting_and_bad_keys_and_numbers(indexed: ContextService) -> None:
    session = indexed.start_session("demo", "fix the store")
    deep: Any = "x"
    for _ in range(200):
        deep = [deep]
    with pytest.raises(InvalidRequest, match="nested deeper than 100 levels"):
        indexed.store_checkpoint(session.id, [{"role": "user", "content": "x", "args": deep}])
    with pytest.raises(InvalidRequest, match="Idempotency-Key"):
        indexed.store_checkpoint(session.id, [{"role": "user", "content": "x"}], None, "k\udcff")
    with pytest.raises(InvalidRequest, match="a checkpoint number is between 1 and"):
        indexed.checkpoint(session.id, 2**64)
    with pytest.raises(InvalidRequest, match="the task is not valid Unicode text"):
        indexed.start_session("demo", "fix \udcff")
    with pytest.raises(InvalidRequest, match="not valid Unicode text"):
        indexed.record_event("ws", "renamed \ud800 to y")
    with pytest.raises(NotFound, match="has no checkpoint yet"):
        indexed.checkpoint(session.id)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (SURROGATE_BODY, "messages[0].content is not valid Unicode text"),
        (DEEP_BODY, "nested deeper than 100 levels"),
        (b'{"goal": "\\ud800"}', "body.goal"),
    ],
    ids=["surrogate", "deep", "field"],
)
@pytest.mark.anyio
async def test_http_refuses_the_same_checkpoint_input_with_a_422(
    client: httpx.AsyncClient, body: bytes, says: str
) -> None:
    r = await client.post("/v1/sessions", json={"repo": "demo", "task": "fix the store"})
    sid = r.json()["id"]
    r = await client.post(
        f"/v1/sessions/{sid}/checkpoints",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422, r.text
    assert says in r.json()["detail"]
    r = await client.get(f"/v1/sessions/{sid}/checkpoints/latest")
    assert r.status_code == 404
    assert r.json()["detail"] == f"session '{sid}' has no checkpoint yet"
