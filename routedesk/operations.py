"""The operations layer: everything a person or an integration does, in one place.

Used by the CLI, the HTTP API (starter/http.py) and every intake channel. Inputs and results
are typed (pydantic models); every action takes an :class:`Actor` and its case trace entry
names them ("... by alice (agent)"). Store reads and writes for these operations live here
or in routedesk/store.py; calls into the routing workflow (updates, signals) live only here,
by method reference, never as strings.

Submitting mail: the raw email is stored before the workflow starts and the workflow ID is
derived from the message (Message-ID and content fingerprint), so the same email submitted
twice, or ten times at once, through any channel, is one stored email, one workflow and one
case (also importable as ``starter.send``).

Temporal's SDK is imported inside the functions that call it: the read-only views answer
without loading it (CLI start-up).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field
from sqlmodel import Session, col, func, select

from routedesk import config_diff, ids, rules, settings, views
from routedesk.auth import Actor, Forbidden, Role, require, require_agent_or
from routedesk.config import IntakeSettings, RoutingConfig, load_config
from routedesk.contracts import (
    TERMINAL_STAGES,
    AssignRequest,
    RespondRequest,
    RoutingStatus,
    Stage,
    Status,
)
from routedesk.db import reader_of
from routedesk.errors import Invalid, NotFound, OperationError, Refused
from routedesk.models import (
    AgentRow,
    CaseRow,
    ConfigVersionRow,
    EmailRow,
    ImapPositionRow,
    IntakeHoldRow,
    MailboxRow,
    NotificationRow,
    OfferRow,
    QueueMemberRow,
    QueueRow,
    RuntimeEditRow,
    TraceRow,
    utcnow,
)
from routedesk.store import (
    LoadResult,
    Reprocess,
    Store,
    StoreRefusal,
    TraceEntry,
    add_trace,
    as_dict,
    clear_preferred_agents,
    set_preferred_agents,
    set_presence,
)
from routedesk.views import (
    AgentView,
    CaseDetail,
    CaseFilter,
    CaseReplyView,
    CaseSummary,
    EmailText,
    OfferView,
    QueueDetail,
    QueueView,
    parse_case_status,
)

if TYPE_CHECKING:
    from temporalio.client import Client, WorkflowHandle

    from routedesk.contracts import RoutingOutcome

__all__ = ["Actor", "Forbidden", "Role"]


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
    from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
    from temporalio.exceptions import WorkflowAlreadyStartedError

    from routedesk.contracts import EmailRoutingInput
    from workflows.email_routing import EmailRoutingWorkflow

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
            static_summary=routing_summary(saved.email_id, envelope_to),
            static_details=ROUTING_DETAILS,
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
    from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
    from temporalio.exceptions import WorkflowAlreadyStartedError

    from routedesk.contracts import EmailRoutingInput
    from workflows.email_routing import EmailRoutingWorkflow

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
                static_summary=routing_summary(email_id, envelope_to, reprocess=True),
                static_details=ROUTING_DETAILS,
            )
    return plan


def shown(status: RoutingStatus) -> RoutingStatus:
    """The status in the people's vocabulary (README, *Status vocabulary*). ``queued`` is the
    workflow's own step between choosing the queue and the first offer or the queue's
    assignment method; people see it as ``waiting_for_agent``."""
    if status.stage == Stage.QUEUED:
        return status.model_copy(update={"stage": Stage.WAITING_FOR_AGENT})
    return status


async def wait_for_case(client: Client, workflow_id: str, timeout: float = 30.0) -> RoutingStatus:
    """Wait until the case is in a queue or routing stopped.

    A running workflow answers the ``routing_status`` query (which adds nothing to history,
    unlike an update); a closed one is read from its result or its failure.
    """
    from temporalio.client import WorkflowExecutionStatus, WorkflowQueryFailedError
    from temporalio.service import RPCError

    from workflows.email_routing import EmailRoutingWorkflow

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
                return shown(status)
        except (RPCError, WorkflowQueryFailedError):
            pass  # no worker has picked it up yet
        if time.monotonic() > deadline:
            raise TimeoutError(f"workflow {handle.id} did not queue a case within {timeout:.0f}s; is a worker running?")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.5)


async def _closed_status(handle: WorkflowHandle[Any, RoutingOutcome]) -> RoutingStatus:
    from temporalio.client import WorkflowFailureError

    from workflows.email_routing import REJECTED

    try:
        return await handle.result()  # the workflow's last status
    except WorkflowFailureError as err:
        cause = err.cause
        reason = getattr(cause, "message", None) or str(cause)
        # Rejections recorded before 2026-12-02 failed the workflow; since, they complete.
        stage = Stage.REJECTED if getattr(cause, "type", None) == REJECTED else Stage.FAILED
        return RoutingStatus(stage=stage, email_id=0, reason=reason)


# === operations people and integrations perform ==========================================
# (the configuration section, added separately, follows this one)


@dataclass
class Context:
    """What operations run against: the store and (connected on first use) Temporal."""

    store: Store
    client: Client | None = None
    task_queue: str | None = None
    id_prefix: str | None = None
    connect: Callable[[], Awaitable[Client]] | None = field(default=None, repr=False)

    async def temporal(self) -> Client:
        if self.client is None:
            if self.connect is not None:
                self.client = await self.connect()
            else:
                from routedesk.temporal import connect

                self.client = await connect()
        return self.client

    @property
    def queue(self) -> str:
        return self.task_queue or settings.task_queue()

    @property
    def prefix(self) -> str:
        return settings.id_prefix() if self.id_prefix is None else self.id_prefix


# --- results ------------------------------------------------------------------------------


class ActionResult(BaseModel):
    message: str
    case: str | None = None


class EmailSummary(BaseModel):
    email_id: int
    source: str
    status: str  # intake's decision: received, accepted, threaded, rejected, ignored, held
    reason: str | None
    sender: str | None
    mailbox: str | None
    subject: str | None
    case_id: int | None
    case_number: str | None
    received_at: datetime
    deliveries: int
    last_delivered_at: datetime | None
    reprocessed: int
    workflow_id: str | None


class EmailDetail(BaseModel):
    email: dict[str, Any]
    hold: dict[str, Any] | None
    notifications: list[dict[str, Any]]
    trace: list[dict[str, Any]]


class HeldEmail(BaseModel):
    email_id: int
    received_at: datetime
    sender: str | None
    mailbox: str | None
    subject: str | None
    hold: str | None
    reason: str | None
    workflow_id: str | None


class ImapStatus(BaseModel):
    """How an IMAP fetcher fares on one folder (``imap_position``; starter/imap.py writes it)."""

    mailbox_address: str
    folder: str
    uidvalidity: int | None
    last_uid: int
    # connecting | idle | polling | fetching | login_failed | error | stopped
    status: str
    last_error: str | None  # e.g. the server's answer to a refused login
    last_error_at: datetime | None
    last_ok_at: datetime | None  # the last time the folder was fetched completely
    fetched: int  # messages taken from the folder
    uidvalidity_changes: int
    previous_uidvalidity: int | None
    uidvalidity_changed_at: datetime | None
    updated_at: datetime

    @property
    def failing(self) -> bool:
        return self.status in IMAP_FAILING


class MailboxView(BaseModel):
    address: str
    name: str
    workstream: str
    verified: bool
    allow_plus_addressing: bool
    accept_from: list[str]
    unauthorized_sender_action: str
    acknowledgement: bool
    held: int
    imap: list[ImapStatus] | None  # None: no imap section; []: its fetcher has not run yet


class ReleaseResult(BaseModel):
    released: list[int]
    signalled: list[str]
    gone: list[str]  # workflows no longer running


class VerifyResult(BaseModel):
    address: str
    already_verified: bool
    released: list[str]
    gone: list[str]


class PresenceResult(BaseModel):
    agent_id: str
    presence: str
    queues: list[str]


class PreferredResult(BaseModel):
    contact_id: str
    preferred_agents: list[str]


class ReprocessResult(BaseModel):
    email_id: int
    workflow_id: str
    status: RoutingStatus | None = None


# --- the status vocabulary -----------------------------------------------------------------


def _statuses(s: Any, cases: Sequence[CaseRow]) -> dict[int, Status]:
    return views.statuses(reader_of(s), cases)


def _summary(c: CaseRow, status: Status) -> CaseSummary:
    return views.summary(c, status)


def _utc(value: datetime) -> datetime:
    return views.utc(value)


def _offer_timeouts(store: Store) -> views.OfferTimeouts:
    """Offer timeouts from the store's cached definitions (refreshed when a config loads)."""

    def timeout(ws_id: str) -> float | None:
        try:
            return store.workstream(ws_id).offer_timeout_seconds
        except KeyError:  # workstream removed by a later config: no deadline known
            return None

    return timeout


