"""Who may take a queue's work now: the pure rules of the dispatcher (skills with proficiency,
operating hours, the presences a workstream lets take work), in one place for the dispatcher
(:mod:`routedesk.assignment.transactions` through :mod:`routedesk.time_routing`) and for the
views (``queue list``/``queue show``: eligible now).

Nothing heavier than pydantic and the calendars is imported here: the read-only CLI commands
use it without the ORM (tests/test_cli.py guards that).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from routedesk.calendars import Calendar, is_open, next_opening

# --- skills with proficiency -------------------------------------------------------------------


def skill_levels(v: Any) -> dict[str, int]:
    """Skills as ``{name: level}``; a name listed without a level is level 1."""
    if isinstance(v, dict):
        return {str(k): int(n) for k, n in v.items()}
    if isinstance(v, list):
        return {str(k): 1 for k in v}
    return {}


def required_skills(attributes: Mapping[str, object]) -> dict[str, int]:
    return skill_levels(attributes.get("skills"))


def agent_levels(config_levels: Mapping[str, int], names: Iterable[str]) -> dict[str, int]:
    """The agent's skills: the names in the store (what the agent has), each at its level from
    the config in force (level 1 when the config gives none)."""
    return {name: config_levels.get(name, 1) for name in names}


def skill_distance(required: dict[str, int], has: dict[str, int]) -> int | None:
    """Sum of level differences over the required skills; None when one is missing."""
    if any(k not in has for k in required):
        return None
    return sum(abs(has[k] - n) for k, n in required.items())


def lacks(required: dict[str, int], has: dict[str, int], match: str) -> str | None:
    """Why the agent may not take an item needing ``required`` (None: they may)."""
    missing = sorted(k for k in required if k not in has)
    if missing:
        return f"lacks skills {', '.join(missing)}"
    if match == "exact":
        low = sorted(f"{k} {has[k]}<{n}" for k, n in required.items() if has[k] < n)
        if low:
            return f"skill level too low ({', '.join(low)})"
    return None


# --- operating hours ---------------------------------------------------------------------------


def closed_until(cal: Calendar | None, offer_when_closed: bool, now: datetime) -> datetime | None:
    """When a queue on calendar ``cal`` (None: 24x7), closed at ``now``, opens again, if agents
    may not be offered its work until then; None when they may."""
    if cal is None or offer_when_closed or is_open(cal, now):
        return None
    return next_opening(cal, now)


# --- the rules of one config version, for a view ---------------------------------------------


@dataclass(frozen=True)
class WorkstreamRules:
    allowed_presences: frozenset[str]
    skill_match: str
    queues: frozenset[str]  # the queues its route-to-queue rules and fallback name


@dataclass(frozen=True)
class QueueRules:
    """What "eligible now" needs from the config in force, as plain values."""

    workstreams: dict[str, WorkstreamRules] = field(default_factory=dict)
    calendars: dict[str, Calendar | None] = field(default_factory=dict)  # queue -> operating hours
    offer_when_closed: dict[str, bool] = field(default_factory=dict)
    agent_levels: dict[str, dict[str, int]] = field(default_factory=dict)  # configured skill levels

    @classmethod
    def from_config(cls, data: Mapping[str, Any]) -> QueueRules:
        """From a config as stored (``config_version.config``: validated, defaults filled in)."""
        calendars = {c["id"]: Calendar.model_validate(c) for c in data.get("calendars") or []}
        streams = {}
        for w in data.get("workstreams") or []:
            named = {w.get("fallback_queue") or ""}
            for rule in w.get("route_to_queue_rules") or []:
                named |= {rule.get("queue") or "", *(share["queue"] for share in rule.get("route_to") or [])}
            streams[w["id"]] = WorkstreamRules(
                allowed_presences=frozenset(w.get("allowed_presences") or ()),
                skill_match=w.get("skill_match") or "exact",
                queues=frozenset(named - {""}),
            )
        queues = data.get("queues") or []
        return cls(
            workstreams=streams,
            calendars={q["id"]: calendars.get(q.get("operating_hours") or "") for q in queues},
            offer_when_closed={q["id"]: bool(q.get("offer_when_closed")) for q in queues},
            agent_levels={a["id"]: skill_levels(a.get("skills")) for a in data.get("agents") or []},
        )

    def closed_until(self, queue_id: str, now: datetime) -> datetime | None:
        return closed_until(self.calendars.get(queue_id), self.offer_when_closed.get(queue_id, False), now)

    def presences_for_queue(self, queue_id: str, workstream_ids: Iterable[str]) -> frozenset[str]:
        """The presences that may take work in the queue: those the given workstreams (of the
        items waiting) allow; with none given, those of the workstreams that route to the
        queue (all workstreams when none names it, e.g. an overflow target)."""
        streams = [self.workstreams[w] for w in workstream_ids if w in self.workstreams]
        if not streams:
            streams = [w for w in self.workstreams.values() if queue_id in w.queues]
            streams = streams or list(self.workstreams.values())
        return frozenset().union(*(w.allowed_presences for w in streams))
