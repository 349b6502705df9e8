"""Starting routing workflows: the Python entry point every intake channel uses.

The raw email is stored before the workflow starts and the workflow ID is derived from the
Message-ID (or a hash of the bytes), so the same email submitted twice, or ten times at
once, is one stored email, one workflow and one case.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from routedesk import settings
from routedesk.contracts import EmailRoutingInput, RoutingStatus
from routedesk.store import Store
from workflows.email_routing import EmailRoutingWorkflow

TERMINAL_STAGES = {"rejected", "ignored", "held", "threaded", "failed"}


@dataclass(frozen=True)
class Submission:
    workflow_id: str
    email_id: int
    new_email: bool


async def submit_email(
    client: Client,
    store: Store,
    raw: bytes,
    *,
    source: str = "python",
    envelope_to: list[str] | None = None,
    task_queue: str | None = None,
    id_prefix: str | None = None,
) -> Submission:
    """Store ``raw`` durably, then start (or find) its routing workflow."""
    prefix = settings.id_prefix() if id_prefix is None else id_prefix
    saved = await asyncio.to_thread(
        store.save_raw_email, raw, source=source, envelope_to=envelope_to, id_prefix=prefix
    )
    try:
        await client.start_workflow(
            EmailRoutingWorkflow.run,
            EmailRoutingInput(email_id=saved.email_id, id_prefix=prefix),
            id=saved.workflow_id,
            task_queue=task_queue or settings.task_queue(),
            # Running: attach to it. Closed: never start a second run for the same email.
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
    except WorkflowAlreadyStartedError:
        pass
    return Submission(saved.workflow_id, saved.email_id, saved.created)


async def wait_for_case(handle: WorkflowHandle, timeout: float = 30.0) -> RoutingStatus:
    """Poll the ``routing_status`` query until the case is in a queue or routing stopped.

    A query adds nothing to history, unlike an update, which keeps intake cheap.
    """
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        try:
            status: RoutingStatus = await handle.query(EmailRoutingWorkflow.routing_status)
            if status.queue or status.stage in TERMINAL_STAGES:
                return status
        except RPCError:
            pass  # not yet picked up by a worker, or just completed: ask the result below
        try:
            desc = await handle.describe()
            if desc.status is not None and desc.status.name != "RUNNING":
                return await handle.query(EmailRoutingWorkflow.routing_status)
        except RPCError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"workflow {handle.id} did not queue a case within {timeout:.0f}s; is a worker running?")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.5)
