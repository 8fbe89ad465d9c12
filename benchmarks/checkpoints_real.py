"""Checkpoint summaries on real agent trajectories (mini-SWE-agent ``.traj.json``).

    python benchmarks/checkpoints_real.py DIR [--repos DIR] [--budget 300] [--out FILE]

(``benchmarks/checkpoints.py --trajectories DIR`` runs it too). Each
trajectory is converted to OpenAI-style messages and checkpointed whole, and
its facts are extracted mechanically from the trajectory itself, never from
what the summarizer recognizes:

- edited files: the ``+++ b/`` paths of the submitted patch (``info.submission``),
  build artifacts (``build/``, ``dist/``, ``*.egg-info/``) left out;
- touched symbols: the function or class named in that patch's hunk headers
  (``@@ -1,2 +1,3 @@ def foo(...)``), for the files kept above;
- failing commands: commands whose observation has a non-zero ``<returncode>``,
  a traceback, or a ``FAILED`` line; a command counts as present when its first
  40 characters (whitespace collapsed) are, since no summary can quote heredocs;
- task identifiers: code spans in backticks in the task (the PR description);
- decisions: none, as nothing marks a decision in these transcripts and finding
  one with the summarizer's own rules would be circular.

The final submission observation (which *is* the patch) is dropped. The
repository is indexed at the task's base commit when ``--repos`` holds a git
mirror of it (``owner+name/repo``; the commit is the last one whose files match
the pre-image blobs of the patch); otherwise the index holds only placeholder
files at the paths the trajectory names (patch, commands, tool output), so
paths resolve but no symbols can be anchored.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from checkpoint_metrics import ROOT, KnownFacts, make_service, present, score

SUBMIT = "COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"
_ACTION = re.compile(r"```(?:bash|mswea_bash_command)\s*\n(.*?)\n```", re.S)
_ARTIFACT = re.compile(r"^(?:build|dist)/|\.egg-info/|__pycache__/")
_HUNK = re.compile(r"^@@ [^@]* @@ ?(.*)$", re.M)
_DEF = re.compile(r"\b(?:def|class)\s+([A-Za-z_]\w*)")
_RETURNCODE = re.compile(r"<returncode>\s*(-?\d+)\s*</returncode>")
_FAILED = re.compile(r"Traceback \(most recent call last\)|^FAILED\b|\b[1-9]\d* failed\b", re.M)
_SPAN = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
_CODE_IDENT = re.compile(r"[A-Za-z_][\w.]*(?:\(\))?")
_PATH = re.compile(r"(?<![\w/.-])(?:/testbed/|\./)?((?:[\w.-]+/)+[\w-]+\.[A-Za-z]\w{0,5})\b")


@dataclass
class Trajectory:
    name: str
    instance: str
    model: str
    format: str  # "text" (actions in ```bash blocks) or "toolcall"
    messages: list[dict[str, Any]]
    task: str
    submission: str
    raw_messages: int


@dataclass
class RealTruth(KnownFacts):
    identifiers: set[str] = field(default_factory=set)


def command_key(command: str) -> str:
    """How a command is recognized in a summary: its first 40 characters, spaces collapsed."""
    return " ".join(command.split())[:40]


def load(path: Path) -> Trajectory:
    data = json.loads(path.read_text())
    info = data.get("info", {})
    raw = data["messages"]
    first_user = next((m for m in raw if m.get("role") == "user"), {})
    task = str(first_user.get("content") or "")
    if "</pr_description>" in task:
        task = task.split("</pr_description>")[0].split("<pr_description>")[-1]
        task = task.replace("Consider the following PR description:", "", 1)
    model = info.get("config", {}).get("model", {}).get("model_name", "?")
    return Trajectory(
        name=path.name.removesuffix(".traj.json"),
        instance=str(data.get("instance_id") or path.name.split("__", 1)[-1]),
        model=str(model).rsplit("/", 1)[-1],
        format="toolcall" if any(m.get("tool_calls") for m in raw) else "text",
        messages=convert(raw),
        task=task.strip(),
        submission=str(info.get("submission") or ""),
        raw_messages=len(raw),
    )


def convert(raw: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI-style messages: one ``bash`` tool call per action, observations as tool results.

    Tool-calling trajectories keep their calls (only provider metadata is
    dropped); text trajectories have their one ```bash block turned into a
    call and the next user message into its result. The observation of the
    submit command (the final patch) and ``exit`` messages are dropped.
    """
    out: list[dict[str, Any]] = []
    pending: tuple[str, str] | None = None  # (call id, command) awaiting its observation
    for i, m in enumerate(raw):
        role, content = m.get("role"), m.get("content")
        text = content if isinstance(content, str) else ""
        if role == "exit":
            continue
        if role == "assistant" and m.get("tool_calls"):
            calls = [
                {"id": c["id"], "type": "function", "function": dict(c["function"])}
                for c in m["tool_calls"]
            ]
            out.append({"role": "assistant", "content": text, "tool_calls": calls})
        elif role == "tool":
            out.append({"role": "tool", "tool_call_id": m["tool_call_id"], "content": text})
        elif role == "assistant" and len(actions := _ACTION.findall(text)) == 1:
            call_id = f"call_{i}"
            args = json.dumps({"command": actions[0]})
            call = {"id": call_id, "type": "function", "function": {"name": "bash", "arguments": args}}  # fmt: skip
            prose = _ACTION.sub("", text).strip()
            out.append({"role": "assistant", "content": prose, "tool_calls": [call]})
            pending = (call_id, actions[0])
        elif role == "user" and pending is not None:
            if SUBMIT not in pending[1]:
                out.append({"role": "tool", "tool_call_id": pending[0], "content": text})
            pending = None
        else:
            out.append({"role": role, "content": text})
    return out


