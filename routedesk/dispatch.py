"""Waking queue dispatchers: signal-with-start, so a dispatcher exists whenever it is needed.

Called by activities (an item was queued, an offer closed, capacity was released) and by the
CLI (presence changed). Assignment is driven by these events plus a slow periodic sweep in
the dispatcher itself, never by polling.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from temporalio.client import Client

from routedesk import ids
from routedesk.contracts import DispatcherInput

DISPATCHER_WORKFLOW = "QueueDispatcherWorkflow"


async def kick(client: Client, queue_ids: Iterable[str], *, task_queue: str, id_prefix: str = "") -> None:
    async def one(queue_id: str) -> None:
        await client.start_workflow(
            DISPATCHER_WORKFLOW,
            DispatcherInput(queue_id=queue_id, id_prefix=id_prefix),
            id=ids.dispatcher_workflow_id(queue_id, id_prefix),
            task_queue=task_queue,
            start_signal="kick",
        )

    await asyncio.gather(*(one(q) for q in sorted(set(queue_ids))))
