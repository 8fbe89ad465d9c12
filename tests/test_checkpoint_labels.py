"""The labelled-checkpoint benchmark's own pieces: fetching trajectories back from their
repositories byte for byte, and the two measures that need no labels, on a small
mini-SWE-agent trajectory (``benchmarks/checkpoint_labels.py``)."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from benchmarks.checkpoint_labels import compress, cut_at, fetch, follow, load

STEPS = [
    ("grep -n 'def where' xarray/core/computation.py", "1730:def where(cond, x, y):"),
    ("sed -n '1730,1760p' xarray/core/computation.py", "def where(cond, x, y):\n    return apply_ufunc("),
    ("sed -i 's/apply_ufunc(/apply_ufunc(keep_attrs=True, /' xarray/core/computation.py", ""),
    ("python reproduce_issue.py", "Issue reproduced: attributes are lost."),
    ("nl -ba xarray/core/computation.py | sed -n '1750,1770p'", "1750 keep_attrs"),
    ("python reproduce_issue.py", "attrs: {'foo': 'bar'}"),
    ("git diff", "diff --git a/xarray/core/computation.py b/xarray/core/computation.py"),
]  # fmt: skip


def trajectory() -> dict[str, object]:
    messages: list[dict[str, str]] = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "<pr_description>\nxr.where drops attributes. The result "
                                    "should keep them.\n</pr_description>"},
    ]  # fmt: skip
    for command, output in STEPS:
        messages.append(
            {"role": "assistant", "content": f"THOUGHT: next.\n\n```bash\n{command}\n```"}
        )
        messages.append(
            {
                "role": "user",
                "content": f"<returncode>0</returncode>\n<output>\n{output}\n</output>",
            }
        )
    return {"messages": messages, "info": {"submission": "diff --git a/xarray/core/computation.py"}}


def test_a_trajectory_reads_as_tool_calls_cut_at_its_middle_call(tmp_path: Path) -> None:
    path = tmp_path / "run.traj.json"
    path.write_text(json.dumps(trajectory()))
    traj = load(path)
    calls = [m for m in traj["messages"] if m.get("tool_calls")]
    assert len(calls) == len(STEPS) and traj["task"].startswith("xr.where drops attributes")
    assert cut_at(traj["messages"]) == 2 + 2 * 4  # after the 4th call's result


def test_fetch_brings_each_file_back_byte_for_byte_and_refuses_another(tmp_path: Path) -> None:
    origin = tmp_path / "origin" / "someone" / "runs"
    origin.mkdir(parents=True)
    body = json.dumps(trajectory()).encode()
    (origin / "run.traj.json").write_bytes(body)
    git = ["git", "-C", str(origin), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(origin)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "runs"], check=True)
    blob = subprocess.run([*git, "rev-parse", "HEAD:run.traj.json"], capture_output=True,
                          text=True, check=True).stdout.strip()  # fmt: skip
    source = {"file": "someone__runs/model/run.traj.json", "repository": "someone/runs",
              "blob_sha1": blob, "sha256": hashlib.sha256(body).hexdigest()}  # fmt: skip
    sources = tmp_path / "sources.json"
    sources.write_text(json.dumps([source]))
    remote = f"file://{tmp_path / 'origin'}/{{repo}}"
    out = tmp_path / "out"
    assert fetch(sources, out, remote, tmp_path / "cache") == 1
    assert (out / source["file"]).read_bytes() == body
    sources.write_text(json.dumps([{**source, "sha256": "0" * 64}]))
    with pytest.raises(SystemExit, match="not the one recorded"):
        fetch(sources, out, remote, tmp_path / "cache")


def test_compression_and_the_next_file_need_no_labels(tmp_path: Path) -> None:
    directory = tmp_path / "runs"
    directory.mkdir()
    (directory / "run.traj.json").write_text(json.dumps(trajectory()))
    (row,) = compress(directory, 300)["rows"]
    assert row["summary_tokens"] <= 300 and row["compression"] > 0
    rows = follow(directory, 300)["rows"]
    # Cut before calls 3, 4 and 5 of 7 (30%, 50%, 70%): the edit, the first run of a script
    # never named before (no summary can name it), the reading after the run.
    assert [(r["files"], r["hit"]) for r in rows] == [
        (["computation.py"], True), (["reproduce_issue.py"], False), (["computation.py"], True),
    ]  # fmt: skip
