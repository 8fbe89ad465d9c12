"""Sessions and checkpoints: durable idempotent writes, budgeted summaries, resume diffs, API."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import SAMPLE

# benchmarks/ is a script directory, not an installed package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.checkpoints import facts_of, generate, score
from ctxsvc.checkpoints import IndexFacts, extract
from ctxsvc.errors import InvalidRequest
from ctxsvc.models import Symbol
from ctxsvc.service import ContextService
from ctxsvc.stores.checkpoints import CheckpointStore
from ctxsvc.stores.locks import FileLock
from ctxsvc.summaries import fit
from ctxsvc.tokens import TiktokenCounter


def call(i: int, name: str, **args: Any) -> dict[str, Any]:
    return {
        "id": f"c{i}",
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(args)},
    }


MESSAGES: list[dict[str, Any]] = [
    {"role": "user", "content": "Make Store.put atomic. The server listens on port 8080."},
    {"role": "assistant", "content": "Reading.", "tool_calls": [call(1, "read_file", path="app/store.py")]},
    {"role": "tool", "tool_call_id": "c1", "content": SAMPLE["app/store.py"]},
    {
        "role": "assistant",
        "content": "I decided to write a temp file and os.replace it because a crash would corrupt the JSON.",
        "tool_calls": [call(2, "edit_file", path="app/store.py", old_str="def put(", new_str="def put(")],
    },
    {"role": "tool", "tool_call_id": "c2", "content": "ok"},
    {"role": "assistant", "content": "", "tool_calls": [call(3, "bash", command="pytest -q tests/test_store.py")]},
    {"role": "tool", "tool_call_id": "c3", "content": "FAILED tests/test_store.py::test_put - AssertionError: tmp left\n1 failed"},
    {"role": "assistant", "content": "Server.handle in app/server.py reads it.\nTODO: remove the tmp file on failure\nNext: test Server.handle"},
]  # fmt: skip


def test_summary_extracts_and_anchors(indexed: ContextService) -> None:
    s = indexed.start_session("demo", "atomic store writes")
    cp = indexed.write_checkpoint(s.id, MESSAGES)
    sm = cp.summary
    assert cp.number == 1 and sm.tokens == indexed.tokens.count(sm.rendered) <= 300
    assert sm.goal == "atomic store writes" and sm.next_step == "test Server.handle"
    assert any("decided" in d for d in sm.decisions) and sm.open_tasks == (
        "remove the tmp file on failure",
    )
    assert any("pytest -q tests/test_store.py" in e and "AssertionError" in e for e in sm.errors)
    assert "port 8080" in sm.facts
    view = indexed.view(indexed.resolve("demo"))
    edited = {(a.path, a.symbol) for a in sm.files if a.edited}
    assert edited == {("app/store.py", None), ("app/store.py", "Store.put")}
    assert all(a.sha256 == view.files[a.path].sha256 for a in sm.files)
    # Named in prose, never opened: kept for resume in the state, not listed as read.
    assert any(a.path == "app/server.py" and not a.read for a in cp.state.files)
    assert all(a.path != "app/server.py" for a in sm.files)
    assert cp.transcript == tuple(MESSAGES)


def test_idempotent_numbered_immutable_durable(indexed: ContextService, settings: Any) -> None:
    s = indexed.start_session("demo", "task")
    a = indexed.write_checkpoint(s.id, MESSAGES[:2], idempotency_key="k-1")
    again = indexed.write_checkpoint(s.id, MESSAGES[:2], idempotency_key="k-1")
    assert again == a and a.number == 1
    with pytest.raises(InvalidRequest, match="Idempotency-Key"):
        indexed.write_checkpoint(s.id, MESSAGES[:3], idempotency_key="k-1")
    b = indexed.write_checkpoint(s.id, MESSAGES[2:], fields={"decisions": ["chose X because Y"]})
    c = indexed.write_checkpoint(s.id, fields={"goal": "new goal"}, idempotency_key="k-2")
    assert [x.number for x in indexed.checkpoints(s.id)] == [1, 2, 3]
    # Later checkpoints carry the earlier state forward.
    assert c.summary.goal == "new goal" and "chose X because Y" in c.state.decisions
    assert any(f.path == "app/store.py" for f in c.state.files) and b.number == 2
    con = sqlite3.connect(settings.state_path)
    with pytest.raises(sqlite3.DatabaseError, match="immutable"):
        con.execute("UPDATE checkpoints SET tokens = 0")
    con.close()
    fresh = CheckpointStore(settings.state_path)  # a new process would see the same
    assert fresh.get(s.id, 2) == b and fresh.get(s.id) == c
    assert indexed.checkpoint(s.id, 1) == a


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from ctxsvc.records import Summary
    from ctxsvc.stores.checkpoints import CheckpointStore
    store = CheckpointStore(Path(sys.argv[1]))
    s = store.create_session("demo", "task")
    print(s.id, flush=True)
    for i in range(100000):
        summary = Summary(goal=f"goal {i}", decisions=("d",) * 50)
        cp, _ = store.add(s.id, summary, summary, [{"role": "user", "content": "x" * 2000}], 1, f"k{i}")
        print(cp.number, flush=True)
    """
)


