"""SLA and idle-reassignment activities: thin wrappers over :mod:`routedesk.sla`, each one
transaction in a thread, then the queue dispatchers it names are woken after the commit."""

from __future__ import annotations

import asyncio

from temporalio import activity
from temporalio.client import Client

from routedesk import pushes, sla
from routedesk.assignment.wake import Kicker
from routedesk.contracts import IdleCheck, IdleCheckInput, SlaFired, SlaNext, SlaStepInput
from routedesk.store import Store


class SlaActivities:
    def __init__(self, store: Store, client: Client | None, kicker: Kicker | None = None) -> None:
        self.store = store
        self.tx = sla.SlaTransactions(store)
        self.kicker = kicker or (Kicker(client) if client is not None else None)

    async def _kick(self, queues: list[str]) -> None:
        wanted = [q for q in queues if q]
        if wanted and self.kicker is not None:
            await self.kicker.kick(wanted, task_queue=activity.info().task_queue)

    @activity.defn(name="sla_next")
    async def sla_next(self, inp: SlaStepInput) -> SlaNext:
        """Bring the case's SLA state up to date; when the workflow must wake up next."""
        return await asyncio.to_thread(self.tx.next, inp)

    @activity.defn(name="sla_fire")
    async def sla_fire(self, inp: SlaStepInput) -> SlaFired:
        """Record the warnings and violations due now and run their store actions."""
        # `notify: supervisors` records alert pushes in the transaction; they go out after it.
        keys, token = pushes.collecting()
        try:
            fired, queues = await asyncio.to_thread(self.tx.fire, inp)
        finally:
            pushes.stop_collecting(token)
        pushes.deliver_soon(self.store, keys)
        await self._kick(queues)
        return fired

    @activity.defn(name="reassign_if_idle")
    async def reassign_if_idle(self, inp: IdleCheckInput) -> IdleCheck:
        """Back to the queue if the agent did nothing on the case for the workstream's time."""
        # The agent is told on their channels: recorded in the transaction, sent after it.
        keys, token = pushes.collecting()
        try:
            result, queues = await asyncio.to_thread(sla.idle_check, self.store, inp)
        finally:
            pushes.stop_collecting(token)
        pushes.deliver_soon(self.store, keys)
        await self._kick(queues)
        return result
