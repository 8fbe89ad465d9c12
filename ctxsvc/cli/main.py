"""The ``ctxsvc`` command line: parse, call the service, render.

Exit codes: 0 success (also a degraded index, which is reported on stderr
and in ``--json``), 1 internal error, 2 bad input or configuration, 3 no
such index, 4 embedding model mismatch (re-run with ``--reembed``), 5 the
embedding model cannot load, 74 storage failure (retryable), 75 the
repository is being indexed by another process (retryable), 130 interrupted.
``bench`` adds no code of its own: a path that is not a git repository is 2,
a history with no task in it is 2 (``no_tasks``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ctxsvc.cli import run, sessions
from ctxsvc.cli.parser import build_parser
from ctxsvc.cli.render import configure_logging, err
from ctxsvc.errors import CtxError
from ctxsvc.settings import Settings

EXIT_INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_json)
    try:
        settings = Settings.from_env(
            home=Path(args.home) if args.home else None, config=args.config
        )
        if args.command == "index":
            return run.index(args, settings)
        if args.command == "status":
            return run.status(args, settings)
        if args.command == "expand":
            return run.expand(args, settings)
        if args.command == "serve":
            return run.serve(args, settings)
        if args.command == "mcp":
            return run.mcp(args, settings)
        if args.command in ("session", "checkpoint"):
            return sessions.checkpoint(args, settings)
        if args.command == "workspace":
            return sessions.workspace(args, settings)
        if args.command == "bench":
            return run.bench(args, settings)
        return run.query(args, settings)
    except CtxError as exc:
        err.print(
            f"[bold red]error[/] ({exc.code}{', retryable' if exc.retryable else ''}): {exc.message}"
        )
        if exc.hint:
            err.print(f"  hint: {exc.hint}")
        return exc.exit_code
    except KeyboardInterrupt:
        err.print(
            "interrupted: the last committed index is intact; run the command again to resume"
        )
        return EXIT_INTERRUPTED
