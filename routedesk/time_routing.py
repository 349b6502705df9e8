"""Time-aware routing decisions (issue 18): operating hours, overflow, percentage allocation
and skill proficiency, as pure functions over the config version in force.

Called inside the store transactions of routing and assignment (never from workflow code):
the workflow sees only their results, so a replay never evaluates a calendar or a config.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field
from datetime import datetime

from sqlmodel import Session, col, func, select

from routedesk.calendars import Calendar, add_business_time, is_open, parse_duration
from routedesk.config import Agent, Queue
from routedesk.contracts import InQueueOverflow
from routedesk.eligibility import agent_levels, skill_levels
from routedesk.eligibility import closed_until as closed_at
from routedesk.eligibility import lacks as lacks  # re-exported: the dispatcher's names for them
from routedesk.eligibility import required_skills as required_skills
from routedesk.eligibility import skill_distance as skill_distance
from routedesk.models import CaseRow, ConfigVersionRow
from routedesk.store import Store, TraceEntry

MAX_OVERFLOW_HOPS = 3  # then the item stays in the last queue reached, traced


@dataclass(frozen=True)
class TimeDefinitions:
    """The queues, calendars and agents of one config version (0: none recorded)."""

    version: int
    queues: dict[str, Queue] = field(default_factory=dict)
    calendars: dict[str, Calendar] = field(default_factory=dict)
    agents: dict[str, Agent] = field(default_factory=dict)

    def calendar_of(self, queue_id: str | None) -> Calendar | None:
        q = self.queues.get(queue_id or "")
        return self.calendars.get(q.operating_hours) if q is not None and q.operating_hours else None


_cache: weakref.WeakKeyDictionary[Store, TimeDefinitions] = weakref.WeakKeyDictionary()
_cache_lock = threading.Lock()


def definitions(store: Store) -> TimeDefinitions:
    """Cached per config version: the store's own check of which version is in force
    (``Store.definitions``) decides when it is read again."""
    version = store.definitions().version
    with _cache_lock:
        cached = _cache.get(store)
    if cached is not None and cached.version == version:
        return cached
    if not version:
        fresh = TimeDefinitions(0)
    else:
        with store.db.read() as s:
            row = s.get(ConfigVersionRow, version)
        data = row.config if row is not None else {}
        fresh = TimeDefinitions(
            version,
            {q.id: q for q in (Queue.model_validate(q) for q in data.get("queues", []))},
            {c.id: c for c in (Calendar.model_validate(c) for c in data.get("calendars", []))},
            {a.id: a for a in (Agent.model_validate(a) for a in data.get("agents", []))},
        )
    with _cache_lock:
        _cache[store] = fresh
    return fresh


# --- operating hours -------------------------------------------------------------------------


def closed_until(defs: TimeDefinitions, queue_id: str | None, now: datetime) -> datetime | None:
    """When a queue closed at ``now`` opens again, if agents may not be offered its work until
    then (``offer_when_closed: false``); None when they may."""
    q = defs.queues.get(queue_id or "")
    if q is None:
        return None
    return closed_at(defs.calendar_of(queue_id), q.offer_when_closed, now)


# --- overflow ----------------------------------------------------------------------------------


def waiting_items(s: Session, queue_id: str, exclude_case: int | None) -> int:
    """Items waiting in the queue: queued and not assigned, the routed case itself excepted."""
    q = select(func.count()).select_from(CaseRow).where(CaseRow.queue_id == queue_id, CaseRow.status == "queued")
    if exclude_case is not None:
        q = q.where(col(CaseRow.id) != exclude_case)
    return int(s.exec(q).one())


def overflow_before_queueing(
    s: Session, defs: TimeDefinitions, queue_id: str, case_id: int | None, now: datetime
) -> tuple[str, list[TraceEntry]]:
    """The queue a just-routed item joins after the queues' before-queueing overflow rules:
    the first rule whose condition holds, in config order, decides; a transfer target's own
    rules apply in turn, for at most :data:`MAX_OVERFLOW_HOPS` transfers. Each step traced."""
    current = queue_id
    entries: list[TraceEntry] = []
    hops = 0
    while True:
        q = defs.queues.get(current)
        if q is None:
            return current, entries
        matched = None
        for rule in q.overflow:
            when = rule.when
            if when.out_of_operating_hours and not is_open(defs.calendar_of(current), now):
                matched = (rule, f"queue {current} is out of operating hours ({q.operating_hours})")
            elif when.waiting_items_exceed is not None:
                n = waiting_items(s, current, case_id)
                if n > when.waiting_items_exceed:
                    matched = (rule, f"{n} items wait in queue {current}, more than {when.waiting_items_exceed}")
            if matched is not None:
                break
        if matched is None:
            return current, entries
        rule, why = matched
        target = rule.action.transfer_to_queue
        if target is None:
            entries.append(TraceEntry("overflow", current, "assign_anyway", f"{why}: assigned to the queue anyway"))
            return current, entries
        if hops == MAX_OVERFLOW_HOPS:
            entries.append(
                TraceEntry(
                    "overflow",
                    current,
                    "hops_exhausted",
                    f"{why}, but overflow stops after {MAX_OVERFLOW_HOPS} transfers: assigned to {current} anyway",
                )
            )
            return current, entries
        entries.append(TraceEntry("overflow", target, "transferred", f"{why} -> transfer to queue {target}"))
        current = target
        hops += 1


def in_queue_overflow(defs: TimeDefinitions, queue_id: str | None, since: datetime) -> InQueueOverflow | None:
    """The queue's first in-queue rule (``waiting_longer_than``), timed from ``since``."""
    q = defs.queues.get(queue_id or "")
    if q is None:
        return None
    for rule in q.overflow:
        wait = rule.when.waiting_longer_than
        target = rule.action.transfer_to_queue
        if wait is None or target is None:
            continue
        delta = parse_duration(wait)
        cal = defs.calendar_of(q.id) if rule.when.business_time else None
        at = add_business_time(cal, since, delta)
        counted = " in business time" if cal is not None else ""
        return InQueueOverflow(
            transfer_at=at,
            to_queue=target,
            reason=f"waited longer than {wait}{counted} in queue {q.id}",
        )
    return None


# --- skills with proficiency -------------------------------------------------------------------
# The pure rules are in routedesk.eligibility (the views apply them too, without the ORM).


def agent_skills(defs: TimeDefinitions, agent_id: str, names: list[str]) -> dict[str, int]:
    """The agent's skills: the names in the store (what the agent has), each at its level from
    the config in force (level 1 when the config gives none)."""
    a = defs.agents.get(agent_id)
    return agent_levels(skill_levels(a.skills) if a is not None else {}, names)
