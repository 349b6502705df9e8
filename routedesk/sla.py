"""SLA policies and idle reassignment: the store side of the routing workflow's durable timers.

A case matches the first ``sla_policies`` entry whose ``when`` holds (the classification
condition language, over the classified case) when it is routed; each round (a reopened case
is routed again) starts its targets afresh from the routing time. The targets are kept on
the case row: ``first_response`` (met when an agent accepts the case or is assigned it) and
``resolution``, each with a warning time (``warning_at`` of the target) and a due time, all in
business time on the policy's calendar (24x7 without one).

The routing workflow owns the timers (``EmailRoutingWorkflow._sla_loop``): it asks
:meth:`SlaTransactions.next` when to wake up, sleeps on a durable timer (or until told that
something changed), then calls :meth:`SlaTransactions.fire`, which records the warnings and
violations due, runs the actions that are store changes (``raise_priority``, ``notify``) and
hands back those the workflow runs (``transfer_to_queue``, ``reassign``).

While the case waits on the customer (``waiting_since`` set by an agent) the timers are
paused: on resume, by the agent or by a customer reply, every open time moves on by the
business time that was left when the pause began.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlmodel import Session, col, select

from routedesk import pushes, rules
from routedesk.calendars import Calendar, add_business_time, business_time_between, parse_duration
from routedesk.config import Priority, SlaAction, SlaPolicy
from routedesk.contracts import (
    CaseTimers,
    IdleCheck,
    IdleCheckInput,
    SlaFired,
    SlaNext,
    SlaStepInput,
    SlaWorkflowAction,
)
from routedesk.models import AgentNoticeRow, CaseRow, ConfigVersionRow, OfferRow, QueueMemberRow, utcnow
from routedesk.store import Store, TraceEntry, add_trace

log = logging.getLogger(__name__)


# The store transactions below need the assignment transactions, the wake claims and
# Temporal's ApplicationError; imported where used, so a process that only reads SLA state
# starts without the Temporal SDK.
def _missing_case(case_id: int) -> Exception:
    from temporalio.exceptions import ApplicationError

    return ApplicationError(f"case {case_id} is not in the case store", type="CaseMissing", non_retryable=True)


def queues_to_wake(s: Session, queue_ids: list[str]) -> list[str]:
    from routedesk.assignment.wake import queues_to_wake as claim

    return claim(s, queue_ids)


def lock_agents(s: Session, agent_ids: list[str | None]) -> dict[str, Any]:
    from routedesk.assignment.transactions import lock_agents as lock

    return lock(s, agent_ids)


STAGE = "sla"
TARGETS = ("first_response", "resolution")
EVENTS = ("warning", "violation")


def notify(
    s: Session, store: Store, case: CaseRow, *, policy: str, target: str, event: str, channel: str, detail: str
) -> None:
    """``notify: supervisors``: a supervisor alert (``sla_<target>_<event>``, once per case and
    round), written in the firing transaction and sent to the supervisors' channels after
    its commit, as the decline rules' alerts are (``GET /api/v1/alerts``, the console)."""
    from routedesk.assignment.transactions import raise_alert  # it imports this module's callers

    log.info("SLA %s %s of %s (policy %s) to %s: %s", target, event, case.number, policy, channel, detail)
    raise_alert(s, store, case, f"sla_{target}_{event}", f"SLA policy {policy}: {detail}")


# --- the policies of the config in force ---------------------------------------------------


@dataclass(frozen=True)
class SlaDefinitions:
    version: int
    policies: list[SlaPolicy]
    calendars: dict[str, Calendar]


_cache: dict[str, SlaDefinitions] = {}
_cache_lock = threading.Lock()


