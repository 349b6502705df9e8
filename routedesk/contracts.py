"""Typed inputs and outputs of workflows and activities.

Everything here travels through Temporal history, so it carries IDs and routing attributes,
never an email body: the raw message stays in the case store and is passed by reference.
The workflow-ID prefix of a deployment is the worker's (its activities wake dispatchers under
it), not a field of these: inputs recorded with an ``id_prefix`` still load (pydantic ignores
the field).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal, Protocol

from pydantic import AfterValidator, AliasChoices, BaseModel, Field

from routedesk.limits import cap_text

# Any text a sender or an agent controls (reasons, addresses): bounded wherever it enters
# history, so one hostile value cannot push a workflow task past the server's size limit.
Text = Annotated[str, AfterValidator(cap_text)]


class IntakeStatus(StrEnum):
    """What intake decided about an email (the email row's ``status`` once decided)."""

    RECEIVED = "received"  # stored, not decided yet
    ACCEPTED = "accepted"  # a new case
    THREADED = "threaded"  # a reply to an existing case
    REJECTED = "rejected"  # unusable input (no sender, no routing address)
    IGNORED = "ignored"  # loop or noise protection, or an unauthorized sender
    HELD = "held"  # kept until released: unverified mailbox, sender over the rate limit


class Stage(StrEnum):
    """Where a routing workflow is: the ``RoutingStage`` search attribute and the query's stage."""

    RECEIVED = "received"
    HELD = "held"
    REJECTED = "rejected"
    IGNORED = "ignored"
    THREADED = "threaded"
    QUEUED = "queued"  # in a queue, before assignment starts
    OFFERED = "offered"  # an agent holds the live offer
    WAITING_FOR_AGENT = "waiting_for_agent"  # the queue's assignment method looks for an agent
    UNASSIGNED = "unassigned"  # left in the queue for a pick or a supervisor
    ASSIGNED = "assigned"
    RESOLVED = "resolved"
    FAILED = "failed"  # the workflow failed (a fault, not a business outcome)


class Status(StrEnum):
    """The one status vocabulary people see: the CLI, the HTTP API and the docs (README
    *Status vocabulary*). The workflow's ``Stage`` (the ``RoutingStage`` search attribute)
    uses the same words; a case's status is derived from its row and live offer in
    ``routedesk.views.case_status``, an email's from its intake decision and its case."""

    RECEIVED = "received"  # stored; routing (intake, classification, queue) under way
    OFFERED = "offered"  # an agent holds the live offer
    WAITING_FOR_AGENT = "waiting_for_agent"  # in a queue; routing looks for an agent
    UNASSIGNED = "unassigned"  # left in the queue for a pick or a supervisor
    ASSIGNED = "assigned"
    RESOLVED = "resolved"
    HELD = "held"  # an email kept until released (unverified mailbox, rate limit)
    IGNORED = "ignored"  # an email dropped by loop or noise protection
    REJECTED = "rejected"  # an email routing cannot use (no sender, no routing address)
    THREADED = "threaded"  # an email that joined an existing case as a reply


# The statuses a case can have (the others are an email's that opened no case).
CASE_STATUSES = (
    Status.RECEIVED,
    Status.OFFERED,
    Status.WAITING_FOR_AGENT,
    Status.UNASSIGNED,
    Status.ASSIGNED,
    Status.RESOLVED,
)


# Stages after which a routing workflow opens no case of its own.
TERMINAL_STAGES = frozenset({Stage.REJECTED, Stage.IGNORED, Stage.HELD, Stage.THREADED, Stage.FAILED})


class EmailRoutingInput(BaseModel):
    """Route one stored email: the workflow's input, and intake's request to evaluate it (and,
    when it is accepted, route its new case as well)."""

    email_id: int


IntakeRequest = EmailRoutingInput


class IntakeResult(BaseModel):
    """Outcome of storing and parsing the email and matching a routing address."""

    email_id: int
    status: IntakeStatus
    reason: Text | None = None
    mailbox: str | None = None
    workstream_id: str | None = None
    sender: Text | None = None
    existing_case_id: int | None = None  # a reply that threads onto an existing case
    # An accepted email's case, opened, classified and routed in the intake transaction.
    # None in results recorded before intake routed: those workflows call route_case.
    routed: RoutedCase | None = None
    # A rate-limit hold: ask again after this many seconds, when the sender may be back under
    # the limit. None for other holds, and in results recorded before holds ended on their own.
    recheck_after_seconds: float | None = None


class CaseRowLike(Protocol):
    """What :meth:`CaseRef.of` reads of a case row (routedesk.models.CaseRow), kept a protocol
    so the contracts import nothing from the store."""

    id: int | None
    number: str | None
    contact_id: str | None
    round: int


class CaseRef(BaseModel):
    """A case as the workflow sees it: IDs and routing attributes, made from its row by :meth:`of`."""

    case_id: int
    case_number: str
    contact_id: str | None = None
    created: bool
    round: int = 1
    previous_agent: str | None = None  # a reopened case goes to its previous owner first
    acknowledge: bool = False  # the mailbox sends an acknowledgement for new cases

    @classmethod
    def of(
        cls,
        case: CaseRowLike,
        *,
        created: bool = False,
        round: int | None = None,
        previous_agent: str | None = None,
        acknowledge: bool = False,
    ) -> CaseRef:
        """The reference to a stored case row (its round unless another is named)."""
        assert case.id is not None and case.number is not None
        return cls(
            case_id=case.id,
            case_number=case.number,
            contact_id=case.contact_id,
            created=created,
            round=case.round if round is None else round,
            previous_agent=previous_agent,
            acknowledge=acknowledge,
        )


class RouteCaseInput(BaseModel):
    """Open, classify and route a case: a new one for ``email_id``, or ``case_id`` reopened by
    that email for another round."""

    email_id: int
    case_id: int | None = None
    round: int = 1


class InQueueOverflow(BaseModel):
    """A queue's ``waiting_longer_than`` overflow rule for one waiting item."""

    transfer_at: datetime  # UTC; business time already counted on the queue's calendar
    to_queue: str
    reason: Text


class QueueDecision(BaseModel):
    queue_id: str
    rule: str  # the rule that matched, or "fallback"
    plan: AssignmentPlan | None = None
    # No preferred agent to try: the case went straight to the queue's assignment method,
    # in the same transaction (one round trip fewer than a separate enqueue).
    dispatched: bool = False
    # With no other item waiting in the queue, the method ran in that transaction too: the
    # offer it made, which the workflow runs without waiting for the dispatcher.
    offer: OfferInfo | None = None
    # The queue's in-queue overflow rule (issue 18): when to transfer the item if still
    # waiting. None (and absent from results recorded before): no timer.
    in_queue_overflow: InQueueOverflow | None = None
    # Durable timers the routing workflow runs for this case (an SLA policy matched, the
    # workstream reassigns idle cases); None for none, and in results recorded before them.
    timers: CaseTimers | None = None


class RoutedCase(BaseModel):
    case: CaseRef
    decision: QueueDecision


class RoutingStatus(BaseModel):
    """Where a routing workflow stands: the ``routing_status`` query, and (when it ends) the
    workflow's result. Results recorded before 2026-12-02 name the stage ``status``."""

    stage: Stage = Field(validation_alias=AliasChoices("stage", "status"))
    email_id: int
    case_id: int | None = None
    case_number: str | None = None
    queue: str | None = None
    live_offer: str | None = None  # agent id holding the live offer
    assigned_agent: str | None = None
    reason: Text | None = None
    replies: int = 0  # customer replies threaded onto the case while this workflow runs it


# The workflow's result is its last status.
RoutingOutcome = RoutingStatus


# --- assignment ----------------------------------------------------------------------------


class AssignmentPlan(BaseModel):
    """What the workstream and contact say about assigning this case; fixed per round."""

    preferred_enabled: bool
    preferred_agents: list[str] = Field(default_factory=list)
    fallback: Literal["next_best_agent", "leave_unassigned"] = "next_best_agent"
    offer_timeout_seconds: float = 60
    # The workstream's alert_waiting_longer_than: a supervisor alert when the case is still
    # unassigned this long after it was queued (absent in results recorded before 2026-12-02).
    alert_waiting_after_seconds: float | None = None


class OfferInfo(BaseModel):
    offer_id: int
    agent_id: str
    kind: Literal["preferred", "queue"]
    timeout_seconds: float
    # The agent has a notification channel: the workflow sends the offer there (absent, and
    # so False, in results recorded before 2026-12-02).
    notify: bool = False


class PreferredOfferRequest(BaseModel):
    case_id: int
    agent_id: str
    position: int  # 1..3, the offer order
    step: str
    label: str | None = None  # how the trace names this candidate, e.g. "previous owner"
    # The preferred agents after this one, tried in the same transaction while each is
    # ineligible: a skip costs no extra round trip or history event.
    more: list[str] = Field(default_factory=list)


class OfferAttempt(BaseModel):
    offer: OfferInfo | None = None  # None: not eligible, reason traced
    reason: Text | None = None
    # Position of the last agent tried (offered, or skipped). None in results recorded before
    # `more` existed: only the requested position was tried.
    position: int | None = None


class AnswerInput(BaseModel):
    """An agent's answer to an offer, or its timeout, for the store to record."""

    case_id: int
    offer_id: int
    agent_id: str
    outcome: Literal["accepted", "declined", "timed_out", "withdrawn"]
    reason: Text | None = None
    step: str


class AssignResult(BaseModel):
    assigned: bool
    agent_id: str | None = None
    reason: Text


class DirectAssignInput(BaseModel):
    """Pick (by the agent) or assign (by a supervisor), bypassing offers."""

    case_id: int
    agent_id: str
    by: Literal["pick", "supervisor"]
    step: str


class DispatchRequest(BaseModel):
    case_id: int
    step: str


class CaseStepInput(BaseModel):
    case_id: int
    step: str
    reason: Text | None = None


class DispatcherInput(BaseModel):
    queue_id: str
    sweep_interval_seconds: float = 60
    pending_kick: bool = True  # carried over continue-as-new so no kick is lost
    passes: int = 0


class DispatchPass(BaseModel):
    queue_id: str
    pass_key: str  # idempotency: a retried pass returns the offers it already made
    sweep: bool = False


class DispatchedOffer(BaseModel):
    case_id: int
    workflow_id: str
    offer: OfferInfo


class DispatchResult(BaseModel):
    offers: list[DispatchedOffer] = Field(default_factory=list)
    waiting: int = 0
    sweep_interval_seconds: float = 60
    # The soonest a starved item of the queue is due for a new round, from the end of the
    # pass (none: no starved item): the dispatcher passes then, whatever the kicks.
    retry_in_seconds: float | None = None


# --- messages to the case workflow ---------------------------------------------------------


class AgentAnswer(BaseModel):
    """Payload of the ``accept`` and ``decline`` signals."""

    agent_id: str
    reason: Text | None = None
    offer_id: int | None = None  # optional: pins the answer to one offer


class RespondRequest(BaseModel):
    """Payload of the ``respond`` update."""

    agent_id: str
    decision: Literal["accept", "decline"]
    reason: Text | None = None


class AssignRequest(BaseModel):
    """Payload of the ``pick`` and ``assign`` updates."""

    agent_id: str


# --- threading -----------------------------------------------------------------------------


class ThreadInput(BaseModel):
    email_id: int  # the reply
    case_id: int  # the case it threads onto
    workflow_id: str  # the reply's own workflow, which routes the case again if reopened


class ThreadDecision(BaseModel):
    # signal: the case's workflow is still routing it; reopen: the case was resolved and this
    # workflow routes it again.
    action: Literal["signal", "reopen"]
    case: CaseRef
    case_workflow_id: str | None = None
    reason: Text


# --- transfers between queues (issue 18: overflow and SLA actions) ---------------------------


class TransferInput(BaseModel):
    case_id: int
    queue_id: str  # the queue the waiting case moves to
    step: str  # idempotency: a retried transfer returns what the first attempt did
    reason: Text


class TransferResult(BaseModel):
    transferred: bool
    queue_id: str | None = None  # the case's queue afterwards
    from_queue: str | None = None
    # The live offer the transfer withdrew: if its signal is still on its way, the workflow
    # must not run it.
    withdrawn_offer_id: int | None = None
    reason: Text | None = None  # why not, when not transferred
    # The new queue's own in-queue overflow rule, timed from the transfer.
    in_queue_overflow: InQueueOverflow | None = None


# --- SLA timers and idle reassignment (routedesk/sla.py) ----------------------------------


class CaseTimers(BaseModel):
    sla_policy: str | None = None  # the matching SLA policy's id: the workflow runs its timers
    reassign_if_idle_seconds: float | None = None  # the workstream's reassign_if_idle


class SlaStepInput(BaseModel):
    case_id: int
    step: str
    resume: bool = False  # a customer replied: timers paused for the customer run again


class SlaNext(BaseModel):
    """When the workflow must next call ``sla_fire`` (None: the timers are paused or every
    target is met), and the earliest due time still open (the ``SlaDueAt`` attribute)."""

    active: bool = True  # False once the case is resolved or has no policy any more
    fire_at: datetime | None = None
    due_at: datetime | None = None


class SlaWorkflowAction(BaseModel):
    """An SLA action the workflow carries out itself (after the transaction recorded it)."""

    kind: Literal["transfer_to_queue", "reassign", "withdraw_offer"]
    queue_id: str | None = None
    agent_id: str | None = None
    offer_id: int | None = None
    reason: Text = ""


class SlaFired(BaseModel):
    actions: list[SlaWorkflowAction] = Field(default_factory=list)


class IdleCheckInput(BaseModel):
    case_id: int
    agent_id: str
    idle_seconds: float
    step: str


class IdleCheck(BaseModel):
    reassigned: bool = False
    wait_seconds: float | None = None  # not idle yet: check again after this long


QueueDecision.model_rebuild()
