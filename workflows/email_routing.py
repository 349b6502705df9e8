"""EmailRoutingWorkflow: one inbound email, from stored bytes to an assigned, resolved case.

Stages: parse and match a routing address, create (or thread onto) the case, classify,
route to a queue, then assign: the contact's preferred agents in order, each with a durable
offer timer, then the queue's assignment method (through the queue's dispatcher) or leave
the item unassigned for a pick or a supervisor. The workflow then waits, durably, for the
case to be resolved.

Durable-safety notes:
- The workflow only sees IDs and routing attributes. Parsing, rules and every read or write
  of the case store happen in activities, so replays never touch I/O.
- Every activity is idempotent; the step keys that make them so are built from the routing
  round and a counter, both replayed deterministically from history.
- The store, not the workflow, arbitrates races (an accept against a pick, two workflows
  for one agent): the workflow reflects what the transaction decided.
- Activities are called by reference (``AssignmentActivities.offer_preferred``): their names
  in history are those of their ``activity.defn``, unchanged, so histories replay.
- The offers of the case and the answers to them live in one :class:`OfferInbox`; signals and
  the ``respond`` Update both write there, in the order history replays them.

Replay compatibility: branches that key on the shape of a recorded result, so histories
recorded by older versions replay unchanged. Each can go once no workflow started before its
date is still open and the histories in tests/histories/ that exercise it are re-recorded.
- ``intake.routed is None`` (before 2026-11): intake did not route; call ``route_case``.
- ``attempt.position is None`` (before 2026-11): ``offer_preferred`` tried one agent only.
- ``parse_email`` failing with ``EmailRejected`` (before 2026-12-02): the workflow failed
  with it; now a rejection is a result and the workflow completes (``_intake``).
- ``intake.recheck_after_seconds is None``: every hold waited for a ``release`` signal only;
  rate-limit holds recorded since 2026-12-02 also wait on a timer.
- ``workflow.patched(EARLY_ANSWERS_BOUNDED)`` (2026-12-02): an answer that came before its
  offer applies only if it names that offer or is at most a few seconds old; histories
  recorded before applied any earlier answer of the agent.
- ``workflow.patched(IN_QUEUE_OVERFLOW)`` (2026-12-02): a queue's ``waiting_longer_than``
  overflow rule runs a durable timer per waiting item (``_watch_overflow``). Asked only when
  the routing result (or a transfer) names such a rule, so histories without one carry no
  marker and results recorded before have no ``in_queue_overflow``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, Literal, TypeVar, overload

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.assignment import AssignmentActivities
    from activities.intake import IntakeActivities
    from activities.notify import NotifyActivities
    from activities.routing import RoutingActivities
    from activities.threads import ThreadActivities
    from routedesk import search_attributes as sa
    from routedesk.contracts import (
        AgentAnswer,
        AnswerInput,
        AssignmentPlan,
        AssignRequest,
        AssignResult,
        CaseRef,
        CaseStepInput,
        DirectAssignInput,
        DispatchRequest,
        EmailRoutingInput,
        InQueueOverflow,
        IntakeRequest,
        IntakeResult,
        IntakeStatus,
        OfferInfo,
        PreferredOfferRequest,
        QueueDecision,
        RespondRequest,
        RouteCaseInput,
        RoutingOutcome,
        RoutingStatus,
        Stage,
        ThreadInput,
        TransferInput,
    )
    from workflows.offer_inbox import Answer, Decision, OfferInbox, OfferResult

A = TypeVar("A")
T = TypeVar("T")

REJECTED = "EmailRejected"  # the failure type of rejections recorded before 2026-12-02
EARLY_ANSWERS_BOUNDED = "early-answers-bounded-2026-12-02"
IN_QUEUE_OVERFLOW = "in-queue-overflow-2026-12-02"

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
LOCAL_RETRY_THRESHOLD = timedelta(seconds=10)


@workflow.defn
class EmailRoutingWorkflow:
    def __init__(self) -> None:
        self._status = RoutingStatus(stage=Stage.RECEIVED, email_id=0)
        self._round = 1
        self._steps = 0
        # Search attribute updates wait here until the workflow next blocks, so the stages a
        # workflow task passes through cost one upsert event, not one each.
        self._pending_sa: dict[str, SearchAttributeUpdate[Any]] = {}
        self._released = False
        self._inbox = OfferInbox()
        self._resolved = False
        # Offers a transfer withdrew in the store (issue 18): one whose signal comes later is
        # closed unrun.
        self._withdrawn_offers: set[int] = set()
        # The in-queue overflow rule of the item's current queue, and its timer's task.
        self._overflow: InQueueOverflow | None = None
        self._overflow_task: asyncio.Task[None] | None = None

    # --- queries and signals -------------------------------------------------------------

    @workflow.query
    def routing_status(self) -> RoutingStatus:
        return self._status

    @workflow.signal
    def release(self) -> None:
        """A held email may be looked at again (mailbox verified, or released by hand)."""
        self._released = True

    @workflow.signal
    def offer(self, offer: OfferInfo) -> None:
        """The queue's dispatcher reserved an agent for this case."""
        self._inbox.deliver(offer, workflow.now(), bounded=self._early_answers_bounded(offer.agent_id))

    @workflow.signal
    def accept(self, answer: AgentAnswer) -> None:
        """Integrations' contract: the agent holding the live offer accepts it."""
        self._answer(answer.agent_id, Decision.ACCEPT, answer.reason, answer.offer_id)

    @workflow.signal
    def decline(self, answer: AgentAnswer) -> None:
        self._answer(answer.agent_id, Decision.DECLINE, answer.reason, answer.offer_id)

    @workflow.signal
    def customer_replied(self, email_id: int) -> None:
        """A reply was threaded onto this case (traced by the reply's own workflow)."""
        self._status.replies += 1

    def _answer(self, agent_id: str, decision: Decision, reason: str | None, offer_id: int | None = None) -> bool:
        """Both doors (signal and Update) answer here. An answer with no open offer is kept
        briefly for the agent's next offer: the dispatcher's ``offer`` signal, or (after a
        worker restart) the routing step's result, can come after the agent saw the offer in
        the store. A stale answer is never applied: an agent who answered is not offered this
        case again in the round, and an early answer expires (see OfferInbox)."""
        answer = Answer(agent_id, decision, reason, offer_id, workflow.now())
        if self._inbox.held_by(agent_id) is not None:
            return self._inbox.answer(answer, keep_early=False)
        # Kept only while an offer to this agent can still come (histories recorded before
        # the patch kept any answer until the case was assigned).
        keep = self._may_still_offer() if workflow.patched(EARLY_ANSWERS_BOUNDED) else not self._done()
        return self._inbox.answer(answer, keep_early=keep)

    def _early_answers_bounded(self, agent_id: str) -> bool:
        # Asked only when an early answer waits for this agent, so histories without one
        # carry no marker.
        return agent_id not in self._inbox.early or workflow.patched(EARLY_ANSWERS_BOUNDED)

    # --- updates: answers that need a result at once --------------------------------------

    @workflow.update
    async def respond(self, req: RespondRequest) -> str:
        """Answer an offer and return how it ended. An answer that comes a moment before the
        offer (the store shows it first) waits for it, as a signal would, for a few seconds."""
        offer = self._inbox.held_by(req.agent_id)
        if offer is None:
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    lambda: self._inbox.held_by(req.agent_id) is not None or self._done(),
                    timeout=EARLY_ANSWER_WAIT,
                )
            offer = self._inbox.held_by(req.agent_id)
            if offer is None:
                raise ApplicationError(
                    f"{req.agent_id} holds no live offer on {self._status.case_number or 'this case'}",
                    type="NoLiveOffer",
                )
        self._answer(req.agent_id, Decision(req.decision), req.reason, offer.offer_id)
        await workflow.wait_condition(lambda: offer.offer_id in self._inbox.results)
        return self._inbox.results[offer.offer_id]

    @respond.validator
    def _validate_respond(self, req: RespondRequest) -> None:
        # Refused here, a stale or foreign answer never enters history: the agent's offer
        # here ended, or no offer can come any more.
        offer = self._inbox.held_by(req.agent_id)
        if offer is not None and not self._inbox.is_answered(offer):
            return
        if offer is None and not self._inbox.answered_before(req.agent_id) and self._may_still_offer():
            return
        raise ValueError(f"{req.agent_id} holds no live offer on {self._status.case_number or 'this case'}")

    @workflow.update
    async def pick(self, req: AssignRequest) -> str:
        return await self._assign_directly(req.agent_id, "pick")

    @pick.validator
    def _validate_pick(self, req: AssignRequest) -> None:
        self._require_assignable()

    @workflow.update
    async def assign(self, req: AssignRequest) -> str:
        return await self._assign_directly(req.agent_id, "supervisor")

    @assign.validator
    def _validate_assign(self, req: AssignRequest) -> None:
        self._require_assignable()

    @workflow.update
    async def resolve(self) -> str:
        case_id = self._status.case_id
        assert case_id is not None
        await self._store(
            AssignmentActivities.resolve_case,
            CaseStepInput(case_id=case_id, step=self._step("resolve")),
        )
        self._resolved = True
        self._advance(Stage.RESOLVED)
        return f"{self._status.case_number} resolved"

    @resolve.validator
    def _validate_resolve(self) -> None:
        if self._status.case_id is None or self._resolved:
            raise ValueError("nothing to resolve: no open case in this workflow")
        if self._status.queue is None:
            raise ValueError(f"{self._status.case_number} is still being routed; resolve it once it is in a queue")

    # --- the run -------------------------------------------------------------------------

    @workflow.run
    async def run(self, inp: EmailRoutingInput) -> RoutingOutcome:
        self._status.email_id = inp.email_id

        intake = await self._intake(inp.email_id)
        while intake.status == IntakeStatus.HELD:
            # Held mail waits durably, for days if need be, and is never dropped. A rate-limit
            # hold also ends on its own: a durable timer until the sender may be back under
            # the limit, then intake asks again (and may hold it again, with a new time).
            self._advance(Stage.HELD, reason=intake.reason)
            recheck = intake.recheck_after_seconds
            with contextlib.suppress(TimeoutError):
                await self._wait(
                    lambda: self._released,
                    timeout=timedelta(seconds=recheck) if recheck is not None else None,
                )
            # Reset before asking again: a release that arrives while intake re-evaluates
            # the email must not be lost.
            self._released = False
            intake = await self._intake(inp.email_id)

        if intake.status == IntakeStatus.THREADED:
            thread = await self._store(
                ThreadActivities.thread_reply,
                ThreadInput(
                    email_id=inp.email_id,
                    case_id=intake.existing_case_id or 0,
                    workflow_id=workflow.info().workflow_id,
                ),
            )
            self._status.case_id, self._status.case_number = (
                thread.case.case_id,
                thread.case.case_number,
            )
            if thread.action == "signal":
                reason = f"reply added to {thread.case.case_number}"
                try:
                    await workflow.get_external_workflow_handle_for(
                        EmailRoutingWorkflow.run, thread.case_workflow_id or ""
                    ).signal(EmailRoutingWorkflow.customer_replied, inp.email_id)
                except ApplicationError:
                    # The case's workflow was terminated by hand: the reply is stored and linked.
                    reason += f"; its workflow {thread.case_workflow_id} is not running"
                self._advance(Stage.THREADED, sa.CASE_NUMBER.value_set(thread.case.case_number), reason=reason)
                return self._outcome()
            case = thread.case  # reopened: this workflow routes it again
            routed = await self._store(
                RoutingActivities.route_case,
                RouteCaseInput(email_id=inp.email_id, case_id=case.case_id, round=case.round),
            )
        elif intake.status != IntakeStatus.ACCEPTED:
            # rejected, ignored: a recorded business outcome; the workflow completes.
            self._advance(Stage(intake.status), reason=intake.reason)
            return self._outcome()
        else:
            # Intake already opened, classified and routed the case, in its own transaction
            # (each stage still has its own trace entries and idempotency key). A result
            # recorded before intake routed has no `routed`: that history called route_case,
            # and replaying it calls route_case again.
            if intake.routed is not None:
                routed = intake.routed
            else:
                routed = await self._store(RoutingActivities.route_case, RouteCaseInput(email_id=inp.email_id))
            case = routed.case

        decision = routed.decision
        self._round = case.round
        self._status.case_id = case.case_id
        self._status.case_number = case.case_number
        self._status.queue = decision.queue_id
        self._advance(
            Stage.QUEUED,
            sa.CASE_NUMBER.value_set(case.case_number),
            sa.MAILBOX.value_set(intake.mailbox or ""),
            sa.CONTACT_ID.value_set(case.contact_id or ""),
            sa.ROUTING_QUEUE.value_set(decision.queue_id),
        )
        ack = None
        if case.created and case.acknowledge:
            # Not awaited before assignment: a slow or failing mail relay must not delay it.
            ack = workflow.start_activity_method(
                NotifyActivities.send_acknowledgement,
                case.case_id,
                start_to_close_timeout=timedelta(seconds=60),
                schedule_to_close_timeout=timedelta(hours=6),
                retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=5)),
            )

        if decision.in_queue_overflow is not None:
            self._arm_overflow(decision.in_queue_overflow)
        await self._assign_case(case, decision)
        await self._wait(lambda: self._resolved)
        if self._overflow_task is not None:
            await self._overflow_task  # ends once the case is assigned or resolved
        if ack is not None:
            # A final failure is recorded in the notification table; the case is unaffected.
            with contextlib.suppress(ActivityError):
                await ack
        await self._wait(workflow.all_handlers_finished)
        return self._outcome()

    # --- assignment ----------------------------------------------------------------------

    async def _assign_case(self, case: CaseRef, decision: QueueDecision) -> None:
        """Preferred agents in order, then the fallback; returns once assigned (or resolved)."""
        plan = decision.plan
        assert plan is not None
        if not decision.dispatched:  # else routing already handed it to the assignment method
            if await self._offer_to_preferred(case, plan) or self._done():
                return
            if plan.preferred_agents and plan.preferred_enabled and plan.fallback == "leave_unassigned":
                await self._store(
                    AssignmentActivities.leave_unassigned,
                    CaseStepInput(
                        case_id=case.case_id,
                        step=self._step("unassigned"),
                        reason=(
                            f"no preferred agent took it; fallback leaves it unassigned in queue {self._status.queue}"
                        ),
                    ),
                )
                self._advance(Stage.UNASSIGNED)
                await self._wait(self._done)
                return
            await self._store(
                AssignmentActivities.enqueue_for_dispatch,
                DispatchRequest(case_id=case.case_id, step=self._step("enqueue")),
            )
        self._advance(Stage.WAITING_FOR_AGENT)
        # One loop for every queue offer: the first may come in the routing step's (recorded)
        # result, made when the queue was empty; the others come from the dispatcher.
        offer = decision.offer
        while True:
            if offer is not None:
                if await self._run_offer(offer):
                    return
                if not self._done():
                    self._advance(Stage.WAITING_FOR_AGENT)
            if self._done():
                return
            await self._wait(lambda: bool(self._inbox.waiting) or self._done())
            if self._done():
                return
            offer = self._inbox.next_waiting()

    async def _offer_to_preferred(self, case: CaseRef, plan: AssignmentPlan) -> bool:
        """Offer to the preferred agents in order; True once one accepted."""
        preferred = list(plan.preferred_agents) if plan.preferred_enabled else []
        if case.previous_agent:
            # A reopened case goes to its previous owner first.
            preferred = [case.previous_agent, *[a for a in preferred if a != case.previous_agent]]
        position = 1
        while position <= len(preferred):
            if self._done():
                return False
            agent_id = preferred[position - 1]
            label = "previous owner of the reopened case" if agent_id == case.previous_agent else None
            attempt = await self._store(
                AssignmentActivities.offer_preferred,
                PreferredOfferRequest(
                    case_id=case.case_id,
                    agent_id=agent_id,
                    position=position,
                    step=self._step(f"pref{position}"),
                    label=label,
                    # Ineligible agents are skipped in the same transaction, so their skips cost
                    # no history events.
                    more=preferred[position:],
                ),
            )
            if attempt.offer is not None and await self._run_offer(attempt.offer):
                return True
            # Results recorded before `more` existed carry no position: one agent was tried.
            position = (attempt.position or position) + 1
        return False

    async def _run_offer(self, offer: OfferInfo) -> bool:
        """Wait for the answer on a durable timer; True when the case got assigned."""
        case_id = self._status.case_id
        assert case_id is not None
        if offer.offer_id in self._withdrawn_offers:  # a transfer withdrew it before it came
            self._inbox.close(offer, OfferResult.WITHDRAWN)
            return False
        self._inbox.open(offer, workflow.now(), bounded=self._early_answers_bounded(offer.agent_id))
        self._status.live_offer = offer.agent_id
        self._advance(Stage.OFFERED)
        workflow.set_current_details(
            f"Offered to {offer.agent_id} ({offer.kind} offer {offer.offer_id}); "
            f"answer within {offer.timeout_seconds:g}s"
        )
        with contextlib.suppress(TimeoutError):  # no answer: the offer timed out
            await self._wait(
                lambda: self._inbox.is_answered(offer) or self._done() or offer.offer_id in self._withdrawn_offers,
                timeout=timedelta(seconds=offer.timeout_seconds),
            )
        answer = self._inbox.answer_to(offer)
        self._status.live_offer = None
        workflow.set_current_details("")
        if self._done():  # picked, assigned by a supervisor or resolved meanwhile: offer withdrawn
            self._inbox.close(offer, OfferResult.WITHDRAWN)
            return self._status.assigned_agent is not None
        if offer.offer_id in self._withdrawn_offers:  # the case moved to another queue
            self._inbox.close(offer, OfferResult.WITHDRAWN)
            return False

        def answer_input(outcome: Any, reason: str | None = None) -> AnswerInput:
            return AnswerInput(
                case_id=case_id,
                offer_id=offer.offer_id,
                agent_id=offer.agent_id,
                outcome=outcome,
                reason=reason,
                step=self._step(outcome),
            )

        if answer is None:
            await self._store(AssignmentActivities.close_offer, answer_input("timed_out"))
            self._inbox.close(offer, OfferResult.TIMED_OUT)
            return False
        if answer.decision == Decision.DECLINE:
            await self._store(AssignmentActivities.close_offer, answer_input("declined", answer.reason))
            self._inbox.close(offer, OfferResult.DECLINED)
            return False
        result = await self._store(AssignmentActivities.accept_offer, answer_input("accepted"))
        if result.assigned:
            self._set_assigned(offer.agent_id)
            self._inbox.close(offer, OfferResult.ASSIGNED)
            return True
        self._inbox.close(offer, f"{OfferResult.REFUSED}: {result.reason}")
        return self._status.assigned_agent is not None

    async def _assign_directly(self, agent_id: str, by: Literal["pick", "supervisor"]) -> str:
        case_id = self._status.case_id
        assert case_id is not None
        result: AssignResult = await self._store(
            AssignmentActivities.assign_direct,
            DirectAssignInput(
                case_id=case_id,
                agent_id=agent_id,
                by=by,
                step=self._step(by),
            ),
        )
        if not result.assigned:
            raise ApplicationError(
                f"cannot assign {self._status.case_number} to {agent_id}: {result.reason}",
                type="AssignRefused",
            )
        self._set_assigned(agent_id)
        return f"{self._status.case_number} assigned to {agent_id}"

    # --- transfers between queues (issue 18) -------------------------------------------

    async def _transfer(self, queue_id: str, reason: str) -> bool:
        """Move the waiting case to ``queue_id`` (overflow, SLA actions); True when it moved.

        The store withdraws a live offer (whose wait here then ends) and wakes the new
        queue's dispatcher; the assignment loop keeps waiting for offers, which now come
        from that dispatcher. Refused (False) when the case is assigned, resolved or in that
        queue already.
        """
        case_id = self._status.case_id
        if case_id is None or self._done():
            return False
        result = await self._store(
            AssignmentActivities.transfer_to_queue,
            TransferInput(case_id=case_id, queue_id=queue_id, step=self._step("transfer"), reason=reason),
        )
        if result.withdrawn_offer_id is not None:
            self._withdrawn_offers.add(result.withdrawn_offer_id)
        if result.transferred:
            self._status.queue = queue_id
            update = sa.ROUTING_QUEUE.value_set(queue_id)
            self._pending_sa[update.key.name] = update
            self._flush_search_attributes()  # the main loop may wait long before its next flush
            self._overflow = None
            if result.in_queue_overflow is not None:
                self._arm_overflow(result.in_queue_overflow)
        return result.transferred

    def _arm_overflow(self, overflow: InQueueOverflow) -> None:
        """Time the current queue's in-queue overflow rule (issue 18) on a durable timer."""
        self._overflow = overflow
        running = self._overflow_task is not None and not self._overflow_task.done()
        if not running and workflow.patched(IN_QUEUE_OVERFLOW):
            self._overflow_task = asyncio.create_task(self._watch_overflow())

    async def _watch_overflow(self) -> None:
        """Transfer the item when it has waited too long in its queue; a transfer re-arms the
        timer with the new queue's rule (timed from the transfer). Ends once the case is
        assigned or resolved, when a timer left is cancelled."""
        while not self._done() and self._overflow is not None:
            overflow = self._overflow
            left = overflow.transfer_at - workflow.now()
            if left > timedelta(0):
                try:
                    await workflow.wait_condition(
                        lambda: self._done() or self._overflow is not overflow,  # noqa: B023
                        timeout=left,
                    )
                    continue  # assigned, resolved or moved meanwhile: look again
                except TimeoutError:
                    pass
            self._overflow = None
            await self._transfer(overflow.to_queue, overflow.reason)

    # --- helpers -----------------------------------------------------------------------

    def _done(self) -> bool:
        return self._status.assigned_agent is not None or self._resolved

    def _may_still_offer(self) -> bool:
        """An offer to a new agent can still come: the case is being routed or waits for the
        queue's assignment method, and no other agent holds the live offer."""
        return not self._done() and self._inbox.live is None and self._status.stage in MAY_BE_OFFERED

    def _require_assignable(self) -> None:
        if self._status.case_id is None or self._status.queue is None:
            raise ValueError("the case is not in a queue yet")
        if self._resolved:
            raise ValueError(f"{self._status.case_number} is resolved")
        if self._status.assigned_agent is not None:
            raise ValueError(f"{self._status.case_number} is already assigned to {self._status.assigned_agent}")

    def _set_assigned(self, agent_id: str) -> None:
        self._status.assigned_agent = agent_id
        self._advance(Stage.ASSIGNED, sa.ASSIGNED_AGENT.value_set(agent_id))
        workflow.set_current_details(f"Assigned to {agent_id}")

    def _step(self, name: str) -> str:
        """A trace/idempotency key unique within this workflow, stable across replays."""
        self._steps += 1
        return f"r{self._round}:{name}:{self._steps}"

    async def _intake(self, email_id: int) -> IntakeResult:
        """Intake's decision. A rejection is a result like any other and ends the workflow as
        Completed with outcome ``rejected``; results recorded before 2026-12-02 carry an
        ``EmailRejected`` failure instead, and replaying them fails the workflow as it did."""
        try:
            return await self._store(IntakeActivities.parse_email, IntakeRequest(email_id=email_id))
        except (ActivityError, ApplicationError) as err:
            # A local activity's ApplicationError arrives unwrapped, a regular one's as cause.
            cause = err.cause if isinstance(err, ActivityError) else err
            if isinstance(cause, ApplicationError) and cause.type == REJECTED:
                self._advance(Stage.REJECTED, reason=cause.message)
                self._flush_search_attributes()
                raise ApplicationError(cause.message, type=REJECTED, non_retryable=True) from None
            raise

    @overload
    async def _store(self, activity: Callable[[Any, A], Awaitable[T]], arg: A) -> T: ...

    @overload
    async def _store(self, activity: Callable[[Any, A], T], arg: A) -> T: ...

    async def _store(self, activity: Callable[[Any, A], Any], arg: A) -> Any:
        """A case-store transaction, run as a local activity.

        Each is a short, idempotent transaction on the worker's own store, so running it
        inside the workflow task costs one marker event instead of three activity events and
        a server round trip. Retries beyond the threshold are scheduled with durable timers.
        """
        return await workflow.execute_local_activity_method(
            activity,
            arg,
            start_to_close_timeout=STORE_START_TO_CLOSE,
            schedule_to_close_timeout=STORE_SCHEDULE_TO_CLOSE,
            retry_policy=STORE_RETRY,
            local_retry_threshold=LOCAL_RETRY_THRESHOLD,
        )

    async def _wait(self, condition: Callable[[], bool], timeout: timedelta | None = None) -> None:
        self._flush_search_attributes()
        await workflow.wait_condition(condition, timeout=timeout)

    def _advance(self, stage: Stage, *updates: SearchAttributeUpdate[Any], reason: str | None = None) -> None:
        """Record the stage for the query now, and for the UI's search attributes at the next
        wait (see ``_pending_sa``)."""
        self._status.stage = stage
        if reason is not None:
            self._status.reason = reason
        for update in (sa.ROUTING_STAGE.value_set(stage.value), *updates):
            self._pending_sa[update.key.name] = update

    def _flush_search_attributes(self) -> None:
        if self._pending_sa:
            workflow.upsert_search_attributes(list(self._pending_sa.values()))
            self._pending_sa.clear()

    def _outcome(self) -> RoutingOutcome:
        self._flush_search_attributes()
        return self._status.model_copy(update={"live_offer": None})


# How long a `respond` Update that came before its offer waits for it.
EARLY_ANSWER_WAIT = timedelta(seconds=5)
# Stages in which an offer to some agent may be on its way.
MAY_BE_OFFERED = frozenset({Stage.RECEIVED, Stage.QUEUED, Stage.WAITING_FOR_AGENT})
