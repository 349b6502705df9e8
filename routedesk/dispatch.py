"""Waking queue dispatchers: signal-with-start, so a dispatcher exists whenever it is needed.

Called by activities (an item was queued, an offer closed, capacity was released) and by the
CLI (presence changed). Assignment is driven by these events plus a slow periodic sweep in
the dispatcher itself, never by polling.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field

from temporalio.client import Client

from routedesk import ids
from routedesk.contracts import DispatcherInput

DISPATCHER_WORKFLOW = "QueueDispatcherWorkflow"


async def _signal_with_start(client: Client, queue_id: str, task_queue: str, id_prefix: str) -> None:
    await client.start_workflow(
        DISPATCHER_WORKFLOW,
        DispatcherInput(queue_id=queue_id, id_prefix=id_prefix),
        id=ids.dispatcher_workflow_id(queue_id, id_prefix),
        task_queue=task_queue,
        start_signal="kick",
    )


async def kick(client: Client, queue_ids: Iterable[str], *, task_queue: str, id_prefix: str = "") -> None:
    """One kick per queue, sent now (the CLI, tests)."""
    await asyncio.gather(*(_signal_with_start(client, q, task_queue, id_prefix) for q in sorted(set(queue_ids))))


@dataclass
class _QueueKicks:
    next_send: asyncio.Future[None] | None = None  # the send the next callers wait for
    sending: bool = False
    sent: int = 0  # signals actually sent (for tests and the benchmark)
    requested: int = 0
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


class Kicker:
    """Coalesces the kicks of one worker process, per queue.

    A kick only says "look at the queue again", so one signal that starts after a caller's
    transaction committed serves every caller waiting for it. Each caller waits for the
    first send that *starts* after it asked: a send already in flight may have left before
    the caller's commit, so it does not count. While one signal is in flight, every kick
    for that queue joins the next one. Under load this turns several signals per email into
    a fraction of one; alone, a kick costs one signal as before. Callers still see a failed
    send (the activity retries), so no wake-up is lost silently.
    """

    def __init__(self, client: Client) -> None:
        self.client = client
        self._queues: dict[tuple[str, str, str], _QueueKicks] = {}

    async def kick(self, queue_ids: Iterable[str], *, task_queue: str, id_prefix: str = "") -> None:
        await asyncio.gather(*(self._one((task_queue, id_prefix, q)) for q in sorted(set(queue_ids)) if q))

    def counts(self) -> dict[str, tuple[int, int]]:
        """``{queue_id: (kicks requested, signals sent)}``."""
        return {key[2]: (st.requested, st.sent) for key, st in self._queues.items()}

    async def _one(self, key: tuple[str, str, str]) -> None:
        st = self._queues.setdefault(key, _QueueKicks())
        st.requested += 1
        if st.next_send is None:
            st.next_send = asyncio.get_running_loop().create_future()
            if not st.sending:
                task = asyncio.create_task(self._drain(key, st))
                st.tasks.add(task)
                task.add_done_callback(st.tasks.discard)
        # shield: a cancelled caller must not cancel the signal others wait for.
        await asyncio.shield(st.next_send)

    async def _drain(self, key: tuple[str, str, str], st: _QueueKicks) -> None:
        task_queue, id_prefix, queue_id = key
        st.sending = True
        waiting: asyncio.Future[None] | None = None
        try:
            while st.next_send is not None:
                waiting, st.next_send = st.next_send, None
                try:
                    await _signal_with_start(self.client, queue_id, task_queue, id_prefix)
                except Exception as exc:  # handed to every caller waiting for this send
                    waiting.set_exception(exc)
                else:
                    st.sent += 1
                    waiting.set_result(None)
        finally:
            st.sending = False
            # Cancelled (the worker is shutting down): nobody may wait for a send that will
            # not happen; their activities fail and are retried.
            for fut in (waiting, st.next_send):
                if fut is not None and not fut.done():
                    fut.cancel()
            st.next_send = None
