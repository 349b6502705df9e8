"""Assignment strategies: which eligible queue member gets the next offer.

Pure and deterministic (ties broken by agent id), so they are unit-tested alone and the
dispatcher's choice is reproducible from the store's state.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from routedesk.config import AssignmentMethod

_NEVER = datetime.min.replace(tzinfo=UTC)


def _ts(value: datetime | None) -> datetime:
    if value is None:
        return _NEVER
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Candidate:
    agent_id: str
    free_capacity: int
    last_assigned_at: datetime | None  # any queue
    queue_last_assigned_at: datetime | None  # this queue
    last_released_at: datetime | None


def choose(method: AssignmentMethod | str, candidates: list[Candidate]) -> tuple[Candidate, str]:
    """The candidate the method picks, and a sentence for the trace saying why."""
    if not candidates:
        raise ValueError("no candidates")
    m = AssignmentMethod(method)
    if m is AssignmentMethod.HIGHEST_CAPACITY:
        best = min(candidates, key=lambda c: (-c.free_capacity, _ts(c.last_assigned_at), c.agent_id))
        why = f"most free capacity ({best.free_capacity})"
    elif m is AssignmentMethod.ROUND_ROBIN:
        best = min(candidates, key=lambda c: (_ts(c.queue_last_assigned_at), c.agent_id))
        when = best.queue_last_assigned_at
        why = "earliest last assignment in this queue" + (f" ({when:%H:%M:%S})" if when else " (never)")
    else:
        best = min(candidates, key=lambda c: (_ts(c.last_released_at), c.agent_id))
        when = best.last_released_at
        why = "longest since capacity was released" + (f" ({when:%H:%M:%S})" if when else " (never)")
    return best, f"{m.value}: {why} among {', '.join(sorted(c.agent_id for c in candidates))}"