@pytest.mark.slow
def test_acknowledged_checkpoints_survive_kill_9(tmp_path: Path) -> None:
    db = tmp_path / "state.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    session = proc.stdout.readline().strip()
    acked = [int(proc.stdout.readline()) for _ in range(40)]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    cps = CheckpointStore(db).list(session)
    numbers = [c.number for c in cps]
    assert numbers == list(range(1, len(numbers) + 1)) and set(acked) <= set(numbers)
    assert all(
        c.summary.goal == f"goal {c.number - 1}" and len(c.summary.decisions) == 50 for c in cps
    )


def test_large_transcript_fits_budget_and_keeps_edits_and_decisions(
    indexed: ContextService,
) -> None:
    _, msgs, truth = generate(7, 60_000, indexed.tokens.count)
    # The generated repository is not indexed here: edited paths are kept as unanchored files.
    s = indexed.start_session("demo", "generated")
    cp = indexed.write_checkpoint(s.id, msgs, budget_tokens=300)
    assert cp.transcript_tokens >= 55_000 and cp.summary.tokens <= 300
    assert cp.transcript_tokens / cp.summary.tokens >= 100
    kept = score(cp.summary.rendered, facts_of(truth))
    assert kept["edited_files"] == 1.0
    # Decisions rank below the edited files and the newest failures: those the budget
    # leaves out are counted, and every one is in the state.
    assert score("\n".join(cp.state.decisions), facts_of(truth))["decisions"] == 1.0
    assert cp.summary.dropped and "Dropped for the budget" in cp.summary.rendered
    # A resume has room: its summary is fitted again from the state, and they come back.
    resumed = indexed.resume(s.id, 4000, refresh=False)
    assert score(resumed.rendered, facts_of(truth))["decisions"] == 1.0


def test_resume_reports_modified_deleted_and_renamed(indexed: ContextService, repo: Path) -> None:
    s = indexed.start_session("demo", "store and client")
    msgs = [
        *MESSAGES,
        {"role": "assistant", "content": "", "tool_calls": [call(9, "edit_file", path="web/client.ts", new_str="loadUser")]},
    ]  # fmt: skip
    indexed.write_checkpoint(s.id, msgs)
    store = repo / "app/store.py"
    store.write_text(store.read_text().replace("def put(", "def set_value(") + "\n# edited\n")
    (repo / "web/client.ts").unlink()
    server = repo / "app/server.py"
    server.write_text(server.read_text() + "\n\ndef extra() -> None:\n    pass\n")
    indexed.index(repo)
    r = indexed.resume(s.id, 1500)
    got = {(c.path, c.symbol, c.change, c.new_symbol) for c in r.changes}
    assert ("app/store.py", None, "modified", None) in got
    assert ("web/client.ts", None, "deleted", None) in got
    assert ("app/store.py", "Store.put", "renamed", "Store.set_value") in got
    assert ("app/server.py", None, "modified", None) in got
    assert r.tokens_used == indexed.tokens.count(r.rendered) <= 1500
    assert "renamed or moved to app/store.py Store.set_value" in r.rendered
    assert r.context is not None and {i.path for i in r.context.items} <= {
        "app/store.py",
        "app/server.py",
    }
    small = indexed.resume(s.id, 120)
    assert small.tokens_used <= 120


def test_resume_answers_while_another_index_run_holds_the_lock(
    indexed: ContextService, repo: Path, settings: Any
) -> None:
    s = indexed.start_session("demo", "atomic store writes")
    indexed.write_checkpoint(s.id, [{"role": "user", "content": "Make Store.put atomic."}])
    store = repo / "app/store.py"
    store.write_text("# edited\n" + store.read_text())
    with FileLock(settings.locks_path / "demo.lock", "index 'demo'"):
        r = indexed.resume(s.id, 2000)  # recovery answers from the index as it is
    assert r.refreshed == () and r.tokens_used <= 2000
    assert any(d.startswith("refresh skipped:") for d in r.degraded), r.degraded
    assert any("resume with refresh to see them" in d for d in r.degraded), r.degraded


