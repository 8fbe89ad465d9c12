"""The agent recipes of docs/recipes, run as the agents run them: the hook command of the
Claude Code settings on realistic events, and the MCP servers of the ``mcp.json`` files."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
from conftest import free_port, start_server, stop_server, write_tree
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from test_cli_remote import indexed_home, served_contexts

from ctxsvc.cli.hook import Ask, ask_of, hook, scope_of, terms_of
from ctxsvc.limits import selected
from ctxsvc.tokens import TiktokenCounter

RECIPES = Path(__file__).resolve().parent.parent / "docs" / "recipes"
CLAUDE = RECIPES / "claude-code"
BIN = Path(sys.executable).parent  # where this environment's `ctxsvc` script is
# What the answers must hold: Store.put's body, for a search and a prompt about it.
PUT_BODY = "json.dump(self.data, f)"


def load(path: Path) -> Any:
    return json.loads(path.read_text())


def hook_commands(event: str) -> list[str]:
    """The command hooks the shipped settings.json runs for ``event``."""
    return [
        h["command"]
        for group in load(CLAUDE / "settings.json")["hooks"][event]
        for h in group["hooks"]
        if h["type"] == "command"
    ]


def expand(value: str, variables: dict[str, str]) -> str:
    """``${VAR}`` and ``${VAR:-default}`` expanded, as Claude Code expands .mcp.json (and
    Cursor its ``${workspaceFolder}``); an unknown variable stays as it is."""

    def one(m: re.Match[str]) -> str:
        value = variables.get(m[1])
        return value if value else (m[2] if m[2] is not None else m[0])

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}", one, value)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """The sample repository indexed (full text), and the agent's environment: no model (a
    server is ready at once), and this environment's ``ctxsvc`` first on PATH."""
    repo, env = indexed_home(tmp_path_factory.mktemp("recipes"))
    return repo, on_path(env)


def on_path(env: dict[str, str]) -> dict[str, str]:
    """``env`` with this environment's ``ctxsvc`` first on PATH, as an agent finds it."""
    return {**env, "PATH": os.pathsep.join([str(BIN), env.get("PATH", "")])}


