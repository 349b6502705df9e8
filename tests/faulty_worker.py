"""A worker process whose route_case commits, then hangs: the test kills it mid-workflow (SIGKILL).

Run as ``python -m tests.faulty_worker`` with DATABASE_URL, TEMPORAL_ADDRESS and
ROUTEDESK_TASK_QUEUE set; it prints ``ready`` once polling.
"""

from __future__ import annotations

import asyncio

from temporalio import activity

from activities.routing import RoutingActivities
from routedesk import settings
from routedesk.contracts import RouteCaseInput, RoutedCase
from routedesk.store import Store
from routedesk.temporal import connect
from tests.support import activities_with
from worker import build_worker


class HangingRoutingActivities(RoutingActivities):
    @activity.defn(name="route_case")
    async def route_case(self, inp: RouteCaseInput) -> RoutedCase:
        await super().route_case(inp)  # the transaction commits...
        await asyncio.Event().wait()  # ...then a hung dependency: only the test's SIGKILL ends this
        raise AssertionError("unreachable")


async def main() -> None:
    client = await connect()
    store = Store()
    acts = activities_with(store, client, HangingRoutingActivities(store).route_case)
    worker = build_worker(client, store, settings.task_queue(), activities=acts, sandbox=True)
    async with worker:
        print("ready", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