def test_resume_refreshes_edits_on_disk_and_names_the_symbol(
    indexed: ContextService, repo: Path
) -> None:
    s = indexed.start_session("demo", "atomic store writes")
    edits = [
        {"role": "user", "content": "Make Store.put atomic."},
        {"role": "assistant", "content": "", "tool_calls": [
            call(1, "edit_file", path="app/store.py", old_str="def put(", new_str="def put("),
            call(2, "edit_file", path="app/store.py", old_str="def get(", new_str="def get("),
        ]},
    ]  # fmt: skip
    cp = indexed.write_checkpoint(s.id, edits)
    anchored = {a.symbol: a for a in cp.state.files if a.path == "app/store.py" and a.symbol}
    assert {"Store.put", "Store.get"} <= set(anchored) and anchored["Store.put"].body_sha256
    store = repo / "app/store.py"
    text = store.read_text()
    # put's body changes; get only moves down a line, its lines as they were.
    new = "# atomic writes\n" + text.replace(
        "            json.dump(self.data, f)", "            json.dump(self.data, f, indent=2)"
    )
    store.write_text(new)

    stale = indexed.resume(s.id, 2000, refresh=False)  # no index run: as indexed
    assert stale.refreshed == () and stale.changes == ()
    assert "Nothing the checkpoint anchored has changed" in stale.rendered
    assert any("1 files changed on disk" in d for d in stale.degraded)
    assert "indent=2" not in stale.rendered

    r = indexed.resume(s.id, 2000)  # refresh is the default
    assert r.refreshed == ("app/store.py",)
    got = {(c.path, c.symbol, c.change) for c in r.changes}
    assert got == {("app/store.py", None, "modified"), ("app/store.py", "Store.put", "modified")}
    assert "- app/store.py Store.put: modified" in r.rendered
    assert "Re-indexed first, changed on disk: app/store.py" in r.rendered
    assert "Nothing the checkpoint anchored has changed" not in r.rendered
    assert r.context is not None and "json.dump(self.data, f, indent=2)" in r.context.rendered
    assert "json.dump(self.data, f, indent=2)" in r.rendered
    assert not any("changed on disk" in d for d in r.degraded)
    assert r.tokens_used == indexed.tokens.count(r.rendered) <= 2000
    assert indexed.status("demo").changed == ()
    again = indexed.resume(s.id, 2000)  # nothing more to re-index
    assert again.refreshed == () and set(again.changes) == set(r.changes)


@pytest.mark.anyio
async def test_api_sessions_checkpoints_resume(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/sessions", json={"repo": "demo", "task": "atomic store"})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    body = {
        "messages": MESSAGES,
        "goal": "atomic put",
        "decisions": ["chose os.replace because atomic"],
    }
    first = await client.post(
        f"/v1/sessions/{sid}/checkpoints", json=body, headers={"Idempotency-Key": "abc"}
    )
    retry = await client.post(
        f"/v1/sessions/{sid}/checkpoints", json=body, headers={"Idempotency-Key": "abc"}
    )
    assert first.status_code == retry.status_code == 201
    assert retry.json() == first.json() and retry.headers["idempotent-replayed"] == "true"
    assert first.json()["number"] == 1 and first.json()["summary"]["goal"] == "atomic put"
    second = await client.post(f"/v1/sessions/{sid}/checkpoints", json={"next_step": "ship"})
    assert second.json()["number"] == 2
    listed = (await client.get(f"/v1/sessions/{sid}/checkpoints")).json()
    assert [c["number"] for c in listed] == [1, 2]
    latest = (await client.get(f"/v1/sessions/{sid}/checkpoints/latest")).json()
    one = (await client.get(f"/v1/sessions/{sid}/checkpoints/1")).json()
    assert latest["number"] == 2 and one["transcript"] == MESSAGES
    resume = await client.get(f"/v1/sessions/{sid}/resume", params={"budget_tokens": 600})
    assert resume.status_code == 200 and resume.json()["tokens_used"] <= 600
    assert "Goal: atomic put" in resume.json()["rendered"] and resume.json()["refreshed"] == []
    as_is = await client.get(f"/v1/sessions/{sid}/resume", params={"refresh": "false"})
    assert as_is.status_code == 200 and as_is.json()["refreshed"] == []
    missing = await client.get(f"/v1/sessions/{sid}/checkpoints/9")
    assert (
        missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
    )
    bad = await client.post(f"/v1/sessions/{sid}/checkpoints", json={"messages": [{"x": 1}]})
    assert bad.status_code == 422
    nobody = await client.get("/v1/sessions/nope/checkpoints")
    assert nobody.status_code == 404


