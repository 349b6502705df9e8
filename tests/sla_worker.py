"""A plain worker process for the SLA durability test: the test kills it (SIGKILL) while an
SLA timer is pending.

Run as ``python -m tests.sla_worker`` with DATABASE_URL, TEMPORAL_ADDRESS, ROUTEDESK_TASK_QUEUE
and ROUTEDESK_ID_PREFIX set; it prints ``ready`` once polling.
"""

from __future__ import annotations

import asyncio

from routedesk import settings
from routedesk.store import Store
from routedesk.temporal import connect
from worker import build_worker


async def main() -> None:
    client = await connect()
    store = Store()
    worker = build_worker(client, store, settings.task_queue(), id_prefix=settings.id_prefix(), sandbox=True)
    async with worker:
        print("ready", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
