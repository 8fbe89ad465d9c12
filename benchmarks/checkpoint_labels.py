"""Checkpoints on real agent trajectories against hand-checked labels: does a summary of
the session so far keep what the agent needs next?

Each trajectory (mini-SWE-agent ``.traj.json`` or SWE-agent ``.traj``, kept outside the
project: ``../trajectories`` by default) is cut at its middle tool call, after that
call's result: the checkpoint an agent would take there. A person reading the
trajectory up to the cut, the two turns after it and the final patch writes its labels
once, to ``benchmarks/checkpoint_labels.json``, each as the key terms a summary must
state for the item to count as kept:

- ``next_step``: what the agent does right after the cut (its next action's intent);
- ``open_tasks``: what the task still needs at the cut (each item its terms);
- ``constraints``: the requirements of the task and the user (must, must not, keep);
- ``edited_files``: the files edited before the cut (paths);
- ``failing_tests``: the commands before the cut whose tests failed and still fail at the
  cut, each with the terms that say why (an expected value, the exception).

    python -m benchmarks.checkpoint_labels sheets --out DIR     # one labelling sheet each
    python -m benchmarks.checkpoint_labels score [--split test|dev|all] [--before CHECKOUT]
    python -m benchmarks.checkpoint_labels compress --trajectories DIR [--before CHECKOUT]
    python -m benchmarks.checkpoint_labels follow --trajectories DIR [--before CHECKOUT]
    python -m benchmarks.checkpoint_labels fetch [--sources FILE] [--out DIR]

``score`` checkpoints each labelled trajectory's messages up to its cut, at the budget
(300 tokens), and prints per field the share of labelled items whose terms all appear in
the summary (recall), the same in the whole kept state (``state``) and in the transcript
itself (``in text``: about the most any summary taken from it could keep), the share of
the summary's open failures that name a labelled failing command (a lower bound on their
precision), and compression of the whole transcript. ``--before`` runs the same in a
subprocess on another checkout of ctxsvc (a ``git worktree`` of an older commit) and
prints both side by side. Writes ``benchmarks/results/checkpoint_labels-<split>.json``.
The labels are never changed to suit a result.

``fetch`` brings the trajectories back from their public repositories (the labelled set:
``benchmarks/checkpoint_trajectories.json`` into ``../trajectories``; the unlabelled ones:
``checkpoint_long_trajectories.json`` and ``checkpoint_follow_trajectories.json``, with
``--out``). Two measures need no labels, so they run on any set of trajectories: ``compress``
checkpoints each whole trajectory (compression, above all of those over 50K tokens;
``checkpoint_compress.json``), and ``follow`` cuts each before its tool calls at 30%, 50%
and 70% and asks whether the summary names a file the next call touches
(``checkpoint_follow.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the sibling scripts (checkpoint_metrics, checkpoints_real)

from checkpoint_metrics import make_service, present  # noqa: E402

from ctxsvc.limits import MAX_QUERY_CHARS  # noqa: E402

TRAJECTORIES = HERE.parent.parent / "trajectories"
LABELS = HERE / "checkpoint_labels.json"
RESULTS = HERE / "results" / "checkpoint_labels.json"
FIELDS = ("next_step", "open_tasks", "constraints", "edited_files", "failing_tests")
TARGETS = {"edited_files": 0.95, "next_step": 0.85, "open_tasks": 0.80, "constraints": 0.90,
           "failing_tests": 0.80}  # fmt: skip
UNBOUNDED = 100_000  # a summary budget that drops nothing: the whole kept state
OBSERVATION_CHARS = 1500  # of each tool result shown on a labelling sheet
_FENCED = re.compile(r"```[\w-]*\s*\n(.*?)\n```", re.S)


# -- reading trajectories ------------------------------------------------------------


def load(path: Path) -> dict[str, Any]:
    """A trajectory as OpenAI-style messages (one ``bash`` call per action, observations as
    tool results), its task and its final patch; either format."""
    data = json.loads(path.read_text())
    info = data.get("info") or {}
    if "messages" in data:  # mini-SWE-agent
        messages = _convert([m for m in data["messages"] if isinstance(m, dict)])
    else:  # SWE-agent: its opening messages, then one tool call per step
        history = [m for m in data.get("history") or [] if isinstance(m, dict)]
        opening = []
        for m in history:
            if m.get("role") == "assistant":
                break
            if not m.get("is_demo"):
                opening.append({"role": m.get("role"), "content": _text(m.get("content"))})
        messages = opening + _steps(data.get("trajectory") or [])
    first_user = next((m for m in messages if m["role"] == "user"), {"content": ""})
    return {
        "name": path.name.split(".traj")[0],
        "messages": messages,
        "task": task_of(str(first_user.get("content") or "")),
        "submission": str(info.get("submission") or ""),
    }


def task_of(text: str) -> str:
    """The task a harness's first message states: inside ``<pr_description>`` (mini-SWE-agent)
    or under ``ISSUE:`` (SWE-agent), else the message; as written (the issue a client
    starts its session with), up to the API's limit on a task."""
    if found := re.search(r"<pr_description>(.*?)</pr_description>", text, re.S):
        text = found.group(1).replace("Consider the following PR description:", "")
    elif found := re.search(
        r"^ISSUE:\s*$(.*?)(?:^INSTRUCTIONS:|^IMPORTANT TIPS:|\Z)", text, re.S | re.M
    ):
        text = found.group(1)
    return text.strip()[:MAX_QUERY_CHARS] or "the task"


