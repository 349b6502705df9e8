"""The ``route_case`` activity: a thin wrapper around :class:`routedesk.routing.Router` (open
the case, classify it, route it to a queue, in one store transaction) that delivers the
notices the transaction queued and wakes the queue's dispatcher after the commit."""

from __future__ import annotations

import asyncio

from temporalio import activity
from temporalio.client import Client

from routedesk import pushes
from routedesk.assignment.wake import Kicker
from routedesk.contracts import RouteCaseInput, RoutedCase
from routedesk.routing import Router
from routedesk.store import Store


class RoutingActivities:
    def __init__(self, store: Store, client: Client | None = None, kicker: Kicker | None = None) -> None:
        self.store = store
        self.router = Router(store)
        # Wakes queue dispatchers; optional for store-only use.
        self.kicker = kicker or (Kicker(client) if client is not None else None)

    @activity.defn(name="route_case")
    async def route_case(self, inp: RouteCaseInput) -> RoutedCase:
        """Open the case (unless a reply reopened one), classify it and route it to a queue.

        One transaction for the three stages, each traced under its own step key: a retry
        finds the case created and the steps traced and returns what the first attempt
        decided. When there is no preferred agent to try, the case is handed to the queue's
        assignment method in that transaction too: with no other item waiting in the queue it
        is offered at once (``decision.offer``), otherwise the queue's dispatcher is woken
        after the commit to decide in queue order.
        """
        # A reopened case whose queue has nobody left who may take it raises an alert here.
        keys, token = pushes.collecting()
        try:
            routed, wake = await asyncio.to_thread(self.router.route_case, inp)
        finally:
            pushes.stop_collecting(token)
        pushes.deliver_soon(self.store, keys)
        if wake:
            await self.wake(routed)
        return routed

    async def wake(self, routed: RoutedCase) -> None:
        """After the commit: ask the case's queue dispatcher for a pass."""
        if self.kicker is not None:
            await self.kicker.kick([routed.decision.queue_id], task_queue=activity.info().task_queue)
