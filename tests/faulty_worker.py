"""A worker process whose intake (routing included) commits, then hangs: the test kills it (SIGKILL).

Run as ``python -m tests.faulty_worker`` with DATABASE_URL, TEMPORAL_ADDRESS and
ROUTEDESK_TASK_QUEUE set; it prints ``ready`` once polling.
"""

from __future__ import annotations

import asyncio

from temporalio import activity

from activities.intake import IntakeActivities
from activities.routing import RoutingActivities
from routedesk import settings
from routedesk.assignment.wake import Kicker
from routedesk.contracts import IntakeRequest, IntakeResult
from routedesk.store import Store
from routedesk.temporal import connect
from tests.support import activities_with
from worker import build_worker


class HangingIntakeActivities(IntakeActivities):
    @activity.defn(name="parse_email")
    async def parse_email(self, inp: IntakeRequest) -> IntakeResult:
        await super().parse_email(inp)  # the transaction commits...
        await asyncio.Event().wait()  # ...then a hung dependency: only the test's SIGKILL ends this
        raise AssertionError("unreachable")


async def main() -> None:
    client = await connect()
    store = Store()
    hanging = HangingIntakeActivities(store, RoutingActivities(store, client, Kicker(client, settings.id_prefix())))
    acts = activities_with(store, client, hanging.parse_email)
    worker = build_worker(client, store, settings.task_queue(), activities=acts, sandbox=True)
    async with worker:
        print("ready", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
