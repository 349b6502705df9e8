"""What people read about cases, agents and queues: the views' result models and the one
place their rows are read and shaped.

The CLI, the HTTP API and the console all show these views. Each is read here with plain SQL
over a DB-API connection (a :class:`Reader`): inside the service that is the connection of a
read transaction from the store's pool (``Database.reader``); a CLI command that only reads
opens one itself (:func:`open_reader`), so it starts without the ORM, Alembic or Temporal's
SDK (issue 15: answer in well under a second). Only the fetching is SQL; the shaping
(statuses, deadlines, SLA summary) is the same Python for every caller.

This module imports nothing heavier than pydantic; the driver (sqlite3 or psycopg) is the one
the connection already uses.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from pydantic import BaseModel, Field

from routedesk import eligibility, ids
from routedesk.contracts import CASE_STATUSES, Status
from routedesk.eligibility import QueueRules
from routedesk.errors import Invalid, NotFound

# --- result models ---------------------------------------------------------------------------


class CaseSummary(BaseModel):
    number: str
    status: Status
    queue_id: str | None
    assigned_agent_id: str | None
    priority: str
    subject: str
    contact_id: str | None
    created_at: datetime
    queued_at: datetime | None
    # Every queue member reached max_declines_per_item: not offered automatically any more.
    no_eligible_agent: bool = False


class OfferView(BaseModel):
    offer_id: int
    case: str
    agent_id: str
    kind: str  # preferred | queue
    status: str  # live | accepted | declined | timed_out | withdrawn | refused
    queue_id: str | None
    subject: str
    contact_id: str | None
    priority: str
    offered_at: datetime
    deadline: datetime | None  # live offers: when it times out
    seconds_left: float | None
    reason: str | None = None


class TraceView(BaseModel):
    at: datetime
    stage: str
    subject: str
    outcome: str
    reason: str
    round: int = 1


class EmailText(BaseModel):
    email_id: int
    kind: str  # first | reply
    received_at: datetime
    from_address: str | None
    from_name: str | None
    subject: str | None
    status: str
    text: str


class CaseReplyView(BaseModel):
    """A reply as the case shows it: queued (with the last error while the relay is retried),
    sent, or failed with the relay's answer."""

    reply_id: int
    agent_id: str
    by_supervisor: bool
    written_by: str
    to: str
    message_id: str
    status: str  # queued | sent | failed | skipped
    reason: str | None
    attempts: int
    created_at: datetime
    sent_at: datetime | None
    body: str


class CaseDetail(BaseModel):
    case: CaseSummary
    origin: str
    mailbox: str
    attributes: dict[str, Any]
    workflow_id: str | None
    emails: list[EmailText]
    offers: list[OfferView]
    trace: list[TraceView]
    replies: list[CaseReplyView] = []  # agents' replies from the case (queued, sent, failed)
    # SLA policy, due times, pause and breaches (see due_summary); None without one.
    sla: dict[str, Any] | None = None


class AgentView(BaseModel):
    id: str
    name: str
    presence: str
    active: int
    capacity: int
    live_offer: OfferView | None
    queues: list[str]


class QueueView(BaseModel):
    id: str
    name: str
    assignment_method: str
    waiting: int  # in the queue, not assigned (offered ones included)
    offered: int
    by_priority: dict[str, int]
    oldest_waiting_since: datetime | None
    oldest_wait_seconds: float | None
    # Members the dispatcher may offer a waiting item to now (see queue_views).
    eligible_now: list[str]
    members: list[str]
    closed_until: datetime | None = None  # closed (operating hours): offers nothing until then


class QueueDetail(BaseModel):
    queue: QueueView
    items: list[CaseSummary]  # waiting items, best first (priority, then oldest)


class CaseFilter(BaseModel):
    agent: str | None = None
    queue: str | None = None
    status: str | None = None
    limit: int = Field(default=200, ge=1, le=1000)


REPLY_STATUS_SHOWN = {"pending": "queued"}  # the notification's status, as the case shows it

