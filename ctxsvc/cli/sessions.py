"""The commands of agent memory: ``session``, ``checkpoint`` and ``workspace``."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.table import Table

from ctxsvc.cli.render import err, out, write_exact
from ctxsvc.compose import build_service
from ctxsvc.errors import InvalidRequest
from ctxsvc.limits import MAX_EVENTS
from ctxsvc.settings import Settings


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
        out.print(f"#{e.seq} {e.created_at[:19]}Z {e.kind} by {who}: {e.text}", highlight=False)
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
        messages: Any = None
        if args.messages:
            try:
                raw = sys.stdin.read() if args.messages == "-" else Path(args.messages).read_text()
                messages = json.loads(raw)
            except (OSError, ValueError) as exc:
                raise InvalidRequest(
                    f"cannot read messages from {args.messages}: {exc}",
                    hint="give a JSON file holding a list of chat messages",
                ) from None
            if isinstance(messages, dict) and isinstance(messages.get("messages"), list):
                messages = messages["messages"]
        fields = {
            k: v
            for k, v in {
                "goal": args.goal, "done": args.done, "decisions": args.decision,
                "open_tasks": args.todo, "next_step": args.next_step, "notes": args.note,
            }.items()
            if v
        }  # fmt: skip
        cp = service.write_checkpoint(args.session, messages, fields, args.key, args.budget)
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
                c.summary.goal,
            )  # fmt: skip
        out.print(t)
        return 0
    elif args.action == "resume":
        session = service.session(args.session)
        resumed = build_service(settings, for_repo=session.repo)
        result = resumed.resume(args.session, args.budget, refresh=not args.no_refresh)
        if args.json:
            out.print_json(json.dumps(asdict(result)))
        else:
            write_exact(result.rendered)
            err.print(f"[bold]{result.tokens_used}/{result.budget_tokens} tokens[/]")
            if result.refreshed:
                err.print(f"re-indexed first: {len(result.refreshed)} files changed on disk")
            for d in result.degraded:
                err.print(f"[bold yellow]degraded[/]: {d}")
            for w in result.warnings:
                err.print(f"[bold yellow]changed by another session[/]: [{w.subject}] {w.message}")
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
