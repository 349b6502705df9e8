"""Case store tables (SQLModel).

Definitions loaded from the routing config (mailboxes, workstreams, queues, agents,
contacts) sit beside runtime state (emails, cases, offers, the routing trace). Unique
constraints here are what make activities idempotent and concurrency limits hold: a retried
activity hits the constraint or a conditional update instead of writing twice.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, LargeBinary, UniqueConstraint, text
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


# --- definitions from the routing config ----------------------------------------------


class MailboxRow(SQLModel, table=True):
    __tablename__ = "mailbox"
    address: str = Field(primary_key=True)  # lowercased routing address
    name: str
    workstream_id: str
    position: int  # config order: an email to two routing addresses goes to the first
    verified: bool = True
    config: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))


class WorkstreamRow(SQLModel, table=True):
    __tablename__ = "workstream"
    id: str = Field(primary_key=True)
    name: str
    config: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))


class QueueRow(SQLModel, table=True):
    __tablename__ = "queue"
    id: str = Field(primary_key=True)
    name: str
    assignment_method: str
    priority: int = 0


class QueueMemberRow(SQLModel, table=True):
    __tablename__ = "queue_member"
    queue_id: str = Field(primary_key=True)
    agent_id: str = Field(primary_key=True)
    last_assigned_at: datetime | None = None  # round_robin: earliest last assignment in this queue


class AgentRow(SQLModel, table=True):
    __tablename__ = "agent"
    id: str = Field(primary_key=True)
    name: str
    capacity: int
    skills: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    presence: str
    active_count: int = 0  # assigned, unresolved cases; never above capacity
    last_assigned_at: datetime | None = None
    last_released_at: datetime | None = None
    # Offers in a row that timed out (revision 0005); an accept or a decline resets it.
    missed_offers: int = Field(default=0, sa_column_kwargs={"server_default": "0"})


class SettingRow(SQLModel, table=True):
    """Config sections that are not tables of their own (e.g. ``routing``)."""

    __tablename__ = "setting"
    key: str = Field(primary_key=True)
    value: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))


class ContactRow(SQLModel, table=True):
    __tablename__ = "contact"
    id: str = Field(primary_key=True)
    name: str
    # Ordered, 0..3 agent ids: the offer order.
    preferred_agents: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))


class ContactEmailRow(SQLModel, table=True):
    __tablename__ = "contact_email"
    email: str = Field(primary_key=True)
    contact_id: str = Field(index=True)


class ConfigVersionRow(SQLModel, table=True):
    """One loaded routing configuration: every load that changed the content is a new number.

    Processes compare the highest number with the one their cached definitions were built
    from (``Store.definitions``), so a load takes effect everywhere without a restart.
    """

    __tablename__ = "config_version"
    number: int = Field(primary_key=True)  # 1, 2, ...: the highest is in force
    loaded_at: datetime = Field(default_factory=utcnow)
    loaded_by: str  # the OS user, or who the caller names
    source: str | None = None  # the file it was read from
    content_hash: str = Field(index=True)  # sha256 of the canonical JSON of the validated config
    config: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))


class RuntimeEditRow(SQLModel, table=True):
    """A change made while the service runs to something the config file also declares
    (a contact's preferred agents, an agent's presence): who set what, when, so a later load
    keeps it or lists it as overridden instead of reverting it silently."""

    __tablename__ = "runtime_edit"
    kind: str = Field(primary_key=True)  # contact.preferred_agents | agent.presence
    key: str = Field(primary_key=True)  # the contact or agent id
    value: Any = Field(sa_column=Column(JSON, nullable=False))
    set_at: datetime = Field(default_factory=utcnow)
    set_by: str
    config_version: int | None = None  # the version in force when it was set


# --- runtime state ----------------------------------------------------------------------


class EmailRow(SQLModel, table=True):
    __tablename__ = "email"
    # The sender rate limit counts a sender's recent mail for every email parsed: without
    # this index, a scan of every stored email (raw bytes included).
    __table_args__ = (
        Index("email_sender_recent", "from_address", "received_at"),
        Index("email_sender_admitted", "from_address", "admitted_at"),
    )
    id: int | None = Field(default=None, primary_key=True)
    # Message-ID, or a hash of the raw bytes when absent: the same email delivered twice is one row.
    dedupe_key: str = Field(unique=True)
    message_id: str | None = Field(default=None, index=True)
    raw: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    size: int
    source: str = "python"  # smtp, http, cli, python
    envelope_to: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    received_at: datetime = Field(default_factory=utcnow)
    workflow_id: str | None = None
    # received -> accepted | rejected | ignored | held
    status: str = "received"
    reason: str | None = None
    subject: str | None = None
    from_address: str | None = None
    from_name: str | None = None
    to: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    cc: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    headers: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    body_text: str | None = None
    attachments: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    defects: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    mailbox_address: str | None = None
    case_id: int | None = Field(default=None, index=True)
    # When intake admitted it to routing (accepted, threaded): the rate limit counts these.
    admitted_at: datetime | None = None
    # How often this message arrived (a mail server retrying, a user resending): a duplicate
    # is answered with the stored decision, and `intake list` shows it was seen again.
    deliveries: int = Field(default=1, sa_column_kwargs={"server_default": "1"})
    last_delivered_at: datetime | None = None
    # `routedesk intake reprocess`: each one runs a new workflow, ID derived from this count.
    reprocessed: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    # A reply to this case from a sender who is not one of its participants: the email opened
    # a case of its own (or waits for review) instead of joining this one.
    related_case_id: int | None = None


class CaseRow(SQLModel, table=True):
    __tablename__ = "case"
    # The dispatcher's question, "what waits in this queue, best first?", is one index scan.
    __table_args__ = (Index("queue_waiting", "queue_id", "status", "awaiting_dispatch", "priority_rank", "queued_at"),)
    id: int | None = Field(default=None, primary_key=True)
    number: str | None = Field(default=None, unique=True)  # CASE-000123, set from the id
    # The first email of the thread: at most one case per source email, however often retried.
    source_email_id: int = Field(unique=True)
    workflow_id: str | None = None
    # new -> queued -> assigned -> resolved (reopened cases go back to queued)
    status: str = "new"
    subject: str = ""
    description: str = ""
    origin: str = "Email"
    priority: str = "Medium"
    priority_rank: int = 2
    contact_id: str | None = None
    mailbox_address: str
    workstream_id: str
    queue_id: str | None = Field(default=None, index=True)
    attributes: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    round: int = 1  # routing round: 1, then +1 each time a reply reopens the case
    stage: str = "created"  # last routing stage completed, for idempotent replays of activities
    created_at: datetime = Field(default_factory=utcnow)
    queued_at: datetime | None = None
    # True while the queue's dispatcher may offer the item to the next best agent.
    awaiting_dispatch: bool = False
    excluded_agents: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    # The last "waiting for an eligible agent" trace step written, so a dispatch pass over a
    # long backlog does not look the trace up for every item.
    waiting_noted: str | None = None
    assigned_agent_id: str | None = None
    previous_agent_id: str | None = None  # owner before the case was last reopened
    assigned_at: datetime | None = None
    resolved_at: datetime | None = None
    # Opened by a non-participant's reply to that case (intake.non_participant_reply: new_case).
    related_case_id: int | None = None
    # The assigned agent last acted on the case (was assigned, accepted, replied): what an
    # idle reassignment measures from (store.touch_agent_activity sets it).
    last_agent_activity_at: datetime | None = None
    # Decline rules (revision 0005). When every eligible member declined or let the item time
    # out this round: a new round comes a sweep interval later, whatever the queue's traffic.
    starved_at: datetime | None = None
    # Every member of the queue reached the workstream's max_declines_per_item for this item:
    # it is not offered again automatically (picks and supervisors still can); a supervisor
    # alert fired. Cleared when a new member could take it.
    no_eligible_agent_at: datetime | None = None
    # --- SLA and agent activity (routedesk/sla.py; revision 0007) ---
    sla_policy_id: str | None = None  # the first matching sla_policies entry, this round
    # The earliest target not yet met: ordering across queues and the SlaDueAt attribute.
    sla_due_at: datetime | None = Field(default=None, index=True)
    sla_first_response_due: datetime | None = None
    sla_resolution_due: datetime | None = None
    # Timer state: warning times, events fired, pause start (see routedesk.sla.SlaState).
    sla: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    # Warnings and violations, oldest first: {round, target, kind, at, due}.
    sla_breaches: list[dict[str, Any]] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    # Set while the case waits on the customer (an agent's status): SLA timers pause.
    waiting_since: datetime | None = None


class QueueWakeRow(SQLModel, table=True):
    """A queue whose dispatcher was asked for a pass that has not started yet.

    A transaction that needs a pass claims this row; while it is there, later transactions
    need not signal again: the pass deletes the row when it starts, in its own transaction,
    so it sees everything committed before.
    """

    __tablename__ = "queue_wake"
    queue_id: str = Field(primary_key=True)
    requested_at: datetime


class OfferRow(SQLModel, table=True):
    """An offer of a case to an agent; at most one live offer per agent and per case."""

    __tablename__ = "offer"
    __table_args__ = (
        Index(
            "one_live_offer_per_agent",
            "agent_id",
            unique=True,
            sqlite_where=text("status = 'live'"),
            postgresql_where=text("status = 'live'"),
        ),
        Index(
            "one_live_offer_per_case",
            "case_id",
            unique=True,
            sqlite_where=text("status = 'live'"),
            postgresql_where=text("status = 'live'"),
        ),
        UniqueConstraint("idempotency_key", name="offer_idempotency"),
    )
    id: int | None = Field(default=None, primary_key=True)
    case_id: int = Field(index=True)
    case_number: str
    agent_id: str = Field(index=True)
    queue_id: str | None = None
    workflow_id: str
    kind: str  # preferred | queue
    # live -> accepted | declined | timed_out | withdrawn | refused
    status: str = "live"
    reason: str | None = None
    idempotency_key: str
    created_at: datetime = Field(default_factory=utcnow)
    closed_at: datetime | None = None


class TraceRow(SQLModel, table=True):
    """One routing decision: stage, rule or candidate, outcome, reason, time."""

    __tablename__ = "routing_trace"
    __table_args__ = (UniqueConstraint("email_id", "step", "seq", name="trace_step"),)
    id: int | None = Field(default=None, primary_key=True)
    email_id: int = Field(index=True)
    case_id: int | None = Field(default=None, index=True)
    round: int = 1
    # A key the workflow makes deterministically per decision: a retried activity rewrites
    # nothing because (email_id, step, seq) already exists.
    step: str
    seq: int = 0
    stage: str  # intake, case, classification, queue_routing, assignment
    subject: str  # the rule or candidate agent the entry is about
    outcome: str
    reason: str
    at: datetime = Field(default_factory=utcnow)


# --- intake (loop protection, holds, outbound notifications) ----------------------------


class IntakeHoldRow(SQLModel, table=True):
    """Why an email is (or was) held, and whether an operator released it by hand."""

    __tablename__ = "intake_hold"
    email_id: int = Field(primary_key=True)
    kind: str  # unverified_mailbox | rate_limit
    reason: str
    mailbox_address: str | None = None
    sender: str | None = Field(default=None, index=True)
    held_at: datetime = Field(default_factory=utcnow)
    # Set by `routedesk intake release`: the next evaluation skips the hold checks.
    released_at: datetime | None = None
    released_by: str | None = None


class NotificationRow(SQLModel, table=True):
    """An outbound email: an acknowledgement or bounce reply (at most one per kind and email),
    or an agent's reply from the case (one per ``reply_id``).

    The row is committed before the relay is contacted, and the rendered bytes with their
    Message-ID are kept, so every retry sends the identical message and a sent one never
    goes out again.
    """

    __tablename__ = "notification"
    __table_args__ = (
        # Automatic replies: one per kind and email. Agents' replies answer the case's newest
        # email, so several share one; each is unique by its reply id instead. (Stores made
        # before replies had UNIQUE (kind, email_id): migration 0004 replaces it.)
        Index(
            "one_notification_per_kind_and_email",
            "kind",
            "email_id",
            unique=True,
            sqlite_where=text("reply_id IS NULL"),
            postgresql_where=text("reply_id IS NULL"),
        ),
        Index("one_notification_per_reply", "reply_id", unique=True),
        # The automatic-reply limits: per normalised recipient and window, per mailbox and minute.
        Index("notification_recipient_recent", "to_key", "created_at"),
        Index("notification_mailbox_recent", "mailbox_address", "created_at"),
    )
    id: int | None = Field(default=None, primary_key=True)
    kind: str  # acknowledgement | bounce | reply
    email_id: int = Field(index=True)  # the inbound email this answers (a reply: the case's newest)
    case_id: int | None = Field(default=None, index=True)
    to_address: str = Field(index=True)  # the envelope recipient: Return-Path, else From
    # to_address normalised for the limits (intake_policy.normalised_address); mailbox that
    # answers. Null in rows written before the limits existed.
    to_key: str | None = None
    mailbox_address: str | None = None
    subject: str
    message_id: str = Field(index=True)  # replies naming it thread onto case_id
    raw: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    # pending -> sent | suppressed | skipped (no relay) | failed (refused by the relay, or not
    # renderable); pending again after a failed attempt
    status: str = "pending"
    reason: str | None = None
    attempts: int = 0
    last_error: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    sent_at: datetime | None = None
    reply_id: int | None = None  # kind reply: the CaseReplyRow this delivers


# --- IMAP intake --------------------------------------------------------------------------


class ImapPositionRow(SQLModel, table=True):
    """How far the IMAP fetcher of a mailbox's folder got, and how it fares.

    ``last_uid`` is advanced only after the messages up to it were stored, their workflows
    started and they were marked, moved or deleted on the server; it is valid only within
    ``uidvalidity`` (RFC 3501: UIDs of a folder whose UIDVALIDITY changed mean nothing).
    """

    __tablename__ = "imap_position"
    mailbox_address: str = Field(primary_key=True)
    folder: str = Field(primary_key=True)
    uidvalidity: int | None = None
    last_uid: int = 0
    # connecting | idle | polling | fetching | login_failed | error | stopped
    status: str = "connecting"
    last_error: str | None = None  # the server's or the network's message, one line
    last_error_at: datetime | None = None
    last_ok_at: datetime | None = None  # the last time the folder was checked completely
    fetched: int = 0  # messages submitted from this folder
    # A changed UIDVALIDITY (folder recreated or restored): the folder was scanned again.
    uidvalidity_changes: int = 0
    previous_uidvalidity: int | None = None
    uidvalidity_changed_at: datetime | None = None
    updated_at: datetime = Field(default_factory=utcnow)


# --- people: users of the CLI and the HTTP API, and their tokens -----------------------------


class UserRow(SQLModel, table=True):
    """Someone who acts through the API (or the CLI with a token): role and, for an agent,
    the agent they are."""

    __tablename__ = "user"
    name: str = Field(primary_key=True)
    role: str  # agent | supervisor | admin
    agent_id: str | None = None  # agents only: the agent this user is
    created_at: datetime = Field(default_factory=utcnow)
    created_by: str | None = None  # who added the user, "ada (admin)" (revision 0009)


class ApiTokenRow(SQLModel, table=True):
    """A bearer token, stored as its SHA-256 only (the token is shown once, at creation).

    ``lookup`` (the hash's first 12 hex digits) finds the candidates by index; the whole
    hash is then compared in constant time.
    """

    __tablename__ = "api_token"
    id: int | None = Field(default=None, primary_key=True)
    user_name: str = Field(index=True)
    lookup: str = Field(index=True)
    token_hash: str
    created_at: datetime = Field(default_factory=utcnow)
    last_used_at: datetime | None = None
    created_by: str | None = None  # who created the token, "ada (admin)" (revision 0009)


class CaseReplyRow(SQLModel, table=True):
    """An agent's (or a supervisor's) reply to the customer, written from the case.

    Its delivery (status, attempts, the relay's answer) is the notification row of kind
    ``reply`` with this ``reply_id``; the row here says who wrote what, to whom.
    """

    __tablename__ = "case_reply"
    id: int | None = Field(default=None, primary_key=True)
    case_id: int = Field(index=True)
    agent_id: str  # in whose name: the case's assigned agent, or the supervisor's user name
    by_supervisor: bool = False
    written_by: str = ""  # who performed it, as the trace names them: "kim (supervisor)"
    from_address: str  # the case's mailbox: From and envelope sender
    to_address: str
    body: str
    workflow_id: str  # the SendReplyWorkflow delivering it
    # An integration's idempotency key: the same request twice is one reply.
    request_key: str | None = Field(default=None, unique=True)
    created_at: datetime = Field(default_factory=utcnow)


# --- the console (routedesk/console): passwords and browser sessions ---------------------------


class ConsolePasswordRow(SQLModel, table=True):
    """A user's console password (an argon2id hash) and their failed sign-ins: after
    ``console.lockout_failures`` in a row the user is locked out until ``locked_until``."""

    __tablename__ = "console_password"
    user_name: str = Field(primary_key=True)
    password_hash: str
    failures: int = 0
    locked_until: datetime | None = None
    changed_at: datetime = Field(default_factory=utcnow)


class ConsoleSessionRow(SQLModel, table=True):
    """A signed-in browser: the cookie's SHA-256 only (a stolen database gives no session),
    and the session's CSRF token, which every form and htmx request sends back."""

    __tablename__ = "console_session"
    token_hash: str = Field(primary_key=True)
    user_name: str = Field(index=True)
    csrf_token: str
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime


# --- decline rules, supervisor alerts, offer notifications (revision 0005) ------------------


class DeclineCountRow(SQLModel, table=True):
    """How often an agent declined or let an item's offers time out, across rounds: at the
    workstream's ``max_declines_per_item`` the item is never offered to them again."""

    __tablename__ = "decline_count"
    case_id: int = Field(primary_key=True)
    agent_id: str = Field(primary_key=True)
    count: int = 0
    last_at: datetime = Field(default_factory=utcnow)


class AlertRow(SQLModel, table=True):
    """A supervisor alert: an item nobody eligible is left for, or one waiting too long."""

    __tablename__ = "alert"
    __table_args__ = (UniqueConstraint("case_id", "kind", "round", name="one_alert_per_case_kind_round"),)
    id: int | None = Field(default=None, primary_key=True)
    case_id: int = Field(index=True)
    case_number: str
    round: int = 1
    kind: str  # no_eligible_agent | waiting_too_long
    detail: str
    queue_id: str | None = None
    created_at: datetime = Field(default_factory=utcnow, index=True)


class PushRow(SQLModel, table=True):
    """One message to an outside channel (webhook, Slack webhook, email through the relay):
    an offer notification, a presence switch or a supervisor alert. Written before it is
    sent, so a failure is recorded, not lost, and a retry never sends a delivered one again."""

    __tablename__ = "push_notification"
    __table_args__ = (UniqueConstraint("key", "channel", "target", name="one_push_per_key_channel"),)
    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(index=True)  # offer:<id> | presence:<agent>:<n> | alert:<id>
    kind: str  # offer | presence | alert
    recipient: str  # the agent id, or "supervisors"
    channel: str  # webhook | slack | email
    target: str  # the URL or email address
    payload: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    # pending -> sent | failed (after the last attempt)
    status: str = "pending"
    attempts: int = 0
    last_error: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    sent_at: datetime | None = None


# --- SLA and idle reassignment (revision 0007) ---------------------------------------------


class AgentNoticeRow(SQLModel, table=True):
    """Something an agent is told about a case they held (e.g. it went back to the queue
    because they did nothing on it for the workstream's ``reassign_if_idle``)."""

    __tablename__ = "agent_notice"
    __table_args__ = (UniqueConstraint("idempotency_key", name="agent_notice_idempotency"),)
    id: int | None = Field(default=None, primary_key=True)
    agent_id: str = Field(index=True)
    case_id: int = Field(index=True)
    case_number: str
    kind: str  # reassigned_idle | reassigned_sla
    message: str
    idempotency_key: str
    created_at: datetime = Field(default_factory=utcnow)
