"""Reading real histories: events per email by type, activity calls, the floor's call plan."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from dataclasses import dataclass, field
from statistics import mean
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

SCHEDULED = EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
MARKER = EventType.EVENT_TYPE_MARKER_RECORDED


def _short(event_type: int) -> str:
    return EventType.Name(EventType.ValueType(event_type)).removeprefix("EVENT_TYPE_")


@dataclass
class HistoryStats:
    workflow_id: str
    events: int
    by_type: Counter[str]
    calls: str  # "A" regular activity, "L" local activity, in order
    activities: Counter[str]  # "name" or "name (local)"


def analyse(workflow_id: str, events: list[Any]) -> HistoryStats:
    by_type: Counter[str] = Counter()
    activities: Counter[str] = Counter()
    calls = []
    for e in events:
        by_type[_short(e.event_type)] += 1
        if e.event_type == SCHEDULED:
            calls.append("A")
            activities[e.activity_task_scheduled_event_attributes.activity_type.name] += 1
        elif e.event_type == MARKER:
            marker = e.marker_recorded_event_attributes
            if marker.marker_name == "core_local_activity":
                calls.append("L")
                name = "?"
                if "data" in marker.details and marker.details["data"].payloads:
                    with contextlib.suppress(ValueError):
                        data = json.loads(marker.details["data"].payloads[0].data)
                        name = data.get("activity_type", "?")
                activities[f"{name} (local)"] += 1
    return HistoryStats(workflow_id, len(events), by_type, "".join(calls), activities)


async def fetch(
    client: Client,
    workflow_ids: list[str],
    concurrency: int = 16,
    run_ids: list[str | None] | None = None,
) -> list[HistoryStats]:
    sem = asyncio.Semaphore(concurrency)
    runs = run_ids or [None] * len(workflow_ids)

    async def one(wid: str, run_id: str | None) -> HistoryStats:
        async with sem:
            handle = client.get_workflow_handle(wid, run_id=run_id)
            events = [e async for e in handle.fetch_history_events()]
        return analyse(wid, events)

    return list(await asyncio.gather(*(one(w, r) for w, r in zip(workflow_ids, runs, strict=True))))


@dataclass
class Summary:
    n: int
    mean_events: float
    max_events: int
    min_events: int
    by_type: dict[str, float] = field(default_factory=dict)
    activities: dict[str, float] = field(default_factory=dict)
    regular_calls: float = 0.0
    local_calls: float = 0.0
    # The largest history's events by type: says what pushed it over a budget.
    largest: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "mean": round(self.mean_events, 2),
            "min": self.min_events,
            "max": self.max_events,
            "regular_activity_calls": round(self.regular_calls, 2),
            "local_activity_calls": round(self.local_calls, 2),
            "events_by_type": self.by_type,
            "activities": self.activities,
            "largest_events_by_type": self.largest,
        }


def summarise(stats: list[HistoryStats]) -> Summary | None:
    if not stats:
        return None
    n = len(stats)
    types: Counter[str] = Counter()
    acts: Counter[str] = Counter()
    for s in stats:
        types.update(s.by_type)
        acts.update(s.activities)
    largest = max(stats, key=lambda s: s.events)
    return Summary(
        largest=dict(largest.by_type.most_common()),
        n=n,
        mean_events=mean(s.events for s in stats),
        max_events=max(s.events for s in stats),
        min_events=min(s.events for s in stats),
        by_type={k: round(v / n, 2) for k, v in types.most_common()},
        activities={k: round(v / n, 2) for k, v in acts.most_common()},
        regular_calls=mean(s.calls.count("A") for s in stats),
        local_calls=mean(s.calls.count("L") for s in stats),
    )


async def list_executions(client: Client, query: str) -> list[Any]:
    return [w async for w in client.list_workflows(query)]