# -- agents with only a shell (mini-SWE-agent): edits are commands ---------------------


def bash(i: int, command: str, output: str = "", returncode: int = 0) -> list[dict[str, Any]]:
    observation = f"<returncode>{returncode}</returncode>\n<output>\n{output}</output>"
    return [
        {"role": "assistant", "content": "", "tool_calls": [call(i, "bash", command=command)]},
        {"role": "tool", "tool_call_id": f"c{i}", "content": observation},
    ]


def sym(qualname: str, path: str, start: int, end: int) -> Symbol:
    name = qualname.rsplit(".", 1)[-1]
    return Symbol(name, qualname, "function", path, start, end, f"def {name}():")


INDEX = IndexFacts(
    {"pkg/mod.py": "h1", "pkg/other.py": "h2"},
    {
        "pkg/mod.py": [sym("Thing", "pkg/mod.py", 1, 30), sym("Thing.run", "pkg/mod.py", 10, 20)],
        "pkg/other.py": [sym("other", "pkg/other.py", 1, 9)],
    },
)


def edited(state: Any) -> set[tuple[str, str | None]]:
    return {(a.path, a.symbol) for a in state.files if a.edited}


def test_shell_edits_are_edited_and_anchored_by_line() -> None:
    msgs = [
        *bash(1, "grep -n run pkg/mod.py", "12:    def run(self):\n"),
        *bash(2, "cd /testbed && sed -i '15s/x = 1/x = 2/' pkg/mod.py"),
        *bash(3, "cat > repro.py <<'EOF'\nimport pkg.mod\nEOF"),
        *bash(4, "python repro.py", "boom\n", returncode=1),
        *bash(5, "rm repro.py"),
        *bash(6, "cat pkg/other.py && cp pkg/other.py /tmp/other.bak"),
    ]
    state = extract(msgs, None, INDEX, task="fix Thing.run")
    # The innermost definition around line 15; the scratch file made and removed is gone.
    assert edited(state) == {("pkg/mod.py", None), ("pkg/mod.py", "Thing.run")}
    assert ("pkg/other.py", None) in {(a.path, a.symbol) for a in state.files}
    assert "`python repro.py`: exit 1" in state.errors


def test_git_diff_output_and_python_writes_count_as_edits() -> None:
    diff = "--- a/pkg/other.py\n+++ b/pkg/other.py\n@@ -3,2 +3,2 @@ def other():\n-    a\n+    b\n"
    script = "python - <<EOF\nfrom pathlib import Path\nPath('pkg/new.py').write_text('x')\nEOF"
    state = extract([*bash(1, "git diff", diff), *bash(2, script)], None, INDEX, task="t")
    assert edited(state) == {
        ("pkg/other.py", None),
        ("pkg/other.py", "other"),
        ("pkg/new.py", None),
    }
    # A diff in other output (a log, a file shown) is not an edit.
    assert not edited(extract(bash(1, "git show HEAD~3", diff), None, INDEX, task="t"))


def test_budget_keeps_an_indexed_edit_before_files_the_session_made() -> None:
    msgs = bash(0, "sed -i 's/a/b/' pkg/mod.py")
    for i in range(1, 40):
        msgs += bash(i, f"cat > scratch_{i}.py <<EOF\nx\nEOF")
    summary = fit(extract(msgs, None, INDEX, task="t"), 60, TiktokenCounter())
    assert "pkg/mod.py" in summary.rendered and summary.dropped["edited"] > 0


def test_decisions_are_choices_not_explanations() -> None:
    text = (
        "The test fails because the cache is stale. Is it because of the lock? "
        "I'll use a file lock because two writers race. We decided to keep the old API."
    )
    state = extract([{"role": "assistant", "content": text}], None, INDEX, task="t")
    assert state.decisions == (
        "I'll use a file lock because two writers race.",
        "We decided to keep the old API.",
    )
