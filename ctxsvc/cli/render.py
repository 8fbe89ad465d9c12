"""What the command line prints: tables and packs for people, JSON for programs."""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ctxsvc.models import place

if TYPE_CHECKING:
    from ctxsvc.models import ContextPack, IndexSummary, RepoStatus, SearchResult

# Messages are not wrapped when stderr is a file or pipe: one event, one line, greppable.
# Both read markup: text that is data (names, paths, messages, hints: "ctxsvc[bench]") goes
# through literal(), or rich.markup.escape right before a tag, or it loses any [tag] in it.
err = Console(stderr=True, highlight=False, soft_wrap=not sys.stderr.isatty())
out = Console(highlight=False, soft_wrap=True)


def literal(text: str) -> str:
    """Markup that prints ``text`` as it is, where no tag follows it (right before a tag,
    use ``rich.markup.escape``). escape doubles a final backslash, lest it escape the
    ``[`` of a tag that may follow: at the end of a line that would print two, so the
    text is escaped with a space after it, which is then cut off."""
    return escape(text + " ")[:-1]


def print_summary(s: IndexSummary) -> None:
    t = Table(title=literal(f"indexed {s.repo} ({s.root})"), show_header=False)
    t.add_row(
        "commit", literal(place(s.branch, s.commit)) if s.commit else "(not a git repository)"
    )
    t.add_row(
        "files",
        f"{s.files_seen} seen, {s.files_indexed} parsed, {s.files_unchanged} unchanged, "
        f"{s.files_deleted} deleted",
    )
    skipped = ", ".join(f"{k} {v}" for k, v in sorted(s.skipped.items())) or "none"
    t.add_row("skipped", literal(skipped))
    t.add_row("syntax errors", f"{s.files_with_syntax_errors} files (partial trees used)")
    t.add_row(
        "index",
        f"{s.chunks} chunks, {s.tokens} tokens, {s.symbols} symbols, {s.references} references",
    )
    t.add_row(
        "vectors",
        literal(f"{s.vectors} ({s.model}); {s.chunks_embedded} embedded, {s.chunks_reused} reused"),
    )
    t.add_row("seconds", ", ".join(f"{x.stage} {x.seconds:.2f}" for x in s.timings))
    out.print(t)
    for w in s.warnings:
        err.print(f"[bold yellow]warning[/]: {literal(w)}")
    if s.vectors == "partial" and s.vectors_missing:
        err.print(
            f"[bold yellow]partial[/]: {s.vectors_missing} chunks have no vector yet; queries "
            "rank them by full text, symbols and the graph until they do."
        )
    if s.vectors == "missing":
        err.print(
            "[bold yellow]DEGRADED[/]: vectors are missing; queries use full text and symbols only. "
            "Run `ctxsvc index` again once the model loads."
        )


def print_status(s: RepoStatus) -> None:
    t = Table(title=literal(f"{s.name} ({s.root})"), show_header=False)
    t.add_row(
        "indexed", literal(f"{s.indexed_at}, {place(s.branch, s.commit)}, generation {s.version}")
    )
    for b in s.snapshots:
        t.add_row(
            "kept", literal(f"{place(b.branch, b.commit)}, indexed {b.indexed_at} (--branch)")
        )
    t.add_row("contents", f"{s.files} files, {s.chunks} chunks, {s.symbols} symbols")
    t.add_row(
        "vectors",
        literal(f"{s.vectors} ({s.model}, {s.dimension} dims); tokenizer {s.tokenizer}"),
    )
    fresh = (
        "up to date"
        if not (s.changed or s.added or s.deleted)
        else (
            f"{len(s.changed)} changed, {len(s.added)} added, {len(s.deleted)} deleted since indexing"
        )
    )
    t.add_row("freshness", fresh)
    t.add_row(
        "skipped", literal(", ".join(f"{k} {v}" for k, v in sorted(s.skipped.items())) or "none")
    )
    t.add_row("degraded", literal("; ".join(s.degraded) or "no"))
    if (w := s.watch) is not None:  # said by a server that watches it
        last = f"last run {w.last_run_at} ({w.last_run_seconds} s)" if w.last_run_at else "no run"
        error = f"; last failure {w.last_error_at}: {w.last_error}" if w.last_error else ""
        t.add_row("watch", literal(f"{w.state} since {w.since}, {w.runs} runs, {last}{error}"))
    out.print(t)


def render(args: argparse.Namespace, pack: ContextPack, ms: float) -> int:
    if args.json:
        out.print_json(json.dumps(asdict(pack)))
    elif args.markdown:
        write_exact(pack.rendered)
    else:
        print_pack(pack, ms)
    return 0


def write_exact(text: str) -> None:
    """Write ``text`` to stdout as it is, ending in one newline.

    Not through rich, which expands tabs and drops control characters: code
    must reach the reader byte for byte, and ``tokens_used`` counts this text.
    """
    # UTF-8 whatever the locale: indexed text was decoded from it (or marked lossy).
    data = text.encode("utf-8", "replace")
    stdout = sys.stdout
    stdout.flush()
    if data and not data.endswith(b"\n"):
        data += b"\n"
    buffer = getattr(stdout, "buffer", None)
    if buffer is not None:
        buffer.write(data)
        buffer.flush()
    else:  # a text-only stream (a test's StringIO)
        stdout.write(data.decode("utf-8"))
        stdout.flush()