def truth(traj: Trajectory) -> RealTruth:
    t = RealTruth()
    for block in re.split(r"^(?=diff --git )", traj.submission, flags=re.M):
        m = re.search(r"^\+\+\+ b/(\S+)", block, re.M)
        if m is None or _ARTIFACT.search(m.group(1)):
            continue
        t.edited_files.add(m.group(1))
        for context in _HUNK.findall(block):
            if d := _DEF.search(context):
                t.symbols.add(d.group(1))
    commands: dict[str, str] = {}
    for m in traj.messages:
        for c in m.get("tool_calls") or ():
            commands[c["id"]] = json.loads(c["function"]["arguments"]).get("command", "")
        if m["role"] == "tool":
            command = commands.get(m["tool_call_id"], "")
            code = _RETURNCODE.search(m["content"])
            failed = (code and code.group(1) != "0") or _FAILED.search(m["content"])
            if command and failed and SUBMIT not in command:
                t.failing_commands.add(command_key(command))
    task = re.sub(r"```.*?```", " ", traj.task, flags=re.S)
    for span in _SPAN.findall(task):
        if _CODE_IDENT.fullmatch(span.strip()):
            t.identifiers.add(span.strip().removesuffix("()"))
    return t


# -- the index the summarizer anchors against -------------------------------------


def _git(git_dir: Path, *args: str) -> str:
    return subprocess.run(
        ["git", f"--git-dir={git_dir}", *args], capture_output=True, text=True, check=False
    ).stdout.strip()


def mirror_of(instance: str, repos: Path | None) -> Path | None:
    """The git directory of ``owner+name`` for an instance ``owner__name-123``, if present."""
    if repos is None:
        return None
    owner, rest = instance.split("__", 1)
    git_dir = repos / f"{owner}+{rest.rsplit('-', 1)[0]}" / "repo"
    return git_dir if git_dir.is_dir() else None