# --- cases ---------------------------------------------------------------------------------


def find_case(store: Store, number: str) -> CaseRow:
    case = store.case_by_number(number)
    if case is None:
        raise NotFound(f"no case {number}; `routedesk case list` shows them")
    return case


def list_cases(store: Store, actor: Actor, flt: CaseFilter) -> list[CaseSummary]:
    """Cases, newest first; unknown filter values are an error naming the valid ones."""
    with store.db.reader() as r:
        return views.list_cases(r, flt)


def show_case(store: Store, actor: Actor, number: str) -> CaseDetail:
    with store.db.reader() as r:
        return views.show_case(r, number, utcnow(), _offer_timeouts(store))


def case_emails(store: Store, actor: Actor, number: str) -> list[EmailText]:
    """The case's first message and every customer reply, oldest first, with their text."""
    with store.db.reader() as r:
        return views.case_emails(r, views.find_case(r, number))


# --- agents and queues ---------------------------------------------------------------------


def agent_offers(store: Store, actor: Actor, agent_id: str, *, include_closed: bool = False) -> list[OfferView]:
    """The agent's live offer (at most one), or their latest 100 offers: one read."""
    require_agent_or(actor, agent_id, "see the offers")
    with store.db.reader() as r:
        return views.agent_offers(r, agent_id, utcnow(), _offer_timeouts(store), include_closed=include_closed)


def find_offer(store: Store, actor: Actor, offer_id: int) -> OfferView:
    """One offer, for its agent or a supervisor."""
    with store.db.reader() as r:
        offer = views.find_offer(r, offer_id, utcnow(), _offer_timeouts(store))
    require_agent_or(actor, offer.agent_id, "see the offer")
    return offer


def list_agents(store: Store, actor: Actor) -> list[AgentView]:
    with store.db.reader() as r:
        return views.list_agents(r, utcnow(), _offer_timeouts(store))


def list_queues(store: Store, actor: Actor) -> list[QueueView]:
    with store.db.reader() as r:
        return [v for v, _ in views.queue_views(r, utcnow(), rules=_queue_rules(store))]


def show_queue(store: Store, actor: Actor, queue_id: str) -> QueueDetail:
    with store.db.reader() as r:
        return views.show_queue(r, queue_id, utcnow(), _queue_rules(store))


# --- actions on a case (through its routing workflow) --------------------------------------


def _trace_action(store: Store, case: CaseRow, actor: Actor, action: str, detail: str) -> None:
    """The case trace names who did it; its own step, so it never collides with routing's."""
    with store.db.write() as s:
        fresh = s.get(CaseRow, case.id) or case
        add_trace(
            s,
            email_id=fresh.source_email_id,
            case_id=fresh.id,
            round_=fresh.round,
            step=f"op:{uuid.uuid4().hex}",
            entries=[TraceEntry("operation", actor.user, action, f"{detail} by {actor.describe()}")],
            new=True,
        )


async def _update(ctx: Context, case: CaseRow, call: Callable[[Any], Awaitable[Any]]) -> str:
    """Run one update on the case's workflow; a refusal becomes :class:`Refused`."""
    from temporalio.client import WorkflowUpdateFailedError
    from temporalio.service import RPCError, RPCStatusCode

    from workflows.email_routing import EmailRoutingWorkflow

    if not case.workflow_id:
        raise Refused(f"{case.number} has no routing workflow")
    client = await ctx.temporal()
    handle = client.get_workflow_handle_for(EmailRoutingWorkflow.run, case.workflow_id)
    try:
        result: str = await call(handle)
        return result
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        raise Refused(getattr(cause, "message", None) or str(cause)) from None
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise Refused(f"{case.number}: its routing workflow {case.workflow_id} is not running") from None
        raise OperationError(f"{case.number}: {exc.message}") from None


def _require_agent(store: Store, agent_id: str) -> None:
    with store.db.read() as s:
        if s.get(AgentRow, agent_id) is None:
            raise NotFound(f"no agent {agent_id!r}; `routedesk agent list` shows them")


async def respond(
    ctx: Context, actor: Actor, number: str, agent_id: str, decision: str, reason: str | None = None
) -> ActionResult:
    """Accept or decline the agent's live offer of the case (checked before it is recorded)."""
    from workflows.email_routing import EmailRoutingWorkflow

    if decision not in ("accept", "decline"):
        raise Invalid(f"decision must be accept or decline, not {decision!r}")
    require_agent_or(actor, agent_id, f"{decision} offers")
    case = find_case(ctx.store, number)
    req = RespondRequest(agent_id=agent_id, decision=decision, reason=reason)  # type: ignore[arg-type]
    result = await _update(ctx, case, lambda h: h.execute_update(EmailRoutingWorkflow.respond, req))
    why = f": {reason}" if reason else ""
    await asyncio.to_thread(_trace_action, ctx.store, case, actor, decision, f"{decision} for {agent_id}{why}")
    return ActionResult(message=result, case=case.number)


async def accept(ctx: Context, actor: Actor, number: str, agent_id: str) -> ActionResult:
    return await respond(ctx, actor, number, agent_id, "accept")


async def decline(ctx: Context, actor: Actor, number: str, agent_id: str, reason: str | None = None) -> ActionResult:
    return await respond(ctx, actor, number, agent_id, "decline", reason)


async def pick(ctx: Context, actor: Actor, number: str, agent_id: str) -> ActionResult:
    """The agent takes the case from one of their queues."""
    from workflows.email_routing import EmailRoutingWorkflow

    require_agent_or(actor, agent_id, "pick cases")
    case = find_case(ctx.store, number)
    if actor.role is Role.AGENT:
        # Checked before the workflow sees it: an agent picks only into their own queues.
        with ctx.store.db.read() as s:
            member = s.get(QueueMemberRow, (case.queue_id or "", agent_id))
        if member is None:
            raise Forbidden(
                f"{actor.describe()} may not pick {case.number}: {agent_id} is not in its queue {case.queue_id}"
            )
    req = AssignRequest(agent_id=agent_id)
    result = await _update(ctx, case, lambda h: h.execute_update(EmailRoutingWorkflow.pick, req))
    await asyncio.to_thread(_trace_action, ctx.store, case, actor, "pick", f"picked for {agent_id}")
    return ActionResult(message=result, case=case.number)


