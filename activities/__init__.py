"""Activities: thin Temporal wrappers. Each runs one idempotent store transaction from
routedesk/ (intake, routing, threads, assignment, notifications, replies, SLA) in a thread
and does what only an activity can: wake a queue's dispatcher after the commit, retry by
Temporal's policy, report its attempt."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio.client import Client

from activities.assignment import AssignmentActivities
from activities.intake import IntakeActivities
from activities.notify import NotifyActivities
from activities.offer_notify import OfferNotifyActivities
from activities.replies import ReplyActivities
from activities.routing import RoutingActivities
from activities.sla import SlaActivities
from activities.threads import ThreadActivities
from routedesk import settings
from routedesk.assignment.wake import Kicker
from routedesk.store import Store


def build_activities(store: Store, client: Client, *, id_prefix: str | None = None) -> list[Callable[..., Any]]:
    """The worker's activities. ``id_prefix`` (default ``ROUTEDESK_ID_PREFIX``) prefixes the
    dispatcher workflow IDs they wake: the deployment's, a property of the worker."""
    # One per worker: kicks for a queue coalesce across activities.
    kicker = Kicker(client, settings.id_prefix() if id_prefix is None else id_prefix)
    routing = RoutingActivities(store, client, kicker)
    intake = IntakeActivities(store, routing)
    threads = ThreadActivities(store)
    assign = AssignmentActivities(store, client, kicker)
    replies = ReplyActivities(store)
    return [
        intake.parse_email,
        NotifyActivities(store).send_acknowledgement,
        routing.route_case,
        threads.thread_reply,
        assign.offer_preferred,
        assign.accept_offer,
        assign.close_offer,
        assign.enqueue_for_dispatch,
        assign.leave_unassigned,
        assign.waiting_alert,
        assign.dispatch_queue,
        assign.assign_direct,
        assign.resolve_case,
        assign.transfer_to_queue,
        replies.send_reply,
        replies.give_up_reply,
        OfferNotifyActivities(store).notify_offer,
        *_sla_activities(store, client, kicker),
    ]


def _sla_activities(store: Store, client: Client, kicker: Kicker) -> list[Callable[..., Any]]:
    sla = SlaActivities(store, client, kicker)
    return [sla.sla_next, sla.sla_fire, sla.reassign_if_idle]
