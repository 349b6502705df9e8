"""EmailRoutingWorkflow: one inbound email, from stored bytes to a case in a queue.

Durable-safety notes:
- The workflow only ever sees IDs and routing attributes. Parsing, rule evaluation and every
  read or write of the case store happen in activities, so replays never touch I/O.
- Every activity is idempotent (see the activity docstrings), so Temporal's at-least-once
  execution never makes a second case or trace entry.
- Trace step keys are derived from the routing round and the stage name, both replayed
  deterministically from history.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from routedesk import search_attributes as sa
    from routedesk.contracts import (
        CaseRef,
        Classification,
        EmailRoutingInput,
        IntakeResult,
        QueueDecision,
        RoutingOutcome,
        RoutingStatus,
        StepInput,
    )

T = TypeVar("T")

REJECTED = "EmailRejected"

# Case-store activities: short attempts, retried with backoff for as long as a day, because a
# store outage must delay routing, never drop an email. Errors that no retry can fix are
# raised as non-retryable ApplicationErrors by the activities themselves.
STORE_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
)
STORE_START_TO_CLOSE = timedelta(seconds=30)
STORE_SCHEDULE_TO_CLOSE = timedelta(hours=24)


@workflow.defn
class EmailRoutingWorkflow:
    def __init__(self) -> None:
        self._status = RoutingStatus(stage="received", email_id=0)
        self._released = False

    @workflow.signal
    def release(self) -> None:
        """A held email may be looked at again (mailbox verified, or released by hand)."""
        self._released = True

    @workflow.query
    def routing_status(self) -> RoutingStatus:
        return self._status

    @workflow.run
    async def run(self, inp: EmailRoutingInput) -> RoutingOutcome:
        self._status.email_id = inp.email_id

        intake = await self._intake(inp.email_id)
        while intake.status == "held":
            # Held mail waits durably, for days if need be, and is never dropped.
            self._advance("held", reason=intake.reason)
            self._released = False
            await workflow.wait_condition(lambda: self._released)
            intake = await self._intake(inp.email_id)
        if intake.status != "accepted":
            self._advance(intake.status, reason=intake.reason)
            return self._outcome(intake.status)

        case = await self._store_activity("create_case", inp.email_id, CaseRef)
        ack = None
        if case.created and case.acknowledge:
            # Not awaited before routing: a slow or failing mail relay must not delay the case.
            ack = workflow.start_activity(
                "send_acknowledgement",
                case.case_id,
                start_to_close_timeout=timedelta(seconds=60),
                schedule_to_close_timeout=timedelta(hours=6),
                retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=5)),
            )
        self._status.case_id = case.case_id
        self._status.case_number = case.case_number
        self._advance(
            "case_created",
            sa.CASE_NUMBER.value_set(case.case_number),
            sa.MAILBOX.value_set(intake.mailbox or ""),
            sa.CONTACT_ID.value_set(case.contact_id or ""),
        )

        await self._store_activity(
            "classify", StepInput(case_id=case.case_id, round=case.round, step=f"r{case.round}:classify"), Classification
        )
        decision = await self._store_activity(
            "route_to_queue",
            StepInput(case_id=case.case_id, round=case.round, step=f"r{case.round}:route"),
            QueueDecision,
        )
        self._status.queue = decision.queue_id
        self._advance("queued", sa.ROUTING_QUEUE.value_set(decision.queue_id))
        if ack is not None:
            await ack
        return self._outcome("queued")

    # --- helpers -----------------------------------------------------------------------

    async def _intake(self, email_id: int) -> IntakeResult:
        try:
            return await self._store_activity("parse_email", email_id, IntakeResult)
        except ActivityError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError) and cause.type == REJECTED:
                self._advance("rejected", reason=cause.message)
                raise ApplicationError(cause.message, type=REJECTED, non_retryable=True) from None
            raise

    async def _store_activity(self, name: str, arg: Any, result_type: type[T]) -> T:
        return await workflow.execute_activity(
            name,
            arg,
            result_type=result_type,
            start_to_close_timeout=STORE_START_TO_CLOSE,
            schedule_to_close_timeout=STORE_SCHEDULE_TO_CLOSE,
            retry_policy=STORE_RETRY,
        )

    def _advance(self, stage: str, *updates: SearchAttributeUpdate[Any], reason: str | None = None) -> None:
        """Record the stage for the query and, in one upsert, for the UI's search attributes."""
        self._status.stage = stage
        if reason is not None:
            self._status.reason = reason
        workflow.upsert_search_attributes([sa.ROUTING_STAGE.value_set(stage), *updates])

    def _outcome(self, status: str) -> RoutingOutcome:
        s = self._status
        return RoutingOutcome(
            status=status,
            email_id=s.email_id,
            case_id=s.case_id,
            case_number=s.case_number,
            queue=s.queue,
            assigned_agent=s.assigned_agent,
            reason=s.reason,
        )