async def assign(ctx: Context, actor: Actor, number: str, agent_id: str) -> ActionResult:
    """Supervisor: assign the case by hand (withdraws any live offer; capacity still holds)."""
    from workflows.email_routing import EmailRoutingWorkflow

    require(actor, Role.SUPERVISOR, "assign cases")
    case = find_case(ctx.store, number)
    _require_agent(ctx.store, agent_id)
    req = AssignRequest(agent_id=agent_id)
    result = await _update(ctx, case, lambda h: h.execute_update(EmailRoutingWorkflow.assign, req))
    await asyncio.to_thread(_trace_action, ctx.store, case, actor, "assign", f"assigned to {agent_id}")
    return ActionResult(message=result, case=case.number)


async def resolve(ctx: Context, actor: Actor, number: str) -> ActionResult:
    """Close the case and release its agent's capacity. Its own agent may resolve it too."""
    from workflows.email_routing import EmailRoutingWorkflow

    case = find_case(ctx.store, number)
    if not (actor.at_least(Role.SUPERVISOR) or (actor.agent_id and actor.agent_id == case.assigned_agent_id)):
        raise Forbidden(
            f"{actor.describe()} may not resolve {case.number}: only its assigned agent or a supervisor may"
        )
    result = await _update(ctx, case, lambda h: h.execute_update(EmailRoutingWorkflow.resolve))
    await asyncio.to_thread(_trace_action, ctx.store, case, actor, "resolve", "resolved")
    return ActionResult(message=result, case=case.number)


# --- agents, contacts ----------------------------------------------------------------------


async def set_agent_presence(ctx: Context, actor: Actor, agent_id: str, presence: str) -> PresenceResult:
    """Set presence; the agent's queues' dispatchers wake to offer waiting work."""
    from routedesk.assignment import wake

    require_agent_or(actor, agent_id, "set presence")
    client = await ctx.temporal()  # before changing anything: fail without half a change
    try:
        queues = await asyncio.to_thread(set_presence, ctx.store, agent_id, presence)
    except StoreRefusal as exc:
        msg = str(exc)
        raise (NotFound(msg) if msg.startswith("no agent") else Invalid(msg)) from None
    await wake.kick(client, queues, task_queue=ctx.queue, id_prefix=ctx.prefix)
    return PresenceResult(agent_id=agent_id, presence=presence.capitalize(), queues=queues)


def set_preferred(store: Store, actor: Actor, contact_id: str, agent_ids: list[str]) -> PreferredResult:
    require(actor, Role.SUPERVISOR, "set preferred agents")
    try:
        set_preferred_agents(store, contact_id, agent_ids)
    except StoreRefusal as exc:
        msg = str(exc)
        raise (NotFound(msg) if msg.startswith("no contact") else Invalid(msg)) from None
    return PreferredResult(contact_id=contact_id, preferred_agents=list(agent_ids))


def clear_preferred(store: Store, actor: Actor, contact_id: str) -> PreferredResult:
    require(actor, Role.SUPERVISOR, "clear preferred agents")
    try:
        clear_preferred_agents(store, contact_id)
    except StoreRefusal as exc:
        raise NotFound(str(exc)) from None
    return PreferredResult(contact_id=contact_id, preferred_agents=[])


# --- emails and mailboxes ------------------------------------------------------------------

EMAIL_STATUSES = ("received", "accepted", "threaded", "rejected", "ignored", "held")


def list_emails(store: Store, actor: Actor, *, status: str | None = None, limit: int = 50) -> list[EmailSummary]:
    if status is not None and status not in EMAIL_STATUSES:
        raise Invalid(f"unknown email status {status!r}; valid: {', '.join(EMAIL_STATUSES)}")
    with store.db.read() as s:
        q = select(EmailRow).order_by(col(EmailRow.id).desc()).limit(max(1, min(limit, 1000)))
        if status:
            q = q.where(EmailRow.status == status)
        rows = list(s.exec(q).all())
        case_ids = {e.case_id for e in rows if e.case_id}
        numbers = dict(
            s.exec(select(CaseRow.id, CaseRow.number).where(col(CaseRow.id).in_(case_ids))).all()  # type: ignore[arg-type]
            if case_ids
            else []
        )
    return [
        EmailSummary(
            email_id=e.id or 0,
            source=e.source,
            status=e.status,
            reason=e.reason,
            sender=e.from_address,
            mailbox=e.mailbox_address,
            subject=e.subject,
            case_id=e.case_id,
            case_number=numbers.get(e.case_id) if e.case_id else None,
            received_at=e.received_at,
            deliveries=e.deliveries,
            last_delivered_at=e.last_delivered_at,
            reprocessed=e.reprocessed,
            workflow_id=e.workflow_id,
        )
        for e in rows
    ]


def show_email(store: Store, actor: Actor, email_id: int, *, raw_base64: bool = False) -> EmailDetail:
    import base64
    import hashlib

    if not 1 <= email_id <= 2**63 - 1:
        raise NotFound(f"no email {email_id}; `routedesk intake list` shows them")
    with store.db.read() as s:
        e = s.get(EmailRow, email_id)
        if e is None:
            raise NotFound(f"no email {email_id} in {store.db.address}")
        notes = list(s.exec(select(NotificationRow).where(NotificationRow.email_id == email_id)).all())
        hold = s.get(IntakeHoldRow, email_id)
    trace = store.trace(email_id=email_id)
    # The raw bytes are often not UTF-8: never as text; base64 on request.
    data: dict[str, Any] = e.model_dump(mode="json", exclude={"raw"})
    data["raw_size"] = len(e.raw)
    data["raw_sha256"] = hashlib.sha256(e.raw).hexdigest()
    if raw_base64:
        data["raw_base64"] = base64.b64encode(e.raw).decode("ascii")
    return EmailDetail(
        email=data,
        hold=as_dict(hold) if hold else None,
        notifications=[as_dict(n) for n in notes],
        trace=[as_dict(t) for t in trace],
    )


def held_emails(store: Store, actor: Actor | None = None, *, mailbox: str | None = None) -> list[HeldEmail]:
    with store.db.read() as s:
        q = select(EmailRow).where(EmailRow.status == "held").order_by(col(EmailRow.id))
        if mailbox is not None:
            q = q.where(EmailRow.mailbox_address == mailbox)
        out = []
        for e in s.exec(q).all():
            h = s.get(IntakeHoldRow, e.id)
            out.append(
                HeldEmail(
                    email_id=e.id or 0,
                    received_at=e.received_at,
                    sender=e.from_address,
                    mailbox=e.mailbox_address,
                    subject=e.subject,
                    hold=h.kind if h else None,
                    reason=e.reason,
                    workflow_id=e.workflow_id,
                )
            )
        return out


async def _signal_release(ctx: Context, workflow_ids: Sequence[str]) -> tuple[list[str], list[str]]:
    """Send ``release`` to each workflow; returns (signalled, no longer running)."""
    from temporalio.service import RPCError, RPCStatusCode

    from workflows.email_routing import EmailRoutingWorkflow

    client = await ctx.temporal()
    done: list[str] = []
    gone: list[str] = []
    for wf_id in workflow_ids:
        try:
            await client.get_workflow_handle_for(EmailRoutingWorkflow.run, wf_id).signal(EmailRoutingWorkflow.release)
            done.append(wf_id)
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise OperationError(f"cannot signal workflow {wf_id}: {exc.message}") from None
            gone.append(wf_id)
    return done, gone


