"""Kick coalescing: many wake-ups for a queue become few signals, and none is lost."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio.api.enums.v1 import EventType

from routedesk import ids
from routedesk.assignment.transactions import Assignments
from routedesk.assignment.wake import WAKE_CLAIM_STALE, Kicker, claim_wakes
from routedesk.contracts import DispatchPass
from routedesk.models import QueueWakeRow, utcnow
from routedesk.store import Store
from tests.conftest import NewStoreUrl
from tests.support import Stack, eventually, history_events


async def _kick_signals(stack: Stack, queue_id: str) -> int:
    handle = stack.client.get_workflow_handle(ids.dispatcher_workflow_id(queue_id, stack.id_prefix))
    events = await history_events(handle)
    return sum(
        1
        for e in events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
        and e.workflow_execution_signaled_event_attributes.signal_name == "kick"
    )


async def test_concurrent_kicks_share_signals_and_reach_the_dispatcher(stack: Stack) -> None:
    kicker = Kicker(stack.client)
    await asyncio.gather(
        *(kicker.kick(["general"], task_queue=stack.task_queue, id_prefix=stack.id_prefix) for _ in range(40))
    )
    requested, sent = kicker.counts()["general"]
    assert requested == 40
    # All 40 asked before any send started, so one signal serves them all.
    assert sent == 1
    assert await eventually(lambda: _at_least(stack, "general", sent), what="kick signals in the history") == sent


async def _at_least(stack: Stack, queue_id: str, n: int) -> int | None:
    got = await _kick_signals(stack, queue_id)
    return got if got >= n else None


async def test_a_kick_asked_during_a_send_gets_a_send_of_its_own(stack: Stack) -> None:
    """A send already in flight may have left before the caller's commit: it must not count."""
    kicker = Kicker(stack.client)
    first = asyncio.create_task(kicker.kick(["general"], task_queue=stack.task_queue, id_prefix=stack.id_prefix))
    for _ in range(1000):  # let the first send start (bounded: no sleeping on time)
        await asyncio.sleep(0)  # bounded: yields to the loop, never waits on time
        if kicker.counts().get("general") and kicker._queues[(stack.task_queue, stack.id_prefix, "general")].sending:
            break
    second = asyncio.create_task(kicker.kick(["general"], task_queue=stack.task_queue, id_prefix=stack.id_prefix))
    await asyncio.gather(first, second)
    assert kicker.counts()["general"] == (2, 2)
    # Later kicks, one at a time, each send again: coalescing never delays a lone caller.
    await kicker.kick(["general", "general", "vip"], task_queue=stack.task_queue, id_prefix=stack.id_prefix)
    assert kicker.counts()["general"] == (3, 3)
    assert kicker.counts()["vip"] == (1, 1)


def test_a_pending_wake_claim_spares_later_signals_until_its_pass_starts(new_store_url: NewStoreUrl) -> None:
    store = Store(new_store_url("routedesk")).init()
    with store.db.write() as s:
        assert claim_wakes(s, ["general", "billing"]) == ["billing", "general"]
    with store.db.write() as s:
        # Both passes are still to come and will read this transaction's changes.
        assert claim_wakes(s, ["general"]) == []
    activities = Assignments(store)
    activities.dispatch(DispatchPass(queue_id="general", pass_key="run:0"))
    with store.db.write() as s:
        assert claim_wakes(s, ["general", "billing"]) == ["general"]  # that pass has started
        # A claim whose signal was lost (the worker died after the commit) goes stale.
        wake = s.get(QueueWakeRow, "billing")
        assert wake is not None
        wake.requested_at = utcnow() - WAKE_CLAIM_STALE - timedelta(seconds=1)
        s.add(wake)
    with store.db.write() as s:
        assert claim_wakes(s, ["billing"]) == ["billing"]
    store.db.dispose()
