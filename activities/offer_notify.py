"""Offer notifications: tell an agent of a new offer on their webhook, Slack webhook or email.

Started by the case's workflow without being awaited when an offer opens (only when the agent
has a channel, ``OfferInfo.notify``), so it never delays the offer timer. One
:class:`~routedesk.models.PushRow` per channel is written before anything is sent; a retry
sends only those still pending; the last attempt records a failure instead of raising it,
so the case never sees one. Supervisor alerts and presence switches use the same rows and
sending code (:mod:`routedesk.pushes`).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import activity

from routedesk import pushes
from routedesk.models import CaseRow, OfferRow
from routedesk.store import Store

# The workflow's retry policy for notify_offer has this many attempts; the last one records.
NOTIFY_ATTEMPTS = 5


def offer_payloads(store: Store, offer_id: int) -> str | None:
    """Record the pending rows of the offer's notification; its key (None: nothing to send)."""
    with store.db.write() as s:
        offer = s.get(OfferRow, offer_id)
        if offer is None:
            return None
        case = s.get(CaseRow, offer.case_id)
        assert case is not None
        channels = pushes.agent_channels(s, store, offer.agent_id)
        if not channels.any:
            return None
        ws = store.workstream(case.workstream_id)
        base = pushes.console_url(s)
        deadline = offer.created_at + timedelta(seconds=ws.offer_timeout_seconds)
        accept_url = f"{base}/agent/offers/{offer_id}/accept"
        decline_url = f"{base}/agent/offers/{offer_id}/decline"
        generic = {
            "event": "offer",
            "offer_id": offer_id,
            "agent_id": offer.agent_id,
            "kind": offer.kind,
            "case_number": offer.case_number,
            "subject": case.subject,
            "priority": case.priority,
            "queue": offer.queue_id,
            "deadline": pushes.iso(deadline),
            "accept_url": accept_url,
            "decline_url": decline_url,
        }
        text = f"New offer: {offer.case_number} ({case.priority}) {case.subject}"
        pushes.record(
            s,
            key=f"offer:{offer_id}",
            kind="offer",
            recipient=offer.agent_id,
            webhook=channels.webhook,
            slack_webhook=channels.slack_webhook,
            emails=[channels.email] if channels.email else [],
            generic=generic,
            slack=pushes.slack_payload(
                text,
                {
                    "Case": offer.case_number,
                    "Priority": case.priority,
                    "Queue": offer.queue_id or "-",
                    "Answer by": pushes.iso(deadline),
                },
                {"Accept": accept_url, "Decline": decline_url},
            ),
            mail={
                **pushes.email_payload(
                    f"[{offer.case_number}] offered to you: {case.subject}",
                    [
                        text,
                        f"Queue: {offer.queue_id or '-'}",
                        f"Answer by: {pushes.iso(deadline)}",
                        f"Accept: {accept_url}",
                        f"Decline: {decline_url}",
                    ],
                ),
                "from": case.mailbox_address,
            },
        )
        return f"offer:{offer_id}"


class OfferNotifyActivities:
    def __init__(self, store: Store) -> None:
        self.store = store

    @activity.defn(name="notify_offer")
    async def notify_offer(self, offer_id: int) -> None:
        """Send the offer to the agent's channels; a failure is recorded, never raised at the end."""
        key = await asyncio.to_thread(offer_payloads, self.store, offer_id)
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
