"""The ``parse_email`` activity: stage 1 of the routing workflow (routedesk/intake.py decides
and records; this runs it, sends a bounce after the commit and wakes the queue)."""

from __future__ import annotations

import asyncio
import logging

from temporalio import activity

from activities.routing import RoutingActivities
from routedesk.contracts import IntakeRequest, IntakeResult
from routedesk.intake import PARSERS, Intake, parse_within_budget
from routedesk.notifications import Notifier
from routedesk.store import Store

log = logging.getLogger(__name__)


class IntakeActivities:
    def __init__(self, store: Store, router: RoutingActivities | None = None) -> None:
        self.store = store
        self.notifier = Notifier(store)
        PARSERS.start()  # the worker starts its parser processes now, not on the first email
        self.router = router
        self.intake = Intake(store, router.router if router is not None else None)

    @activity.defn(name="parse_email")
    async def parse_email(self, inp: IntakeRequest) -> IntakeResult:
        """Parse the raw bytes already in the store, record the outcome and, for an accepted
        email, open, classify and route its case in the same transaction.

        The MIME parse runs before the write transaction (its work per message is bounded by
        the caps in :mod:`routedesk.mail`), so a hostile message never holds the store's
        write lock; the transaction re-reads the email's state and decides. Idempotent: an
        email past ``received`` is not evaluated again and the stored result is returned,
        except a ``held`` one, which is evaluated again because the workflow only asks after
        a ``release`` or when its hold may have ended. Routing is idempotent on its own (one
        case per source email, each step traced once). Everything a decision writes (status,
        trace, hold, bounce to send, case) is one transaction. A rejection is a recorded
        business outcome, returned like any other (results recorded before 2026-12 raised
        ``EmailRejected`` instead; see the workflow). A bounce reply is sent after the commit
        and a failed send makes the activity retry, finding the decision already made.
        """
        raw = await asyncio.to_thread(self.intake.raw_to_evaluate, inp.email_id)
        parsed = None if raw is None else await parse_within_budget(raw)
        result, pending_bounce, wake = await asyncio.to_thread(self.intake.decide_and_record, inp, parsed)
        if pending_bounce is not None:
            await asyncio.to_thread(self.notifier.deliver, pending_bounce)
        if result.status == "rejected":
            # A business outcome, not a fault: one line, no traceback.
            log.info("email %s rejected: %s", inp.email_id, result.reason)
        if wake and result.routed is not None and self.router is not None:
            await self.router.wake(result.routed)
        return result