class ReleaseRequest(BaseModel):
    email_ids: list[int] = Field(default_factory=list)
    sender: str | None = None
    all: bool = False


async def release_emails(ctx: Context, actor: Actor, req: ReleaseRequest) -> ReleaseResult:
    """Release held emails by hand: they are routed even if over the rate limit."""
    require(actor, Role.SUPERVISOR, "release held mail")
    if not req.email_ids and not req.sender and not req.all:
        raise Invalid("name email ids, a sender or all")
    await ctx.temporal()  # before changing anything: fail without half a release
    held = await asyncio.to_thread(held_emails, ctx.store)
    sender = (req.sender or "").strip().lower()
    chosen = [e for e in held if req.all or e.email_id in req.email_ids or (sender and (e.sender or "") == sender)]
    missing = sorted(set(req.email_ids) - {e.email_id for e in chosen})
    if missing:
        raise NotFound(f"not held: email {', '.join(map(str, missing))}")
    by = f"{actor.describe()} (release)"

    def mark() -> None:
        with ctx.store.db.write() as s:
            for e in chosen:
                hold = s.get(IntakeHoldRow, e.email_id)
                if hold is not None:
                    hold.released_at, hold.released_by = utcnow(), by
                    s.add(hold)

    await asyncio.to_thread(mark)
    done, gone = await _signal_release(ctx, [e.workflow_id for e in chosen if e.workflow_id])
    return ReleaseResult(released=[e.email_id for e in chosen], signalled=done, gone=gone)


async def reprocess(
    ctx: Context, actor: Actor, email_id: int, *, envelope_to: list[str] | None = None, wait: float = 0
) -> ReprocessResult:
    """Evaluate a rejected, ignored or held email again with the configuration as it is now."""
    require(actor, Role.SUPERVISOR, "reprocess mail")
    client = await ctx.temporal()  # before changing anything
    try:
        plan = await reprocess_email(
            client,
            ctx.store,
            email_id,
            envelope_to=envelope_to,
            by=f"{actor.describe()} (reprocess)",
            task_queue=ctx.queue,
        )
    except StoreRefusal as exc:
        msg = str(exc)
        raise (NotFound(msg) if msg.startswith("no email") else Refused(msg)) from None
    status = await wait_for_case(client, plan.workflow_id, timeout=wait) if wait > 0 else None
    return ReprocessResult(email_id=email_id, workflow_id=plan.workflow_id, status=status)


def list_mailboxes(store: Store, actor: Actor) -> list[MailboxView]:
    """Routing addresses in config order, with their intake options and held mail."""
    from routedesk.config import Mailbox

    with store.db.read() as s:
        rows = list(s.exec(select(MailboxRow).order_by(col(MailboxRow.position))).all())
        held = dict(
            s.exec(  # type: ignore[arg-type]
                select(EmailRow.mailbox_address, func.count())
                .where(EmailRow.status == "held")
                .group_by(col(EmailRow.mailbox_address))
            ).all()
        )
    imap: dict[str, list[ImapStatus]] = {}
    for pos in imap_statuses(store):
        imap.setdefault(pos.mailbox_address, []).append(pos)
    out = []
    for r in rows:
        box = Mailbox.model_validate(r.config)
        out.append(
            MailboxView(
                address=r.address,
                name=r.name,
                workstream=r.workstream_id,
                verified=r.verified,
                allow_plus_addressing=box.allow_plus_addressing,
                accept_from=list(box.accept_from),
                unauthorized_sender_action=str(box.unauthorized_sender_action),
                acknowledgement=box.acknowledgement.enabled,
                held=held.get(r.address, 0),
                imap=imap.get(r.address, []) if box.imap else None,
            )
        )
    return out


async def verify_mailbox(ctx: Context, actor: Actor, address: str) -> VerifyResult:
    """Mark ADDRESS verified and release the emails held for it."""
    require(actor, Role.ADMIN, "verify mailboxes")
    address = address.strip().lower()
    await ctx.temporal()  # before changing anything: fail without half a verify

    def mark() -> bool:
        with ctx.store.db.write() as s:
            row = s.get(MailboxRow, address)
            if row is None:
                raise NotFound(f"no routing address {address} in {ctx.store.db.address}")
            was = row.verified
            row.verified = True
            s.add(row)
            return was

    was = await asyncio.to_thread(mark)
    # Held emails are looked up after the commit: an email evaluated concurrently either saw
    # the mailbox verified or is already stored as held and found here.
    held = await asyncio.to_thread(held_emails, ctx.store, mailbox=address)
    done, gone = await _signal_release(ctx, [e.workflow_id for e in held if e.workflow_id])
    return VerifyResult(address=address, already_verified=was, released=done, gone=gone)


# --- configuration: load, diff, history, what-if (routedesk config ...) ------------------------
#
# The routing config is versioned in the store (``config_version``): a load that changes the
# content is a new number, which every running process picks up (Store.definitions).


@dataclass(frozen=True)
class ConfigPreview:
    """What loading a file would do: its changes against the version in force, and the
    runtime edits it would keep or override."""

    current_version: int | None
    unchanged: bool
    changes: list[config_diff.Change]
    kept: list[str]
    conflicts: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {
            "current_version": self.current_version,
            "unchanged": self.unchanged,
            "changes": [c.as_dict() for c in self.changes],
            "kept_runtime_edits": self.kept,
            "overridden_runtime_edits": self.conflicts,
        }


@dataclass(frozen=True)
class ConfigVersionInfo:
    number: int
    loaded_at: datetime
    loaded_by: str
    source: str | None
    content_hash: str
    summary: str  # the changes against the version before

    def as_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "loaded_at": self.loaded_at.isoformat(),
            "loaded_by": self.loaded_by,
            "source": self.source,
            "content_hash": self.content_hash,
            "summary": self.summary,
        }


@dataclass(frozen=True)
class WhatIfExample:
    case_number: str
    old_queue: str | None
    new_queue: str
    old_priority: str
    new_priority: str
    rule: str  # the route-to-queue rule that decided (or "fallback")
    priority_rule: str  # the last classification rule that set the priority (or "case_defaults")

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class WhatIf:
    since: datetime
    emails: int = 0  # first emails of cases received since then
    changed: int = 0  # a different queue or a different priority
    queue_changed: int = 0
    priority_changed: int = 0
    unrouted: int = 0  # their routing address is not in the file: they would be rejected
    examples: list[WhatIfExample] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["since"] = self.since.isoformat()
        data["examples"] = [e.as_dict() for e in self.examples]
        return data


WHATIF_EXAMPLES = 10
_SINCE = re.compile(r"(\d+)\s*([mhdw])")
_SINCE_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str) -> timedelta:
    """``30m``, ``12h``, ``7d``, ``2w`` -> a timedelta; :class:`StoreRefusal` for anything else."""
    m = _SINCE.fullmatch(text.strip().lower())
    if m is None or int(m.group(1)) <= 0:
        raise StoreRefusal(f"--since takes a period like 30m, 12h, 7d or 2w, not {text!r}")
    return timedelta(**{_SINCE_UNITS[m.group(2)]: int(m.group(1))})


def load_config_file(
    store: Store, actor: Actor, path: str | Path, *, by: str | None = None, cfg: RoutingConfig | None = None
) -> LoadResult:
    """Admin: validate the file (unless ``cfg`` is its validated content) and load it as a new
    config version (no new version when its content is the version in force's)."""
    require(actor, Role.ADMIN, "load configuration")
    cfg = cfg or load_config(path)
    return store.load_config(cfg, by=by, source=str(Path(path).resolve()))


