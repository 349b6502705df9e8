"""Activities: every read and write of the case store, each idempotent."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from activities.cases import CaseActivities
from activities.intake import IntakeActivities
from activities.routing import RoutingActivities
from routedesk.store import Store


def build_activities(store: Store) -> list[Callable[..., Any]]:
    intake = IntakeActivities(store)
    cases = CaseActivities(store)
    routing = RoutingActivities(store)
    return [intake.parse_email, cases.create_case, routing.classify, routing.route_to_queue]