def base_commit(git_dir: Path, submission: str) -> str | None:
    """The newest commit whose files match every pre-image blob of ``submission``."""
    pre = {
        path: blob
        for blob, path in re.findall(
            r"^index ([0-9a-f]{7,})\.\.[0-9a-f]+.*\n--- a/(\S+)", submission, re.M
        )
        if set(blob) != {"0"}
    }
    if not pre:
        return None
    full = {
        p: _git(git_dir, "rev-parse", "--verify", "-q", f"{b}^{{blob}}") for p, b in pre.items()
    }
    if not all(full.values()):
        return None
    candidates: dict[str, int] = {}  # commit -> commit time
    for path, blob in full.items():
        log = _git(
            git_dir, "log", "--all", "--raw", "--no-abbrev", "--format=C %H %P %ct", "--", path
        )
        commit, parents, ct = "", [""], "0"
        for line in log.splitlines():
            if line.startswith("C "):
                commit, *parents, ct = line[2:].split()
            elif line.startswith(":"):
                old, new = line.split()[2:4]
                if new == blob:  # introduced here
                    candidates.setdefault(commit, int(ct))
                if old == blob and parents:  # replaced here: the parent still has it
                    candidates.setdefault(parents[0], int(ct))
    for commit in sorted(candidates, key=lambda c: -candidates[c]):
        if all(_git(git_dir, "rev-parse", "-q", f"{commit}:{p}") == b for p, b in full.items()):
            return commit
    return None


