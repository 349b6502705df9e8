"""Waking queue dispatchers: when a dispatcher must look at its queue again, and how it is told.

Assignment is driven by events, never by polling. Each queue has one long-running
``QueueDispatcherWorkflow`` (workflows/queue_dispatcher.py) that makes the assignment
decisions for the items waiting in it, one store transaction per pass. Three pieces wake it:

1. **Claims, in the deciding transaction** (:func:`queues_to_wake`, :func:`claim_wakes`). A
   transaction that changes what a pass could decide (an item queued, an offer closed,
   capacity released) claims the queue's ``queue_wake`` row. The claim is an upsert: it is
   taken only if no pass is already coming (no row, or a row older than
   :data:`WAKE_CLAIM_STALE`, whose signal may have been lost). The next pass deletes the row
   when it starts, in its own transaction, so it sees every commit made before it. Only the
   transaction that took the claim signals, after it commits; the others rely on the pass
   already coming.
2. **Signals, after the commit** (:class:`Kicker`, :func:`kick`). A claim becomes a ``kick``
   signal-with-start to ``queue-dispatcher-<queue>``, so a dispatcher exists whenever one is
   needed. Within one worker process, kicks for a queue coalesce: each caller waits for the
   first signal that *starts* after it asked, so no wake-up is lost and under load one signal
   serves many callers. The CLI (presence changes) and tests kick directly.
3. **The sweep, as a safety net**: each dispatcher also runs a pass every
   ``routing.sweep_interval_seconds`` (an absolute deadline: kicks do not postpone it), in
   case a worker died between a commit and its signal. Starved items (every eligible member
   declined or timed out) get their new round on their own timer: the pass that finds them
   says when they are due, and the dispatcher passes then, whatever the kicks.

What makes an agent eligible again, and what kicks for it: a presence change (the CLI and the
API kick the agent's queues), capacity released (``resolve`` claims the agent's queues), an
offer closed (``accept_offer``/``close_offer`` claim them), a new member or more capacity from a
config load (the load claims the queues, ``LoadResult.wake_queues``, and its caller kicks them).

A case that arrives at an empty queue is offered by its own routing transaction
(``offer_on_arrival`` in :mod:`routedesk.assignment.transactions`): nothing else waits, so a
pass could only decide the same, and no wake-up is needed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col, select
from temporalio.client import Client

from routedesk import ids
from routedesk.contracts import DispatcherInput
from routedesk.models import CaseRow, QueueWakeRow, utcnow


def queues_to_wake(s: Session, queue_ids: Iterable[str | None]) -> list[str]:
    """The queues among ``queue_ids`` whose dispatcher must be signalled: those with an item
    waiting for the assignment method (see :func:`claim_wakes`).

    Checked inside the caller's write transaction: an item that starts waiting after this
    commit is queued by a later transaction, which wakes the dispatcher itself, and that
    pass sees what this one freed.
    """
    wanted = sorted({q for q in queue_ids if q})
    if not wanted:
        return []
    found = s.exec(
        select(CaseRow.queue_id)
        .where(col(CaseRow.queue_id).in_(wanted), CaseRow.status == "queued", col(CaseRow.awaiting_dispatch))
        .distinct()
    ).all()
    return claim_wakes(s, [q for q in found if q])


# A claim older than this no longer stops others from signalling: its signal may have been
# lost (the worker died between commit and send), and the sweep is minutes away.
WAKE_CLAIM_STALE = timedelta(seconds=5)


def claim_wakes(s: Session, queue_ids: Iterable[str]) -> list[str]:
    """The queues among ``queue_ids`` that this transaction must signal after it commits.

    A queue with a fresh claim already has a pass coming that has not started: that pass
    reads the store after this commit, so a second signal would only buy an empty pass.
    Under load this turns a signal per answer, resolution and arrival into about one per
    pass.

    One upsert per queue: the claim is inserted, or a stale one taken over, or a fresh one
    left alone (and then no row comes back). Concurrent claimers of a missing row used to
    both insert it, and on PostgreSQL the second failed on the primary key and its whole
    transaction was retried. The upsert locks the row either way, so the pass that deletes
    it waits for this transaction, and then sees what it committed.
    """
    now = utcnow()
    insert = pg_insert if s.get_bind().dialect.name == "postgresql" else sqlite_insert
    claimed = []
    for queue_id in sorted(set(queue_ids)):
        stmt = (
            insert(QueueWakeRow)
            .values(queue_id=queue_id, requested_at=now)
            .on_conflict_do_update(
                index_elements=[col(QueueWakeRow.queue_id)],
                set_={"requested_at": now},
                where=col(QueueWakeRow.requested_at) <= now - WAKE_CLAIM_STALE,
            )
            .returning(col(QueueWakeRow.queue_id))
        )
        if s.connection().execute(stmt).first() is not None:
            claimed.append(queue_id)
    return claimed


# The dispatcher's names, for code that cannot import the workflow (activities, which the
# workflows import): workflows/queue_dispatcher.py declares itself with these.
DISPATCHER_WORKFLOW = "QueueDispatcherWorkflow"
KICK_SIGNAL = "kick"


async def _signal_with_start(client: Client, queue_id: str, task_queue: str, id_prefix: str) -> None:
    await client.start_workflow(
        DISPATCHER_WORKFLOW,
        DispatcherInput(queue_id=queue_id),
        id=ids.dispatcher_workflow_id(queue_id, id_prefix),
        task_queue=task_queue,
        start_signal=KICK_SIGNAL,
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

    def __init__(self, client: Client, id_prefix: str = "") -> None:
        self.client = client
        self.id_prefix = id_prefix  # of the dispatcher workflow IDs: the worker's deployment
        self._queues: dict[tuple[str, str, str], _QueueKicks] = {}

    async def kick(self, queue_ids: Iterable[str], *, task_queue: str, id_prefix: str | None = None) -> None:
        prefix = self.id_prefix if id_prefix is None else id_prefix
        await asyncio.gather(*(self._one((task_queue, prefix, q)) for q in sorted(set(queue_ids)) if q))

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
