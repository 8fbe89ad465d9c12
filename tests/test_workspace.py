"""Parallel sessions in one workspace: the shared log, rename detection, drift warnings."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import cli_env, run_cli

from ctxsvc.drift import describe, index_events
from ctxsvc.errors import InvalidRequest, NotFound
from ctxsvc.models import Symbol
from ctxsvc.service import ContextService


def sym(path: str, qualname: str, signature: str, kind: str = "function") -> Symbol:
    return Symbol(
        path=path, name=qualname.rsplit(".", 1)[-1], qualname=qualname, kind=kind,
        start_line=1, end_line=2, signature=signature,
    )  # fmt: skip


def edit(path: str, content: str = "", tool: str = "edit_file") -> list[dict[str, Any]]:
    """A transcript of one assistant message whose tool call edits ``path``."""
    call = {"id": "1", "type": "function",
            "function": {"name": tool, "arguments": json.dumps({"path": path})}}  # fmt: skip
    return [{"role": "assistant", "content": content, "tool_calls": [call]}]


# -- pure parts -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "known", "kind", "symbols", "paths", "new_symbol", "new_path"),
    [
        ("renamed interface Store to Repository", {"Store"}, "renamed", ("Store",), (), "Repository", None),
        ("Renamed `load_user` to `fetch_user` in web/client.ts", set(), "renamed",
         ("load_user",), ("web/client.ts",), "fetch_user", None),
        ("moved app/util.py to app/helpers.py", set(), "renamed", (), ("app/util.py",), None, "app/helpers.py"),
        ("removed the class LegacyCache", set(), "removed", ("LegacyCache",), (), None, None),
        ("we decided to keep retries in Server.handle", {"handle"}, None, ("Server.handle",), (), None, None),
        ("use the new logging setup everywhere", set(), None, (), (), None, None),
    ],
)  # fmt: skip
def test_describe_reads_what_an_event_is_about(
    text: str,
    known: set[str],
    kind: str | None,
    symbols: tuple[str, ...],
    paths: tuple[str, ...],
    new_symbol: str | None,
    new_path: str | None,
) -> None:
    d = describe(text, known, {"web/client.ts"})
    assert (d.kind, d.new_symbol, d.new_path) == (kind, new_symbol, new_path)
    assert set(symbols) <= set(d.symbols)
    assert set(paths) <= set(d.paths)
    if not symbols:
        assert not d.symbols


def test_index_events_rename_move_remove_without_member_noise() -> None:
    old_files = {"a.py": "1", "b.py": "2", "gone.py": "3", "old_name.py": "4"}
    new_files = {"a.py": "1x", "b.py": "2x", "new_name.py": "4"}
    old = [
        sym("a.py", "Store", "class Store:", "class"),
        sym("a.py", "Store.get", "def get(self, key):", "method"),
        sym("a.py", "helper", "def helper(x, y):"),
        sym("a.py", "unused", "def unused():"),
        sym("a.py", "stays", "def stays():"),
        sym("b.py", "b_only", "def b_only():"),
        sym("gone.py", "g", "def g():"),
    ]
    new = [
        sym("a.py", "Repository", "class Repository:", "class"),
        sym("a.py", "Repository.get", "def get(self, key):", "method"),
        sym("a.py", "stays", "def stays():"),
        sym("b.py", "b_only", "def b_only():"),
        sym("b.py", "helper", "def helper(x, y, z):"),
    ]
    got = {
        (d.kind, d.paths, d.symbols, d.new_path, d.new_symbol)
        for d in index_events(old_files, old, new_files, new)
    }
    assert got == {
        ("renamed", ("a.py",), ("Store",), None, "Repository"),  # same signature bar the name
        ("renamed", ("a.py",), ("helper",), "b.py", "helper"),  # same name, other file
        ("removed", ("a.py",), ("unused",), None, None),
        ("removed", ("gone.py",), (), None, None),
        ("renamed", ("old_name.py",), (), "new_name.py", None),  # same content
    }  # fmt: skip
    assert index_events(new_files, new, new_files, new) == []


# -- through the service ----------------------------------------------------------------


QUERY = "Store get put persisted as JSON"


def test_another_sessions_rename_warns_once_within_budget(indexed: ContextService) -> None:
    a = indexed.start_session("demo", "cache reads", agent="alice", workspace="ws")
    b = indexed.start_session("demo", "rename the store", agent="bob", workspace="ws")
    first = indexed.context("demo", QUERY, 2000, session_id=a.id)
    assert "app/store.py" in {i.path for i in first.items} and not first.warnings

    event, new = indexed.record_event("ws", "renamed class Store to Repository", session_id=b.id)
    assert new and event.kind == "renamed" and event.new_symbol == "Repository"
    assert "Store" in event.symbols and "app/store.py" in event.paths  # found in the index

    budget = 300
    second = indexed.context("demo", QUERY, budget, session_id=a.id)
    assert [w.event.seq for w in second.warnings] == [event.seq]
    assert "Changed by other sessions" in second.rendered and "Repository" in second.rendered
    assert "bob" in second.warnings[0].message
    assert second.tokens_used <= budget
    assert indexed.tokens.count(second.rendered) == second.tokens_used
    # Warned once; the author of the event is never warned about it.
    assert not indexed.context("demo", QUERY, budget, session_id=a.id).warnings
    assert not indexed.context("demo", QUERY, budget, session_id=b.id).warnings
    # A session outside the workspace and an unrelated query get nothing.
    c = indexed.start_session("demo", "other work", workspace="elsewhere")
    assert not indexed.context("demo", QUERY, budget, session_id=c.id).warnings


def test_warnings_fit_any_budget_and_count_as_given_only_when_shown(
    indexed: ContextService,
) -> None:
    a = indexed.start_session("demo", "cache reads", workspace="ws")
    b = indexed.start_session("demo", "store work", agent="bob", workspace="ws")
    indexed.context("demo", QUERY, 2000, session_id=a.id)
    seqs = {
        indexed.record_event("ws", f"changed Store.put step {i}", session_id=b.id)[0].seq
        for i in range(30)
    }
    for budget in (1, 5, 10):
        tiny = indexed.context("demo", QUERY, budget, session_id=a.id)
        assert tiny.tokens_used == indexed.tokens.count(tiny.rendered) <= budget
        assert tiny.warnings == ()  # none shown, so none given
    given: list[int] = []
    for budget in (300, 300, 5000, 5000, 5000):
        pack = indexed.context("demo", QUERY, budget, session_id=a.id)
        assert pack.tokens_used <= budget
        for w in pack.warnings:
            assert f"- [{w.subject}] {w.message}\n" in pack.rendered
        given += [w.event.seq for w in pack.warnings]
        if budget == 300:  # room for some, the rest counted
            assert 0 < len(pack.warnings) < 20 and "more (GET the workspace" in pack.rendered
    # Each warning given exactly once, and every one in the end.
    assert sorted(given) == sorted(seqs)


def test_code_indexed_after_a_change_is_not_drift(indexed: ContextService, repo: Path) -> None:
    a = indexed.start_session("demo", "t", workspace="ws")
    b = indexed.start_session("demo", "t", workspace="ws")
    indexed.record_event("ws", "changed Store.put to write atomically", session_id=b.id)
    # Delivered from an index older than the change: the code may predate it.
    stale = indexed.context("demo", QUERY, 2000, session_id=a.id)
    assert [w.subject for w in stale.warnings] == ["Store.put"]
    c = indexed.start_session("demo", "t", workspace="ws")
    indexed.record_event("ws", "changed Store.get to log misses", session_id=b.id)
    time.sleep(1.1)  # the index records its time to the second
    store = repo / "app/store.py"
    store.write_text(
        store.read_text().replace("return self.data.get(key)", "return self.data.get(key, None)")
    )
    indexed.index(repo)
    # Delivered from an index built after the change: it holds the new code.
    fresh = indexed.context("demo", QUERY, 2000, session_id=c.id)
    assert "app/store.py" in {i.path for i in fresh.items}
    assert [w.subject for w in fresh.warnings] == []


def test_reindex_detects_renames_and_warns_other_sessions(
    indexed: ContextService, repo: Path
) -> None:
    a = indexed.start_session("demo", "read the store", workspace="ws")
    editor = indexed.start_session("demo", "rename the store", workspace="ws")
    indexed.context("demo", QUERY, 2000, session_id=a.id)
    indexed.write_checkpoint(editor.id, edit("app/store.py", "Renaming."))
    store = repo / "app/store.py"
    store.write_text(store.read_text().replace("class Store", "class Repository"))
    indexed.index(repo)
    logged = indexed.workspace_events("ws")
    found = [e for e in logged if e.source == "index"]
    assert [(e.kind, e.symbols, e.new_symbol) for e in found] == [
        ("renamed", ("Store",), "Repository")
    ]
    edited = [e for e in logged if e.source == "checkpoint"]
    assert edited and edited[0].paths == ("app/store.py",) and edited[0].session_id == editor.id

    warned = indexed.context("demo", QUERY, 2000, session_id=a.id).warnings
    assert {w.event.source for w in warned} >= {"index", "checkpoint"}
    # The editor's own edit is not drift for the editor.
    assert not indexed.context("demo", QUERY, 2000, session_id=editor.id).warnings


def test_resume_lists_other_sessions_events_since_the_checkpoint(
    indexed: ContextService,
) -> None:
    a = indexed.start_session("demo", "make Store.put atomic", workspace="ws")
    b = indexed.start_session("demo", "api work", agent="bob", workspace="ws")
    indexed.write_checkpoint(
        a.id, fields={"goal": "make Store.put atomic", "open_tasks": ["test app/store.py"]}
    )
    indexed.write_checkpoint(a.id, edit("app/store.py"))
    decision, _ = indexed.record_event(
        "ws", "we use ISO dates in every API response", kind="decision", session_id=b.id
    )
    rename, _ = indexed.record_event("ws", "renamed class Store to Repository", session_id=b.id)
    r = indexed.resume(a.id, 1500)
    assert [e.seq for e in r.workspace_events] == [decision.seq, rename.seq]
    assert [w.event.seq for w in r.warnings] == [rename.seq]
    assert "Workspace log since the checkpoint" in r.rendered and "ISO dates" in r.rendered
    assert r.tokens_used <= 1500
    # b's own resume does not list its own events.
    indexed.write_checkpoint(b.id, fields={"goal": "api work"})
    assert not indexed.resume(b.id, 1500).workspace_events


def test_events_validate_and_are_idempotent(indexed: ContextService) -> None:
    a = indexed.start_session("demo", "t", workspace="ws")
    e1, new1 = indexed.record_event("ws", "note one", idempotency_key="k1", session_id=a.id)
    e2, new2 = indexed.record_event("ws", "note one", idempotency_key="k1", session_id=a.id)
    assert (new1, new2) == (True, False) and e1 == e2
    with pytest.raises(InvalidRequest, match="another"):
        indexed.record_event("ws", "note two", idempotency_key="k1", session_id=a.id)
    with pytest.raises(InvalidRequest, match="not in workspace"):
        indexed.record_event("other", "x", session_id=a.id)
    with pytest.raises(NotFound):
        indexed.record_event("ws", "x", session_id="s-missing")
    with pytest.raises(InvalidRequest):
        indexed.record_event("ws", "x", kind="bogus")
    assert [e.seq for e in indexed.workspace_events("ws")] == [e1.seq]
    assert indexed.workspace_events("ws", after=e1.seq) == []


# -- HTTP ---------------------------------------------------------------------------------


async def _session(client: httpx.AsyncClient, **body: Any) -> str:
    r = await client.post("/v1/sessions", json={"repo": "demo", "task": "t", **body})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


@pytest.mark.anyio
async def test_api_workspace_events_and_warnings(client: httpx.AsyncClient) -> None:
    a = await _session(client, workspace="ws")
    b = await _session(client, workspace="ws", agent="bob")
    ctx = {"repo": "demo", "query": QUERY, "budget_tokens": 2000, "session_id": a}
    assert (await client.post("/v1/context", json=ctx)).json()["warnings"] == []

    body = {"text": "renamed class Store to Repository", "session_id": b}
    headers = {"Idempotency-Key": "evt-1"}
    r = await client.post("/v1/workspaces/ws/events", json=body, headers=headers)
    assert r.status_code == 201, r.text
    event = r.json()
    assert event["kind"] == "renamed" and event["new_symbol"] == "Repository"
    again = await client.post("/v1/workspaces/ws/events", json=body, headers=headers)
    assert again.json() == event and again.headers["Idempotent-Replayed"] == "true"

    listed = (await client.get("/v1/workspaces/ws/events")).json()
    assert [e["seq"] for e in listed] == [event["seq"]]
    assert (await client.get(f"/v1/workspaces/ws/events?after={event['seq']}")).json() == []

    warned = (await client.post("/v1/context", json=ctx)).json()
    assert [w["event"]["seq"] for w in warned["warnings"]] == [event["seq"]]

    for bad, status in [
        ({"text": ""}, 422),
        ({"text": "x", "kind": "bogus"}, 422),
        ({"text": "x", "session_id": "s-nope"}, 404),
        ({"text": "x", "session_id": a, "extra": 1}, 422),
    ]:
        r = await client.post("/v1/workspaces/ws/events", json=bad)
        assert r.status_code == status, (bad, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    r = await client.post("/v1/workspaces/other/events", json={"text": "x", "session_id": a})
    assert r.status_code == 422 and r.json()["retryable"] is False
    assert "not in workspace" in r.json()["detail"]
    assert (await client.get("/v1/workspaces/bad%20name/events")).status_code == 422


# -- CLI ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_sessions_checkpoints_and_workspace_log(tmp_path: Path, repo: Path) -> None:
    env = cli_env(tmp_path / "home")

    def ok(*args: str) -> str:
        done = run_cli(env, *args)
        assert done.returncode == 0, done.stderr
        return done.stdout

    ok("index", str(repo), "--no-vectors")
    a = ok("session", "start", "demo", "--task", "atomic store", "--workspace", "ws").strip()
    b = ok("session", "start", "demo", "--task", "rename", "--workspace", "ws").strip()
    ok("checkpoint", "write", a, "--goal", "make Store.put atomic", "--todo", "test app/store.py")
    shown = json.loads(ok("checkpoint", "show", a, "--json"))
    assert shown["number"] == 1 and shown["summary"]["goal"] == "make Store.put atomic"
    event = json.loads(
        ok(
            "workspace",
            "record",
            "ws",
            "renamed class Store to Repository",
            "--session",
            b,
            "--json",
        )
    )[0]
    assert event["new_symbol"] == "Repository"
    assert f"#{event['seq']}" in ok("workspace", "log", "ws")
    resumed = json.loads(ok("checkpoint", "resume", a, "--json"))
    assert [e["seq"] for e in resumed["workspace_events"]] == [event["seq"]]
    bad = run_cli(env, "workspace", "record", "other", "x", "--session", a)
    assert bad.returncode != 0 and "not in workspace" in bad.stderr


def test_odd_subjects_never_fail_a_checkpoint(indexed: ContextService) -> None:
    s = indexed.start_session("demo", "t", workspace="ws")
    long_path = "deep/" * 300 + "file.py"  # 1,507 characters: beyond what the log keeps
    decision = "I decided to keep it because " + "x" * 3000
    cp = indexed.write_checkpoint(s.id, edit(long_path, decision, tool="write_file"))
    assert cp.number == 1
    logged = indexed.workspace_events("ws")
    assert all(len(e.text) <= 2000 and all(len(p) <= 1000 for p in e.paths) for e in logged)