def run_hook(
    command: str, payload: object, cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """``command`` as Claude Code runs a command hook: by the shell, in the project
    directory, the event as JSON on stdin."""
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return subprocess.run(
        command, shell=True, input=data, cwd=cwd, env={**env, "CLAUDE_PROJECT_DIR": str(cwd)},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def event(repo: Path, name: str, **fields: Any) -> dict[str, Any]:
    return {
        "session_id": "9b1c5d2e-0000-4000-8000-000000000001",
        "transcript_path": str(repo.parent / "transcript.jsonl"),
        "cwd": str(repo), "permission_mode": "default", "hook_event_name": name, **fields,
    }  # fmt: skip


def grep_event(repo: Path) -> dict[str, Any]:
    return event(
        repo, "PreToolUse", tool_name="Grep", tool_use_id="toolu_01A",
        tool_input={"pattern": r"json\.dump\(|def put", "path": str(repo / "app"),
                    "glob": "*.py", "output_mode": "content", "-n": True},
    )  # fmt: skip


def prompt_event(repo: Path) -> dict[str, Any]:
    prompt = "Store.put rewrites the whole JSON file on every write; make it append instead."
    return event(repo, "UserPromptSubmit", prompt=prompt)


def injected(done: subprocess.CompletedProcess[str], name: str) -> str:
    """The context an answer of the documented shape adds, for hook event ``name``."""
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert set(out) == {"hookSpecificOutput"}
    specific = out["hookSpecificOutput"]
    assert set(specific) == {"hookEventName", "additionalContext"}  # no permission decision
    assert specific["hookEventName"] == name
    text: str = specific["additionalContext"]
    assert text.startswith("ctxsvc: the code of index demo")
    return text


# -- the files ------------------------------------------------------------------------


def test_the_recipe_files_are_what_the_readme_says() -> None:
    for path in (CLAUDE / ".mcp.json", RECIPES / "cursor" / "mcp.json"):
        server = load(path)["mcpServers"]["ctxsvc"]
        assert server["command"] == "ctxsvc" and server["args"][:2] == ["mcp", "--repo"]
    settings = load(CLAUDE / "settings.json")
    (search,) = settings["hooks"]["PreToolUse"]
    assert search["matcher"] == "Grep|Glob"
    for name in ("PreToolUse", "UserPromptSubmit"):
        (command,) = hook_commands(name)
        assert command.startswith("ctxsvc hook claude-code")
        own = float(command.split("--timeout", 1)[1].split()[0])
        for group in settings["hooks"][name]:
            # Claude Code's deadline (seconds) leaves the hook's own --timeout room to end.
            assert all(h["timeout"] > own for h in group["hooks"])
    assert settings["enabledMcpjsonServers"] == ["ctxsvc"]
    text = (RECIPES / "README.md").read_text()
    for name in ("claude-code/.mcp.json", "claude-code/settings.json", "cursor/mcp.json"):
        assert name in text
    # No machine's paths in what is meant to be copied.
    for path in RECIPES.rglob("*"):
        if path.is_file():
            assert "/home/" not in path.read_text() and "/Users/" not in path.read_text()


@pytest.mark.parametrize(
    ("pattern", "terms"),
    [
        (r"def\s+evict_everything\(", ["evict_everything"]),
        (r"class (Store|Server)\b", ["Store", "Server"]),
        ("**/*.py", []),  # a listing of files asks nothing of the code
        ("**/*store*.ts", ["store"]),
        (r"json\.dump\(|json\.dump", ["json", "dump"]),
    ],
)
def test_the_terms_of_a_pattern(pattern: str, terms: list[str]) -> None:
    assert terms_of(pattern) == terms


def test_events_that_ask_nothing(tmp_path: Path) -> None:
    repo = tmp_path
    for payload in [
        None, [], "text", {"hook_event_name": "PreToolUse"},
        event(repo, "PreToolUse", tool_name="Read", tool_input={"file_path": "/x.py"}),
        event(repo, "PreToolUse", tool_name="Grep", tool_input={"pattern": 42}),
        event(repo, "UserPromptSubmit", prompt="  "),
        {**prompt_event(repo), "cwd": "relative/dir"},
        event(repo, "Stop", stop_hook_active=False),
    ]:  # fmt: skip
        assert ask_of(payload) is None, payload


@pytest.mark.parametrize(
    ("where", "glob", "path", "kept"),
    [
        ("app/[id].py", None, "app/[id].py", True),  # a file searched: that file alone
        ("app/[id].py", None, "app/i.py", False),
        ("pages/[slug]", None, "pages/[slug]/page.ts", True),  # a directory searched
        ("pages/[slug]", None, "pages/s/page.ts", False),
        ("pages/[slug]", "*.ts", "pages/[slug]/deep/page.ts", True),
        (".", "src/**/*.ts", "src/a.ts", True),  # "**/": no directory, or any
        (".", "src/**/*.ts", "src/x/y/b.ts", True),
        (".", "src/**/*.ts", "lib/c.ts", False),
        (".", "a/**/b/**/c.py", "a/b/c.py", True),
        (".", "a/**/b/**/c.py", "a/x/b/c.py", True),
        (".", "a/**/b/**/c.py", "a/b/y/c.py", True),
        (".", "a/**/b/**/c.py", "a/xb/c.py", False),
        (".", "**/*.py", "deep/in/x.py", True),
    ],
)
def test_the_scope_of_a_search_keeps_the_files_searched(
    tmp_path: Path, where: str, glob: str | None, path: str, kept: bool
) -> None:
    root = tmp_path / "r"
    write_tree(root, {"app/[id].py": "", "pages/[slug]/page.ts": ""})
    found = scope_of(Ask("PreToolUse", "q", root / where, glob=glob), [("r", str(root), "c0")])
    assert found is not None
    name, commit, include = found
    assert (name, commit) == ("r", "c0")
    assert selected(path, include, None) is kept


# -- the hook, run by its command ---------------------------------------------------------


def test_the_hook_adds_the_code_a_grep_looks_for(project: tuple[Path, dict[str, str]]) -> None:
    repo, env = project
    (command,) = hook_commands("PreToolUse")
    text = injected(run_hook(command, grep_event(repo), repo, env), "PreToolUse")
    assert PUT_BODY in text and "app/store.py" in text
    assert "web/client.ts" not in text  # kept to the directory and files searched


def test_the_hook_adds_the_code_a_prompt_is_about(project: tuple[Path, dict[str, str]]) -> None:
    repo, env = project
    (command,) = hook_commands("UserPromptSubmit")
    # From a subdirectory: the index whose root holds it answers.
    payload = {**prompt_event(repo), "cwd": str(repo / "app")}
    text = injected(run_hook(command, payload, repo / "app", env), "UserPromptSubmit")
    assert PUT_BODY in text


@pytest.mark.parametrize(
    "payload",
    ["not json {", "", json.dumps({"tool_name": "Grep"}), "\x00\xff", json.dumps([1, 2])],
)
def test_garbage_in_gives_nothing_out(project: tuple[Path, dict[str, str]], payload: str) -> None:
    repo, env = project
    (command,) = hook_commands("PreToolUse")
    done = run_hook(command, payload, repo, env)
    assert done.returncode == 0 and done.stdout == ""


def test_no_index_no_store_or_a_bad_setting_gives_nothing_out(
    project: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    repo, env = project
    (command,) = hook_commands("PreToolUse")
    elsewhere, a_file = tmp_path / "elsewhere", tmp_path / "a-file"
    a_file.write_text("not a directory")
    write_tree(elsewhere, {"x.py": "def put() -> None: ...\n"})
    for cwd, extra in [
        (elsewhere, {}),  # no index holds it
        (repo, {"CTXSVC_HOME": str(tmp_path / "empty-home")}),  # nothing indexed at all
        (repo, {"CTXSVC_PORT": "not a port"}),  # a setting that does not read
        (repo, {"CTXSVC_HOME": str(a_file)}),  # a data directory that is a file
    ]:
        payload = {**grep_event(repo), "cwd": str(cwd)}
        payload["tool_input"] = {"pattern": "def put", "path": str(cwd)}
        done = run_hook(command, payload, cwd, {**env, **extra})
        assert done.returncode == 0 and done.stdout == "", (extra, done.stderr)
        assert "ctxsvc hook: no context" in done.stderr and "Traceback" not in done.stderr
    bad_flag = run_hook("ctxsvc hook claude-code --no-such-flag", grep_event(repo), repo, env)
    assert bad_flag.returncode == 0 and bad_flag.stdout == ""


@pytest.mark.parametrize(
    "command",
    [
        "ctxsvc hook claude-code --timeout nan",
        "ctxsvc hook claude-code --timeout 1e400",
        "ctxsvc hook claude-code --timeout 0",
        "ctxsvc hook claude-code --timeout -1",
        "ctxsvc hook claude-code --timeout 601",
        "ctxsvc hook claude-code --budget -1",
        "ctxsvc hook claude-code --budget 200001",
        "ctxsvc hook claude-code --budget many",
        "ctxsvc hook codex",  # an agent this ctxsvc does not know
        "ctxsvc hook",
    ],
)
def test_a_bad_command_line_gives_nothing_out(
    project: tuple[Path, dict[str, str]], command: str
) -> None:
    repo, env = project
    done = run_hook(command, grep_event(repo), repo, env)
    assert done.returncode == 0 and done.stdout == "", done.stderr
    assert done.stderr.startswith("ctxsvc hook: no context: ") and done.stderr.count("\n") == 1


def test_the_hook_exits_0_whatever_it_meets(capsys: pytest.CaptureFixture[str]) -> None:
    # No --budget: a bug of the caller, met inside the hook, still exit code 0.
    assert hook(argparse.Namespace(timeout=8.0), []) == 0
    assert "ctxsvc hook: no context: AttributeError" in capsys.readouterr().err


@pytest.mark.parametrize("budget", [200, 300, 400])
def test_the_heading_counts_against_the_budget(
    project: tuple[Path, dict[str, str]], budget: int
) -> None:
    repo, env = project
    command = f"ctxsvc hook claude-code --no-server --budget {budget}"
    text = injected(run_hook(command, grep_event(repo), repo, env), "PreToolUse")
    assert TiktokenCounter("cl100k_base").count(text) <= budget


def test_the_hook_gives_up_silently_at_its_deadline(project: tuple[Path, dict[str, str]]) -> None:
    repo, env = project
    # A deadline no answer meets: nothing out, exit 0, said on stderr.
    done = run_hook("ctxsvc hook claude-code --timeout 0.001", grep_event(repo), repo, env)
    assert done.returncode == 0 and done.stdout == ""
    assert "no answer within" in done.stderr


@pytest.fixture
def served(project: tuple[Path, dict[str, str]], tmp_path: Path) -> Iterator[str]:
    """A ``ctxsvc serve`` of the project's data directory, while the test runs."""
    port = free_port()
    proc = start_server(project[1], port, tmp_path / "server.log")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_server(proc)


@pytest.mark.slow
def test_the_hook_asks_a_running_server(project: tuple[Path, dict[str, str]], served: str) -> None:
    repo, env = project
    before = served_contexts(served)
    (command,) = hook_commands("PreToolUse")
    text = injected(run_hook(command, grep_event(repo), repo, env), "PreToolUse")
    assert PUT_BODY in text
    assert served_contexts(served) == before + 1


# -- the MCP servers of the mcp.json files ------------------------------------------------


@pytest.mark.slow
@pytest.mark.anyio
@pytest.mark.parametrize(
    ("recipe", "variables"),
    [
        ("claude-code/.mcp.json", lambda repo: {"CLAUDE_PROJECT_DIR": str(repo)}),
        ("claude-code/.mcp.json", lambda repo: {}),  # unset: "." in the project directory
        ("cursor/mcp.json", lambda repo: {"workspaceFolder": str(repo)}),
    ],
    ids=["claude-code", "claude-code-default", "cursor"],
)
async def test_the_mcp_recipe_starts_a_server_that_answers(
    project: tuple[Path, dict[str, str]], recipe: str, variables: Any, tmp_path: Path
) -> None:
    repo, env = project
    server = load(RECIPES / recipe)["mcpServers"]["ctxsvc"]
    known = variables(repo)
    params = StdioServerParameters(
        command=str(BIN / expand(server["command"], known)),
        args=[expand(a, known) for a in server["args"]],
        env={**env, **{k: expand(v, known) for k, v in server.get("env", {}).items()}},
        cwd=repo,
    )
    with (tmp_path / "stderr.log").open("w+") as errlog:
        async with (
            stdio_client(params, errlog=errlog) as (read, write),
            ClientSession(read, write) as session,
        ):
            init = await session.initialize()
            assert init.server_info.name == "ctxsvc"
            assert init.instructions and "Default repository: demo" in init.instructions
            result = await session.call_tool(
                "get_context", {"query": "Store.put writes the JSON file", "budget_tokens": 800}
            )
    assert isinstance(result, types.CallToolResult) and not result.is_error
    text = "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))
    assert PUT_BODY in text