def checkout(git_dir: Path, commit: str, dest: Path) -> int:
    """The files of ``commit`` written to ``dest`` (blobs absent from the mirror skipped)."""
    listing = subprocess.run(
        ["git", f"--git-dir={git_dir}", "ls-tree", "-r", "-z", commit],
        capture_output=True, check=True,
    ).stdout.decode()  # fmt: skip
    blobs = {}
    for entry in filter(None, listing.split("\0")):
        meta, path = entry.split("\t", 1)
        mode, kind, sha = meta.split()
        if kind == "blob" and mode != "120000":
            blobs[path] = sha
    batch = subprocess.run(
        ["git", f"--git-dir={git_dir}", "cat-file", "--batch"],
        input="".join(f"{sha}\n" for sha in blobs.values()).encode(),
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    pos, written = 0, 0
    for path in blobs:
        header_end = batch.index(b"\n", pos)
        header = batch[pos:header_end].split()
        pos = header_end + 1
        if header[1] == b"missing":
            continue
        size = int(header[2])
        (dest / path).parent.mkdir(parents=True, exist_ok=True)
        (dest / path).write_bytes(batch[pos : pos + size])
        pos += size + 1
        written += 1
    return written


def placeholders(traj: Trajectory, dest: Path) -> int:
    """Placeholder files at every repository path the patch, commands or outputs name."""
    texts = [traj.submission]
    for m in traj.messages:
        if m["role"] == "tool":
            texts.append(m["content"])
        for c in m.get("tool_calls") or ():
            texts.append(c["function"]["arguments"])
    paths = {p for text in texts for p in _PATH.findall(text) if not p.startswith(("/", "."))}
    paths = {p for p in paths if len(p) < 200 and ".." not in p}
    for p in paths:
        (dest / p).parent.mkdir(parents=True, exist_ok=True)
        (dest / p).write_text(f"# placeholder for {p}\n")
    return len(paths)


# -- the run -------------------------------------------------------------------------

KINDS = ("edited_files", "symbols", "failing_commands", "identifiers")


def measure(traj: Trajectory, repos: Path | None, budget: int, counter: Any) -> dict[str, Any]:
    """Index the task's repository, checkpoint the whole transcript, score summary and state."""
    from ctxsvc.summaries import fit

    facts = truth(traj)
    kinds: dict[str, set[str]] = {k: getattr(facts, k) for k in KINDS}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "repo"
        root.mkdir()
        git_dir = mirror_of(traj.instance, repos)
        commit = base_commit(git_dir, traj.submission) if git_dir else None
        if git_dir and commit:
            files, index = checkout(git_dir, commit, root), f"repo@{commit[:10]}"
        else:
            files, index = placeholders(traj, root), "paths"
        svc = make_service(Path(tmp) / "home", counter)
        t0 = time.perf_counter()
        svc.index(root, vectors=False)
        index_seconds = time.perf_counter() - t0
        session = svc.start_session("repo", traj.task[:8000])
        t0 = time.perf_counter()
        cp = svc.write_checkpoint(session.id, traj.messages, budget_tokens=budget)
        seconds = time.perf_counter() - t0
    state = fit(cp.state, 10**7, counter).rendered  # everything the state holds, rendered
    return {
        "trajectory": traj.name, "instance": traj.instance, "model": traj.model,
        "format": traj.format, "index": index, "indexed_files": files,
        "index_seconds": round(index_seconds, 1), "messages": len(traj.messages),
        "transcript_tokens": cp.transcript_tokens, "summary_tokens": cp.summary.tokens,
        "state_tokens": counter.count(state),
        "compression": round(cp.transcript_tokens / cp.summary.tokens, 1),
        "seconds": round(seconds, 2), "dropped": cp.summary.dropped,
        "facts": {k: sorted(v) for k, v in kinds.items()},
        "retention": score(cp.summary.rendered, kinds),
        "state_retention": score(state, kinds),
        "missed": {
            k: sorted(
                x for x in v if not present(x, cp.summary.rendered, path=k == "edited_files")
            )
            for k, v in kinds.items()
        },
        "missed_in_state": {
            k: sorted(x for x in v if not present(x, state, path=k == "edited_files"))
            for k, v in kinds.items()
        },
        "summary": cp.summary.rendered,
    }  # fmt: skip


def main(directory: Path, repos: Path | None, budget: int, counter: Any, out: Path) -> None:
    paths = sorted(directory.glob("*.traj.json"))
    if not paths:
        raise SystemExit(f"no *.traj.json files in {directory}")
    rows = []
    for path in paths:
        rows.append(measure(load(path), repos, budget, counter))
        print(f"  {path.name}: {rows[-1]['transcript_tokens']} tokens", file=sys.stderr)
    print(
        f"budget {budget} tokens; retention as summary/state (state: what resume keeps);"
        " n = facts of the kind"
    )
    head = f"{'trajectory':<44} {'index':<16} {'transcript':>10} {'summary':>7} {'compress':>8}"
    print(head + "".join(f"  {k:>18}" for k in KINDS))

    def cell(r: dict[str, Any], k: str) -> str:
        if r["retention"][k] is None:
            return "-"
        return f"{r['retention'][k]:.2f}/{r['state_retention'][k]:.2f} n={len(r['facts'][k])}"

    for r in rows:
        print(
            f"{r['trajectory'][:44]:<44} {r['index'][:16]:<16} {r['transcript_tokens']:>10}"
            f" {r['summary_tokens']:>7} {r['compression']:>7.0f}x"
            + "".join(f"  {cell(r, k):>18}" for k in KINDS)
        )
    print(
        f"{'mean of ' + str(len(rows)):<44} {'':<16}"
        f" {statistics.mean(r['transcript_tokens'] for r in rows):>10.0f}"
        f" {statistics.mean(r['summary_tokens'] for r in rows):>7.0f}"
        f" {statistics.mean(r['compression'] for r in rows):>7.0f}x"
        + "".join(f"  {_mean_cell(rows, k):>18}" for k in KINDS)
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"budget": budget, "rows": rows}, indent=1))
    print(f"wrote {out}")


def _mean_cell(rows: list[dict[str, Any]], kind: str) -> str:
    """Facts pooled over trajectories (micro average), summary/state."""
    n = sum(len(r["facts"][kind]) for r in rows)
    if not n:
        return "-"
    got = sum(r["retention"][kind] * len(r["facts"][kind]) for r in rows if r["facts"][kind])
    kept = sum(r["state_retention"][kind] * len(r["facts"][kind]) for r in rows if r["facts"][kind])
    return f"{got / n:.2f}/{kept / n:.2f} n={n}"


def cli() -> None:
    from ctxsvc.tokens import TiktokenCounter

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("trajectories", type=Path, help="a directory of *.traj.json files")
    ap.add_argument("--repos", type=Path, help="git mirrors of their repositories")
    ap.add_argument("--budget", type=int, default=300)
    ap.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "checkpoints_real.json"
    )
    args = ap.parse_args()
    main(args.trajectories, args.repos, args.budget, TiktokenCounter(), args.out)


if __name__ == "__main__":
    cli()
