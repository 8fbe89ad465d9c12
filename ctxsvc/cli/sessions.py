"""The commands of agent memory: ``session``, ``checkpoint`` and ``workspace``."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Any

from pydantic import ValidationError
from rich.table import Table

from ctxsvc.cli.render import err, literal, out, write_exact
from ctxsvc.cli.run import await_model
from ctxsvc.compose import build_service
from ctxsvc.errors import InvalidRequest
from ctxsvc.limits import MAX_EVENTS, check_budget
from ctxsvc.schemas import CheckpointRequest
from ctxsvc.settings import Settings

MAX_INPUT_BYTES = 64 * 1024 * 1024  # a messages file; 20,000 long messages fit
# The options of `checkpoint write`, by the fields of the HTTP request they fill.
OPTIONS = {
    "messages": "--messages", "goal": "--goal", "constraints": "--constraint", "done": "--done",
    "decisions": "--decision",
    "open_tasks": "--todo", "next_step": "--next", "notes": "--note", "budget_tokens": "--budget",
}  # fmt: skip


def workspace(args: argparse.Namespace, settings: Settings) -> int:
    service = build_service(settings, vectors=False)
    if args.action == "record":
        event, _ = service.record_event(
            args.workspace, args.text, kind=args.kind, session_id=args.session,
            idempotency_key=args.key,
        )  # fmt: skip
        events = [event]
    else:
        events = service.workspace_events(args.workspace, after=args.after, limit=MAX_EVENTS)
    if args.json:
        out.print_json(json.dumps([asdict(e) for e in events]))
        return 0
    for e in events:
        who = "re-index" if e.source == "index" else (e.agent or e.session_id or "agent")
        out.print(
            literal(f"#{e.seq} {e.created_at[:19]}Z {e.kind} by {who}: {e.text}"), highlight=False
        )
    return 0


def checkpoint(args: argparse.Namespace, settings: Settings) -> int:
    service = build_service(settings, vectors=False)
    if args.command == "session":
        session = service.start_session(args.repo, args.task, args.agent, args.workspace)
        if args.json:
            out.print_json(json.dumps(asdict(session)))
        else:
            out.print(session.id)
        return 0
    if args.action == "write":
        messages = read_messages(args.messages) if args.messages else None
        fields = {
            k: v
            for k, v in {
                "goal": args.goal, "constraints": args.constraint, "done": args.done,
                "decisions": args.decision,
                "open_tasks": args.todo, "next_step": args.next_step, "notes": args.note,
            }.items()
            if v
        }  # fmt: skip
        request = checkpoint_request(messages, fields, args.budget)
        cp = service.write_checkpoint(
            args.session, request.messages, request.fields(), args.key, request.budget_tokens
        )
    elif args.action == "list":
        cps = service.checkpoints(args.session)
        if args.json:
            out.print_json(json.dumps([{**asdict(c), "transcript": []} for c in cps]))
            return 0
        t = Table(title=f"checkpoints of {args.session}")
        for col in ("#", "created", "transcript tokens", "summary tokens", "goal"):
            t.add_column(col)
        for c in cps:
            t.add_row(
                str(c.number), c.created_at, str(c.transcript_tokens), str(c.summary.tokens),
                literal(c.summary.goal),
            )  # fmt: skip
        out.print(t)
        return 0
    elif args.action == "resume":
        check_budget(args.budget)  # as HTTP does, before the session is looked up
        session = service.session(args.session)
        resumed = build_service(settings, for_repo=session.repo, preload=True)
        await_model(resumed, session.repo, settings)
        result = resumed.resume(args.session, args.budget, refresh=not args.no_refresh)
        if args.json:
            out.print_json(json.dumps(asdict(result)))
        else:
            write_exact(result.rendered)
            err.print(f"[bold]{result.tokens_used}/{result.budget_tokens} tokens[/]")
            if result.refreshed:
                err.print(f"re-indexed first: {len(result.refreshed)} files changed on disk")
            for d in result.degraded:
                err.print(f"[bold yellow]degraded[/]: {literal(d)}")
            for w in result.warnings:
                err.print(
                    "[bold yellow]changed by another session[/]: "
                    + literal(f"[{w.subject}] {w.message}")
                )
        return 0
    else:
        cp = service.checkpoint(args.session, args.number)
    if args.json:
        out.print_json(json.dumps(asdict(cp)))
    else:
        out.out(cp.summary.rendered, highlight=False)
        err.print(
            f"[bold]checkpoint {cp.number} of {cp.session_id}, {cp.created_at}: "
            f"{cp.transcript_tokens} transcript tokens -> {cp.summary.tokens} summary tokens[/]"
        )
    return 0


def read_messages(source: str) -> Any:
    """The JSON value of the file ``source`` ('-': stdin): its ``messages`` when it is an
    object holding them. ``InvalidRequest`` for what cannot be read as JSON, saying why
    and never quoting the content."""
    where = "stdin" if source == "-" else source
    hint = "give a JSON file (UTF-8) holding a list of chat messages"
    try:
        if source == "-":
            stream = getattr(sys.stdin, "buffer", None)
            data = (
                stream.read(MAX_INPUT_BYTES + 1)
                if stream is not None
                else sys.stdin.read(MAX_INPUT_BYTES + 1).encode("utf-8", "surrogateescape")
            )
        else:
            with open(source, "rb") as f:
                data = f.read(MAX_INPUT_BYTES + 1)
    except OSError as exc:
        raise InvalidRequest(
            f"cannot read messages from {where}: {exc.strerror or exc}", hint=hint
        ) from None
    if len(data) > MAX_INPUT_BYTES:
        raise InvalidRequest(
            f"messages from {where} are larger than {MAX_INPUT_BYTES // 2**20} MiB",
            hint="checkpoint more often: send only the messages since the last checkpoint",
        )
    try:
        raw = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(
            f"messages from {where} are not UTF-8 text (byte 0x{data[exc.start]:02x}"
            f" at offset {exc.start})",
            hint=hint,
        ) from None
    try:
        messages = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(
            f"messages from {where} are not JSON: {exc.msg} at line {exc.lineno},"
            f" column {exc.colno}",
            hint=hint,
        ) from None
    except (ValueError, RecursionError) as exc:  # 5,000-digit numbers, 50,000-deep arrays
        why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise InvalidRequest(f"messages from {where} cannot be read: {why}", hint=hint) from None
    if isinstance(messages, dict) and isinstance(messages.get("messages"), list):
        messages = messages["messages"]
    return messages


def checkpoint_request(
    messages: Any, fields: dict[str, Any], budget_tokens: int
) -> CheckpointRequest:
    """The arguments of `checkpoint write`, checked as HTTP checks its request body."""
    try:
        return CheckpointRequest.model_validate(
            {"messages": [] if messages is None else messages, **fields,
             "budget_tokens": budget_tokens}
        )  # fmt: skip
    except ValidationError as exc:
        problems = []
        for e in exc.errors()[:5]:
            loc = list(e.get("loc", ()))
            name = OPTIONS.get(str(loc[0]), str(loc[0])) if loc else "the request"
            where = name + "".join(f"[{p}]" for p in loc[1:])
            problems.append(f"{where}: {e['msg']}")
        raise InvalidRequest(
            "; ".join(problems), hint="see `ctxsvc checkpoint write --help`"
        ) from None
