"""Bounds every request is checked against, shared by the service and the API schema."""

from __future__ import annotations

import re

from ctxsvc.errors import InvalidRequest

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # index, agent and workspace names
MAX_BUDGET = 200_000
MAX_QUERY_CHARS = 8_000
MAX_PATTERNS = 64


def check_budget(budget_tokens: int) -> None:
    """Refuse a token budget outside 1..MAX_BUDGET."""
    if not isinstance(budget_tokens, int) or not 1 <= budget_tokens <= MAX_BUDGET:
        raise InvalidRequest(
            f"budget_tokens must be between 1 and {MAX_BUDGET}, got {budget_tokens}"
        )
