"""Routing configuration: one YAML file, validated with pydantic.

The file declares mailboxes (routing addresses), workstreams (classification and
route-to-queue rules), queues, agents and contacts, mirroring the Dynamics 365
unified-routing objects and Salesforce Email-to-Case routing addresses.
A bad file fails with :class:`ConfigError`, whose lines each name the key and the problem.
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from routedesk.calendars import Calendar, Duration
from routedesk.eligibility import skill_levels  # noqa: F401 (its home was here)

DEFAULT_QUEUE_PRIORITY = 100  # queues[].priority when left out: after any queue given a lower number
MAX_PREFERRED_AGENTS = 3  # Dynamics 365: "You can map up to three preferred agents to a contact."


class ConfigError(Exception):
    """A routing config that cannot be used; ``problems`` are ``(key path, message)`` pairs."""

    def __init__(self, problems: list[tuple[str, str]], source: str | None = None) -> None:
        self.problems = problems
        self.source = source
        where = f"{source}: " if source else ""
        lines = [f"{where}{key}: {msg}" if key else f"{where}{msg}" for key, msg in problems]
        super().__init__("\n".join(lines))


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Presence(StrEnum):
    AVAILABLE = "Available"
    BUSY = "Busy"
    AWAY = "Away"
    OFFLINE = "Offline"


class Priority(StrEnum):
    URGENT = "Urgent"
    HIGH = "High"
    MEDIUM = "Medium"
    LOW = "Low"

    @property
    def rank(self) -> int:
        """Higher rank is served first inside a queue."""
        return {"Urgent": 4, "High": 3, "Medium": 2, "Low": 1}[self.value]


class AssignmentMethod(StrEnum):
    HIGHEST_CAPACITY = "highest_capacity"
    ROUND_ROBIN = "round_robin"
    LEAST_ACTIVE = "least_active"


class Op(StrEnum):
    EQUALS = "equals"
    NOT_EQUALS = "not_equals"
    CONTAINS = "contains"
    STARTS_WITH = "starts_with"
    ENDS_WITH = "ends_with"
    MATCHES = "matches"
    IN = "in"
    EXISTS = "exists"


FIELD_NAMES = (
    "subject",
    "body",
    "sender",
    "sender_domain",
    "sender_name",
    "mailbox",
    "to",
    "cc",
    "contact",
    "priority",
)
FIELD_PREFIXES = ("header.", "attr.")


# --- rule conditions -------------------------------------------------------------------


class FieldCondition(Strict):
    """A test of one field: ``{field: subject, op: contains, value: invoice}``."""

    field: str
    op: Op
    value: Any = None
    case_sensitive: bool = False

    @field_validator("field")
    @classmethod
    def _known_field(cls, v: str) -> str:
        if v in FIELD_NAMES or (v.startswith(FIELD_PREFIXES) and len(v.split(".", 1)[1]) > 0):
            return v
        raise ValueError(f"unknown field {v!r}; use one of {', '.join(FIELD_NAMES)}, header.<Name> or attr.<name>")

    @model_validator(mode="after")
    def _value_fits_op(self) -> FieldCondition:
        if self.op is Op.EXISTS:
            return self
        if self.value is None:
            raise ValueError(f"operator {self.op.value!r} needs a 'value'")
        if self.op is Op.IN and not isinstance(self.value, list):
            raise ValueError("operator 'in' needs a list as 'value'")
        if self.op is not Op.IN and isinstance(self.value, list | dict):
            raise ValueError(f"operator {self.op.value!r} needs a single value, not a list")
        if self.op is Op.MATCHES:
            try:
                re.compile(str(self.value))
            except re.error as exc:
                raise ValueError(f"invalid regular expression {self.value!r}: {exc}") from None
        return self


class AllOf(Strict):
    all: list[Condition] = Field(min_length=1)


class AnyOf(Strict):
    any: list[Condition] = Field(min_length=1)


class NotOf(Strict):
    not_: Condition = Field(alias="not")


def _condition_kind(v: Any) -> str:
    if isinstance(v, dict):
        for key in ("all", "any", "not"):
            if key in v:
                return key
        return "field"
    if isinstance(v, BaseModel):
        return {AllOf: "all", AnyOf: "any", NotOf: "not"}.get(type(v), "field")
    return "field"


Condition = Annotated[
    Annotated[FieldCondition, Tag("field")]
    | Annotated[AllOf, Tag("all")]
    | Annotated[AnyOf, Tag("any")]
    | Annotated[NotOf, Tag("not")],
    Discriminator(_condition_kind),
]


class ClassificationRule(Strict):
    """Sets attributes on the case when its condition matches; all matching rules apply, in order."""

    name: str
    when: Condition | None = None  # no condition: always matches
    # skills: a list of names, or names with the required proficiency ({technical: 2})
    set: dict[str, str | int | float | bool | list[str] | dict[str, int]] = Field(min_length=1)

    @field_validator("set")
    @classmethod
    def _valid_priority(cls, v: dict[str, Any]) -> dict[str, Any]:
        if "priority" in v and v["priority"] not in [p.value for p in Priority]:
            raise ValueError(f"priority must be one of {', '.join(p.value for p in Priority)}, not {v['priority']!r}")
        if "skills" in v:
            check_skills(v["skills"])
        for key, value in v.items():
            if isinstance(value, dict) and key != "skills":
                raise ValueError(f"{key}: only skills take a mapping (skill: level)")
        return v


class QueueShare(Strict):
    """One queue of a percentage allocation: ``{queue: a, share: 70}``."""

    queue: str
    share: int = Field(ge=1, le=100)


MAX_SHARED_QUEUES = 5  # Dynamics 365: percentage-based allocation across up to five queues


class RouteRule(Strict):
    """Names a queue (``queue``), or up to 5 with percentage shares (``route_to``); the first
    matching route-to-queue rule wins."""

    name: str
    when: Condition | None = None
    queue: str = ""
    route_to: list[QueueShare] = Field(default_factory=list)
    # false: the queue's overflow rules do not apply to the items this rule routes (VIPs)
    overflow: bool = True

    @model_validator(mode="after")
    def _one_target(self) -> RouteRule:
        if bool(self.queue) == bool(self.route_to):
            raise ValueError("name either queue or route_to (a list of {queue, share})")
        if self.route_to:
            if len(self.route_to) > MAX_SHARED_QUEUES:
                raise ValueError(f"route_to names at most {MAX_SHARED_QUEUES} queues, not {len(self.route_to)}")
            total = sum(t.share for t in self.route_to)
            if total != 100:
                raise ValueError(f"route_to shares must add up to 100, not {total}")
            names = [t.queue for t in self.route_to]
            if len(set(names)) != len(names):
                raise ValueError("route_to names a queue twice")
        return self

    @property
    def queues(self) -> list[str]:
        """Every queue this rule may route to."""
        return [t.queue for t in self.route_to] if self.route_to else [self.queue]


MAX_SKILL_LEVEL = 10


def check_skills(v: Any) -> None:
    """Skills are a list of names or a mapping of names to levels 1-10."""
    if isinstance(v, list) and all(isinstance(x, str) for x in v):
        return
    if isinstance(v, dict) and all(
        isinstance(k, str) and isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= MAX_SKILL_LEVEL
        for k, n in v.items()
    ):
        return
    raise ValueError(f"skills must be a list of skill names or a mapping skill: level (1-{MAX_SKILL_LEVEL})")


# --- overflow (issue 18) ---------------------------------------------------------------


class OverflowWhen(Strict):
    """One condition: before queueing ``out_of_operating_hours`` or ``waiting_items_exceed``;
    in queue ``waiting_longer_than`` (optionally counted in the queue's business time)."""

    out_of_operating_hours: Literal[True] | None = None
    waiting_items_exceed: int | None = Field(default=None, ge=0)
    waiting_longer_than: Duration | None = None
    business_time: bool = False  # waiting_longer_than on the queue's operating_hours

    @model_validator(mode="after")
    def _one_condition(self) -> OverflowWhen:
        given = [
            k for k in ("out_of_operating_hours", "waiting_items_exceed", "waiting_longer_than") if getattr(self, k)
        ]
        given += ["waiting_items_exceed"] if self.waiting_items_exceed == 0 else []
        if len(set(given)) != 1:
            raise ValueError("name one condition: out_of_operating_hours, waiting_items_exceed or waiting_longer_than")
        if self.business_time and self.waiting_longer_than is None:
            raise ValueError("business_time applies to waiting_longer_than only")
        return self

    @property
    def in_queue(self) -> bool:
        return self.waiting_longer_than is not None


class OverflowAction(Strict):
    transfer_to_queue: str | None = None
    assign_to_queue_anyway: Literal[True] | None = None

    @model_validator(mode="after")
    def _one_action(self) -> OverflowAction:
        if (self.transfer_to_queue is None) == (self.assign_to_queue_anyway is None):
            raise ValueError("name one action: transfer_to_queue: QUEUE or assign_to_queue_anyway: true")
        return self


class OverflowRule(Strict):
    when: OverflowWhen
    action: OverflowAction

    @model_validator(mode="after")
    def _in_queue_transfers(self) -> OverflowRule:
        if self.when.in_queue and self.action.transfer_to_queue is None:
            raise ValueError("waiting_longer_than needs the action transfer_to_queue")
        return self


class PreferredAgentSettings(Strict):
    enabled: bool = True
    fallback: Literal["next_best_agent", "leave_unassigned"] = "next_best_agent"


# --- top-level objects -----------------------------------------------------------------


class CaseDefaults(Strict):
    origin: str = "Email"
    priority: Priority = Priority.MEDIUM
    queue: str | None = None  # used when the workstream routes nowhere else


ACK_PLACEHOLDERS = ("case_number", "subject", "sender", "sender_name", "mailbox", "mailbox_name")


class Acknowledgement(Strict):
    enabled: bool = False
    # The reference token [CASE-000123] is added to the subject when the template lacks it.
    subject: str = "[{case_number}] We received your message: {subject}"
    body: str = (
        "Hello,\n\nThank you for contacting us. Your request has been logged as "
        "{case_number}.\nPlease keep [{case_number}] in the subject of any reply.\n"
    )

    @field_validator("subject", "body")
    @classmethod
    def _known_placeholders(cls, v: str) -> str:
        try:
            v.format_map({k: "" for k in ACK_PLACEHOLDERS})
        except KeyError as exc:
            raise ValueError(f"unknown placeholder {{{exc.args[0]}}}; use {', '.join(ACK_PLACEHOLDERS)}") from None
        except (ValueError, IndexError) as exc:
            raise ValueError(f"bad template: {exc}") from None
        return v


class MoveTo(Strict):
    move_to: str = Field(min_length=1)


class ImapSettings(Strict):
    """Fetch this mailbox's mail from an IMAP folder (see starter/imap.py and the README)."""

    host: str
    port: int | None = Field(default=None, ge=1, le=65535)  # none: 993 for implicit TLS, else 143
    # none sends the password in clear: only for tests and servers on the loopback.
    tls: Literal["implicit", "starttls", "none"] = "implicit"
    ca_file: str | None = None  # a CA bundle to trust instead of the system's (a private CA)
    username: str
    # Exactly one: the name of an environment variable holding the password or the OAuth2
    # access token, or a file holding the token (re-read at every connection, so the
    # operator's tooling can refresh it). Secrets never sit in the config file.
    password_env: str | None = None
    oauth2_token_env: str | None = None
    oauth2_token_file: str | None = None
    folder: str = "INBOX"
    after: Literal["mark_seen", "delete"] | MoveTo = "mark_seen"
    poll_seconds: float = Field(default=30, gt=0)  # without IDLE (or idle: false)
    idle: bool = True
    timeout_seconds: float = Field(default=60, gt=0)  # one IMAP command's answer

    @field_validator("after", mode="before")
    @classmethod
    def _after(cls, v: Any) -> Any:
        if v in ("mark_seen", "delete") or (isinstance(v, dict) and set(v) == {"move_to"}):
            return v
        if isinstance(v, MoveTo):
            return v
        raise ValueError("use mark_seen, delete or {move_to: FOLDER}")

    @model_validator(mode="after")
    def _one_secret(self) -> ImapSettings:
        given = [k for k in ("password_env", "oauth2_token_env", "oauth2_token_file") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("name exactly one of password_env, oauth2_token_env or oauth2_token_file")
        if isinstance(self.after, MoveTo) and self.after.move_to == self.folder:
            raise ValueError("after.move_to must be another folder than the one fetched")
        return self

    @property
    def effective_port(self) -> int:
        return self.port or (993 if self.tls == "implicit" else 143)


class Mailbox(Strict):
    address: str
    name: str
    workstream: str
    case_defaults: CaseDefaults = CaseDefaults()
    allow_plus_addressing: bool = True
    accept_from: list[str] = Field(default_factory=list)  # addresses and @domain entries; empty = anyone
    unauthorized_sender_action: Literal["bounce", "discard"] = "bounce"
    verified: bool = True
    acknowledgement: Acknowledgement = Acknowledgement()
    imap: ImapSettings | None = None  # fetch this mailbox's mail from IMAP

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        v = v.strip().lower()
        if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", v):
            raise ValueError(f"{v!r} is not an email address")
        return v

    @field_validator("accept_from")
    @classmethod
    def _accept_from(cls, v: list[str]) -> list[str]:
        out = []
        for entry in v:
            e = entry.strip().lower()
            if not (e.startswith("@") and "." in e) and not re.fullmatch(r"[^@\s]+@[^@\s]+", e):
                raise ValueError(f"{entry!r} is neither an address nor an @domain entry")
            out.append(e)
        return out


# --- notifications and alerts (offer notifications, supervisor alerts) ----------------------

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")


def parse_duration(text: str) -> float:
    """``"90"``, ``"90s"``, ``"15m"``, ``"2h"``, ``"1d"`` -> seconds."""
    m = _DURATION.match(text)
    if m is None:
        raise ValueError(f"{text!r} is not a duration; write seconds, or e.g. 90s, 15m, 2h")
    return float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2) or "s"]