def definitions(s: Session) -> SlaDefinitions:
    """``sla_policies`` and ``calendars`` of the config version in force, cached by its
    content hash (version numbers are per store; a process may open several)."""
    latest = s.exec(
        select(ConfigVersionRow.number, ConfigVersionRow.content_hash)
        .order_by(col(ConfigVersionRow.number).desc())
        .limit(1)
    ).first()
    if latest is None:
        return SlaDefinitions(0, [], {})
    number, content_hash = latest
    with _cache_lock:
        found = _cache.get(content_hash)
    if found is not None:
        return found
    row = s.get(ConfigVersionRow, number)
    cfg: dict[str, Any] = row.config if row is not None else {}
    defs = SlaDefinitions(
        number,
        [SlaPolicy.model_validate(p) for p in cfg.get("sla_policies") or []],
        {c["id"]: Calendar.model_validate(c) for c in cfg.get("calendars") or []},
    )
    with _cache_lock:
        _cache[content_hash] = defs
    return defs


def _iso(t: datetime | None) -> str | None:
    return t.astimezone(UTC).isoformat() if t is not None else None


def _at(v: Any) -> datetime | None:
    if v is None:
        return None
    if isinstance(v, datetime):
        return v if v.tzinfo else v.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(v))


def _utc(t: datetime | None) -> datetime | None:
    """Rows read back from SQLite lose their zone: every stored time is UTC."""
    return None if t is None else (t if t.tzinfo else t.replace(tzinfo=UTC))


# --- matching, when the case is routed --------------------------------------------------------


def on_route(s: Session, store: Store, case: CaseRow, ctx: rules.RuleContext) -> CaseTimers | None:
    """Inside the routing transaction: the timers the workflow must run for this round.

    The policy is matched (first match wins) and its targets set once per round; a retry of
    the routing transaction finds them set and reports the same.
    """
    assert case.id is not None
    ws = store.workstream(case.workstream_id)
    idle = parse_duration(ws.reassign_if_idle).total_seconds() if ws.reassign_if_idle else None
    state = case.sla or {}
    if state.get("round") != case.round:
        _start(s, case, ctx)
    policy = case.sla_policy_id if (case.sla or {}).get("round") == case.round else None
    if policy is None and idle is None:
        return None
    return CaseTimers(sla_policy=policy, reassign_if_idle_seconds=idle)


def _start(s: Session, case: CaseRow, ctx: rules.RuleContext) -> None:
    defs = definitions(s)
    now = utcnow()
    case.waiting_since = None  # routed (again): nobody waits on the customer
    policy = next((p for p in defs.policies if rules.evaluate(p.when, ctx)), None)
    if policy is None:
        case.sla_policy_id, case.sla, case.sla_due_at = None, {"round": case.round}, None
        case.sla_first_response_due = case.sla_resolution_due = None
        s.add(case)
        return
    cal = defs.calendars.get(policy.calendar) if policy.calendar else None
    targets: dict[str, Any] = {}
    for name in TARGETS:
        text = getattr(policy, name)
        if text is None:
            continue
        span = parse_duration(text)
        targets[name] = {
            "warn": _iso(add_business_time(cal, now, span * policy.warning_at)),
            "due": _iso(add_business_time(cal, now, span)),
            "met_at": None,
            "fired": [],
        }
    case.sla_policy_id = policy.id
    case.sla = {"round": case.round, "calendar": policy.calendar, "started_at": _iso(now), "targets": targets}
    _sync_columns(case)
    s.add(case)
    due = ", ".join(f"{k} due {v['due']}" for k, v in targets.items())
    add_trace(
        s,
        email_id=case.source_email_id,
        case_id=case.id,
        round_=case.round,
        step=f"r{case.round}:sla-policy",
        entries=[
            TraceEntry(
                STAGE,
                policy.id,
                "applied",
                f"first matching SLA policy; {due}" + (f" (calendar {policy.calendar})" if policy.calendar else ""),
            )
        ],
    )


def _sync_columns(case: CaseRow) -> None:
    """The due-time columns from the JSON state (sorting, ordering across queues, display)."""
    targets = (case.sla or {}).get("targets", {})
    fr, res = targets.get("first_response"), targets.get("resolution")
    case.sla_first_response_due = _at(fr["due"]) if fr else None
    case.sla_resolution_due = _at(res["due"]) if res else None
    open_dues = [_at(t["due"]) for t in targets.values() if t.get("met_at") is None]
    case.sla_due_at = min((d for d in open_dues if d is not None), default=None)


