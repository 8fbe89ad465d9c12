"""What a session already received: pure functions over hits and the ledger.

An agent calls ``context`` many times in one session. A retrieved chunk whose
lines the session already holds, unchanged, is not sent again: the pack
refers to it by path and lines, and its budget goes to new material. The
rule, applied per hit:

- Only spans delivered to this session for this repository count (the caller
  passes ``SessionLedger.delivered(session_id, repo)``).
- A delivered span counts only while it is *current*: the sha256 of the
  file's present text of its lines equals the hash recorded when it was
  sent. A span of a file changed since is stale and does not cover anything.
- A hit is already sent when its lines ``start_line..end_line`` lie wholly
  inside the union of the current spans of its path. Adjacent spans join
  (lines 1-10 and 11-20 cover 5-15).
- A hit covered only in part is kept and sent whole: half a function is
  worth less than the tokens it saves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ctxsvc.models import DeliveredSpan, Hit, span_hash

CurrentText = Callable[[str, int, int], str | None]
"""``current_text(path, start_line, end_line)``: the present text of those lines
(joined by ``\\n``, no trailing newline, as in ``Chunk.text``), or None when the
file or the lines no longer exist."""


def split_already_sent(
    hits: Sequence[Hit],
    delivered: Sequence[DeliveredSpan],
    current_text: CurrentText,
) -> tuple[list[Hit], list[DeliveredSpan]]:
    """Split ``hits`` into those to send and the delivered spans that replace the rest.

    Returns the hits not wholly covered by current delivered spans, in their
    original order, and the current delivered spans that cover the removed
    hits, each once, in order of first use. ``current_text`` is called at most
    once per delivered span, and only for spans of paths where coverage is
    possible.
    """
    by_path: dict[str, list[DeliveredSpan]] = {}
    for span in delivered:
        by_path.setdefault(span.path, []).append(span)
    for spans in by_path.values():
        spans.sort(key=lambda s: (s.start_line, s.end_line))

    currency: dict[DeliveredSpan, bool] = {}

    def is_current(span: DeliveredSpan) -> bool:
        if span not in currency:
            text = current_text(span.path, span.start_line, span.end_line)
            currency[span] = text is not None and span_hash(text) == span.content_hash
        return currency[span]

    kept: list[Hit] = []
    referenced: dict[DeliveredSpan, None] = {}  # an ordered set
    for hit in hits:
        c = hit.chunk
        touching = [
            s
            for s in by_path.get(c.path, ())
            if s.start_line <= c.end_line and s.end_line >= c.start_line
        ]
        # Cheap test first: hash file text only when coverage is possible at all.
        if not _covers(touching, c.start_line, c.end_line):
            kept.append(hit)
            continue
        current = [s for s in touching if is_current(s)]
        if _covers(current, c.start_line, c.end_line):
            referenced.update(dict.fromkeys(current))
        else:
            kept.append(hit)
    return kept, list(referenced)


def _covers(spans: Sequence[DeliveredSpan], start: int, end: int) -> bool:
    """Whether the union of ``spans`` (sorted by start) contains every line of start..end."""
    need = start  # the first line not yet covered
    for s in spans:
        if s.start_line > need:
            return False
        need = max(need, s.end_line + 1)
        if need > end:
            return True
    return need > end
