"""Typed inputs and outputs of workflows and activities.

Everything here travels through Temporal history, so it carries IDs and routing attributes,
never an email body: the raw message stays in the case store and is passed by reference.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

# accepted: open a case; threaded: a reply to an existing case; ignored: loop/noise/unauthorized
# sender (recorded, no case); held: kept until released (unverified mailbox, sender rate limit);
# rejected: unusable input.
EmailStatus = Literal["accepted", "threaded", "rejected", "ignored", "held"]


class EmailRoutingInput(BaseModel):
    email_id: int
    # Prefixes every workflow ID this routing run derives (queue dispatchers), so several
    # deployments or test runs can share one Temporal namespace.
    id_prefix: str = ""


class IntakeResult(BaseModel):
    """Outcome of storing and parsing the email and matching a routing address."""

    email_id: int
    status: EmailStatus
    reason: str | None = None
    mailbox: str | None = None
    workstream_id: str | None = None
    sender: str | None = None
    existing_case_id: int | None = None  # a reply that threads onto an existing case


class CaseRef(BaseModel):
    case_id: int
    case_number: str
    contact_id: str | None = None
    created: bool
    round: int = 1
    acknowledge: bool = False  # the mailbox sends an acknowledgement for new cases


class StepInput(BaseModel):
    """Input of the per-case routing stages; ``step`` keys their trace entries."""

    case_id: int
    round: int = 1
    step: str


class Classification(BaseModel):
    attributes: dict[str, Any] = Field(default_factory=dict)
    priority: str
    matched_rules: list[str] = Field(default_factory=list)


class QueueDecision(BaseModel):
    queue_id: str
    rule: str  # the rule that matched, or "fallback"


class RoutingStatus(BaseModel):
    """What the ``routing_status`` query returns."""

    stage: str
    email_id: int
    case_id: int | None = None
    case_number: str | None = None
    queue: str | None = None
    live_offer: str | None = None  # agent id holding the live offer
    assigned_agent: str | None = None
    reason: str | None = None


class RoutingOutcome(BaseModel):
    """The workflow result."""

    status: str  # queued, assigned, resolved, ignored, held, threaded
    email_id: int
    case_id: int | None = None
    case_number: str | None = None
    queue: str | None = None
    assigned_agent: str | None = None
    reason: str | None = None