def meet_first_response(case: CaseRow, now: datetime) -> bool:
    """Inside the transaction that records a reply to the customer (the assigned agent's or a
    supervisor's): that is a first response, so an open ``first_response`` target is met now.
    True when it was open. The case's timer loop finds it met at its next look."""
    state = dict(case.sla or {})
    targets = {k: dict(v) for k, v in state.get("targets", {}).items()}
    fr = targets.get("first_response")
    if fr is None or fr.get("met_at") is not None:
        return False
    fr["met_at"] = _iso(now)
    state["targets"] = targets
    case.sla = state
    _sync_columns(case)
    return True


def on_resolved(case: CaseRow, now: datetime) -> None:
    """Inside the resolving transaction: every open target is met now (no due time left)."""
    state = case.sla or {}
    if not state.get("targets"):
        return
    targets = {k: {**v, "met_at": v.get("met_at") or _iso(now)} for k, v in state["targets"].items()}
    case.sla = {**state, "targets": targets}
    _sync_columns(case)


# --- the workflow's timer loop -------------------------------------------------------------


class SlaTransactions:
    def __init__(self, store: Store) -> None:
        self.store = store

    def _case(self, s: Session, case_id: int) -> CaseRow:
        case = s.get(CaseRow, case_id, with_for_update=True, populate_existing=True)
        if case is None:
            raise _missing_case(case_id)
        return case

    def _policy(self, s: Session, case: CaseRow) -> tuple[SlaPolicy | None, Calendar | None]:
        defs = definitions(s)
        policy = next((p for p in defs.policies if p.id == case.sla_policy_id), None)
        state = case.sla or {}
        cal = defs.calendars.get(state["calendar"]) if state.get("calendar") else None
        return policy, cal

    def _refresh(self, s: Session, case: CaseRow, cal: Calendar | None, now: datetime, resume: bool) -> list[str]:
        """Bring the state up to date: first response met, pause begun or ended. Returns
        what happened, for the trace."""
        state = dict(case.sla or {})
        targets = {k: dict(v) for k, v in state.get("targets", {}).items()}
        notes: list[str] = []
        fr = targets.get("first_response")
        if fr is not None and fr.get("met_at") is None and case.assigned_agent_id is not None:
            fr["met_at"] = _iso(_utc(case.assigned_at) or now)
            notes.append(f"first response met: assigned to {case.assigned_agent_id}")
        if resume and case.waiting_since is not None:
            case.waiting_since = None
            notes.append("the customer replied: no longer waiting on the customer")
        waiting = _utc(case.waiting_since)
        paused = _at(state.get("paused_at"))
        if waiting is not None and paused is None:
            state["paused_at"] = _iso(waiting)
            notes.append("timers paused: waiting on the customer")
        elif waiting is None and paused is not None:
            # Each open time moves on by the business time that was left at the pause.
            for t in targets.values():
                if t.get("met_at") is not None:
                    continue
                for key in ("warn", "due"):
                    at = _at(t[key])
                    assert at is not None
                    t[key] = _iso(add_business_time(cal, now, business_time_between(cal, paused, at)))
            state["paused_at"] = None
            notes.append(f"timers resumed after {int((now - paused).total_seconds())}s waiting on the customer")
        state["targets"] = targets
        case.sla = state
        _sync_columns(case)
        s.add(case)
        return notes

    def _trace(self, s: Session, case: CaseRow, step: str, entries: list[TraceEntry]) -> None:
        if entries:
            assert case.id is not None
            add_trace(s, email_id=case.source_email_id, case_id=case.id, round_=case.round, step=step, entries=entries)

    def next(self, inp: SlaStepInput) -> SlaNext:
        with self.store.db.write() as s:
            case = self._case(s, inp.case_id)
            state = case.sla or {}
            if case.status == "resolved" or case.sla_policy_id is None or not state.get("targets"):
                return SlaNext(active=False)
            _, cal = self._policy(s, case)
            notes = self._refresh(s, case, cal, utcnow(), inp.resume)
            self._trace(s, case, inp.step, [TraceEntry(STAGE, case.sla_policy_id, "timers", n) for n in notes])
            return self._next_of(case)

    @staticmethod
    def _next_of(case: CaseRow) -> SlaNext:
        state = case.sla or {}
        due_at = _utc(case.sla_due_at)
        if state.get("paused_at") is not None:
            return SlaNext(fire_at=None, due_at=due_at)
        times = [
            _at(t["warn" if event == "warning" else "due"])
            for t in state.get("targets", {}).values()
            if t.get("met_at") is None
            for event in EVENTS
            if event not in t.get("fired", [])
        ]
        return SlaNext(fire_at=min((x for x in times if x is not None), default=None), due_at=due_at)

    def fire(self, inp: SlaStepInput) -> tuple[SlaFired, list[str]]:
        """Record the warnings and violations due now and run their actions, in order."""
        with self.store.db.write() as s:
            case = self._case(s, inp.case_id)
            state = case.sla or {}
            done = (state.get("fired_steps") or {}).get(inp.step)
            if done is not None:  # a retry: what the first attempt handed to the workflow
                return SlaFired.model_validate(done), []
            if case.status == "resolved" or case.sla_policy_id is None:
                return SlaFired(), []
            policy, cal = self._policy(s, case)
            now = utcnow()
            self._refresh(s, case, cal, now, False)
            state = dict(case.sla or {})
            if state.get("paused_at") is not None:
                return SlaFired(), []
            targets = {k: dict(v) for k, v in state["targets"].items()}
            entries: list[TraceEntry] = []
            actions: list[SlaWorkflowAction] = []
            wake: list[str] = []
            breaches = list(case.sla_breaches or [])
            for name, t in targets.items():
                if t.get("met_at") is not None:
                    continue
                for event in EVENTS:
                    at = _at(t["warn" if event == "warning" else "due"])
                    if event in t["fired"] or at is None or at > now:
                        continue
                    t["fired"] = [*t["fired"], event]
                    breaches.append(
                        {"round": case.round, "target": name, "kind": event, "at": _iso(now), "due": t["due"]}
                    )
                    what = "warning" if event == "warning" else "violated"
                    entries.append(
                        TraceEntry(
                            STAGE,
                            case.sla_policy_id,
                            f"{name}_{what}",
                            f"{name} {'due at ' + t['due'] if event == 'warning' else 'was due at ' + t['due']}",
                        )
                    )
                    steps = (policy.on_warning if event == "warning" else policy.on_violation) if policy else []
                    for action in steps:
                        entries.append(self._act(s, case, action, name, event, actions, wake, now))
            state["targets"] = targets
            case.sla = state
            case.sla_breaches = breaches
            _sync_columns(case)
            fired = SlaFired(actions=actions)
            state = dict(case.sla)
            state["fired_steps"] = {**(state.get("fired_steps") or {}), inp.step: fired.model_dump(mode="json")}
            case.sla = state
            s.add(case)
            self._trace(s, case, inp.step, entries)
            return fired, queues_to_wake(s, wake)

    def _act(
        self,
        s: Session,
        case: CaseRow,
        action: SlaAction,
        target: str,
        event: str,
        actions: list[SlaWorkflowAction],
        wake: list[str],
        now: datetime,
    ) -> TraceEntry:
        policy = case.sla_policy_id or "-"
        why = f"on {target} {event}"
        if action.raise_priority is not None:
            new = Priority(action.raise_priority)
            if new.rank <= case.priority_rank:
                return TraceEntry(STAGE, policy, "raise_priority", f"{why}: already {case.priority}")
            old, case.priority, case.priority_rank = case.priority, new.value, new.rank
            case.attributes = {**case.attributes, "priority": new.value}
            return TraceEntry(STAGE, policy, "raise_priority", f"{why}: priority {old} -> {new.value}")
        if action.notify is not None:
            detail = f"{target} {event}; due {(case.sla or {}).get('targets', {}).get(target, {}).get('due')}"
            notify(s, self.store, case, policy=policy, target=target, event=event, channel=action.notify, detail=detail)
            return TraceEntry(STAGE, policy, "notified", f"{why}: {action.notify} told ({detail})")
        if action.transfer_to_queue is not None:
            reason = f"SLA policy {policy}: {target} {event}"
            if case.assigned_agent_id is not None:
                # A transfer moves a waiting case: take it from its agent first (the old
                # queue's dispatcher is not woken for it; the new one's is, by the transfer).
                agent = requeue(s, case, reason, now, [])
                notice(
                    s,
                    self.store,
                    case,
                    agent,
                    "reassigned_sla",
                    f"{case.number} moved to {action.transfer_to_queue}: {reason}",
                    f"{case.number}:{reason}:transfer",
                )
                actions.append(SlaWorkflowAction(kind="reassign", agent_id=agent, reason=reason))
            actions.append(
                SlaWorkflowAction(kind="transfer_to_queue", queue_id=action.transfer_to_queue, reason=reason)
            )
            return TraceEntry(STAGE, policy, "transfer_to_queue", f"{why}: to queue {action.transfer_to_queue}")
        # reassign: withdraw from whoever holds it and offer it again
        reason = f"SLA policy {policy}: {target} {event}"
        if case.assigned_agent_id is not None:
            agent = requeue(s, case, reason, now, wake)
            notice(
                s,
                self.store,
                case,
                agent,
                "reassigned_sla",
                f"{case.number} was reassigned: {reason}",
                f"{case.number}:{reason}",
            )
            actions.append(SlaWorkflowAction(kind="reassign", agent_id=agent, reason=reason))
            return TraceEntry(STAGE, policy, "reassigned", f"{why}: taken from {agent}, offered again")
        live = s.exec(
            select(OfferRow).where(OfferRow.case_id == case.id, OfferRow.status == "live").with_for_update()
        ).first()
        if live is not None:
            lock_agents(s, [live.agent_id])
            live.status, live.reason, live.closed_at = "withdrawn", reason, now
            s.add(live)
            case.excluded_agents = [*case.excluded_agents, live.agent_id]
            case.waiting_noted = None
            case.awaiting_dispatch = True
            wake += [case.queue_id or "", *_queues_of(s, live.agent_id)]
            actions.append(
                SlaWorkflowAction(kind="withdraw_offer", agent_id=live.agent_id, offer_id=live.id, reason=reason)
            )
            return TraceEntry(STAGE, policy, "reassigned", f"{why}: offer to {live.agent_id} withdrawn, offered again")
        return TraceEntry(STAGE, policy, "reassign", f"{why}: nobody holds the case; it waits in its queue")


