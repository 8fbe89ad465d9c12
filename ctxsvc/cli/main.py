"""The ``ctxsvc`` command line: parse, call the service, render.

Exit codes: 0 success (also a degraded index, which is reported on stderr
and in ``--json``), 1 internal error, 2 bad input or configuration (a
malformed command line too), 3 no such index, 4 embedding model mismatch
(re-run with ``--reembed``), 5 the embedding model cannot load, 74 storage
failure (retryable, unless the store is damaged: ``store_corrupt``), 75 the
repository is being indexed by another process (retryable), 130 interrupted.
Every failure is one line on stderr (and a hint), never a traceback.
``bench`` adds no code of its own: a path that is not a git repository is 2,
a history with no task in it is 2 (``no_tasks``).

This module imports only the parser, the errors and the settings: each command
imports what it needs when it runs, so ``--help``, a bad flag or a ``status``
of an empty data directory start in a fraction of a second.
"""

from __future__ import annotations

import argparse
import tempfile
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from ctxsvc.cli.parser import build_parser
from ctxsvc.cli.render import configure_logging, err, literal
from ctxsvc.errors import ConfigError, CtxError
from ctxsvc.settings import Settings

EXIT_INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
        args, unknown = parser.parse_known_args(argv)
        if args.command == "hook":  # before the settings: a hook answers for its own failures
            from ctxsvc.cli.hook import hook

            return hook(args, unknown)
        if unknown:
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        configure_logging(args.log_json)
        settings = Settings.from_env(
            home=Path(args.home) if args.home else None,
            config=args.config,
            embed_executor=getattr(args, "executor", None),  # `index --executor`
        )
        if not _is_utf8(str(settings.home)):  # LanceDB and SQLite take UTF-8 paths only
            raise ConfigError(
                f"the data directory {settings.home} is not a UTF-8 path",
                hint="choose another with --home or CTXSVC_HOME",
            )
        return _run(args, settings)
    except CtxError as exc:
        retry = ", retryable" if exc.retryable else ""
        err.print(f"[bold red]error[/] ({exc.code}{retry}): {_quoted(exc.message)}")
        if exc.hint:
            err.print(f"  hint: {_quoted(exc.hint)}")
        return exc.exit_code
    except KeyboardInterrupt:
        err.print(
            "interrupted: the last committed index is intact; run the command again to resume"
        )
        return EXIT_INTERRUPTED
    except Exception as exc:  # the adapter's edge: a bug, said in one line, kept whole
        with tempfile.NamedTemporaryFile(
            "w", prefix="ctxsvc-crash-", suffix=".log", delete=False
        ) as fh:
            traceback.print_exc(file=fh)
        err.print(f"[bold red]error[/] (internal): {_quoted(f'{type(exc).__name__}: {exc}'[:500])}")
        err.print(f"  hint: a bug in ctxsvc; its traceback is in {_quoted(fh.name)}: report it")
        return CtxError.exit_code


def _run(args: argparse.Namespace, settings: Settings) -> int:
    """The command ``args`` names, its module imported only now."""
    if args.command in ("session", "checkpoint", "workspace"):
        from ctxsvc.cli import sessions

        command = sessions.workspace if args.command == "workspace" else sessions.checkpoint
        return command(args, settings)
    from ctxsvc.cli import run

    commands: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
        "index": run.index, "status": run.status, "query": run.query, "expand": run.expand,
        "search": run.search,
        "impact": run.impact, "references": run.references, "definition": run.definition,
        "serve": run.serve, "mcp": run.mcp, "bench": run.bench,
        "watch": run.watch,
    }  # fmt: skip
    return commands[args.command](args, settings)


def _quoted(text: str) -> str:
    """``text`` for the console: input it quotes (names, paths, argparse's words) is never
    read as markup, and bytes that are not UTF-8 are shown escaped (``\\xff``)."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that no argv byte gives (JSON's \\ud800)
        raw = text.encode("utf-8", "backslashreplace")
    return literal(raw.decode("utf-8", "backslashreplace"))


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
