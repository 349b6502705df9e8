"""Operations on routing workflows: store an email and start (or find) its workflow,
reprocess a decided email, wait for its case. Used by every intake channel, the CLI and
integrations (also importable as ``starter.send``).

The raw email is stored before the workflow starts and the workflow ID is derived from the
message (Message-ID and content fingerprint), so the same email submitted twice, or ten
times at once, through any channel, is one stored email, one workflow and one case.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowQueryFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from routedesk import settings
from routedesk.contracts import TERMINAL_STAGES, EmailRoutingInput, RoutingOutcome, RoutingStatus, Stage
from routedesk.store import Reprocess, Store
from workflows.email_routing import REJECTED, EmailRoutingWorkflow


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
    saved = await asyncio.to_thread(store.save_raw_email, raw, source=source, envelope_to=envelope_to, id_prefix=prefix)
    # Running: attach to it. Closed: never start a second run for the same email.
    with contextlib.suppress(WorkflowAlreadyStartedError):
        await client.start_workflow(
            EmailRoutingWorkflow.run,
            EmailRoutingInput(email_id=saved.email_id),
            id=saved.workflow_id,
            task_queue=task_queue or settings.task_queue(),
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
    return Submission(saved.workflow_id, saved.email_id, saved.created)


async def reprocess_email(
    client: Client,
    store: Store,
    email_id: int,
    *,
    envelope_to: list[str] | None = None,
    by: str = "python",
    task_queue: str | None = None,
) -> Reprocess:
    """Evaluate a rejected, ignored or held email again with the configuration as it is now
    (``envelope_to`` adds the routing address that only the envelope knew).

    A rejected or ignored email gets a new workflow, ID derived from the email and the
    reprocess count; a held one is evaluated again by its own waiting workflow. Repeating the
    call while that runs finds the same workflow, so it is still one case; an email that
    already has a case is refused with :class:`routedesk.store.StoreRefusal`.
    """
    plan = await asyncio.to_thread(store.prepare_reprocess, email_id, envelope_to=envelope_to or [], by=by)
    if plan.held:
        await client.get_workflow_handle_for(EmailRoutingWorkflow.run, plan.workflow_id).signal(
            EmailRoutingWorkflow.release
        )
    else:
        # Also when a reprocess is already under way: starting is idempotent on the ID, and
        # it covers a crash between the store's commit and the first start.
        with contextlib.suppress(WorkflowAlreadyStartedError):
            await client.start_workflow(
                EmailRoutingWorkflow.run,
                EmailRoutingInput(email_id=email_id),
                id=plan.workflow_id,
                task_queue=task_queue or settings.task_queue(),
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            )
    return plan


async def wait_for_case(client: Client, workflow_id: str, timeout: float = 30.0) -> RoutingStatus:
    """Wait until the case is in a queue or routing stopped.

    A running workflow answers the ``routing_status`` query (which adds nothing to history,
    unlike an update); a closed one is read from its result or its failure.
    """
    handle = client.get_workflow_handle_for(EmailRoutingWorkflow.run, workflow_id)
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        try:
            desc = await handle.describe()
            running = desc.status == WorkflowExecutionStatus.RUNNING
        except RPCError:
            running = True  # not visible yet
        if not running:
            return await _closed_status(handle)
        try:
            status: RoutingStatus = await handle.query(EmailRoutingWorkflow.routing_status)
            if status.queue or status.stage in TERMINAL_STAGES:
                return status
        except (RPCError, WorkflowQueryFailedError):
            pass  # no worker has picked it up yet
        if time.monotonic() > deadline:
            raise TimeoutError(f"workflow {handle.id} did not queue a case within {timeout:.0f}s; is a worker running?")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.5)


async def _closed_status(handle: WorkflowHandle[Any, RoutingOutcome]) -> RoutingStatus:
    try:
        return await handle.result()  # the workflow's last status
    except WorkflowFailureError as err:
        cause = err.cause
        reason = getattr(cause, "message", None) or str(cause)
        # Rejections recorded before 2026-12-02 failed the workflow; since, they complete.
        stage = Stage.REJECTED if getattr(cause, "type", None) == REJECTED else Stage.FAILED
        return RoutingStatus(stage=stage, email_id=0, reason=reason)