def _queues_of(s: Session, agent_id: str) -> list[str]:
    return list(s.exec(select(QueueMemberRow.queue_id).where(QueueMemberRow.agent_id == agent_id)).all())


def requeue(s: Session, case: CaseRow, reason: str, now: datetime, wake: list[str]) -> str:
    """Take the case (locked) from its agent and put it back in its queue for the assignment
    method, the agent excluded from the next offer; the agent's capacity is released.
    Returns the agent. ``wake`` gets the queues whose dispatcher must look again."""
    agent_id = case.assigned_agent_id
    assert agent_id is not None
    agent = lock_agents(s, [agent_id]).get(agent_id)
    if agent is not None:
        agent.active_count = max(0, agent.active_count - 1)
        agent.last_released_at = now
        s.add(agent)
    case.assigned_agent_id = None
    case.assigned_at = None
    case.status = "queued"
    case.awaiting_dispatch = True
    case.excluded_agents = [*case.excluded_agents, agent_id]
    case.waiting_noted = None
    s.add(case)
    wake += [case.queue_id or "", *_queues_of(s, agent_id)]
    return agent_id


def notice(s: Session, store: Store, case: CaseRow, agent_id: str, kind: str, message: str, key: str) -> None:
    """Tell the agent a case was taken from them: an ``agent_notice`` row, and a
    ``case_reassigned`` message on the agent's notification channels (webhook, Slack, email),
    recorded in this transaction under the same key and sent after its commit, as the
    missed-offers presence switch is. A retry with the same key records nothing new."""
    assert case.id is not None and case.number is not None
    if s.exec(select(AgentNoticeRow.id).where(AgentNoticeRow.idempotency_key == key)).first() is not None:
        return
    s.add(
        AgentNoticeRow(
            agent_id=agent_id,
            case_id=case.id,
            case_number=case.number,
            kind=kind,
            message=message,
            idempotency_key=key,
        )
    )
    channels = pushes.agent_channels(s, store, agent_id)
    url = f"{pushes.console_url(s)}/cases/{case.number}"
    push_key = f"notice:{key}"
    pushes.record(
        s,
        key=push_key,
        kind="notice",
        recipient=agent_id,
        webhook=channels.webhook,
        slack_webhook=channels.slack_webhook,
        emails=[channels.email] if channels.email else [],
        generic={
            "event": "case_reassigned",
            "kind": kind,
            "agent_id": agent_id,
            "case_number": case.number,
            "subject": case.subject,
            "reason": message,
            "console_url": url,
        },
        slack=pushes.slack_payload(message, {"Queue": case.queue_id or "-"}, {"Open the case": url}),
        mail={
            **pushes.email_payload(f"[{case.number}] was taken from you", [message, "", url]),
            "from": case.mailbox_address,
        },
    )
    pushes.note(push_key)