def print_pack(p: ContextPack, ms: float) -> None:
    write_exact(p.rendered)
    left = [o for o in p.omitted if o.reason == "budget"]
    holes = len(p.omitted) - len(left)
    marked = f", {holes} hole{'s' if holes > 1 else ''} marked in them" if holes else ""
    err.print(
        f"[bold]{len(p.items)} snippets{marked}, {p.tokens_used}/{p.budget_tokens} tokens "
        f"({p.encoding}), {len(left)} more candidates left out, {ms:.0f} ms[/]"
        + (f" [dim]index: {escape(place(p.index.branch, p.index.commit))}[/]" if p.index else "")
    )
    several = len(p.repos) > 1
    for o in left[:5]:
        where = f"{o.repo}: " if several else ""
        err.print(
            literal(
                f"  left out: {where}{o.path}:{o.start_line}-{o.end_line} {o.symbol or ''} "
                f"({o.tokens} tokens)"
            )
        )
    versions = list(p.indexes.values()) or ([p.index] if p.index else [])
    if changed := sum(len(v.changed_since) for v in versions):
        err.print(f"[yellow]{changed} files changed on disk since indexing[/]")
    for d in p.degraded:
        err.print(f"[bold yellow]degraded[/]: {literal(d)}")
    for w in p.warnings:
        err.print(
            f"[bold yellow]changed by another session[/]: {literal(f'[{w.subject}] {w.message}')}"
        )


def print_search(result: SearchResult, as_json: bool) -> int:
    """A search's files and symbols, best first (each after its index, over several)."""
    if as_json:
        out.print_json(json.dumps(asdict(result)))
        return 0

    def where(repo: str) -> str:
        return literal(f"{repo}: ") if len(result.repos) > 1 else ""

    out.print(f"[bold]files[/] for {literal(repr(result.query))} in {literal(result.repo)}:")
    for f in result.files:
        out.print(f"  {f.score:.3f}  {where(f.repo)}{literal(f.path)}")
    out.print("[bold]symbols[/]:")
    for s in result.symbols:
        sym = s.symbol
        out.print(f"  {s.score:.3f}  {where(s.repo)}{literal(s.id)}  {sym.kind}, lines "
                  f"{sym.start_line}-{sym.end_line}")  # fmt: skip
    for d in result.degraded:
        err.print(f"[bold yellow]degraded[/]: {literal(d)}")
    return 0


# ANSI escape sequences (CSI: colours, cursor moves; OSC: titles, links), for terminals only.
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?)")


def strip_ansi(text: str) -> str:
    """``text`` without ANSI escape sequences."""
    return _ANSI.sub("", text) if "\x1b" in text else text


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and extra fields, and for
    a record with an exception its type, message and traceback.

    Terminal decoration stays out: uvicorn's ``color_message`` (its message again, with
    ANSI colours) is dropped, and escape sequences are removed from every string.
    """

    _STD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}
    # Extra fields that only repeat the message for a terminal.
    _DROPPED = frozenset({"color_message"})

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        data.update(
            {
                k: v
                for k, v in record.__dict__.items()
                if k not in self._STD and k not in self._DROPPED
            }
        )
        if record.exc_info and record.exc_info[1] is not None:  # a 500 says what broke
            exc = record.exc_info[1]
            data["error_type"] = type(exc).__qualname__
            data["error"] = str(exc)
            data["traceback"] = self.formatException(record.exc_info)
        return json.dumps(_plain(data), default=str)


def _plain(value: object) -> object:
    """``value`` with its strings stripped of escape sequences, in lists and dicts too
    (json.dumps would write each ESC as ``\\u001b``, still a colour code to a terminal)."""
    if isinstance(value, str):
        return strip_ansi(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


class PlainLogFormatter(logging.Formatter):
    """``LEVEL logger: message``; without escape sequences unless ``tty`` (a terminal)."""

    def __init__(self, tty: bool) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")
        self.tty = tty

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        return line if self.tty else strip_ansi(line)


def configure_logging(as_json: bool) -> None:
    """Every record to stderr, JSON lines or plain ones. uvicorn's loggers propagate here
    (its servers are built with ``log_config=None`` and ``use_colors=False``)."""
    handler = logging.StreamHandler(sys.stderr)
    if as_json:
        handler.setFormatter(JsonLogFormatter())
        level = logging.INFO
    else:
        handler.setFormatter(PlainLogFormatter(tty=_isatty(sys.stderr)))
        level = logging.WARNING
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Third-party chatter (model loading, HTTP retries) stays out of the way.
    for noisy in ("sentence_transformers", "transformers", "httpx", "urllib3", "lancedb"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no such method, or a closed stream
        return False
