"""Bounds every request is checked against, shared by the service and the API schema."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence

from ctxsvc.errors import InvalidRequest

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"  # index, agent and workspace names
NAME = re.compile(NAME_PATTERN)
SESSION_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"  # session ids
SESSION_ID = re.compile(SESSION_PATTERN)
MAX_BUDGET = 200_000
MAX_QUERY_CHARS = 8_000
MAX_SYMBOL_CHARS = 4_608  # a symbol id: a path (4096) and a qualified name (512)
MAX_PATTERNS = 64
MAX_REPOS = 8  # indexes one context or search call may span
MAX_RESULTS = 200  # files, symbols or references listed by one call
MAX_FILE_LINES = 5000  # lines of a file returned by one call
MAX_EVENTS = 1000  # workspace events returned by one call
MAX_LINE = 10_000_000  # the highest line (or checkpoint) number a request may name
ANN_MIN_VECTORS = 100_000  # vectors from which an index is searched approximately
POSTGRES_URL = re.compile(r"^postgres(?:ql)?://", re.IGNORECASE)  # CTXSVC_STATE_URL
# CTXSVC_INDEX_URI: a bucket (S3's naming rules, in short), then an optional prefix
INDEX_URI = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[\w.-]+)*/?$")


def check_budget(budget_tokens: int) -> None:
    """Refuse a token budget outside 0..MAX_BUDGET (0 asks for an empty answer)."""
    if not isinstance(budget_tokens, int) or not 0 <= budget_tokens <= MAX_BUDGET:
        raise InvalidRequest(
            f"budget_tokens must be between 0 and {MAX_BUDGET}, got {budget_tokens}"
        )


def validate_session_id(session_id: str) -> str:
    """``session_id`` if valid, else ``InvalidRequest``."""
    if not isinstance(session_id, str) or not SESSION_ID.match(session_id):
        raise InvalidRequest(
            f"invalid session id {session_id!r}",
            hint="use 1 to 128 letters, digits, '.', '_', ':' or '-'",
        )
    return session_id


def selected(path: str, include: Sequence[str] | None, exclude: Sequence[str] | None) -> bool:
    """Whether ``path`` matches an include glob (if any are given) and no exclude glob."""
    if include and not any(fnmatch.fnmatchcase(path, p) for p in include):
        return False
    return not (exclude and any(fnmatch.fnmatchcase(path, p) for p in exclude))