# --- reassign_if_idle ---------------------------------------------------------------------


def idle_check(store: Store, inp: IdleCheckInput) -> tuple[IdleCheck, list[str]]:
    """The agent's case goes back to the queue if they did nothing on it for
    ``idle_seconds``; else how long until it could."""
    with store.db.write() as s:
        case = s.get(CaseRow, inp.case_id, with_for_update=True, populate_existing=True)
        if case is None:
            raise _missing_case(inp.case_id)
        key = f"{case.number}:{inp.step}"
        if s.exec(select(AgentNoticeRow.id).where(AgentNoticeRow.idempotency_key == key)).first() is not None:
            return IdleCheck(reassigned=True), []  # a retry
        if case.status == "resolved" or case.assigned_agent_id != inp.agent_id:
            return IdleCheck(), []
        now = utcnow()
        if case.waiting_since is not None:
            # Waiting on the customer is the agent's decision, not idleness.
            return IdleCheck(wait_seconds=inp.idle_seconds), []
        last = max(
            t for t in (_utc(case.assigned_at), _utc(case.last_agent_activity_at), now - timedelta(days=3650)) if t
        )
        left = (last + timedelta(seconds=inp.idle_seconds) - now).total_seconds()
        if left > 0:
            return IdleCheck(wait_seconds=left), []
        wake: list[str] = []
        idle_for = int((now - last).total_seconds())
        reason = f"{inp.agent_id} did nothing on it for {idle_for}s (reassign_if_idle {inp.idle_seconds:g}s)"
        requeue(s, case, reason, now, wake)
        notice(s, store, case, inp.agent_id, "reassigned_idle", f"{case.number} went back to the queue: {reason}", key)
        assert case.id is not None
        add_trace(
            s,
            email_id=case.source_email_id,
            case_id=case.id,
            round_=case.round,
            step=inp.step,
            entries=[
                TraceEntry("assignment", inp.agent_id, "reassigned_idle", f"back to queue {case.queue_id}: {reason}"),
                TraceEntry("assignment", inp.agent_id, "notified", f"{inp.agent_id} told the case went back"),
            ],
        )
        return IdleCheck(reassigned=True), queues_to_wake(s, wake)


def touch(case: CaseRow) -> None:
    """The assigned agent acted on the case (reassign_if_idle measures from here)."""
    case.last_agent_activity_at = utcnow()
