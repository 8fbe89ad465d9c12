"""Bad command-line input: one clear line on stderr and the error's exit code, never a
traceback. Checkpoint input is refused as HTTP refuses the same body."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import SAMPLE, cli_env, write_tree

from ctxsvc.cli import main
from ctxsvc.cli import sessions as cli_sessions

SURROGATE = b'[{"role": "user", "content": "fix \\ud800 in a.py"}]'
DEEP = b"[" * 50_000 + b"]" * 50_000
Run = Callable[..., tuple[int, str, str]]
DEEP_MESSAGE = (
    b'[{"role": "user", "content": "x", "tool": ' + b"[" * 500 + b"1" + b"]" * 500 + b"}]"
)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A data directory with the sample repository indexed (no vectors)."""
    tmp = tmp_path_factory.mktemp("cli_input")
    write_tree(tmp / "demo", SAMPLE)
    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith("CTXSVC_")]:
            mp.delenv(key)
        assert main(["--home", str(tmp / "home"), "index", str(tmp / "demo"), "--no-vectors"]) == 0
        yield tmp / "home"


@pytest.fixture
def ctxsvc(home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Run:
    """``ctxsvc ARGS`` in process: (exit code, stdout, stderr)."""
    for key in [k for k in os.environ if k.startswith("CTXSVC_")]:
        monkeypatch.delenv(key)
    capsys.readouterr()

    def run(*args: str) -> tuple[int, str, str]:
        code = main(["--home", str(home), *args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def session(ctxsvc: Run) -> str:
    code, out, err = ctxsvc("session", "start", "demo", "--task", "fix the store")
    assert code == 0, err
    return str(out.strip())


def refused(err: str, code: int, expected: int = 2) -> list[str]:
    """The error lines of ``err``, checked: one error, no traceback, the exit code."""
    assert code == expected, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error (")]
    assert len(lines) == 1, err
    return lines


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (SURROGATE, "messages[0].content is not valid Unicode text"),
        (b'[{"role": "user", "content": "x", "\\udfff": 1}]', "a key of messages[0] is not valid"),
        (DEEP, "nested too deeply"),
        (DEEP_MESSAGE, "is nested deeper than 100 levels"),
        (b'[{"role": "user", "content": "caf\xe9"}]', "not UTF-8 text (byte 0xe9 at offset 33)"),
        (b'[{"role": "user", "content": "x"', "not JSON: Expecting ',' delimiter"),
        (b"[" + b"1" * 5000 + b"]", "cannot be read: Exceeds the limit"),
        (b'{"goal": "x"}', "--messages: Input should be a valid list"),
        (b"[1]", "--messages[0]: Input should be a valid dictionary"),
    ],
    ids=["surrogate", "surrogate-key", "50k-deep", "deep-message", "latin-1", "truncated",
         "huge-number", "object", "not-a-message"],
)  # fmt: skip
def test_bad_messages_are_refused_in_one_line(
    ctxsvc: Run, tmp_path: Path, data: bytes, says: str
) -> None:
    sid = session(ctxsvc)
    path = tmp_path / "messages.json"
    path.write_bytes(data)
    code, _, err = ctxsvc("checkpoint", "write", sid, "--messages", str(path))
    [line] = refused(err, code)
    assert "invalid_request" in line and says in line
    assert "fix" not in line  # the message's text is never quoted


@pytest.mark.parametrize(
    ("target", "says"),
    [
        ("missing.json", "cannot read messages from {}: No such file or directory"),
        (".", "cannot read messages from {}: Is a directory"),
    ],
)
def test_unreadable_messages_files(ctxsvc: Run, tmp_path: Path, target: str, says: str) -> None:
    sid = session(ctxsvc)
    path = str(tmp_path / target)
    code, _, err = ctxsvc("checkpoint", "write", sid, "--messages", path)
    [line] = refused(err, code)
    assert says.format(path) in line


def test_huge_messages_input_is_refused_before_it_is_parsed(
    ctxsvc: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli_sessions, "MAX_INPUT_BYTES", 1000)
    sid = session(ctxsvc)
    path = tmp_path / "big.json"
    path.write_bytes(b'[{"role": "user", "content": "' + b"x" * 2000 + b'"}]')
    code, _, err = ctxsvc("checkpoint", "write", sid, "--messages", str(path))
    [line] = refused(err, code)
    assert "larger than" in line
    code, _, err = ctxsvc("checkpoint", "write", sid, "--messages", "/dev/zero")
    [line] = refused(err, code)
    assert "/dev/zero are larger than" in line


def test_messages_from_stdin(ctxsvc: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    sid = session(ctxsvc)

    def stdin(data: bytes) -> io.TextIOWrapper:
        return io.TextIOWrapper(io.BytesIO(data), encoding="utf-8")

    monkeypatch.setattr(sys, "stdin", stdin(SURROGATE))
    code, _, err = ctxsvc("checkpoint", "write", sid, "--messages", "-")
    [line] = refused(err, code)
    assert "messages[0].content is not valid Unicode text" in line
    monkeypatch.setattr(sys, "stdin", stdin(b'[{"role": "user", "content": "\xff"}]'))
    code, _, err = ctxsvc("checkpoint", "write", sid, "--messages", "-")
    [line] = refused(err, code)
    assert "messages from stdin are not UTF-8 text (byte 0xff" in line
    good = b'[{"role": "user", "content": "Fix Store.get in app/store.py"}]'
    monkeypatch.setattr(sys, "stdin", stdin(good))
    code, _, err = ctxsvc("checkpoint", "write", sid, "--messages", "-")
    assert code == 0, err


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--goal", "x" * 2001], "--goal: "),
        (
            ["--goal", "g", "--budget", "10"],
            "--budget: Input should be greater than or equal to 20",
        ),
        (["--goal", "g", "--budget", "999999999999999999999999"], "--budget: "),
        (["--goal", "g", "--key", "a key"], "invalid Idempotency-Key"),
        (["--goal", "g\udcff"], "argument --goal: not UTF-8 text (byte 0xff at character 2)"),
        (["--todo", "ok", "--todo", "\udce9t\udce9"], "argument --todo: not UTF-8 text (byte 0xe9"),
        (["--goal", "g", "--key", "k\udcff"], "argument --key: not UTF-8 text"),
    ],
)
def test_bad_checkpoint_fields_are_refused_as_http_refuses_them(
    ctxsvc: Run, args: list[str], says: str
) -> None:
    sid = session(ctxsvc)
    code, _, err = ctxsvc("checkpoint", "write", sid, *args)
    [line] = refused(err, code)
    assert says in line


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["query", "demo", "how \udcff"], 2, "argument question: not UTF-8 text"),
        (["query", "demo", "x", "--include", "\udcff*"], 2, "argument --include: not UTF-8"),
        (["query", "demo", "x", "--budget", "-1"], 2, "budget_tokens must be between 0 and"),
        (["query", "demo", "x", "--budget", "9" * 30], 2, "budget_tokens must be between 0 and"),
        (["query", "demo", "x", "--budget", "lots"], 2, "argument --budget: invalid int value"),
        (["query", "demo", "x", "--detail", "[bold]all"], 2, "invalid choice: '[bold]all'"),
        (["query", "demo"], 2, "the following arguments are required: question"),
        (["expand", "demo", "--path", "app/store.py", "--lines", "1-" + "9" * 30], 2,
         "lines are 1 to 10000000"),
        (["expand", "demo", "--path", "app/store.py", "--lines", "0-3"], 2, "lines are 1 to"),
        (["expand", "demo", "--symbol", "Store\udcff"], 2, "argument --symbol: not UTF-8"),
        (["checkpoint", "show", "s-none", "--number", "9" * 30], 2,
         "a checkpoint number is between 1 and 10000000"),
        (["checkpoint", "show", "s-none", "--number", "-1"], 2, "a checkpoint number is between"),
        (["checkpoint", "resume", "s-none", "--budget", "-5"], 2, "budget_tokens must be"),
        (["session", "start", "demo", "--task", "t\udcff"], 2, "argument --task: not UTF-8"),
        (["workspace", "record", "ws", "renamed \udcff to y"], 2, "argument text: not UTF-8"),
        (["workspace", "log", "ws", "--after", "9" * 30], 2, "after must be between 0 and"),
        (["status", "nope\udcff"], 3, "no index named or rooted at 'nope\\udcff'"),
        (["index", "/nonexistent\udcff", "--no-vectors"], 2, "does not exist"),
        (["serve", "--port", "9" * 30], 2, "invalid port"),
    ],
)  # fmt: skip
def test_bad_arguments_of_every_command(ctxsvc: Run, args: list[str], code: int, says: str) -> None:
    got, _, err = ctxsvc(*args)
    [line] = refused(err, got, code)
    assert says in line, err
    assert "usage:" not in err  # argparse's errors are one line like the others


