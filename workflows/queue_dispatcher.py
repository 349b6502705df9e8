"""QueueDispatcherWorkflow: serialises assignment decisions for one queue.

One long-running workflow per queue, woken by ``kick`` signals (a new item, an offer closed,
capacity released, presence changed, members added) and by a slow safety sweep, never by
polling. Each wake-up runs one ``dispatch_queue`` activity, which offers waiting items in
priority-then-age order inside one transaction, then tells each case's workflow about its
offer. Kicks that arrive while a pass runs coalesce into one more pass.

Durable-safety: the pass key is derived from the run ID and a pass counter, both replayed
from history, so a retried pass returns its earlier offers instead of making new ones. The
history stays bounded with continue-as-new; a pending kick is carried across.

Starved items (every eligible member declined or let the offer time out) get a new round a
sweep interval after they starved, whatever the traffic: the sweep's deadline is absolute
(kicks do not push it back), and each pass returns when its soonest starved item is due
(``DispatchResult.retry_in_seconds``), so the dispatcher passes then.

Replay compatibility:
- ``workflow.patched(STARVED_ROUNDS)`` (2026-12-02): histories recorded before waited for a
  kick or ``sweep_interval_seconds`` without one, the timer restarting at every kick.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.assignment import AssignmentActivities
    from routedesk.assignment.wake import DISPATCHER_WORKFLOW, KICK_SIGNAL
    from routedesk.contracts import (
        AnswerInput,
        DispatchedOffer,
        DispatcherInput,
        DispatchPass,
    )
    from workflows.email_routing import EmailRoutingWorkflow

PASSES_PER_RUN = 500  # continue-as-new well before the history gets large
STARVED_ROUNDS = "starved-rounds-2026-12-02"
# The shortest wait for a starved item's round: the store's clock and the workflow's differ
# a little, and a pass a moment early must not turn into a busy loop.
MIN_RETRY_WAIT = timedelta(milliseconds=200)


@workflow.defn(name=DISPATCHER_WORKFLOW)
class QueueDispatcherWorkflow:
    def __init__(self) -> None:
        self._kicked = False

    @workflow.signal(name=KICK_SIGNAL)
    def kick(self) -> None:
        self._kicked = True

    @workflow.run
    async def run(self, inp: DispatcherInput) -> None:
        self._kicked = self._kicked or inp.pending_kick
        sweep_every = inp.sweep_interval_seconds
        passes = 0
        next_sweep = workflow.now() + timedelta(seconds=sweep_every)
        retry_at = None
        while passes < PASSES_PER_RUN and not workflow.info().is_continue_as_new_suggested():
            sweep = False
            if workflow.patched(STARVED_ROUNDS):
                deadline = next_sweep if retry_at is None else min(next_sweep, retry_at)
                with contextlib.suppress(TimeoutError):
                    await workflow.wait_condition(
                        lambda: self._kicked, timeout=max(deadline - workflow.now(), MIN_RETRY_WAIT)
                    )
                if workflow.now() >= next_sweep:
                    sweep = True
                    next_sweep = workflow.now() + timedelta(seconds=sweep_every)
            else:
                try:
                    await workflow.wait_condition(lambda: self._kicked, timeout=timedelta(seconds=sweep_every))
                except TimeoutError:
                    sweep = True
            self._kicked = False
            # A local activity: one store transaction, one marker event per pass.
            result = await workflow.execute_local_activity_method(
                AssignmentActivities.dispatch_queue,
                DispatchPass(
                    queue_id=inp.queue_id,
                    pass_key=f"{workflow.info().run_id}:{passes}",
                    sweep=sweep,
                ),
                start_to_close_timeout=timedelta(seconds=60),
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(milliseconds=200),
                    maximum_interval=timedelta(seconds=10),
                ),
                local_retry_threshold=timedelta(seconds=10),
            )
            passes += 1
            sweep_every = result.sweep_interval_seconds
            retry_at = (
                workflow.now() + timedelta(seconds=result.retry_in_seconds)
                if result.retry_in_seconds is not None
                else None
            )
            await asyncio.gather(*(self._tell(o) for o in result.offers))
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(
            DispatcherInput(
                queue_id=inp.queue_id,
                sweep_interval_seconds=sweep_every,
                pending_kick=self._kicked,
                passes=inp.passes + passes,
            )
        )

    async def _tell(self, offer: DispatchedOffer) -> None:
        workflow_id = offer.workflow_id
        try:
            await workflow.get_external_workflow_handle_for(EmailRoutingWorkflow.run, workflow_id).signal(
                EmailRoutingWorkflow.offer, offer.offer
            )
        except ApplicationError:
            # The case's workflow is gone (terminated by hand): free the agent again.
            await workflow.execute_activity_method(
                AssignmentActivities.close_offer,
                AnswerInput(
                    case_id=offer.case_id,
                    offer_id=offer.offer.offer_id,
                    agent_id=offer.offer.agent_id,
                    outcome="withdrawn",
                    reason=f"workflow {workflow_id} is not running",
                    step=f"withdraw-{offer.offer.offer_id}",
                ),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=10)),
            )
