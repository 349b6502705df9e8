"""Activities: every read and write of the case store, each idempotent."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio.client import Client

from activities.assignment import AssignmentActivities
from activities.intake import IntakeActivities
from activities.notify import NotifyActivities
from activities.routing import RoutingActivities
from activities.threads import ThreadActivities
from routedesk.dispatch import Kicker
from routedesk.store import Store


def build_activities(store: Store, client: Client) -> list[Callable[..., Any]]:
    kicker = Kicker(client)  # one per worker: kicks for a queue coalesce across activities
    routing = RoutingActivities(store, client, kicker)
    intake = IntakeActivities(store, routing)
    threads = ThreadActivities(store)
    assign = AssignmentActivities(store, client, kicker)
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
        assign.dispatch_queue,
        assign.assign_direct,
        assign.resolve_case,
    ]