# A workstream's offer timeout in seconds (None: the workstream is gone from the config).
OfferTimeouts = Callable[[str], float | None]

# --- reading rows ----------------------------------------------------------------------------


class Reader:
    """Plain SQL over one DB-API connection (sqlite3 or psycopg), inside the caller's
    transaction. Rows come back as attribute objects named like the models' fields, with the
    models' Python types: PostgreSQL's driver gives them; on SQLite (text timestamps, JSON
    text, 0/1 booleans) the columns' declared types say how to convert."""

    def __init__(self, conn: Any, *, postgres: bool) -> None:
        self.conn = conn
        self.postgres = postgres
        self._types: dict[str, dict[str, str]] = {}

    def _sql(self, sql: str) -> str:
        # Queries here are written with ? placeholders and never contain % or a literal ?.
        return sql.replace("?", "%s") if self.postgres else sql

    def values(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows as tuples, unconverted (ids, strings, numbers)."""
        cur = self.conn.cursor()
        try:
            cur.execute(self._sql(sql), tuple(params))
            return [tuple(r) for r in cur.fetchall()]
        finally:
            cur.close()

    def rows(self, table: str, sql: str, params: Sequence[Any] = ()) -> list[SimpleNamespace]:
        """Rows of ``table`` (the query's columns all come from it) as attribute objects."""
        cur = self.conn.cursor()
        try:
            cur.execute(self._sql(sql), tuple(params))
            names = [d[0] for d in cur.description]
            data = cur.fetchall()
        finally:
            cur.close()
        convert = self._converters(table, names)
        return [SimpleNamespace(**{n: f(v) for n, f, v in zip(names, convert, r, strict=True)}) for r in data]

    def _converters(self, table: str, names: list[str]) -> list[Callable[[Any], Any]]:
        if self.postgres:
            return [_same] * len(names)
        if table not in self._types:
            cur = self.conn.cursor()
            try:
                cur.execute(f'PRAGMA table_info("{table}")')
                self._types[table] = {r[1]: (r[2] or "").upper() for r in cur.fetchall()}
            finally:
                cur.close()
        declared = self._types[table]
        return [_SQLITE_CONVERTERS.get(declared.get(n, "").split("(")[0], _same) for n in names]


def _same(value: Any) -> Any:
    return value


def _sqlite_datetime(value: Any) -> Any:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def _sqlite_json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


def _sqlite_bool(value: Any) -> Any:
    return bool(value) if value is not None else None


_SQLITE_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "DATETIME": _sqlite_datetime,
    "TIMESTAMP": _sqlite_datetime,
    "JSON": _sqlite_json,
    "BOOLEAN": _sqlite_bool,
}


def _marks(values: Sequence[Any]) -> str:
    return ", ".join("?" * len(values))


@contextmanager
def open_reader(url: str) -> Iterator[Reader | None]:
    """A read transaction on the store at ``url`` with the driver alone, for a CLI command
    that only reads; None when this cannot be sure to read what the full store would (a URL
    it does not know, a missing file, a store not at this version's schema revision, a
    driver error): the caller then opens the store the usual way, which says what is wrong."""
    from routedesk.revisions import from_files

    known = from_files()
    conn: Any = None
    postgres = False
    try:
        if known is None:
            conn = None
        elif url.startswith(("sqlite:///", "sqlite+pysqlite:///")):
            path = url.split(":///", 1)[1]
            if path and path != ":memory:" and os.path.isfile(path):
                import sqlite3

                conn = sqlite3.connect(path, timeout=30, isolation_level=None)
                conn.execute("PRAGMA busy_timeout=30000")
                conn.execute("BEGIN")
        elif url.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
            import psycopg

            conninfo = "postgresql://" + url.split("://", 1)[1]
            conn = psycopg.connect(conninfo, options="-c timezone=UTC", connect_timeout=10)
            postgres = True
    except Exception:  # the full path reports it, in one line
        conn = None
    if conn is None:
        yield None
        return
    try:
        reader = Reader(conn, postgres=postgres)
        try:
            found = reader.values("SELECT version_num FROM alembic_version")
        except Exception:
            found = []
        assert known is not None
        yield reader if found == [(known[1],)] else None
    finally:
        try:
            conn.rollback()
        finally:
            conn.close()


# --- shaping ---------------------------------------------------------------------------------


def now() -> datetime:
    return datetime.now(UTC)


def utc(value: datetime) -> datetime:
    """Stored timestamps are UTC without a zone (both databases): give them theirs."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def case_status(case: Any, *, live_offer: bool, left_unassigned: bool = False) -> Status:
    """A case's status from its row and its live offer: the one place it is derived."""
    if case.status == "resolved":
        return Status.RESOLVED
    if case.status == "assigned" or case.assigned_agent_id is not None:
        return Status.ASSIGNED
    if live_offer:
        return Status.OFFERED
    if case.status == "queued":
        if not case.awaiting_dispatch and left_unassigned:
            return Status.UNASSIGNED
        return Status.WAITING_FOR_AGENT  # the queue's method or the preferred agents look
    return Status.RECEIVED  # opened, still being classified and routed


def parse_case_status(value: str) -> Status:
    try:
        status = Status(value.strip().lower())
    except ValueError:
        status = None
    if status is None or status not in CASE_STATUSES:
        raise Invalid(f"unknown case status {value!r}; valid: {', '.join(s.value for s in CASE_STATUSES)}")
    return status


def summary(c: Any, status: Status) -> CaseSummary:
    return CaseSummary(
        number=c.number or ids.case_number(c.id or 0),
        status=status,
        queue_id=c.queue_id,
        assigned_agent_id=c.assigned_agent_id,
        priority=c.priority,
        subject=c.subject,
        contact_id=c.contact_id,
        created_at=c.created_at,
        queued_at=c.queued_at,
        no_eligible_agent=c.no_eligible_agent_at is not None and c.assigned_agent_id is None,
    )


def offer_view(o: Any, case: Any | None, now: datetime, timeouts: OfferTimeouts) -> OfferView:
    deadline = None
    left = None
    if o.status == "live" and case is not None:
        timeout = timeouts(case.workstream_id)
        if timeout is not None:
            deadline = utc(o.created_at) + timedelta(seconds=timeout)
            left = max(0.0, (deadline - now).total_seconds())
    return OfferView(
        offer_id=o.id or 0,
        case=o.case_number,
        agent_id=o.agent_id,
        kind=o.kind,
        status=o.status,
        queue_id=o.queue_id or (case.queue_id if case else None),
        subject=case.subject if case else "",
        contact_id=case.contact_id if case else None,
        priority=case.priority if case else "",
        offered_at=utc(o.created_at),
        deadline=deadline,
        seconds_left=left,
        reason=o.reason,
    )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def due_summary(case: Any) -> dict[str, Any]:
    """A case's SLA as `case show` and the API's case detail display it."""
    state = case.sla or {}
    targets = state.get("targets", {})
    return {
        "policy": case.sla_policy_id,
        "due_at": _iso(_utc_or_none(case.sla_due_at)),
        "first_response_due": _iso(_utc_or_none(case.sla_first_response_due)),
        "first_response_met_at": (targets.get("first_response") or {}).get("met_at"),
        "resolution_due": _iso(_utc_or_none(case.sla_resolution_due)),
        "paused": state.get("paused_at") is not None,
        "waiting_on_customer_since": _iso(_utc_or_none(case.waiting_since)),
        "breaches": list(case.sla_breaches or []),
    }


def _utc_or_none(value: datetime | None) -> datetime | None:
    return utc(value) if value is not None else None


def sla_detail(case: Any) -> dict[str, Any] | None:
    if case.sla_policy_id is None and case.waiting_since is None and not case.sla_breaches:
        return None
    return due_summary(case)


# --- cases -----------------------------------------------------------------------------------


def statuses(r: Reader, cases: Sequence[Any]) -> dict[int, Status]:
    """Each case's status: its row, whether an offer of it is live, and whether routing left
    it unassigned this round."""
    ids_ = [c.id for c in cases if c.id is not None]
    if not ids_:
        return {}
    live = {
        v for (v,) in r.values(f"SELECT case_id FROM offer WHERE status = 'live' AND case_id IN ({_marks(ids_)})", ids_)
    }
    queued = [c.id for c in cases if c.status == "queued" and not c.awaiting_dispatch and c.id not in live]
    unassigned: set[tuple[int, int]] = set()
    if queued:
        found = r.values(
            f"SELECT case_id, round FROM routing_trace WHERE outcome = 'unassigned' AND case_id IN ({_marks(queued)})",
            queued,
        )
        unassigned = {(cid, rnd) for cid, rnd in found}
    return {
        c.id: case_status(c, live_offer=c.id in live, left_unassigned=(c.id, c.round) in unassigned)
        for c in cases
        if c.id is not None
    }


def find_case(r: Reader, number: str) -> Any:
    wanted = number.strip().upper()
    if wanted.isdigit():
        wanted = ids.case_number(int(wanted))
    found = r.rows("case", 'SELECT * FROM "case" WHERE number = ?', [wanted])
    if not found:
        raise NotFound(f"no case {number}; `routedesk case list` shows them")
    return found[0]


def _known(r: Reader, table: str, what: str, value: str) -> None:
    if not r.values(f'SELECT 1 FROM "{table}" WHERE id = ?', [value]):
        known = [v for (v,) in r.values(f'SELECT id FROM "{table}" ORDER BY id')]
        raise Invalid(f"unknown {what} {value!r}; valid: {', '.join(known) or 'none loaded'}")


# The row status a case status filter reads (the others are derived: filtered in pages).
_ROW_STATUS = {Status.RESOLVED: "resolved", Status.ASSIGNED: "assigned", Status.RECEIVED: "new"}


def list_cases(r: Reader, flt: CaseFilter) -> list[CaseSummary]:
    """Cases, newest first; unknown filter values are an error naming the valid ones."""
    status = parse_case_status(flt.status) if flt.status else None
    if flt.queue is not None:
        _known(r, "queue", "queue", flt.queue)
    if flt.agent is not None:
        _known(r, "agent", "agent", flt.agent)
    where: list[str] = []
    params: list[Any] = []
    if flt.queue:
        where.append("queue_id = ?")
        params.append(flt.queue)
    if flt.agent:
        where.append("assigned_agent_id = ?")
        params.append(flt.agent)
    if status is not None:
        where.append("status = ?")
        params.append(_ROW_STATUS.get(status, "queued"))
    sql = (
        'SELECT * FROM "case"'
        + (f" WHERE {' AND '.join(where)}" if where else "")
        + " ORDER BY id DESC LIMIT ? OFFSET ?"
    )
    out: list[CaseSummary] = []
    offset = 0
    # Derived statuses (offered, waiting, unassigned) share a row status: filter in pages.
    while len(out) < flt.limit:
        page = r.rows("case", sql, [*params, flt.limit, offset])
        if not page:
            break
        offset += len(page)
        st = statuses(r, page)
        out += [summary(c, st[c.id]) for c in page if status is None or st[c.id] == status]
    return out[: flt.limit]


def case_emails(r: Reader, case: Any) -> list[EmailText]:
    """The case's first message and every customer reply, oldest first, with their text."""
    found = r.rows(
        "email",
        "SELECT id, received_at, from_address, from_name, subject, status, body_text FROM email "
        "WHERE case_id = ? OR id = ? ORDER BY received_at, id",
        [case.id, case.source_email_id],
    )
    return [
        EmailText(
            email_id=e.id,
            kind="first" if e.id == case.source_email_id else "reply",
            received_at=e.received_at,
            from_address=e.from_address,
            from_name=e.from_name,
            subject=e.subject,
            status=e.status,
            text=e.body_text or "",
        )
        for e in found
    ]


def case_replies(r: Reader, case: Any) -> list[CaseReplyView]:
    """The case's replies, oldest first, with their delivery (the notification row)."""
    replies = r.rows("case_reply", "SELECT * FROM case_reply WHERE case_id = ? ORDER BY id", [case.id])
    if not replies:
        return []
    keys = [x.id for x in replies]
    sent = {
        n.reply_id: n
        for n in r.rows("notification", f"SELECT * FROM notification WHERE reply_id IN ({_marks(keys)})", keys)
    }
    return [
        CaseReplyView(
            reply_id=x.id,
            agent_id=x.agent_id,
            by_supervisor=x.by_supervisor,
            written_by=x.written_by,
            to=x.to_address,
            message_id=n.message_id,
            status=REPLY_STATUS_SHOWN.get(n.status, n.status),
            # While retried, the last error; once final, the relay's answer.
            reason=n.last_error if n.status == "pending" else n.reason,
            attempts=n.attempts,
            created_at=utc(x.created_at),
            sent_at=utc(n.sent_at) if n.sent_at else None,
            body=x.body,
        )
        for x in replies
        if (n := sent.get(x.id)) is not None
    ]


def case_trace(r: Reader, case_id: int) -> list[TraceView]:
    found = r.rows(
        "routing_trace",
        "SELECT * FROM routing_trace WHERE case_id = ? OR email_id IN (SELECT id FROM email WHERE case_id = ?) "
        "ORDER BY at, id",
        [case_id, case_id],
    )
    return [
        TraceView(at=t.at, stage=t.stage, subject=t.subject, outcome=t.outcome, reason=t.reason, round=t.round)
        for t in found
    ]


def show_case(r: Reader, number: str, now: datetime, timeouts: OfferTimeouts) -> CaseDetail:
    case = find_case(r, number)
    st = statuses(r, [case])[case.id]
    offers = r.rows("offer", "SELECT * FROM offer WHERE case_id = ? ORDER BY id", [case.id])
    return CaseDetail(
        case=summary(case, st),
        origin=case.origin,
        mailbox=case.mailbox_address,
        attributes=case.attributes,
        workflow_id=case.workflow_id,
        emails=case_emails(r, case),
        offers=[offer_view(o, case, now, timeouts) for o in offers],
        trace=case_trace(r, case.id),
        replies=case_replies(r, case),
        sla=sla_detail(case),
    )


# --- agents and queues -----------------------------------------------------------------------


def _cases_by_id(r: Reader, case_ids: Sequence[int]) -> dict[int, Any]:
    keys = sorted(set(case_ids))
    if not keys:
        return {}
    return {c.id: c for c in r.rows("case", f'SELECT * FROM "case" WHERE id IN ({_marks(keys)})', keys)}


def agent_offers(
    r: Reader, agent_id: str, now: datetime, timeouts: OfferTimeouts, *, include_closed: bool = False
) -> list[OfferView]:
    """The agent's live offer (at most one), or their latest 100 offers."""
    if not r.values("SELECT 1 FROM agent WHERE id = ?", [agent_id]):
        raise NotFound(f"no agent {agent_id!r}; `routedesk agent list` shows them")
    live_only = "" if include_closed else " AND status = 'live'"
    offers = r.rows(
        "offer", f"SELECT * FROM offer WHERE agent_id = ?{live_only} ORDER BY id DESC LIMIT 100", [agent_id]
    )
    cases = _cases_by_id(r, [o.case_id for o in offers])
    return [offer_view(o, cases[o.case_id], now, timeouts) for o in offers if o.case_id in cases]


def find_offer(r: Reader, offer_id: int, now: datetime, timeouts: OfferTimeouts) -> OfferView:
    """One offer by its id (the links in offer notifications name it)."""
    found = r.rows("offer", "SELECT * FROM offer WHERE id = ?", [offer_id])
    if not found:
        raise NotFound(f"no offer {offer_id}; `routedesk agent offers AGENT --all` lists an agent's offers")
    cases = _cases_by_id(r, [found[0].case_id])
    return offer_view(found[0], cases.get(found[0].case_id), now, timeouts)


def list_agents(r: Reader, now: datetime, timeouts: OfferTimeouts) -> list[AgentView]:
    agents = r.rows("agent", "SELECT id, name, presence, active_count, capacity FROM agent ORDER BY id")
    queues: dict[str, list[str]] = {}
    for queue_id, agent_id in r.values("SELECT queue_id, agent_id FROM queue_member ORDER BY queue_id, agent_id"):
        queues.setdefault(agent_id, []).append(queue_id)
    live_offers = r.rows("offer", "SELECT * FROM offer WHERE status = 'live'")
    cases = _cases_by_id(r, [o.case_id for o in live_offers])
    live = {o.agent_id: (o, cases[o.case_id]) for o in live_offers if o.case_id in cases}
    return [
        AgentView(
            id=a.id,
            name=a.name,
            presence=a.presence,
            active=a.active_count,
            capacity=a.capacity,
            live_offer=offer_view(*live[a.id], now, timeouts) if a.id in live else None,
            queues=queues.get(a.id, []),
        )
        for a in agents
    ]


def queue_views(
    r: Reader, now: datetime, queue_ids: Sequence[str] | None = None, rules: QueueRules | None = None
) -> list[tuple[QueueView, list[CaseSummary]]]:
    """Each queue (all, or those named) with its waiting items, best first (the dispatcher's
    order: priority, SLA due time, age).

    ``eligible_now``: the members the dispatcher may offer one of the queue's waiting items
    to now, by the rules of the config in force (``rules``; read from the store when not
    given): none while the queue is closed (operating hours, unless ``offer_when_closed``);
    else members with free capacity and no live offer, in a presence the item's workstream
    lets take work (``allowed_presences``), not excluded from the item's round, with the
    item's required skills (``skill_match``; ``closest`` keeps the nearest). With no item up
    for an offer, the presences of the workstreams that route to the queue decide. Not
    reflected (each needs the store's ORM-side state): ``max_declines_per_item`` counts, and
    an agent in several queues being offered a better item of another queue first.
    """
    if queue_ids is None:
        queues = r.rows("queue", "SELECT * FROM queue ORDER BY id")
    elif queue_ids:
        queues = r.rows("queue", f"SELECT * FROM queue WHERE id IN ({_marks(queue_ids)}) ORDER BY id", list(queue_ids))
    else:
        queues = []
    if not queues:
        return []
    names = [q.id for q in queues]
    waiting = r.rows(
        "case",
        "SELECT * FROM \"case\" WHERE status = 'queued' AND assigned_agent_id IS NULL "
        f"AND queue_id IN ({_marks(names)}) ORDER BY priority_rank DESC, "
        "CASE WHEN sla_due_at IS NULL THEN 1 ELSE 0 END, sla_due_at, queued_at, id",
        names,
    )
    st = statuses(r, waiting)
    rules = rules if rules is not None else stored_queue_rules(r)
    agents = {a.id: a for a in r.rows("agent", "SELECT id, presence, active_count, capacity, skills FROM agent")}
    members: dict[str, list[Any]] = {}
    for queue_id, agent_id in r.values("SELECT queue_id, agent_id FROM queue_member"):
        if agent_id in agents:
            members.setdefault(queue_id, []).append(agents[agent_id])
    offering = {v for (v,) in r.values("SELECT agent_id FROM offer WHERE status = 'live'")}
    out = []
    for qr in queues:
        items = [c for c in waiting if c.queue_id == qr.id]
        by_priority: dict[str, int] = {}
        for c in items:
            by_priority[c.priority] = by_priority.get(c.priority, 0) + 1
        since = min((utc(c.queued_at) for c in items if c.queued_at), default=None)
        crew = sorted(members.get(qr.id, []), key=lambda a: a.id)
        closed = rules.closed_until(qr.id, now)
        view = QueueView(
            id=qr.id,
            name=qr.name,
            assignment_method=qr.assignment_method,
            waiting=len(items),
            offered=sum(1 for c in items if st.get(c.id) == Status.OFFERED),
            by_priority=by_priority,
            oldest_waiting_since=since,
            oldest_wait_seconds=(now - since).total_seconds() if since else None,
            eligible_now=[] if closed else _eligible_now(qr.id, crew, items, st, offering, rules),
            members=[a.id for a in crew],
            closed_until=closed,
        )
        out.append((view, [summary(c, st[c.id]) for c in items]))
    return out


def _eligible_now(
    queue_id: str,
    crew: Sequence[Any],
    items: Sequence[Any],
    st: dict[int, Status],
    offering: set[str],
    rules: QueueRules,
) -> list[str]:
    free = [a for a in crew if a.active_count < a.capacity and a.id not in offering]
    # The items the dispatcher would offer now: waiting for their assignment method, no live offer.
    pending = [c for c in items if c.awaiting_dispatch and st.get(c.id) != Status.OFFERED]
    if not pending:
        allowed = rules.presences_for_queue(queue_id, [])
        return [a.id for a in free if a.presence in allowed]
    found: set[str] = set()
    for c in pending:
        ws = rules.workstreams.get(c.workstream_id)
        allowed = ws.allowed_presences if ws is not None else rules.presences_for_queue(queue_id, [])
        match = ws.skill_match if ws is not None else "exact"
        required = eligibility.required_skills(c.attributes or {})
        fits: dict[str, int] = {}
        for a in free:
            if a.presence not in allowed or a.id in (c.excluded_agents or []):
                continue
            has = eligibility.agent_levels(rules.agent_levels.get(a.id, {}), a.skills or [])
            if eligibility.lacks(required, has, match) is None:
                fits[a.id] = eligibility.skill_distance(required, has) or 0
        if match == "closest" and required and fits:
            nearest = min(fits.values())
            fits = {k: d for k, d in fits.items() if d == nearest}
        found |= set(fits)
    return [a.id for a in free if a.id in found]


def show_queue(r: Reader, queue_id: str, now: datetime, rules: QueueRules | None = None) -> QueueDetail:
    found = queue_views(r, now, [queue_id], rules)
    if not found:
        known = [v for (v,) in r.values("SELECT id FROM queue ORDER BY id")]
        raise NotFound(f"no queue {queue_id!r}; valid: {', '.join(known) or 'none loaded'}")
    view, items = found[0]
    return QueueDetail(queue=view, items=items)


def _stored_config(r: Reader) -> dict[str, Any]:
    """The config version in force, as stored. A store loaded before versions were recorded
    has its workstreams' table only (its tables are the definitions): no calendars, no skill
    levels."""
    found = r.rows("config_version", "SELECT config FROM config_version ORDER BY number DESC LIMIT 1")
    if found:
        return dict(found[0].config)
    return {"workstreams": [w.config for w in r.rows("workstream", "SELECT config FROM workstream")]}


def stored_offer_timeouts(r: Reader) -> OfferTimeouts:
    """Offer timeouts of the config version in force, read from the store (a process without
    the store's cached definitions: the CLI)."""
    streams = _stored_config(r).get("workstreams", [])
    known = {w["id"]: float(w["offer_timeout_seconds"]) for w in streams if "offer_timeout_seconds" in w}
    return known.get


def stored_queue_rules(r: Reader) -> QueueRules:
    """The eligibility rules of the config version in force, read from the store (a process
    without the store's cached definitions: the CLI)."""
    return QueueRules.from_config(_stored_config(r))


# --- what an agent was told ------------------------------------------------------------------


class NoticeView(BaseModel):
    case: str
    kind: str  # reassigned_idle | reassigned_sla
    message: str
    at: datetime


def agent_notices(r: Reader, agent_id: str, limit: int = 5) -> list[NoticeView]:
    """The agent's latest notices (a case taken from them: reassign_if_idle, an SLA action),
    newest first."""
    rows = r.rows(
        "agent_notice",
        "SELECT case_number, kind, message, created_at FROM agent_notice WHERE agent_id = ? ORDER BY id DESC LIMIT ?",
        [agent_id, limit],
    )
    return [NoticeView(case=n.case_number, kind=n.kind, message=n.message, at=utc(n.created_at)) for n in rows]