def _current_version(s: Session) -> ConfigVersionRow | None:
    return s.exec(select(ConfigVersionRow).order_by(col(ConfigVersionRow.number).desc()).limit(1)).first()


def preview_config_file(store: Store, actor: Actor, path: str | Path) -> ConfigPreview:
    """What loading the file would change (nothing is written)."""
    require(actor, Role.SUPERVISOR, "preview configuration")
    return preview_config(store, load_config(path))


def preview_config(store: Store, cfg: RoutingConfig) -> ConfigPreview:
    data = config_diff.config_json(cfg)
    with store.db.read() as s:
        current = _current_version(s)
        edits = [
            config_diff.Edit(e.kind, e.key, e.value, e.set_by, e.set_at.strftime("%Y-%m-%d %H:%M"))
            for e in s.exec(select(RuntimeEditRow).order_by(col(RuntimeEditRow.kind), col(RuntimeEditRow.key)))
        ]
    previous = current.config if current is not None else None
    if current is not None and current.content_hash == config_diff.content_hash(data):
        return ConfigPreview(current.number, True, [], [], [])
    rec = config_diff.reconcile(previous, data, edits)
    return ConfigPreview(
        current.number if current is not None else None,
        False,
        config_diff.diff(previous, data),
        rec.kept,
        rec.conflicts,
    )


def config_history(store: Store, actor: Actor) -> list[ConfigVersionInfo]:
    """Every stored version, oldest first, each with a summary of its changes."""
    require(actor, Role.SUPERVISOR, "list config versions")
    out: list[ConfigVersionInfo] = []
    previous: dict[str, Any] | None = None
    with store.db.read() as s:
        for row in s.exec(select(ConfigVersionRow).order_by(col(ConfigVersionRow.number))):
            changes = config_diff.diff(previous, row.config)
            out.append(
                ConfigVersionInfo(
                    row.number,
                    row.loaded_at,
                    row.loaded_by,
                    row.source,
                    row.content_hash,
                    "first version" if previous is None else config_diff.summary(changes),
                )
            )
            previous = row.config
    return out


def config_whatif(store: Store, actor: Actor, path: str | Path, since: timedelta) -> WhatIf:
    """Run the file's classification and route-to-queue rules (routedesk.rules, pure) over the
    first emails of the cases received in the period, and count those whose queue or priority
    would differ from their case's. Reads only: no workflow, no writes."""
    require(actor, Role.SUPERVISOR, "run a what-if")
    return config_whatif_for(store, load_config(path), since)


def config_whatif_for(store: Store, cfg: RoutingConfig, since: timedelta) -> WhatIf:
    contacts = {e: c.id for c in cfg.contacts for e in c.emails}
    result = WhatIf(since=utcnow() - since)
    cols = (
        EmailRow.subject,
        EmailRow.body_text,
        EmailRow.from_address,
        EmailRow.from_name,
        EmailRow.to,
        EmailRow.cc,
        EmailRow.headers,
        CaseRow.number,
        CaseRow.mailbox_address,
        CaseRow.queue_id,
        CaseRow.priority,
    )
    query = (
        select(*cols)  # type: ignore[call-overload]  # sqlmodel types select() up to 4 columns
        .join(CaseRow, col(CaseRow.source_email_id) == col(EmailRow.id))
        .where(col(EmailRow.received_at) >= result.since)
        .order_by(col(EmailRow.id))
    )
    with store.db.read() as s:
        for subject, body, sender, sender_name, to, cc, headers, number, mailbox, queue, priority in s.exec(query):
            result.emails += 1
            box = cfg.mailbox(mailbox)
            if box is None:
                result.unrouted += 1
                continue
            ws = cfg.workstream(box.workstream)
            default = box.case_defaults.priority.value
            ctx = rules.RuleContext(
                subject=subject or "",
                body=body or "",
                sender=sender or "",
                sender_name=sender_name or "",
                mailbox=mailbox,
                to=list(to),
                cc=list(cc),
                contact=contacts.get((sender or "").lower(), ""),
                priority=default,
                headers=dict(headers),
            )
            attributes, class_hits = rules.classify(ws.classification_rules, ctx)
            new_priority = str(attributes.get("priority", default))
            new_queue, route_hits = rules.route(ws.route_to_queue_rules, ws.fallback_queue, ctx)
            queue_differs, priority_differs = new_queue != queue, new_priority != priority
            if not (queue_differs or priority_differs):
                continue
            result.changed += 1
            result.queue_changed += queue_differs
            result.priority_changed += priority_differs
            if len(result.examples) < WHATIF_EXAMPLES:
                setting = [
                    h.rule
                    for h, r in zip(class_hits, ws.classification_rules, strict=True)
                    if h.matched and "priority" in r.set
                ]
                result.examples.append(
                    WhatIfExample(
                        number or "?",
                        queue,
                        new_queue,
                        priority,
                        new_priority,
                        next(h.rule for h in route_hits if h.matched),
                        setting[-1] if setting else "case_defaults",
                    )
                )
    return result


# --- configuration over the API (admins load; supervisors read) -----------------------------
#
# The same operations as ``routedesk config load|diff|whatif|history``, on the file's text:
# an API client sends the YAML it would otherwise put in a file.


def config_from_text(text: str, source: str = "request body") -> RoutingConfig:
    """The validated config in ``text`` (YAML or JSON); :class:`Invalid` naming every problem."""
    import yaml

    from routedesk.config import ConfigError, parse_config

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise Invalid(f"{source}: not valid YAML: {' '.join(str(exc).split())}") from None
    try:
        return parse_config(data, source=source)
    except ConfigError as exc:
        raise Invalid("; ".join(str(exc).splitlines())) from None


class ConfigLoaded(BaseModel):
    version: int
    changed: bool
    previous: int | None
    report: list[str]  # what `config load` prints: the version, kept and overridden runtime edits
    woken_queues: list[str]


async def load_config_text(ctx: Context, actor: Actor, text: str) -> ConfigLoaded:
    """Admin: load ``text`` as a new config version (none when it is the version in force's),
    then wake the queues it gave a new member."""
    require(actor, Role.ADMIN, "load configuration")
    cfg = config_from_text(text)
    result = await asyncio.to_thread(ctx.store.load_config, cfg, by=actor.describe(), source="api")
    await wake_after_load(ctx, result)
    return ConfigLoaded(
        version=result.version,
        changed=result.changed,
        previous=result.previous,
        report=result.report("request body"),
        woken_queues=result.wake_queues,
    )


async def wake_after_load(ctx: Context, result: LoadResult) -> None:
    """Kick the dispatchers of the queues a load gave someone who may take their waiting
    work, so it is offered now rather than at the next sweep."""
    if result.wake_queues:
        from routedesk.assignment import wake

        await wake.kick(await ctx.temporal(), result.wake_queues, task_queue=ctx.queue, id_prefix=ctx.prefix)


def preview_config_text(store: Store, actor: Actor, text: str) -> dict[str, Any]:
    require(actor, Role.SUPERVISOR, "preview configuration")
    return preview_config(store, config_from_text(text)).as_dict()


def whatif_config_text(store: Store, actor: Actor, text: str, since: str = "7d") -> dict[str, Any]:
    require(actor, Role.SUPERVISOR, "run a what-if")
    try:
        period = parse_since(since)
    except StoreRefusal as exc:
        raise Invalid(str(exc).replace("--since", "since")) from None
    return config_whatif_for(store, config_from_text(text), period).as_dict()


