"""Log lines carry no terminal decoration: uvicorn's color_message, ANSI escapes."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator

import pytest

from ctxsvc.cli.render import JsonLogFormatter, PlainLogFormatter, configure_logging, strip_ansi

COLOURED = "Uvicorn running on \x1b[1mhttp://127.0.0.1:8765\x1b[0m (Press CTRL+C to quit)"


def uvicorn_record(msg: str = "Started server process [%d]", *args: object) -> logging.LogRecord:
    """A record as uvicorn logs it: the plain message, and the coloured one as an extra."""
    return logging.getLogger("uvicorn.error").makeRecord(
        "uvicorn.error", logging.INFO, "server.py", 103, msg, args, None,
        extra={"color_message": "Started server process [\x1b[36m%d\x1b[0m]"},
    )  # fmt: skip


@pytest.fixture
def root_logging() -> Iterator[None]:
    """configure_logging replaces the root's handlers: put them back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    noisy = {n: logging.getLogger(n).level for n in ("sentence_transformers", "transformers",
                                                      "httpx", "urllib3", "lancedb")}  # fmt: skip
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, was in noisy.items():
        logging.getLogger(name).setLevel(was)


def test_a_json_line_drops_color_message_and_keeps_the_plain_message() -> None:
    line = JsonLogFormatter().format(uvicorn_record("Started server process [%d]", 4242))
    data = json.loads(line)
    assert "color_message" not in data
    assert data["msg"] == "Started server process [4242]" and data["logger"] == "uvicorn.error"
    assert "\x1b[" not in line and "\\u001b" not in line


def test_escape_sequences_in_the_message_or_extras_never_reach_a_json_line() -> None:
    record = logging.getLogger("x").makeRecord(
        "x", logging.WARNING, "f.py", 1, COLOURED, (), None,
        extra={"path": "a\x1b[31mb", "nested": {"k": ["\x1b]0;title\x07v"]}, "n": 3},
    )  # fmt: skip
    line = JsonLogFormatter().format(record)
    assert "\x1b" not in line and "\\u001b" not in line
    data = json.loads(line)
    assert data["msg"] == "Uvicorn running on http://127.0.0.1:8765 (Press CTRL+C to quit)"
    assert data["path"] == "ab" and data["nested"] == {"k": ["v"]} and data["n"] == 3


def test_a_plain_line_has_no_escapes_unless_it_goes_to_a_terminal() -> None:
    record = logging.getLogger("uvicorn.error").makeRecord(
        "uvicorn.error", logging.WARNING, "f.py", 1, COLOURED, (), None
    )
    plain = PlainLogFormatter(tty=False).format(record)
    assert plain == (
        "WARNING uvicorn.error: Uvicorn running on http://127.0.0.1:8765 (Press CTRL+C to quit)"
    )
    assert "\x1b[" in PlainLogFormatter(tty=True).format(record)  # a terminal may colour
    assert "color_message" not in PlainLogFormatter(tty=False).format(uvicorn_record())


def test_strip_ansi_leaves_other_text_alone() -> None:
    assert strip_ansi("[bench] 100% a\tb") == "[bench] 100% a\tb"
    assert strip_ansi("\x1b[1;31mred\x1b[0m \x1b[2K\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\") == (
        "red link"
    )


def test_uvicorn_as_ctxsvc_serve_configures_it_logs_json_without_colours(
    root_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    import uvicorn

    async def app(scope: object, receive: object, send: object) -> None: ...

    configure_logging(True)
    # As ctxsvc serve builds it; bind_socket logs "Uvicorn running on ..." with color_message.
    config = uvicorn.Config(app, host="127.0.0.1", port=0, access_log=False, log_config=None,
                            use_colors=False)  # fmt: skip
    sock = config.bind_socket()
    sock.close()
    for handler in logging.getLogger().handlers:
        handler.flush()
    lines = [json.loads(x) for x in capsys.readouterr().err.splitlines() if x.strip()]
    running = [x for x in lines if x["msg"].startswith("Uvicorn running on")]
    assert running and all("color_message" not in x for x in lines)
    assert "\x1b" not in json.dumps(lines, ensure_ascii=False)


def test_plain_logging_to_a_file_or_pipe_strips_escapes(
    root_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert not sys.stderr.isatty()
    configure_logging(False)
    logging.getLogger("uvicorn.error").warning(COLOURED)
    err = capsys.readouterr().err
    assert "Uvicorn running on http://127.0.0.1:8765" in err and "\x1b" not in err
