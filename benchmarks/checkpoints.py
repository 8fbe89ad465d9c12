"""Checkpoint summaries: compression and retention on generated agent sessions.

A deterministic generator writes a small Python repository and a long agent
session over it (OpenAI-style messages): reading files, grepping, editing with
unified diffs, running tests that fail and then pass, reasoning prose, explicit
decisions. The offline summarizer then checkpoints the whole transcript at the
default budget. Measured per transcript:

- compression: transcript tokens / summary tokens (cl100k_base);
- retention: the share of mechanically known facts present in the rendered
  summary: edited files (path), touched symbols (qualified name), failing
  commands (the command), decisions (the distinctive choice named in them).

    python benchmarks/checkpoints.py [--tokens 50000 100000] [--seeds 5] [--budget 300]
    python benchmarks/checkpoints.py --labels [--split test] [--before CHECKOUT]

prints a table and writes benchmarks/results/checkpoints.json. With
``--trajectories DIR`` it runs ``checkpoints_real.py`` instead, which measures
real mini-SWE-agent trajectories, indexing each task's repository at its base
commit when ``--repos DIR`` holds a git mirror of it, and writes
benchmarks/results/checkpoints_real.json. With ``--labels`` it runs
``checkpoint_labels.py score``: recall per field on the hand-labelled trajectories and
compression, before and after side by side with ``--before``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# benchmarks/ is a script directory: on the path also when imported as benchmarks.checkpoints.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from checkpoint_metrics import ROOT, KnownFacts, make_service, score  # puts tests/ on the path

NOUNS = "order invoice user cart payment token session cache report queue ledger stock".split()
VERBS = "load save parse render validate merge apply compute fetch sync".split()
CHOICES = [
    ("sqlite WAL", "a JSON file", "it survives a crash mid-write"),
    ("dataclasses", "plain dicts", "mypy then checks every field"),
    ("an LRU cache", "memoizing globally", "memory stays bounded"),
    ("httpx", "requests", "we need async clients later"),
    ("a retry with backoff", "failing fast", "the upstream API drops requests under load"),
    ("ISO-8601 strings", "epoch integers", "the logs stay readable"),
    ("one lock per repository", "a global lock", "indexing two repositories must not serialize"),
    ("pathlib", "os.path", "the rest of the code uses it"),
    ("a frozen dataclass", "a namedtuple", "defaults and type hints read better"),
    ("pytest parametrize", "copied test functions", "each case then shows up by name"),
]
FILLER = (
    "Let me look at how this is wired together before changing anything. The call path goes "
    "through the service layer first, then the store, and the tests mock nothing, so a change "
    "here shows up in the integration tests too. I want to keep the public signature stable "
    "and only change the internals, and check the error handling on the way."
)


@dataclass
class Truth(KnownFacts):
    decisions: list[str] = field(default_factory=list)  # the distinctive choice of each


def make_repo(rng: random.Random, modules: int = 24) -> dict[str, str]:
    files: dict[str, str] = {}
    for m in range(modules):
        noun = NOUNS[m % len(NOUNS)] + (str(m // len(NOUNS)) if m >= len(NOUNS) else "")
        funcs = []
        for verb in rng.sample(VERBS, 6):
            funcs.append(
                f"def {verb}_{noun}(data: dict, strict: bool = False) -> dict:\n"
                f'    """{verb.capitalize()} a {noun} record."""\n'
                f"    if strict and not data:\n"
                f'        raise ValueError("empty {noun}")\n'
                f"    result = dict(data)\n"
                f'    result["{verb}ed"] = True\n'
                f"    for key in sorted(result):\n"
                f"        result[key] = result[key]\n"
                f"    return result\n"
            )
        files[f"pkg/{noun}.py"] = f'"""The {noun} module."""\n\n\n' + "\n\n".join(funcs)
        files[f"tests/test_{noun}.py"] = (
            f"from pkg.{noun} import *\n\n\ndef test_{noun}():\n    assert True\n"
        )
    return files


def _call(i: int, name: str, **args: Any) -> dict[str, Any]:
    return {
        "id": f"call_{i}",
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(args)},
    }


def generate(
    seed: int, target_tokens: int, count: Any
) -> tuple[dict[str, str], list[dict[str, Any]], Truth]:
    """A repository, a session transcript of about ``target_tokens``, and its known facts."""
    rng = random.Random(seed)
    repo = make_repo(rng)
    modules = sorted(p for p in repo if p.startswith("pkg/"))
    hot = rng.sample(modules, 10)  # the files this task is about
    truth = Truth()
    goal = f"Make {hot[0].split('/')[1][:-3]} processing strict about empty records"
    msgs: list[dict[str, Any]] = [
        {"role": "system", "content": "You are a coding agent. Use the tools."},
        {"role": "user", "content": goal + ". Keep the public API stable."},
    ]
    tokens, i = 0, 0
    decisions = rng.sample(CHOICES, 6)
    while tokens < target_tokens:
        i += 1
        path = rng.choice(hot if rng.random() < 0.7 else modules)
        noun = path.split("/")[1][:-3]
        step = rng.random()
        turn: list[dict[str, Any]] = []
        if step < 0.35:  # read a file
            turn.append(
                {
                    "role": "assistant",
                    "content": FILLER,
                    "tool_calls": [_call(i, "read_file", path=path)],
                }
            )
            turn.append({"role": "tool", "tool_call_id": f"call_{i}", "content": repo[path]})
        elif step < 0.5:  # grep
            cmd = f"grep -rn {noun} pkg tests"
            out = "\n".join(
                f"{p}:{n}: ... {noun} ..."
                for p in modules
                for n in (3, 14)
                if noun in p or rng.random() < 0.1
            )
            turn.append(
                {"role": "assistant", "content": "", "tool_calls": [_call(i, "bash", command=cmd)]}
            )
            turn.append(
                {"role": "tool", "tool_call_id": f"call_{i}", "content": out + "\nexit code 0"}
            )
        elif step < 0.7:  # edit with a diff
            funcs = [
                ln.split("(")[0][4:] for ln in repo[path].splitlines() if ln.startswith("def ")
            ]
            func = rng.choice(funcs)
            diff = (
                f"--- a/{path}\n+++ b/{path}\n@@ -12,7 +12,8 @@ def {func}(data: dict, strict: bool = False) -> dict:\n"
                f'     if strict and not data:\n-        raise ValueError("empty {noun}")\n'
                f'+        raise ValueError(f"empty {noun}: {{data!r}}")\n+    data = data or {{}}\n'
            )
            turn.append(
                {
                    "role": "assistant",
                    "content": f"Editing {func}.",
                    "tool_calls": [_call(i, "apply_patch", patch=diff)],
                }
            )
            turn.append({"role": "tool", "tool_call_id": f"call_{i}", "content": "Applied patch."})
            truth.edited_files.add(path)
            truth.symbols.add(func)
        elif step < 0.88:  # run tests
            test = f"tests/test_{noun}.py"
            cmd = f"python -m pytest -q {test}"
            if rng.random() < 0.4:
                out = (
                    "F..\n=================================== FAILURES ===================================\n"
                    f"____ test_{noun} ____\n\nTraceback (most recent call last):\n"
                    f'  File "/work/repo/{path}", line 14, in {rng.choice(VERBS)}_{noun}\n'
                    f'    raise ValueError("empty {noun}")\nValueError: empty {noun}\n'
                    + "    at some frame\n" * 30
                    + f"FAILED {test}::test_{noun} - ValueError: empty {noun}\n1 failed, 2 passed in 0.12s\nexit code 1"
                )
                truth.failing_commands.add(cmd)
            else:
                out = "...\n3 passed in 0.10s\nexit code 0"
            turn.append(
                {
                    "role": "assistant",
                    "content": "Running the tests.",
                    "tool_calls": [_call(i, "bash", command=cmd)],
                }
            )
            turn.append({"role": "tool", "tool_call_id": f"call_{i}", "content": out})
        elif decisions and step < 0.93:
            choice, other, reason = decisions.pop()
            truth.decisions.append(choice)
            turn.append(
                {
                    "role": "assistant",
                    "content": f"{FILLER} I decided to use {choice} instead of {other} because {reason}.",
                }
            )
        else:
            turn.append({"role": "assistant", "content": FILLER + " " + FILLER})
        msgs.extend(turn)
        tokens += sum(
            count(m.get("content") or "") + count(json.dumps(m.get("tool_calls", ""))) for m in turn
        )
    msgs.append(
        {
            "role": "assistant",
            "content": f"TODO: update the docs of {hot[0]}\nNext: run the whole test suite",
        }
    )
    return repo, msgs, truth


def facts_of(truth: Truth) -> dict[str, Collection[str]]:
    return {
        "edited_files": truth.edited_files,
        "symbols": truth.symbols,
        "failing_commands": truth.failing_commands,
        "decisions": truth.decisions,
    }


def main() -> None:
    from conftest import write_tree

    from ctxsvc.tokens import TiktokenCounter

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, nargs="+", default=[50_000, 100_000])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--budget", type=int, default=300)
    ap.add_argument("--trajectories", type=Path, help="a directory of *.traj.json files")
    ap.add_argument("--repos", type=Path, help="git mirrors of their repositories")
    ap.add_argument("--out", help="the JSON file to write")
    ap.add_argument(
        "--labels", action="store_true",
        help="recall per field on the hand-labelled trajectories (checkpoint_labels.py score)",
    )  # fmt: skip
    ap.add_argument("--split", choices=("test", "dev", "all"), default="test")
    ap.add_argument("--before", type=Path, help="with --labels: another checkout, measured beside")
    args = ap.parse_args()
    results = ROOT / "benchmarks" / "results"
    if args.labels:  # per field, before and after side by side
        labelled = [sys.executable, str(Path(__file__).with_name("checkpoint_labels.py")), "score"]
        labelled += ["--split", args.split, "--budget", str(args.budget)]
        labelled += ["--trajectories", str(args.trajectories)] if args.trajectories else []
        labelled += ["--before", str(args.before)] if args.before else []
        raise SystemExit(subprocess.run(labelled, check=False).returncode)
    if args.trajectories:  # a script of its own
        out = Path(args.out or results / "checkpoints_real.json")
        real = [sys.executable, str(Path(__file__).with_name("checkpoints_real.py"))]
        real += [str(args.trajectories), "--budget", str(args.budget), "--out", str(out)]
        real += ["--repos", str(args.repos)] if args.repos else []
        raise SystemExit(subprocess.run(real, check=False).returncode)
    counter = TiktokenCounter()
    rows = []
    for target in args.tokens:
        for seed in range(args.seeds):
            with tempfile.TemporaryDirectory() as tmp:
                repo, msgs, truth = generate(seed, target, counter.count)
                root = Path(tmp) / "bench"
                write_tree(root, dict(repo))
                svc = make_service(Path(tmp) / "home", counter)
                svc.index(root)
                session = svc.start_session("bench", "generated session")
                t0 = time.perf_counter()
                cp = svc.write_checkpoint(session.id, msgs, budget_tokens=args.budget)
                seconds = time.perf_counter() - t0
            rows.append(
                {
                    "target_tokens": target, "seed": seed, "messages": len(msgs),
                    "transcript_tokens": cp.transcript_tokens, "summary_tokens": cp.summary.tokens,
                    "compression": round(cp.transcript_tokens / cp.summary.tokens, 1),
                    "seconds": round(seconds, 2), "dropped": cp.summary.dropped,
                    "facts": {
                        "edited_files": len(truth.edited_files), "symbols": len(truth.symbols),
                        "failing_commands": len(truth.failing_commands),
                        "decisions": len(truth.decisions),
                    },
                    "retention": score(cp.summary.rendered, facts_of(truth)),
                }
            )  # fmt: skip
    keys = ("edited_files", "symbols", "failing_commands", "decisions")
    print(f"budget {args.budget} tokens, {args.seeds} seeds per size (mean; min in brackets)")
    print(
        f"{'target':>8} {'transcript':>10} {'summary':>7} {'compress':>9} {'secs':>5}  "
        + "  ".join(f"{k:>16}" for k in keys)
    )
    for target in args.tokens:
        rs = [r for r in rows if r["target_tokens"] == target]

        def cell(k: str, rs: list[dict[str, Any]] = rs) -> str:
            v = [r["retention"][k] for r in rs if r["retention"][k] is not None]
            return f"{statistics.mean(v):.2f} [{min(v):.2f}]" if v else "-"

        print(
            f"{target:>8} {statistics.mean(r['transcript_tokens'] for r in rs):>10.0f}"
            f" {statistics.mean(r['summary_tokens'] for r in rs):>7.0f}"
            f" {statistics.mean(r['compression'] for r in rs):>8.0f}x"
            f" {statistics.mean(r['seconds'] for r in rs):>5.2f}  "
            + "  ".join(f"{cell(k):>16}" for k in keys)
        )
    out = Path(args.out or results / "checkpoints.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"budget": args.budget, "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