def test_a_data_directory_that_is_not_utf8_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in [k for k in os.environ if k.startswith("CTXSVC_")]:
        monkeypatch.delenv(key)
    code = main(["--home", str(tmp_path / "h\udcff"), "status"])
    [line] = refused(capsys.readouterr().err, code)
    assert "argument --home: not UTF-8 text" in line
    monkeypatch.setenv("CTXSVC_HOME", str(tmp_path / "h\udcff"))
    code = main(["status"])
    [line] = refused(capsys.readouterr().err, code)
    assert "is not a UTF-8 path" in line


def test_a_session_without_checkpoints_says_so(ctxsvc: Run) -> None:
    sid = session(ctxsvc)
    code, _, err = ctxsvc("checkpoint", "show", sid)
    [line] = refused(err, code, 3)
    assert f"session '{sid}' has no checkpoint yet" in line and "no a " not in line


def test_non_utf8_argv_from_a_real_process(home: Path, tmp_path: Path) -> None:
    """The bytes as a shell passes them, and checkpoint input a real process reads."""
    (tmp_path / "m.json").write_bytes(SURROGATE)
    (tmp_path / "deep.json").write_bytes(DEEP)
    env = cli_env(home)
    runs = [
        ([b"query", b"demo", b"how \xff works"], b"argument question: not UTF-8 text"),
        ([b"checkpoint", b"write", b"s-x", b"--messages", str(tmp_path / "m.json").encode()],
         b"messages[0].content is not valid Unicode text"),
        ([b"checkpoint", b"write", b"s-x", b"--messages", str(tmp_path / "deep.json").encode()],
         b"nested too deeply"),
    ]  # fmt: skip
    for args, says in runs:
        r = subprocess.run(
            [sys.executable.encode(), b"-m", b"ctxsvc", *args],
            env=env, capture_output=True, timeout=300,
        )  # fmt: skip
        assert r.returncode == 2, r.stderr.decode(errors="replace")
        assert b"Traceback" not in r.stderr and says in r.stderr
