"""The engine floor: no-op workflows that make the same activity calls as a routed email.

Each :class:`FloorWorkflow` gets the sequence of activity calls a real routed email made,
read from a real history (``A``: a regular activity, ``L``: a local activity) and makes the
same calls, in the same order, to :func:`floor_noop`, which returns at once. No store, no
signals, no timers, no search attributes: what is left is what Temporal (server, SDK, the
worker's tuning) costs for that many activity calls, i.e. the fastest any email could go.

``python -m bench.floor`` runs the floor worker: the product's ``worker.build_worker`` is
called with the floor's activity so the floor gets exactly the product worker's tuning
(executor, concurrency limits, pollers, cache), then only workflows, activities and task
queue are swapped. Registered on the bench-floor task queue only; nothing here is in the
product's workers.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow

FLOOR_TASK_QUEUE = "bench-floor"
TIMEOUT = timedelta(seconds=30)


@activity.defn(name="floor_noop")
async def floor_noop(step: int) -> int:
    return step


# Where handshake floor workflows note "offered" and "assigned", in the floor worker's
# working directory (the stack's): the stand-in for the store the simulated agents poll.
NOTES = "handshake-notes.txt"


@activity.defn(name="floor_note")
async def floor_note(note: str) -> str:
    """A no-op call that also appends one line for the simulated agents (bench.run), as the
    product's offers and assignments reach agents through the store."""
    with open(NOTES, "a") as f:
        f.write(note + "\n")
    return note


@workflow.defn(name="BenchFloorWorkflow")
class FloorWorkflow:
    @workflow.run
    async def run(self, calls: str) -> int:
        for step, kind in enumerate(calls):
            if kind == "A":
                await workflow.execute_activity(floor_noop, step, start_to_close_timeout=TIMEOUT)
            else:
                await workflow.execute_local_activity(floor_noop, step, start_to_close_timeout=TIMEOUT)
        return len(calls)


@workflow.defn(name="BenchHandshakeFloorWorkflow")
class HandshakeFloorWorkflow:
    """The engine floor of a routed email's whole conversation with Temporal, not only its
    activity calls: the same no-op local activities, plus what routing needs from Temporal
    itself and no floor of activity calls shows.

    The first calls run at once (the last of them notes "offered" for the simulated
    agents), then the workflow upserts its routing search attributes and waits for an
    ``accept`` signal, runs a call (which notes "assigned") and upserts again, and waits for
    a ``resolve`` update, which runs the last call; the workflow upserts a last time and
    completes. That is three workflow tasks, three upserts, a signal and an update per
    workflow, as for an email accepted on its first offer; no dispatcher, store, MIME or
    rules.
    """

    def __init__(self) -> None:
        self._accepted = False
        self._resolved = False

    @workflow.signal
    def accept(self) -> None:
        self._accepted = True

    @workflow.update
    async def resolve(self) -> str:
        await workflow.wait_condition(lambda: self._accepted)
        await workflow.execute_local_activity(floor_noop, -1, start_to_close_timeout=TIMEOUT)
        self._resolved = True
        return "resolved"

    @workflow.run
    async def run(self, calls: str) -> int:
        from routedesk import search_attributes as sa

        wid = workflow.info().workflow_id
        # The last two calls of a routed email are its accept and its resolve.
        for step in range(max(0, len(calls) - 3)):
            await workflow.execute_local_activity(floor_noop, step, start_to_close_timeout=TIMEOUT)
        await workflow.execute_local_activity(floor_note, f"{wid} offered", start_to_close_timeout=TIMEOUT)
        workflow.upsert_search_attributes(
            [
                sa.ROUTING_STAGE.value_set("offered"),
                sa.CASE_NUMBER.value_set(f"FLOOR-{wid}"),
                sa.MAILBOX.value_set("floor@bench.example"),
                sa.CONTACT_ID.value_set("floor"),
                sa.ROUTING_QUEUE.value_set("floor"),
            ]
        )
        await workflow.wait_condition(lambda: self._accepted)
        await workflow.execute_local_activity(floor_note, f"{wid} assigned", start_to_close_timeout=TIMEOUT)
        workflow.upsert_search_attributes(
            [sa.ROUTING_STAGE.value_set("assigned"), sa.ASSIGNED_AGENT.value_set("floor")]
        )
        await workflow.wait_condition(lambda: self._resolved)
        workflow.upsert_search_attributes([sa.ROUTING_STAGE.value_set("resolved")])
        return len(calls)


def worker_kwargs(client: Any) -> tuple[dict[str, Any], str]:
    """The product worker's constructor arguments, and how they were obtained."""
    import worker as product
    from routedesk.store import Store

    captured: dict[str, Any] = {}
    real = product.Worker

    def capture(client_: Any, **kw: Any) -> Any:
        captured.update(kw, client=client_)
        return None

    try:
        product.Worker = capture  # type: ignore[assignment,misc]
        product.build_worker(client, Store(), FLOOR_TASK_QUEUE, activities=[floor_noop])
        how = "worker.build_worker arguments"
    except Exception:  # the product changed shape: build a real one and read its config
        product.Worker = real  # type: ignore[misc]
        built = product.build_worker(client, Store(), FLOOR_TASK_QUEUE, activities=[floor_noop])
        captured = dict(built.config())
        how = "worker.build_worker(...).config()"
    finally:
        product.Worker = real  # type: ignore[misc]
    return captured, how


async def main() -> None:
    from temporalio.worker import Worker

    from routedesk import settings
    from routedesk.temporal import connect

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    client = await connect()
    kw, how = worker_kwargs(client)
    kw.update(
        task_queue=settings.task_queue(),
        workflows=[FloorWorkflow, HandshakeFloorWorkflow],
        activities=[floor_noop, floor_note],
    )
    tuning = {k: v for k, v in kw.items() if k not in ("client", "workflows", "activities")}
    logging.info("floor worker on %s with the product's tuning (%s): %s", settings.task_queue(), how, tuning)
    worker = Worker(**kw)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with worker:
        await stop.wait()


if __name__ == "__main__":
    # Run the copy imported as bench.floor, not __main__: the workflow sandbox re-imports
    # the workflow's module by name.
    from bench.floor import main as _main

    asyncio.run(_main())
