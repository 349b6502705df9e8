"""Bounds on what one email can put into workflow history, search attributes and the trace.

The Temporal server refuses a workflow task completion past a few MB (and then retries it
forever), so no value that a sender controls may reach history at full length. The full
value stays in the case store; history carries at most :data:`HISTORY_TEXT_LIMIT` characters.
"""

from __future__ import annotations

HISTORY_TEXT_LIMIT = 1024  # characters of a reason or a name in history, a result or the trace
ELLIPSIS = "…"


def cap_text(value: str, limit: int = HISTORY_TEXT_LIMIT) -> str:
    """``value`` cut to ``limit`` characters, the cut marked with an ellipsis."""
    if len(value) <= limit:
        return value
    return value[: max(limit - len(ELLIPSIS), 0)] + ELLIPSIS