def config_versions(store: Store, actor: Actor) -> list[dict[str, Any]]:
    require(actor, Role.SUPERVISOR, "list config versions")
    return [v.as_dict() for v in config_history(store, actor)]


# --- replies from the case (README *Replies from the case*) ---------------------------------
#
# An agent's reply is rendered and committed as queued in one transaction (routedesk/replies.py
# holds the rendering and the store writes the delivery shares), then its SendReplyWorkflow
# delivers it through intake.relay; the operation never waits for the relay.


class ReplyRequest(BaseModel):
    body: str = Field(description="The reply's text (plain)")
    agent_id: str | None = Field(
        default=None,
        description="The agent whose reply it is: the case's assigned agent. Omitted: the token's own "
        "agent, or, for a supervisor or admin, a supervisor's reply in their own name",
    )
    as_supervisor: bool = Field(default=False, description="A supervisor's reply in their own name (no agent_id)")
    request_key: str | None = Field(
        default=None, max_length=200, description="Idempotency key: the same key again returns the first reply"
    )


class ReplyResult(BaseModel):
    reply_id: int
    case: str
    to: str
    message_id: str
    workflow_id: str
    status: str  # queued, or the status of the earlier reply with the same request_key
    new: bool  # False: a request with the same key had made this reply already


def _reply_author(actor: Actor, req: ReplyRequest) -> tuple[str, bool]:
    """(the name the reply is written in, whether it is a supervisor's own reply).

    An agent replies only as their own agent (whether that agent owns the case is checked on
    the locked case row); a supervisor or admin replies in the assigned agent's name or, with
    no agent named, in their own as a supervisor."""
    if req.as_supervisor:
        require(actor, Role.SUPERVISOR, "reply as a supervisor")
        if req.agent_id:
            raise Invalid("a supervisor's reply is in your own name: leave out the agent (--agent / agent_id)")
        return actor.user, True
    if actor.role is Role.AGENT:
        agent_id = req.agent_id or actor.agent_id or ""
        require_agent_or(actor, agent_id, "reply")
        return agent_id, False
    if req.agent_id:
        return req.agent_id, False
    return actor.user, True


async def reply_to_case(ctx: Context, actor: Actor, number: str, req: ReplyRequest) -> ReplyResult:
    """Queue a reply to the customer of case ``number`` and start its delivery.

    Only the case's assigned agent (an agent acting for itself) or a supervisor/admin may
    reply: anyone else gets :class:`Forbidden` and nothing is recorded. Returns once the reply
    is committed and its ``SendReplyWorkflow`` started. ``req.request_key`` makes a retried
    request one reply. The trace names the actor."""
    from routedesk.replies import NotOwner, ReplyRefused, pending_reply_workflows, record_reply

    author, by_supervisor = _reply_author(actor, req)
    case = find_case(ctx.store, number)
    client = await ctx.temporal()  # before changing anything: no reply left without delivery
    try:
        queued = await asyncio.to_thread(
            record_reply,
            ctx.store,
            case.number or number,
            agent=author,
            body=req.body,
            written_by=actor.describe(),
            by_supervisor=by_supervisor,
            request_key=req.request_key,
            id_prefix=ctx.prefix,
        )
    except NotOwner as exc:
        raise Forbidden(f"{actor.describe()} may not reply: {exc}") from None
    except ReplyRefused as exc:
        raise Refused(str(exc)) from None
    # This reply's workflow, and any earlier reply of the case still queued: a process that
    # died between the commit and the start left that one without a workflow. Starting is
    # idempotent on the stored ID; a closed workflow is never started again.
    for reply_id, workflow_id in await asyncio.to_thread(pending_reply_workflows, ctx.store, case.id or 0):
        await _start_reply(client, reply_id, workflow_id, ctx.queue)
    return ReplyResult(
        reply_id=queued.reply_id,
        case=queued.case_number,
        to=queued.to,
        message_id=queued.message_id,
        workflow_id=queued.workflow_id,
        status=queued.status,
        new=queued.new,
    )


async def _start_reply(client: Client, reply_id: int, workflow_id: str, task_queue: str) -> None:
    from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
    from temporalio.exceptions import WorkflowAlreadyStartedError

    from workflows.replies import SendReplyWorkflow

    with contextlib.suppress(WorkflowAlreadyStartedError):
        await client.start_workflow(
            SendReplyWorkflow.run,
            reply_id,
            id=workflow_id,
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )


def case_replies(store: Store, actor: Actor, number: str) -> list[CaseReplyView]:
    """The case's replies, oldest first, with their delivery (the notification row)."""
    with store.db.reader() as r:
        return views.case_replies(r, views.find_case(r, number))


# --- console views: paged search, paged queue items, case workflows, change marker ----------
#
# The console (routedesk/console) lists thousands of rows a page at a time: the paging and
# the filters run in SQL, so a page costs the same with 10 or 10,000 waiting items.

CONSOLE_PAGE_MAX = 200


class CaseQuery(BaseModel):
    """The console's case search: every field optional, text matched case-insensitively."""

    number: str | None = None
    sender: str | None = None  # the first email's From address (part of it)
    subject: str | None = None  # part of the subject
    queue: str | None = None
    agent: str | None = None
    status: str | None = None
    page: int = Field(default=1, ge=1)
    per_page: int = Field(default=50, ge=1, le=CONSOLE_PAGE_MAX)


class CasePage(BaseModel):
    items: list[CaseSummary]
    total: int
    page: int
    pages: int
    per_page: int