def _steps(steps: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """SWE-agent's steps as tool calls: its editor's and file commands by their own names
    and arguments (as a tool-calling agent sends them), anything else as ``bash``."""
    out: list[dict[str, Any]] = []
    current = ""  # the file SWE-agent's `edit` writes: the one opened last
    for i, s in enumerate(steps):
        thought, action = str(s.get("thought") or ""), str(s.get("action") or "").strip()
        words = action.split(maxsplit=3)
        head = words[0] if words else ""
        if head == "str_replace_editor" and len(words) >= 3:
            name, args = head, {"command": words[1], "path": words[2],
                                "new_str": words[3] if len(words) > 3 else ""}  # fmt: skip
        elif head in ("open", "create") and len(words) >= 2:
            name, args, current = head, {"path": words[1].strip("\"'")}, words[1].strip("\"'")
        elif head == "edit" and current:
            name, args = "edit", {"path": current, "new_str": action}
        else:
            name, args = "bash", {"command": action}
        call = {"id": f"step_{i}", "type": "function",
                "function": {"name": name, "arguments": json.dumps(args)}}  # fmt: skip
        out.append({"role": "assistant", "content": thought, "tool_calls": [call]})
        out.append({"role": "tool", "tool_call_id": f"step_{i}",
                    "content": str(s.get("observation") or "")})  # fmt: skip
    return out


def _convert(raw: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    pending: str | None = None
    for i, m in enumerate(raw):
        role, content = m.get("role"), m.get("content")
        text = content if isinstance(content, str) else _text(content)
        if role in ("exit",) or m.get("is_demo"):
            continue
        if role == "assistant" and m.get("tool_calls"):
            calls = [
                {"id": c["id"], "type": "function", "function": dict(c["function"])}
                for c in m["tool_calls"]
            ]
            out.append({"role": "assistant", "content": text, "tool_calls": calls})
            pending = None
        elif role == "tool":
            out.append({"role": "tool", "tool_call_id": m.get("tool_call_id"), "content": text})
        elif role == "assistant" and (actions := _FENCED.findall(text)):
            call_id = f"call_{i}"
            args = json.dumps({"command": actions[-1]})
            fn = {"name": "bash", "arguments": args}
            prose = _FENCED.sub("", text).strip()
            out.append({"role": "assistant", "content": prose,
                        "tool_calls": [{"id": call_id, "type": "function", "function": fn}]})  # fmt: skip
            pending = call_id
        elif role == "user" and pending is not None:
            out.append({"role": "tool", "tool_call_id": pending, "content": text})
            pending = None
        elif role in ("system", "user", "assistant"):
            out.append({"role": role, "content": text})
    return out


def _text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def ident(path: Path, directory: Path) -> str:
    """A trajectory's name in the labels: its path under the directory, without suffix
    (source/model/instance: one instance is solved by several agents)."""
    return str(path.relative_to(directory)).split(".traj")[0]


def cut_at(messages: Sequence[Mapping[str, Any]]) -> int:
    """How many messages the checkpoint holds: up to the result of the middle tool call."""
    calls = [i for i, m in enumerate(messages) if m.get("tool_calls")]
    if not calls:
        return len(messages)
    middle = calls[(len(calls) - 1) // 2]
    end = middle + 1
    while end < len(messages) and messages[end]["role"] == "tool":
        end += 1
    return end


# -- labelling sheets ----------------------------------------------------------------


def sheet(traj: Mapping[str, Any], key: str) -> str:
    """What a labeller reads: the transcript up to the cut, the two turns after, the patch."""
    messages, cut = traj["messages"], cut_at(traj["messages"])
    lines = [f"# {key}", f"cut: {cut} (of {len(messages)} messages)", ""]
    for i, m in enumerate(messages[: cut + 4]):
        if i == cut:
            lines += ["", "=" * 30 + " CUT: the checkpoint holds what is above " + "=" * 30, ""]
        text = str(m.get("content") or "")
        if m["role"] == "tool":
            text = text[:OBSERVATION_CHARS] + (" [...]" if len(text) > OBSERVATION_CHARS else "")
        calls = [json.loads(c["function"]["arguments"]).get("command", c["function"]["arguments"])
                 for c in m.get("tool_calls") or ()]  # fmt: skip
        lines.append(f"## [{i}] {m['role']}")
        lines.append(text)
        lines.extend(f"$ {c}" for c in calls)
    lines += ["", "## final patch", traj["submission"][:6000]]
    return "\n".join(lines)


# -- scoring -------------------------------------------------------------------------


def recalled(item: Sequence[str] | str, text: str) -> bool:
    """Whether every key term of a labelled item appears in ``text`` (case-insensitive)."""
    terms = [item] if isinstance(item, str) else list(item)
    low = " ".join(text.split()).lower()
    return all(
        present(t, text, path=True)
        if "/" in t and " " not in t
        else " ".join(t.split()).lower() in low
        for t in terms
    )


def measure(
    labels: Sequence[Mapping[str, Any]], directory: Path, budget: int, show: bool = False
) -> dict[str, Any]:
    from ctxsvc.tokens import TiktokenCounter

    counter = TiktokenCounter()
    rows = []
    for label in labels:
        path = next(directory.glob(f"{label['name']}.traj*"), None)
        if path is None:
            raise SystemExit(f"{label['name']}: not found under {directory}")
        traj = load(path)
        messages = traj["messages"][: label["cut"]]
        with _indexed(traj, counter, label) as service:
            session = service.start_session("repo", traj["task"])
            cp = service.write_checkpoint(session.id, messages, budget_tokens=budget)
            kept = service.start_session("repo", traj["task"])
            state = service.write_checkpoint(kept.id, messages, budget_tokens=UNBOUNDED)
            whole = service.start_session("repo", traj["task"])
            full = service.write_checkpoint(whole.id, traj["messages"], budget_tokens=budget)
        text = cp.summary.rendered
        seen = transcript_text(messages)
        if show:
            print(f"\n#### {label['name']}\n{text}")
        row: dict[str, Any] = {
            "name": label["name"], "summary_tokens": cp.summary.tokens,
            "transcript_tokens": full.transcript_tokens,
            "compression": round(full.transcript_tokens / max(1, full.summary.tokens), 1),
        }  # fmt: skip
        for field in FIELDS:
            items = label.get(field) or []
            if field == "next_step":
                items = [items] if items else []
            if field == "failing_tests":
                items = [[*t["command"], *t["reason"]] for t in items]
            row[field] = [recalled(it, text) for it in items]
            row[f"{field}_state"] = [recalled(it, state.summary.rendered) for it in items]
            # In the transcript as written, or kept (a path the summary resolved).
            row[f"{field}_reachable"] = [
                hit or recalled(it, seen) for it, hit in zip(items, row[field], strict=True)
            ]
            if show:
                missed = [it for it, hit in zip(items, row[field], strict=True) if not hit]
                print(f"  missed {field}: {missed}" if missed else f"  kept all {field}")
        # Precision of what the summary calls failing: its open error lines that name the
        # command of a labelled failing test (labels list only the failures still open at
        # the cut, so this is a lower bound).
        live = [e for e in cp.summary.errors if not e.endswith("(fixed later)")]
        commands = [t["command"] for t in label.get("failing_tests") or ()]
        row["errors_open"] = len(live)
        row["errors_labelled"] = sum(any(recalled(c, e) for c in commands) for e in live)
        rows.append(row)
    return {"budget": budget, "rows": rows}


def transcript_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """Everything a summary could take its words from: the messages' text and their tool
    calls' arguments."""
    parts = []
    for m in messages:
        parts.append(str(m.get("content") or ""))
        for call in m.get("tool_calls") or ():
            try:
                args = json.loads(call["function"]["arguments"])
            except ValueError:
                args = call["function"]["arguments"]
            parts.extend(map(str, args.values()) if isinstance(args, dict) else [str(args)])
    return "\n".join(parts)


def compress(directory: Path, budget: int) -> dict[str, Any]:
    """Every trajectory under ``directory`` (no labels needed) checkpointed whole at the
    budget: its transcript tokens, the summary's and their ratio."""
    from ctxsvc.tokens import TiktokenCounter

    counter = TiktokenCounter()
    rows = []
    for path in sorted(directory.rglob("*.traj*")):
        traj = load(path)
        if not traj["messages"]:  # a run that never started: nothing to checkpoint
            continue
        with _indexed(traj, counter, {}) as service:
            session = service.start_session("repo", traj["task"])
            cp = service.write_checkpoint(session.id, traj["messages"], budget_tokens=budget)
        rows.append({
            "name": ident(path, directory), "messages": len(traj["messages"]),
            "transcript_tokens": cp.transcript_tokens, "summary_tokens": cp.summary.tokens,
            "compression": round(cp.transcript_tokens / max(1, cp.summary.tokens), 1),
        })  # fmt: skip
    return {"budget": budget, "rows": rows}


_NAMED_FILE = re.compile(r"(?<![\w/.-])(?:[\w.-]+/)*([\w-]+\.[A-Za-z]\w{0,5})(?![\w/-])")
CUTS = (0.3, 0.5, 0.7)  # where ``follow`` checkpoints: after these shares of the tool calls


def follow(directory: Path, budget: int) -> dict[str, Any]:
    """Whether a checkpoint names the file the agent's next action touches, on unlabelled
    trajectories (the next action is in the trajectory itself): each trajectory with six
    tool calls or more is cut before its calls at ``CUTS``, and a cut counts when a file
    the next call names (by its path arguments or its command) appears in the summary."""
    from ctxsvc.tokens import TiktokenCounter
    from ctxsvc.transcripts import call_paths, command_of, tool_calls

    counter = TiktokenCounter()
    rows = []
    for path in sorted(directory.rglob("*.traj*")):
        traj = load(path)
        messages = traj["messages"]
        calls = [i for i, m in enumerate(messages) if m.get("tool_calls")]
        if len(calls) < 6:
            continue
        with _indexed(traj, counter, {}) as service:
            for share in CUTS:
                cut = calls[int(len(calls) * share)]
                named = set()
                for _, name, args in tool_calls(messages[cut]):
                    text = " ".join([*call_paths(args), command_of(name, args) or ""])
                    named |= set(_NAMED_FILE.findall(text))
                if not named:
                    continue
                session = service.start_session("repo", traj["task"])
                cp = service.write_checkpoint(session.id, messages[:cut], budget_tokens=budget)
                text = cp.summary.rendered
                hit = any(re.search(rf"(?<![\w.-]){re.escape(f)}(?![\w-])", text) for f in named)
                rows.append({"name": ident(path, directory), "cut": cut, "files": sorted(named),
                             "hit": hit, "summary_tokens": cp.summary.tokens})  # fmt: skip
    return {"budget": budget, "rows": rows}


def _compression_table(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    long = [r for r in rows if r["transcript_tokens"] > 50_000]
    ratios = [r["compression"] for r in long]
    return {
        "trajectories": len(rows), "over_50k": len(long),
        "transcript_tokens_median": statistics.median(r["transcript_tokens"] for r in long) if long else None,
        "summary_tokens_max": max((r["summary_tokens"] for r in rows), default=None),
        "compression_over_50k_median": statistics.median(ratios) if ratios else None,
        "compression_over_50k_min": min(ratios) if ratios else None,
    }  # fmt: skip


def _follow_table(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {
        "trajectories": len({r["name"] for r in rows}), "cuts": len(rows),
        "next_file_named": round(sum(r["hit"] for r in rows) / len(rows), 3) if rows else None,
        "summary_tokens_median": statistics.median(r["summary_tokens"] for r in rows) if rows else None,
    }  # fmt: skip


@contextmanager
def _indexed(traj: Mapping[str, Any], counter: Any, label: Mapping[str, Any]) -> Iterator[Any]:
    """A service over a repository of the trajectory's placeholders, indexed, in a
    temporary directory for the block's time."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "repo"
        _placeholders(root, label, traj)
        service = make_service(Path(tmp) / "home", counter)
        service.index(root, vectors=False)
        yield service


def _placeholders(root: Path, label: Mapping[str, Any], traj: Mapping[str, Any]) -> None:
    """A repository holding a placeholder at every path the trajectory names, so that
    paths resolve as in the real one (no symbols); a bare name only when no longer path
    ends in it."""
    root.mkdir(parents=True)
    text = json.dumps(traj["messages"]) + traj["submission"]
    paths = set(re.findall(r"(?<![\w/.-])(?:/testbed/)?((?:[\w.-]+/)*[\w-]+\.(?:py|pyi|js|ts|go|rs|java|c|h|cpp|rb|md|rst|txt|cfg|toml|ini|json|yaml|yml))\b", text))  # fmt: skip
    paths |= set(label.get("edited_files") or ())
    # A bare name that is the tail of a longer path named it ("open Foo.java" after
    # "find_file" found src/.../Foo.java): no second file at the top.
    tails = {p.rsplit("/", 1)[-1] for p in paths if "/" in p}
    paths = {p for p in paths if "/" in p or p not in tails}
    for p in sorted(paths):
        if p.startswith(("/", "..")) or len(p) > 200:
            continue
        target = root / p
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.write_text(f"# placeholder for {p}\n")
    subprocess.run(["git", "init", "-q", str(root)], check=True)


def summarize(result: Mapping[str, Any]) -> dict[str, Any]:
    rows = result["rows"]
    out: dict[str, Any] = {"trajectories": len(rows)}
    for field in FIELDS:
        for key in (field, f"{field}_state", f"{field}_reachable"):
            hits = [h for r in rows for h in r.get(key, ())]
            out[key] = round(sum(hits) / len(hits), 3) if hits else None
        out[f"{field}_items"] = sum(len(r[field]) for r in rows)
    shown = sum(r.get("errors_open", 0) for r in rows)
    out["failing_tests_precision"] = (
        round(sum(r.get("errors_labelled", 0) for r in rows) / shown, 3) if shown else None
    )
    long = [r["compression"] for r in rows if r["transcript_tokens"] > 50_000]
    out["compression_median"] = statistics.median(r["compression"] for r in rows) if rows else None
    out["compression_over_50k_median"] = statistics.median(long) if long else None
    out["over_50k"] = len(long)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    sh = sub.add_parser("sheets")
    sh.add_argument("--trajectories", type=Path, default=TRAJECTORIES)
    sh.add_argument("--out", type=Path, required=True)
    sc = sub.add_parser("score")
    sc.add_argument("--trajectories", type=Path, default=TRAJECTORIES)
    sc.add_argument("--labels", type=Path, default=LABELS)
    sc.add_argument("--budget", type=int, default=300)
    sc.add_argument(
        "--split", choices=("test", "dev", "all"), default="test",
        help="test: the held-out trajectories; dev: the ones the extraction was looked at on",
    )  # fmt: skip
    sc.add_argument("--before", type=Path, help="another checkout of ctxsvc, measured beside")
    sc.add_argument("--raw", action="store_true", help=argparse.SUPPRESS)  # one side, as JSON
    sc.add_argument("--show", action="store_true", help="print each summary and what it missed")
    co = sub.add_parser("compress", help="compression of whole trajectories, no labels needed")
    co.add_argument("--trajectories", type=Path, required=True)
    co.add_argument("--budget", type=int, default=300)
    co.add_argument("--before", type=Path, help="another checkout of ctxsvc, measured beside")
    co.add_argument("--raw", action="store_true", help=argparse.SUPPRESS)
    fo = sub.add_parser("follow", help="does a checkpoint name the next action's file")
    fo.add_argument("--trajectories", type=Path, required=True)
    fo.add_argument("--budget", type=int, default=300)
    fo.add_argument("--before", type=Path, help="another checkout of ctxsvc, measured beside")
    fo.add_argument("--raw", action="store_true", help=argparse.SUPPRESS)
    fe = sub.add_parser("fetch", help="bring the trajectories a sources file names")
    fe.add_argument("--sources", type=Path, default=HERE / "checkpoint_trajectories.json")
    fe.add_argument("--out", type=Path, default=TRAJECTORIES)
    fe.add_argument("--remote", default="https://github.com/{repo}.git", help="a URL template")
    fe.add_argument("--cache", type=Path, default=TRAJECTORIES.parent / ".trajectory-clones")
    args = ap.parse_args()
    if args.command == "fetch":
        print(f"wrote {fetch(args.sources, args.out, args.remote, args.cache)} trajectories")
        return
    if args.command in ("compress", "follow"):
        _unlabelled_main(args)
        return
    if args.command == "sheets":
        args.out.mkdir(parents=True, exist_ok=True)
        for path in sorted(args.trajectories.rglob("*.traj*")):
            traj = load(path)
            key = ident(path, args.trajectories)
            (args.out / f"{key.replace('/', '__')}.md").write_text(sheet(traj, key))
            print(f"{key}: cut {cut_at(traj['messages'])} of {len(traj['messages'])}")
        return
    labels = [
        x for x in json.loads(args.labels.read_text()) if args.split in ("all", x.get("split"))
    ]
    if args.raw:
        print(json.dumps(measure(labels, args.trajectories, args.budget)))
        return
    sides = {"now": measure(labels, args.trajectories, args.budget, args.show)}
    if args.before:
        env = {**os.environ, "PYTHONPATH": str(args.before.resolve())}
        got = subprocess.run(
            [sys.executable, str(HERE / "checkpoint_labels.py"), "score", "--raw",
             "--trajectories", str(args.trajectories), "--labels", str(args.labels),
             "--budget", str(args.budget), "--split", args.split],
            env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        sides = {"before": json.loads(got.stdout.strip().splitlines()[-1]), **sides}
    table = {side: summarize(r) for side, r in sides.items()}
    print(
        f"{len(labels)} labelled trajectories ({args.split}), summary budget {args.budget} tokens: recall"
    )
    head = "".join(f"{s:>10}" for s in table)
    print(f"{'field':<16}{head}{'target':>9}{'items':>7}{'state':>8}{'in text':>9}")
    for field in FIELDS:
        cells = "".join(f"{_f(t[field]):>10}" for t in table.values())
        now = table["now"]
        print(
            f"{field:<16}{cells}{TARGETS[field]:>9.2f}{now[f'{field}_items']:>7}"
            f"{_f(now[f'{field}_state']):>8}{_f(now[f'{field}_reachable']):>9}"
        )
    print(
        "state: the same items in the whole kept state (no budget); in text: items whose"
        " terms all appear in the transcript up to the cut (or in the summary, which"
        " resolves paths): about the most a summary taken from it could keep;"
        " failing_tests_precision: the open failures the summary lists that name a"
        " labelled failing command (a lower bound)"
    )
    for key in ("failing_tests_precision", "compression_median", "compression_over_50k_median"):
        print(f"{key:<16}" + "".join(f"{_f(t[key]):>10}" for t in table.values()))
    out = RESULTS.with_name(f"checkpoint_labels-{args.split}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"split": args.split, "summary": table, "sides": sides}, indent=1) + "\n"
    )
    print(f"wrote {out}")


def fetch(sources: Path, out: Path, remote: str, cache: Path) -> int:
    """Each trajectory a sources file names (``repository``, ``blob_sha1``, ``file``)
    written under ``out`` byte for byte from a blobless clone of its repository (kept in
    ``cache``), its ``sha256`` checked when the file gives one; returns how many."""
    import hashlib

    written = 0
    for src in json.loads(sources.read_text()):
        repo = src["repository"]
        clone = cache / repo.replace("/", "+")
        if not clone.exists():
            url = remote.format(repo=repo)
            subprocess.run(
                ["git", "clone", "--quiet", "--bare", "--filter=blob:none", url, str(clone)],
                check=True,
            )  # fmt: skip
        data = subprocess.run(
            ["git", "--git-dir", str(clone), "cat-file", "blob", src["blob_sha1"]],
            capture_output=True, check=True,
        ).stdout  # fmt: skip
        if src.get("sha256") and hashlib.sha256(data).hexdigest() != src["sha256"]:
            raise SystemExit(f"{src['file']}: its content is not the one recorded")
        target = out / src["file"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        written += 1
    return written


def _unlabelled_main(args: argparse.Namespace) -> None:
    run = compress if args.command == "compress" else follow
    if args.raw:
        print(json.dumps(run(args.trajectories, args.budget)))
        return
    sides = {"now": run(args.trajectories, args.budget)}
    if args.before:
        env = {**os.environ, "PYTHONPATH": str(args.before.resolve())}
        got = subprocess.run(
            [sys.executable, str(HERE / "checkpoint_labels.py"), args.command, "--raw",
             "--trajectories", str(args.trajectories), "--budget", str(args.budget)],
            env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        sides = {"before": json.loads(got.stdout.strip().splitlines()[-1]), **sides}
    if args.command == "follow":
        table = {side: _follow_table(r["rows"]) for side, r in sides.items()}
        print(f"checkpoints at {args.budget} tokens naming the next action's file")
    else:
        table = {side: _compression_table(r["rows"]) for side, r in sides.items()}
        print(f"whole trajectories checkpointed at {args.budget} tokens")
    print(f"{'':<28}" + "".join(f"{s:>10}" for s in table))
    for key in table["now"]:
        print(f"{key:<28}" + "".join(f"{_f(t[key]):>10}" for t in table.values()))
    out = RESULTS.with_name(f"checkpoint_{args.command}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"summary": table, "sides": sides}, indent=1) + "\n")
    print(f"wrote {out}")


def _f(v: object) -> str:
    return "-" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v))


if __name__ == "__main__":
    main()
