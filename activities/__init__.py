"""Activities: every read and write of the case store, each idempotent."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio.client import Client

from activities.assignment import AssignmentActivities
from activities.cases import CaseActivities
from activities.intake import IntakeActivities
from activities.notify import NotifyActivities
from activities.routing import RoutingActivities
from activities.threads import ThreadActivities
from routedesk.store import Store


def build_activities(store: Store, client: Client) -> list[Callable[..., Any]]:
    intake = IntakeActivities(store)
    cases = CaseActivities(store)
    routing = RoutingActivities(store, client)
    threads = ThreadActivities(store)
    assign = AssignmentActivities(store, client)
    return [
        intake.parse_email,
        NotifyActivities(store).send_acknowledgement,
        cases.create_case,
        routing.classify,
        routing.route_to_queue,
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
