"""Assignment activities: thin Temporal wrappers over the assignment transactions.

Each activity runs one transaction of :class:`routedesk.assignment.transactions.Assignments`
in a thread (the store is synchronous) and then wakes the queue dispatchers it names
(:mod:`routedesk.assignment.wake`), after the commit. Async only for that wake-up, which
uses the worker's Temporal client. The invariants and lock order are documented with the
transactions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import TypeVar

from temporalio import activity
from temporalio.client import Client

from routedesk.assignment.transactions import Assignments
from routedesk.assignment.wake import KICK_SIGNAL, Kicker
from routedesk.contracts import (
    AnswerInput,
    AssignResult,
    CaseStepInput,
    DirectAssignInput,
    DispatchPass,
    DispatchRequest,
    DispatchResult,
    OfferAttempt,
    PreferredOfferRequest,
    TransferInput,
    TransferResult,
)
from routedesk.store import Store

I = TypeVar("I")  # noqa: E741
T = TypeVar("T")


class AssignmentActivities:
    def __init__(self, store: Store, client: Client | None, kicker: Kicker | None = None) -> None:
        self.store = store
        self.tx = Assignments(store)
        self.kicker = kicker or (Kicker(client) if client is not None else None)

    async def _then_wake(self, transaction: Callable[[I], tuple[T, list[str]]], inp: I) -> T:
        """Run ``transaction`` in a thread, then wake the dispatchers of the queues it names."""
        result, queues = await asyncio.to_thread(transaction, inp)
        await self._kick(queues)
        return result

    async def _kick(self, queue_ids: Iterable[str]) -> None:
        queues = [q for q in queue_ids if q]
        if queues and self.kicker is not None:
            await self.kicker.kick(queues, task_queue=activity.info().task_queue)

    @activity.defn(name="offer_preferred")
    async def offer_preferred(self, inp: PreferredOfferRequest) -> OfferAttempt:
        return await asyncio.to_thread(self.tx.offer_preferred, inp)

    @activity.defn(name="accept_offer")
    async def accept_offer(self, inp: AnswerInput) -> AssignResult:
        return await self._then_wake(self.tx.accept_offer, inp)

    @activity.defn(name="close_offer")
    async def close_offer(self, inp: AnswerInput) -> None:
        """Record a decline, a timeout or a withdrawal; the agent is free for other work."""
        await self._then_wake(self.tx.close_offer, inp)

    @activity.defn(name="enqueue_for_dispatch")
    async def enqueue_for_dispatch(self, inp: DispatchRequest) -> None:
        """Hand the case to its queue's assignment method (the dispatcher)."""
        await self._then_wake(self.tx.enqueue, inp)

    @activity.defn(name="leave_unassigned")
    async def leave_unassigned(self, inp: CaseStepInput) -> None:
        await asyncio.to_thread(self.tx.leave_unassigned, inp)

    @activity.defn(name="dispatch_queue")
    async def dispatch_queue(self, inp: DispatchPass) -> DispatchResult:
        """One dispatcher pass. A case another transaction held was skipped: one more pass,
        after this one, looks at it again (the dispatcher runs a pass per kick)."""
        result, contended = await asyncio.to_thread(self.tx.dispatch, inp)
        dispatcher = activity.info().workflow_id
        if contended and dispatcher and self.kicker is not None:
            await self.kicker.client.get_workflow_handle(dispatcher).signal(KICK_SIGNAL)
        return result

    @activity.defn(name="assign_direct")
    async def assign_direct(self, inp: DirectAssignInput) -> AssignResult:
        return await self._then_wake(self.tx.assign_direct, inp)

    @activity.defn(name="resolve_case")
    async def resolve_case(self, inp: CaseStepInput) -> None:
        """Close the case and release its agent's capacity."""
        await self._then_wake(self.tx.resolve, inp)

    @activity.defn(name="transfer_to_queue")
    async def transfer_to_queue(self, inp: TransferInput) -> TransferResult:
        """Move a waiting case to another queue (overflow, SLA); wakes that queue's dispatcher."""
        return await self._then_wake(self.tx.transfer_to_queue, inp)