def _http_url(v: str) -> str:
    if not re.match(r"^https?://[^\s/]+", v):
        raise ValueError(f"{v!r} is not an http(s) URL")
    return v


def _email(v: str) -> str:
    v = v.strip()
    if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", v):
        raise ValueError(f"{v!r} is not an email address")
    return v


class NotifyChannels(Strict):
    """An agent's channels: a generic JSON webhook, a Slack incoming webhook, an email address
    (sent through ``intake.relay``). Any, all or none."""

    webhook: str | None = None
    slack_webhook: str | None = None
    email: str | None = None

    @field_validator("webhook", "slack_webhook")
    @classmethod
    def _urls(cls, v: str | None) -> str | None:
        return None if v is None else _http_url(v)

    @field_validator("email")
    @classmethod
    def _address(cls, v: str | None) -> str | None:
        return None if v is None else _email(v)

    @property
    def any(self) -> bool:
        return bool(self.webhook or self.slack_webhook or self.email)


class SupervisorChannels(Strict):
    """Where supervisor alerts go: the same channels as an agent's, to several addresses."""

    webhook: str | None = None
    slack_webhook: str | None = None
    email: list[str] = Field(default_factory=list)

    @field_validator("webhook", "slack_webhook")
    @classmethod
    def _urls(cls, v: str | None) -> str | None:
        return None if v is None else _http_url(v)

    @field_validator("email", mode="before")
    @classmethod
    def _addresses(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [v]
        return [_email(a) for a in v] if isinstance(v, list) else v


class Workstream(Strict):
    id: str
    name: str
    classification_rules: list[ClassificationRule] = Field(default_factory=list)
    route_to_queue_rules: list[RouteRule] = Field(default_factory=list)
    fallback_queue: str
    allowed_presences: list[Presence] = Field(default_factory=lambda: [Presence.AVAILABLE, Presence.BUSY])
    offer_timeout_seconds: float = Field(default=60, gt=0)
    preferred_agents: PreferredAgentSettings = PreferredAgentSettings()
    # exact: an agent's level >= the required one; closest: nearest levels first (issue 18)
    skill_match: Literal["exact", "closest"] = "exact"
    # Decline and no-answer rules (Dynamics 365), see "Decline and no-answer rules" in the README.
    # An agent who declined or let the same item time out this many times (across rounds) is
    # never offered it again automatically; they can still pick it.
    max_declines_per_item: int = Field(default=3, ge=1, le=5)
    # Missed (timed-out) offers in a row after which the agent is switched to
    # ``missed_offers_presence``; none: never.
    missed_offers_to_away: int | None = Field(default=None, ge=1)
    missed_offers_presence: Presence = Presence.AWAY
    # Supervisors are alerted when an item has waited this long for an agent (seconds, or a
    # duration such as "90s", "15m", "2h"); none: no such alert.
    alert_waiting_longer_than: float | None = Field(default=None, gt=0)

    @field_validator("alert_waiting_longer_than", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> Any:
        return parse_duration(v) if isinstance(v, str) else v

    # An assigned case the agent did nothing on for this long goes back to the queue.
    reassign_if_idle: SlaDuration | None = None


class Queue(Strict):
    id: str
    name: str
    members: list[str] = Field(default_factory=list)
    assignment_method: AssignmentMethod = AssignmentMethod.HIGHEST_CAPACITY
    # Across queues (an agent in several): lower first, as Dynamics 365 orders queues.
    priority: int = DEFAULT_QUEUE_PRIORITY
    # Issue 18: a calendar id (none: open 24x7); agents are offered work from a closed queue
    # only with offer_when_closed; overflow rules are checked in order.
    operating_hours: str | None = None
    offer_when_closed: bool = False
    overflow: list[OverflowRule] = Field(default_factory=list)


class Agent(Strict):
    id: str
    name: str
    capacity: int = Field(default=3, ge=0)
    # names ([technical], each at level 1) or names with a proficiency ({technical: 3})
    skills: list[str] | dict[str, int] = Field(default_factory=list)
    presence: Presence = Presence.OFFLINE
    # Where this agent is told of offers (and of being switched away): all off by default.
    notify: NotifyChannels = Field(default_factory=lambda: NotifyChannels())

    @field_validator("skills")
    @classmethod
    def _skills(cls, v: list[str] | dict[str, int]) -> list[str] | dict[str, int]:
        check_skills(v)
        return v


class Contact(Strict):
    id: str
    name: str
    emails: list[str] = Field(min_length=1)
    # Ordered, the offer order. Leave the key out for none; a listed set has 1 to 3 agents.
    preferred_agents: list[str] = Field(default_factory=list)

    @field_validator("emails")
    @classmethod
    def _lower(cls, v: list[str]) -> list[str]:
        return [e.strip().lower() for e in v]

    @field_validator("preferred_agents")
    @classmethod
    def _one_to_three(cls, v: list[str]) -> list[str]:
        # Dynamics 365: "you can map a maximum of three agents, but ensure that you map at
        # least one agent to the contact."
        if not v:
            raise ValueError("list 1 to 3 preferred agents, or leave the key out for none")
        if len(v) > MAX_PREFERRED_AGENTS:
            raise ValueError(f"at most {MAX_PREFERRED_AGENTS} preferred agents, not {len(v)}: {', '.join(v)}")
        return v


class RoutingSettings(Strict):
    sweep_interval_seconds: float = Field(default=60, gt=0)  # Dynamics sweeps every 5 minutes
    # The agent console: offer notifications carry accept/decline links under this URL.
    console_url: str = "http://127.0.0.1:8080"

    @field_validator("console_url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        return _http_url(v).rstrip("/")


class SmtpIntake(Strict):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=2525, ge=0, le=65535)  # 0: any free port
    # A session that sends no command for this long (the DATA transfer included) is closed
    # with 421, so idle or slow clients cannot hold connections forever.
    timeout_seconds: float = Field(default=300, gt=0)
    # Concurrent sessions beyond this get 421 at connect (the sender retries later).
    max_sessions: int = Field(default=100, ge=1)
    # STARTTLS with this certificate (chain, PEM) and private key (PEM); both or neither.
    tls_cert: str | None = None
    tls_key: str | None = None
    # Refuse mail before STARTTLS (530): a sender that cannot encrypt gets no plaintext path.
    require_tls: bool = False

    @model_validator(mode="after")
    def _tls_complete(self) -> SmtpIntake:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert and tls_key go together: give both (PEM files) or neither")
        if self.require_tls and not self.tls_cert:
            raise ValueError("require_tls needs tls_cert and tls_key (the certificate STARTTLS presents)")
        return self


class HttpIntake(Strict):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8088, ge=0, le=65535)
    # The bearer token comes from this environment variable, never from the file.
    token_env: str = "ROUTEDESK_HTTP_TOKEN"


class RateLimit(Strict):
    """Per sender: beyond ``max_messages`` in ``window_seconds`` new mail is held, not dropped."""

    enabled: bool = True
    max_messages: int = Field(default=20, ge=1)
    window_seconds: float = Field(default=600, gt=0)


class Relay(Strict):
    """The SMTP relay that acknowledgements and bounce replies go out through."""

    host: str
    port: int = Field(default=25, ge=1, le=65535)
    timeout_seconds: float = Field(default=10, gt=0)
    starttls: bool = False
    username: str | None = None
    password_env: str | None = None  # name of the environment variable holding the password


class AutoReply(Strict):
    """Limits on automatic replies (acknowledgements and bounce replies), against backscatter."""

    # At most one automatic reply per normalised recipient address in this window.
    window_seconds: float = Field(default=600, gt=0)
    # At most this many automatic replies per mailbox in any minute, whoever they go to.
    max_per_mailbox_per_minute: int = Field(default=30, ge=1)


class IntakeSettings(Strict):
    max_message_bytes: int = Field(default=25 * 1024 * 1024, ge=1024)  # Salesforce: 25 MB
    # The longest an SMTP or HTTP answer waits for the case store and Temporal; then a
    # temporary failure (451, 503) makes the sender retry. Well below what sending servers
    # wait for a reply to DATA (RFC 5321: 10 minutes) and below SQLite's 30 s busy timeout.
    submit_timeout_seconds: float = Field(default=10, gt=0)
    smtp: SmtpIntake = SmtpIntake()
    http: HttpIntake = HttpIntake()
    rate_limit: RateLimit = RateLimit()
    relay: Relay | None = None  # none: acknowledgements and bounces are recorded, not sent
    auto_reply: AutoReply = AutoReply()
    # A reply (by header or bare case number) from a sender who is not a participant of the
    # case: a new case linked to it, or held for review (`routedesk intake release` threads it).
    non_participant_reply: Literal["new_case", "hold"] = "new_case"


class RoutingConfig(Strict):
    mailboxes: list[Mailbox] = Field(min_length=1)
    workstreams: list[Workstream] = Field(min_length=1)
    queues: list[Queue] = Field(min_length=1)
    agents: list[Agent] = Field(default_factory=list)
    contacts: list[Contact] = Field(default_factory=list)
    routing: RoutingSettings = RoutingSettings()
    intake: IntakeSettings = IntakeSettings()
    sla_policies: list[SlaPolicy] = Field(default_factory=list)  # first match wins
    calendars: list[Calendar] = Field(default_factory=list)  # business calendars (issue 18)
    console: ConsoleSettings = Field(default_factory=lambda: ConsoleSettings())
    # Where supervisor alerts go (an item nobody eligible is left for, or waiting too long).
    supervisors: SupervisorChannels = Field(default_factory=lambda: SupervisorChannels())

    def cross_check(self) -> list[tuple[str, str]]:
        """References between objects; pydantic checks each object alone."""
        problems: list[tuple[str, str]] = []
        ws_ids = {w.id for w in self.workstreams}
        q_ids = {q.id for q in self.queues}
        agent_ids = {a.id for a in self.agents}

        def dupes(kind: str, ids: list[str]) -> None:
            seen: set[str] = set()
            for i, x in enumerate(ids):
                if x in seen:
                    problems.append((f"{kind}[{i}]", f"duplicate id {x!r}"))
                seen.add(x)

        dupes("mailboxes", [m.address for m in self.mailboxes])
        dupes("workstreams", [w.id for w in self.workstreams])
        dupes("queues", [q.id for q in self.queues])
        dupes("agents", [a.id for a in self.agents])
        dupes("contacts", [c.id for c in self.contacts])
        dupes("calendars", [c.id for c in self.calendars])

        for i, m in enumerate(self.mailboxes):
            if m.workstream not in ws_ids:
                problems.append((f"mailboxes[{i}].workstream", f"unknown workstream {m.workstream!r}"))
            if m.case_defaults.queue and m.case_defaults.queue not in q_ids:
                problems.append(
                    (
                        f"mailboxes[{i}].case_defaults.queue",
                        f"unknown queue {m.case_defaults.queue!r}",
                    )
                )
        for i, w in enumerate(self.workstreams):
            if w.fallback_queue not in q_ids:
                problems.append((f"workstreams[{i}].fallback_queue", f"unknown queue {w.fallback_queue!r}"))
            for j, r in enumerate(w.route_to_queue_rules):
                for k, queue in enumerate(r.queues):
                    if queue not in q_ids:
                        key = f"route_to[{k}].queue" if r.route_to else "queue"
                        problems.append(
                            (
                                f"workstreams[{i}].route_to_queue_rules[{j}].{key}",
                                f"unknown queue {queue!r}",
                            )
                        )
        for i, q in enumerate(self.queues):
            for j, member in enumerate(q.members):
                if member not in agent_ids:
                    problems.append((f"queues[{i}].members[{j}]", f"unknown agent {member!r}"))
        problems += self._check_time_routing(q_ids)
        seen_emails: dict[str, str] = {}
        for i, c in enumerate(self.contacts):
            for j, agent in enumerate(c.preferred_agents):
                if agent not in agent_ids:
                    problems.append((f"contacts[{i}].preferred_agents[{j}]", f"unknown agent {agent!r}"))
            if len(set(c.preferred_agents)) != len(c.preferred_agents):
                problems.append((f"contacts[{i}].preferred_agents", "an agent is listed twice"))
            for j, e in enumerate(c.emails):
                if e in seen_emails and seen_emails[e] != c.id:
                    problems.append(
                        (
                            f"contacts[{i}].emails[{j}]",
                            f"{e} already belongs to contact {seen_emails[e]!r}",
                        )
                    )
                seen_emails[e] = c.id
        problems += sla_problems(self)
        return problems

    def _check_time_routing(self, q_ids: set[str]) -> list[tuple[str, str]]:
        """Calendars named by queues, overflow targets (issue 18)."""
        problems: list[tuple[str, str]] = []
        cal_ids = {c.id for c in self.calendars}
        for i, q in enumerate(self.queues):
            if q.operating_hours is not None and q.operating_hours not in cal_ids:
                problems.append((f"queues[{i}].operating_hours", f"unknown calendar {q.operating_hours!r}"))
            for j, rule in enumerate(q.overflow):
                target = rule.action.transfer_to_queue
                if target is not None and target not in q_ids:
                    problems.append(
                        (f"queues[{i}].overflow[{j}].action.transfer_to_queue", f"unknown queue {target!r}")
                    )
                elif target == q.id:
                    problems.append(
                        (f"queues[{i}].overflow[{j}].action.transfer_to_queue", "a queue cannot overflow to itself")
                    )
                if (rule.when.out_of_operating_hours or rule.when.business_time) and q.operating_hours is None:
                    problems.append(
                        (
                            f"queues[{i}].overflow[{j}].when",
                            "needs operating_hours on the queue (without, it is open 24x7)",
                        )
                    )
        return problems

    def mailbox(self, address: str) -> Mailbox | None:
        return next((m for m in self.mailboxes if m.address == address.lower()), None)

    def workstream(self, ws_id: str) -> Workstream:
        return next(w for w in self.workstreams if w.id == ws_id)


_CONDITION_TAGS = ("field", "all", "any", "not")


def _key_path(loc: tuple[int | str, ...]) -> str:
    """``('workstreams', 0, 'when', 'field', 'op')`` -> ``workstreams[0].when.op``.

    pydantic puts the discriminator tag of a condition into the location; the user never
    wrote it, so it is dropped wherever a condition starts.
    """
    out = ""
    prev: int | str | None = None
    in_list = False
    for part in loc:
        starts_condition = prev in ("when", "not") or (isinstance(prev, int) and in_list)
        if starts_condition and part in _CONDITION_TAGS:
            prev = None
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
            in_list = part in ("all", "any")
        prev = part
    return out


def parse_config(data: Any, source: str | None = None) -> RoutingConfig:
    """Validate an already-loaded mapping; raises :class:`ConfigError`."""
    if not isinstance(data, dict):
        raise ConfigError([("", "the file must be a mapping with mailboxes, workstreams, queues...")], source)
    try:
        cfg = RoutingConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key (check the spelling)"
            problems.append((_key_path(tuple(err["loc"])), msg))
        raise ConfigError(problems, source) from None
    problems = cfg.cross_check()
    if problems:
        raise ConfigError(problems, source)
    return cfg


def load_config(path: str | Path) -> RoutingConfig:
    """Read and validate a YAML routing config file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([("", f"cannot read the file: {exc.strerror}")], str(p)) from None
    import yaml  # only here: commands that do not read a config file start without it

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([("", f"not valid YAML: {exc}")], str(p)) from None
    return parse_config(data, str(p))


# --- the console (routedesk/console): where it listens, sign-in rules --------------------------


class ConsoleSettings(Strict):
    """``console:`` in the file; ROUTEDESK_CONSOLE_HOST / _PORT / _TEMPORAL_UI_URL override it."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    # The Temporal Web UI the case page links to; unset: http://127.0.0.1:<ROUTEDESK_UI_PORT>.
    temporal_ui_url: str | None = None
    # Sign-in: this many wrong passwords in a row lock the user out for lockout_minutes.
    lockout_failures: int = Field(default=5, ge=1, le=100)
    lockout_minutes: float = Field(default=15, gt=0)
    session_hours: float = Field(default=12, gt=0)


# --- SLA policies (issue 18; routedesk/sla.py runs them) ---------------------------------


def _duration(v: str) -> str:
    # Imported here: routedesk.calendars owns the duration syntax.
    from routedesk.calendars import parse_duration

    if parse_duration(v).total_seconds() <= 0:
        raise ValueError(f"{v!r} must be longer than zero")
    return v


SlaDuration = Annotated[str, AfterValidator(_duration)]


class SlaAction(Strict):
    """One step of ``on_warning`` / ``on_violation``: exactly one key. ``reassign`` may be
    written bare."""

    raise_priority: Priority | None = None
    notify: Literal["supervisors"] | None = None
    transfer_to_queue: str | None = None
    reassign: Literal[True] | None = None

    @model_validator(mode="before")
    @classmethod
    def _bare(cls, v: Any) -> Any:
        return {"reassign": True} if v == "reassign" else v

    @model_validator(mode="after")
    def _one(self) -> SlaAction:
        given = [k for k in ("raise_priority", "notify", "transfer_to_queue", "reassign") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(
                "an action has exactly one of raise_priority: P, notify: supervisors, transfer_to_queue: Q, reassign"
            )
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("raise_priority", "notify", "transfer_to_queue", "reassign") if getattr(self, k))

    def describe(self) -> str:
        value = getattr(self, self.kind)
        return self.kind if value is True else f"{self.kind}: {value}"


class SlaPolicy(Strict):
    """Targets for the cases its condition matches; the first matching policy applies."""

    id: str
    when: Condition | None = None  # none: every case
    calendar: str | None = None  # none: 24x7
    first_response: SlaDuration | None = None  # until an agent accepts (or is assigned)
    resolution: SlaDuration | None = None  # until the case is resolved
    warning_at: float = Field(default=0.8, gt=0, lt=1)  # fraction of a target
    on_warning: list[SlaAction] = Field(default_factory=list)
    on_violation: list[SlaAction] = Field(default_factory=list)

    @model_validator(mode="after")
    def _a_target(self) -> SlaPolicy:
        if self.first_response is None and self.resolution is None:
            raise ValueError("give first_response, resolution or both")
        return self


def sla_problems(cfg: RoutingConfig) -> list[tuple[str, str]]:
    """References of ``sla_policies``: ids, calendars, queues."""
    problems: list[tuple[str, str]] = []
    q_ids = {q.id for q in cfg.queues}
    calendars = {c.id for c in getattr(cfg, "calendars", [])}
    seen: set[str] = set()
    for i, p in enumerate(cfg.sla_policies):
        if p.id in seen:
            problems.append((f"sla_policies[{i}]", f"duplicate id {p.id!r}"))
        seen.add(p.id)
        if p.calendar is not None and p.calendar not in calendars:
            problems.append((f"sla_policies[{i}].calendar", f"unknown calendar {p.calendar!r}"))
        for key in ("on_warning", "on_violation"):
            for j, action in enumerate(getattr(p, key)):
                if action.transfer_to_queue and action.transfer_to_queue not in q_ids:
                    problems.append(
                        (
                            f"sla_policies[{i}].{key}[{j}].transfer_to_queue",
                            f"unknown queue {action.transfer_to_queue!r}",
                        )
                    )
    return problems


Workstream.model_rebuild()
RoutingConfig.model_rebuild()
