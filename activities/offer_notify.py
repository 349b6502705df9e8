"""Offer notifications: tell an agent of a new offer on their webhook, Slack webhook or email.

Started by the case's workflow without being awaited when an offer opens (only when the agent
has a channel, ``OfferInfo.notify``), so it never delays the offer timer. One
:class:`~routedesk.models.PushRow` per channel is written before anything is sent; a retry
sends only those still pending; the last attempt records a failure instead of raising it,
so the case never sees one. A thin Temporal wrapper: the rows, their payloads and the
sending are :mod:`routedesk.pushes`'s (:func:`~routedesk.pushes.offer_payloads`), which
supervisor alerts and presence switches use too; this module adds the attempt count.
"""

from __future__ import annotations

import asyncio

from temporalio import activity

from routedesk import pushes
from routedesk.store import Store

# The workflow's retry policy for notify_offer has this many attempts; the last one records.
NOTIFY_ATTEMPTS = 5


class OfferNotifyActivities:
    def __init__(self, store: Store) -> None:
        self.store = store

    @activity.defn(name="notify_offer")
    async def notify_offer(self, offer_id: int) -> None:
        """Send the offer to the agent's channels; a failure is recorded, never raised at the end."""
        key = await asyncio.to_thread(pushes.offer_payloads, self.store, offer_id)
        if key is None:
            return
        final = activity.info().attempt >= NOTIFY_ATTEMPTS
        failed: list[str] = []
        for push_id in await asyncio.to_thread(pushes.pending, self.store, key):
            try:
                await pushes.deliver(self.store, push_id, final=final)
            except pushes.PushFailed as exc:
                failed.append(str(exc))
        if failed:
            raise pushes.PushFailed("; ".join(failed))  # retried: only the pending ones again