def _page_of(s: Any, q: Any, page: int, per_page: int) -> tuple[list[CaseRow], int, int, int]:
    total = int(s.exec(select(func.count()).select_from(q.order_by(None).subquery())).one())
    pages = max(1, -(-total // per_page))
    page = min(page, pages)
    rows = list(s.exec(q.offset((page - 1) * per_page).limit(per_page)).all())
    return rows, total, page, pages


def search_cases(store: Store, actor: Actor, query: CaseQuery) -> CasePage:
    """Cases matching the query, newest first, one page of them and the total."""
    status = parse_case_status(query.status) if query.status else None
    live = select(OfferRow.case_id).where(OfferRow.status == "live")
    q = select(CaseRow).order_by(col(CaseRow.id).desc())
    if query.number and query.number.strip():
        number = query.number.strip().upper()
        q = q.where(
            CaseRow.number
            == (number if number.startswith("CASE-") else ids.case_number(int(number) if number.isdigit() else 0))
        )
    if query.subject and query.subject.strip():
        q = q.where(col(CaseRow.subject).ilike(f"%{query.subject.strip()}%"))
    if query.sender and query.sender.strip():
        senders = select(EmailRow.id).where(col(EmailRow.from_address).ilike(f"%{query.sender.strip().lower()}%"))
        q = q.where(col(CaseRow.source_email_id).in_(senders))
    if query.queue:
        q = q.where(CaseRow.queue_id == query.queue)
    if query.agent:
        q = q.where(CaseRow.assigned_agent_id == query.agent)
    if status is Status.RESOLVED:
        q = q.where(CaseRow.status == "resolved")
    elif status is Status.ASSIGNED:
        q = q.where(CaseRow.status == "assigned")
    elif status is Status.RECEIVED:
        q = q.where(CaseRow.status == "new")
    elif status is Status.OFFERED:
        q = q.where(CaseRow.status == "queued", col(CaseRow.id).in_(live))
    elif status is not None:  # waiting_for_agent, unassigned: in a queue, no live offer
        q = q.where(CaseRow.status == "queued", col(CaseRow.id).not_in(live))
    with store.db.read() as s:
        rows, total, page, pages = _page_of(s, q, query.page, query.per_page)
        st = _statuses(s, rows)
    items = [_summary(c, st[c.id or 0]) for c in rows]
    if status in (Status.WAITING_FOR_AGENT, Status.UNASSIGNED):
        items = [i for i in items if i.status == status]
    return CasePage(items=items, total=total, page=page, pages=pages, per_page=query.per_page)


def queue_page(store: Store, actor: Actor, queue_id: str, page: int = 1, per_page: int = 50) -> CasePage:
    """One page of a queue's waiting items, best first: the dispatcher's order (priority, the
    earliest SLA due time, then the oldest; routedesk.views.queue_views reads them so too)."""
    per_page = max(1, min(per_page, CONSOLE_PAGE_MAX))
    with store.db.read() as s:
        if s.get(QueueRow, queue_id) is None:
            known = s.exec(select(QueueRow.id).order_by(QueueRow.id)).all()
            raise NotFound(f"no queue {queue_id!r}; valid: {', '.join(known) or 'none loaded'}")
        q = (
            select(CaseRow)
            .where(CaseRow.queue_id == queue_id, CaseRow.status == "queued", col(CaseRow.assigned_agent_id).is_(None))
            .order_by(
                col(CaseRow.priority_rank).desc(),
                col(CaseRow.sla_due_at).is_(None),  # items with an SLA due time first
                col(CaseRow.sla_due_at),
                col(CaseRow.queued_at),
                col(CaseRow.id),
            )
        )
        rows, total, page, pages = _page_of(s, q, max(1, page), per_page)
        st = _statuses(s, rows)
    return CasePage(
        items=[_summary(c, st[c.id or 0]) for c in rows], total=total, page=page, pages=pages, per_page=per_page
    )


def case_workflows(store: Store, actor: Actor, number: str) -> list[str]:
    """Every routing workflow of the case: its first email's and each reply's, oldest first."""
    case = find_case(store, number)
    with store.db.read() as s:
        found = s.exec(
            select(EmailRow.workflow_id)
            .where((EmailRow.case_id == case.id) | (EmailRow.id == case.source_email_id))
            .order_by(col(EmailRow.id))
        ).all()
    out = [case.workflow_id] if case.workflow_id else []
    return out + [w for w in dict.fromkeys(found) if w and w not in out]


def change_marker(store: Store) -> str:
    """A short value that changes whenever a board would show something new: a trace entry
    (every routing decision and every operation writes one), an offer made or ended, an
    agent's presence or load, an email received or released, a supervisor alert raised.
    Indexed reads."""
    with store.db.read() as s:
        trace = s.exec(select(func.max(TraceRow.id))).one()
        offers = s.exec(select(func.max(OfferRow.id))).one()
        live = list(s.exec(select(OfferRow.id).where(OfferRow.status == "live").order_by(col(OfferRow.id))).all())
        agents = list(s.exec(select(AgentRow.id, AgentRow.presence, AgentRow.active_count).order_by(AgentRow.id)).all())
        emails = s.exec(select(func.max(EmailRow.id))).one()
        released = s.exec(
            select(func.count()).select_from(IntakeHoldRow).where(col(IntakeHoldRow.released_at).is_not(None))
        ).one()
        alerts = _newest_alert_id(s)
    return f"{trace}:{offers}:{live}:{agents}:{emails}:{released}:{alerts}"


# --- Temporal UI summaries of routing workflows; supervisor alerts (issue 17) ---------------------

ROUTING_DETAILS = (
    "Routes one inbound email to a case. The case number, mailbox and queue appear in this "
    "workflow's current details once intake has parsed it; search with CaseNumber, RoutingQueue, "
    "RoutingStage and AssignedAgent."
)


def routing_summary(email_id: int, envelope_to: list[str] | None, *, reprocess: bool = False) -> str:
    """The static summary the Temporal UI lists: what is known when the workflow starts (the
    email's id and the routing address it came to, never its content); the case number and
    queue come later, in the workflow's current details."""
    to = f" to {', '.join(envelope_to[:3])}" if envelope_to else ""
    return f"{'Reprocess of email' if reprocess else 'Email'} #{email_id}{to}"


class AlertView(BaseModel):
    id: int
    case_number: str
    kind: str  # no_eligible_agent | waiting_too_long
    detail: str
    queue: str | None
    round: int
    created_at: datetime


def list_alerts(store: Store, actor: Actor, *, limit: int = 200) -> list[AlertView]:
    """Supervisor alerts, newest first (supervisors and admins)."""
    from routedesk.models import AlertRow

    require(actor, Role.SUPERVISOR, "list alerts")
    with store.db.read() as s:
        rows = s.exec(
            select(AlertRow).order_by(col(AlertRow.created_at).desc(), col(AlertRow.id).desc()).limit(limit)
        ).all()
        return [
            AlertView(
                id=r.id or 0,
                case_number=r.case_number,
                kind=r.kind,
                detail=r.detail,
                queue=r.queue_id,
                round=r.round,
                created_at=_utc(r.created_at),
            )
            for r in rows
        ]


# --- waiting on the customer, SLA detail (issue 18) ---------------------------------------------


class WaitingResult(BaseModel):
    case: str
    waiting_on_customer: bool
    message: str


async def set_waiting_on_customer(ctx: Context, actor: Actor, number: str, on: bool) -> WaitingResult:
    """The case waits on the customer (``on``) or not: its SLA timers pause until then, or
    until the customer replies. Its assigned agent or a supervisor may set it; it counts as
    the agent's activity on the case (reassign_if_idle)."""
    from temporalio.service import RPCError

    from workflows.email_routing import EmailRoutingWorkflow

    case = find_case(ctx.store, number)
    if not (actor.at_least(Role.SUPERVISOR) or (actor.agent_id and actor.agent_id == case.assigned_agent_id)):
        raise Forbidden(
            f"{actor.describe()} may not change {case.number}'s status: only its assigned agent or a supervisor may"
        )

    def write() -> bool:
        with ctx.store.db.write() as s:
            row = s.get(CaseRow, case.id, with_for_update=True, populate_existing=True)
            assert row is not None and row.id is not None
            if row.status == "resolved":
                raise Refused(f"{row.number} is resolved; a reply reopens it")
            if (row.waiting_since is not None) == on:
                return False
            now = utcnow()
            row.waiting_since = now if on else None
            row.last_agent_activity_at = now
            s.add(row)
            add_trace(
                s,
                email_id=row.source_email_id,
                case_id=row.id,
                round_=row.round,
                step=f"op:{uuid.uuid4().hex}",
                entries=[
                    TraceEntry(
                        "operation",
                        actor.user,
                        "waiting_on_customer" if on else "not_waiting",
                        ("waiting on the customer: SLA timers pause" if on else "no longer waiting on the customer")
                        + f"; by {actor.describe()}",
                    )
                ],
                new=True,
            )
            return True

    changed = await asyncio.to_thread(write)
    if changed and case.workflow_id:
        client = await ctx.temporal()
        handle = client.get_workflow_handle_for(EmailRoutingWorkflow.run, case.workflow_id)
        with contextlib.suppress(RPCError):  # a workflow that ended has no timers to move
            await handle.signal(EmailRoutingWorkflow.timers_changed)
    state = "waits on the customer" if on else "no longer waits on the customer"
    return WaitingResult(
        case=case.number or number,
        waiting_on_customer=on,
        message=f"{case.number} {state}" + ("" if changed else " (unchanged)"),
    )


# --- the IMAP fetchers' state (CLI mailbox list, /readyz, GET /api/v1/mailboxes) ------------

IMAP_FAILING = ("login_failed", "error")  # states that make the service not ready


def imap_statuses(store: Store, actor: Actor | None = None, *, failing_only: bool = False) -> list[ImapStatus]:
    """Every IMAP folder's fetcher state (by mailbox, then folder): last fetch, last error
    (a refused login in the server's words), UIDVALIDITY, messages fetched."""
    query = select(ImapPositionRow).order_by(col(ImapPositionRow.mailbox_address), col(ImapPositionRow.folder))
    if failing_only:
        query = query.where(col(ImapPositionRow.status).in_(IMAP_FAILING))
    with store.db.read() as s:
        return [ImapStatus.model_validate(as_dict(p)) for p in s.exec(query).all()]


# --- the service's own start (routedesk worker, routedesk intake smtp|http) ------------------


def loaded_intake_settings(store: Store) -> IntakeSettings | None:
    """The loaded config's ``intake`` section; None when no config was loaded yet."""
    from routedesk.models import SettingRow

    with store.db.read() as s:
        row = s.get(SettingRow, "intake")
    return IntakeSettings.model_validate(row.value) if row is not None else None


# --- the console's SLA column, newest alert (issue 18, issue 17) -------------------------------


def _newest_alert_id(s: Any) -> int | None:
    """The newest supervisor alert's id: the change marker moves when an alert is raised."""
    from routedesk.models import AlertRow

    return s.exec(select(func.max(AlertRow.id))).one()


class SlaMark(BaseModel):
    """What a case list shows of a case's SLA: the earliest open due time and its breaches."""

    policy: str | None
    due_at: datetime | None
    breached: bool  # a target was violated (this round or an earlier one)
    warned: bool  # a warning time passed
    waiting_on_customer: bool


def case_sla_marks(store: Store, actor: Actor, numbers: Sequence[str]) -> dict[str, SlaMark]:
    """The SLA marks of the listed cases (one indexed read), by case number; cases with no
    SLA policy, no pause and no breach are left out."""
    if not numbers:
        return {}
    with store.db.read() as s:
        rows = s.exec(select(CaseRow).where(col(CaseRow.number).in_(list(numbers)))).all()
    out: dict[str, SlaMark] = {}
    for c in rows:
        breaches = list(c.sla_breaches or [])
        if c.sla_policy_id is None and c.waiting_since is None and not breaches:
            continue
        out[c.number or ids.case_number(c.id or 0)] = SlaMark(
            policy=c.sla_policy_id,
            due_at=_utc(c.sla_due_at) if c.sla_due_at else None,
            breached=any(b.get("kind") == "violation" for b in breaches),
            warned=any(b.get("kind") == "warning" for b in breaches),
            waiting_on_customer=c.waiting_since is not None,
        )
    return out


# --- users and API tokens (admins; routedesk user add|list, routedesk token create) -----------
#
# Who added a user or created a token is stored on its row (``created_by``, "ada (admin)"),
# as a config load stores ``loaded_by``: users and tokens belong to no case, so no case trace.


class UserView(BaseModel):
    name: str
    role: str
    agent_id: str | None
    created_at: datetime
    created_by: str | None  # None: added before revision 0009 recorded it
    tokens: int  # how many tokens the user has (the tokens themselves are never shown again)


class NewUser(BaseModel):
    name: str = Field(description="The user's name, unique; the trace names them by it")
    role: str = Field(description="agent, supervisor or admin")
    agent_id: str | None = Field(default=None, description="For role agent: the agent id they act for")


class NewToken(BaseModel):
    user: str
    token: str = Field(description="The bearer token: shown this once, only its hash is stored")
    created_by: str


def _user_view(row: Any, tokens: int) -> UserView:
    return UserView(
        name=row.name,
        role=row.role,
        agent_id=row.agent_id,
        created_at=_utc(row.created_at),
        created_by=row.created_by,
        tokens=tokens,
    )


def list_users(store: Store, actor: Actor) -> list[UserView]:
    """Admin: every user, their role and how many tokens they hold."""
    from routedesk import auth
    from routedesk.models import ApiTokenRow

    require(actor, Role.ADMIN, "list users")
    rows = auth.list_users(store)
    with store.db.read() as s:
        counts: dict[str, int] = dict(
            s.exec(  # type: ignore[arg-type]
                select(ApiTokenRow.user_name, func.count()).group_by(col(ApiTokenRow.user_name))
            ).all()
        )
    return [_user_view(r, counts.get(r.name, 0)) for r in rows]


def add_user(store: Store, actor: Actor, new: NewUser) -> UserView:
    """Admin: add a user (a taken name is refused: :class:`Refused`, nothing changes)."""
    from sqlalchemy.exc import IntegrityError

    from routedesk import auth

    require(actor, Role.ADMIN, "add users")
    try:
        row = auth.add_user(store, new.name, new.role, new.agent_id, by=actor.describe(), new_only=True)
    except auth.UserExists as exc:
        raise Refused(str(exc)) from None
    except auth.AuthRefusal as exc:  # a bad role, a missing or unknown agent: the request's fault
        msg = str(exc).replace("--agent AGENT_ID", "agent_id").replace("--agent", "agent_id")
        raise Invalid(msg.replace("--role ", "role ")) from None
    except IntegrityError:  # the same name added at the same moment by another request
        raise Refused(f"user {new.name.strip()!r} exists; pick another name") from None
    return _user_view(row, 0)


def create_token(store: Store, actor: Actor, user: str) -> NewToken:
    """Admin: a new bearer token for ``user``, returned this once (only its hash is stored)."""
    from routedesk import auth

    require(actor, Role.ADMIN, "create tokens")
    try:
        token = auth.create_token(store, user, by=actor.describe())
    except auth.NoSuchUser as exc:
        raise NotFound(str(exc)) from None
    return NewToken(user=user, token=token, created_by=actor.describe())


# --- queue views: the dispatcher's eligibility rules ----------------------------------------


def _queue_rules(store: Store) -> views.QueueRules:
    """The rules of a queue view's eligible agents, from the store's cached definitions (the
    ones the dispatcher uses; refreshed when a config loads); the CLI reads them from the store."""
    from routedesk import time_routing

    defs = time_routing.definitions(store)
    return views.QueueRules.from_config(
        {
            "workstreams": [w.model_dump(mode="json", by_alias=True) for w in store.definitions().workstreams.values()],
            "queues": [q.model_dump(mode="json", by_alias=True) for q in defs.queues.values()],
            "calendars": [c.model_dump(mode="json", by_alias=True) for c in defs.calendars.values()],
            "agents": [a.model_dump(mode="json", by_alias=True) for a in defs.agents.values()],
        }
    )


# --- what an agent was told (agent_notice) ------------------------------------------------------


def agent_notices(store: Store, actor: Actor, agent_id: str, limit: int = 5) -> list[views.NoticeView]:
    """The agent's latest notices (cases taken from them), newest first; for the agent or a
    supervisor."""
    require_agent_or(actor, agent_id, "see the notices")
    with store.db.reader() as r:
        return views.agent_notices(r, agent_id, limit)
