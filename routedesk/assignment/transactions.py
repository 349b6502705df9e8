"""Assignment transactions: offers, answers, picks, supervisor assignment, resolution, queue dispatch.

Every decision is one transaction, and the store's constraints hold the invariants however
many workflows, workers and machines run at once:
- an agent never exceeds capacity: ``active_count`` is checked and raised in the same
  transaction that assigns, with the agent's row locked;
- an agent holds at most one live offer, a case has at most one: partial unique indexes,
  and every transaction that makes an offer locks the agent's row before it looks for one;
- a case is assigned at most once: assignment requires ``assigned_agent_id IS NULL`` on the
  locked case row.
On SQLite, ``BEGIN IMMEDIATE`` runs one writer at a time and the locks below are no-ops. On
PostgreSQL writers run side by side, so the row locks matter, and they are always taken in
one order: the case, then its offer, then agents in id order, then queue members, then
wake claims. The dispatcher alone holds several cases; it locks its queue's agents first and
skips a case another transaction holds (``SKIP LOCKED``) instead of waiting for it, so no
two transactions wait for each other. Locking the agents also closes the lost wake-up: a
transaction that frees an agent and one that queues an item both lock that agent before
they look for the other's work, so the second to lock sees the first's change.
Each activity carries an idempotency key (an offer's key, or a trace step) so a retry
returns what the first attempt did instead of doing it again.

These are the transactions; ``activities/assignment.py`` runs each in a thread as a
Temporal activity and wakes the dispatchers it names after the commit.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete
from sqlmodel import Session, col, select
from temporalio.exceptions import ApplicationError

from routedesk import config_diff, pushes, time_routing
from routedesk.assignment import strategy as assignment
from routedesk.assignment.wake import claim_wakes, queues_to_wake
from routedesk.config import Workstream
from routedesk.contracts import (
    AnswerInput,
    AssignResult,
    CaseStepInput,
    DirectAssignInput,
    DispatchedOffer,
    DispatchPass,
    DispatchRequest,
    DispatchResult,
    OfferAttempt,
    OfferInfo,
    PreferredOfferRequest,
    TransferInput,
    TransferResult,
)
from routedesk.models import (
    AgentRow,
    AlertRow,
    CaseRow,
    DeclineCountRow,
    OfferRow,
    QueueMemberRow,
    QueueRow,
    QueueWakeRow,
    TraceRow,
    utcnow,
)
from routedesk.store import (
    Store,
    TraceEntry,
    add_trace,
    insert_ignoring_conflict,
    record_runtime_edit,
    touch_agent_activity,
)

STAGE = "assignment"


def _case(s: Session, case_id: int) -> CaseRow:
    case = s.get(CaseRow, case_id, with_for_update=True, populate_existing=True)
    if case is None:
        raise ApplicationError(f"case {case_id} is not in the case store", type="CaseMissing", non_retryable=True)
    return case


def _trace(s: Session, case: CaseRow, step: str, *entries: TraceEntry, new: bool = False) -> bool:
    assert case.id is not None
    return add_trace(
        s,
        email_id=case.source_email_id,
        case_id=case.id,
        round_=case.round,
        step=step,
        entries=list(entries),
        new=new,
    )


def _step_reason(s: Session, case: CaseRow, step: str) -> str | None:
    row = s.exec(select(TraceRow).where(TraceRow.email_id == case.source_email_id, TraceRow.step == step)).first()
    return row.reason if row else None


def _live_offer_of_agent(s: Session, agent_id: str) -> OfferRow | None:
    return s.exec(select(OfferRow).where(OfferRow.agent_id == agent_id, OfferRow.status == "live")).first()


def _live_offer_of_case(s: Session, case: CaseRow) -> OfferRow | None:
    """The case's live offer, locked (the caller holds the case, so none can be added)."""
    return s.exec(
        select(OfferRow)
        .where(OfferRow.case_id == case.id, OfferRow.status == "live")
        .with_for_update()
        .execution_options(populate_existing=True)
    ).first()


def lock_agents(s: Session, agent_ids: Iterable[str | None]) -> dict[str, AgentRow]:
    """The agents among ``agent_ids`` that exist, locked in id order (see the module doc)."""
    wanted = sorted({a for a in agent_ids if a})
    if not wanted:
        return {}
    rows = s.exec(
        select(AgentRow)
        .where(col(AgentRow.id).in_(wanted))
        .order_by(col(AgentRow.id))
        .with_for_update()
        .execution_options(populate_existing=True)
    ).all()
    return {a.id: a for a in rows}


def _queues_of(s: Session, agent_id: str) -> list[str]:
    return list(s.exec(select(QueueMemberRow.queue_id).where(QueueMemberRow.agent_id == agent_id)).all())


def _info(offer: OfferRow, ws: Workstream, notify: bool = False) -> OfferInfo:
    assert offer.id is not None
    return OfferInfo(
        offer_id=offer.id,
        agent_id=offer.agent_id,
        kind=offer.kind,  # type: ignore[arg-type]
        timeout_seconds=ws.offer_timeout_seconds,
        notify=notify,
    )


def _notify(s: Session, store: Store, agent_id: str) -> bool:
    """Whether the agent has a channel for offer notifications: the workflow schedules the
    notification only then, so cases without channels add no history events."""
    return pushes.agent_channels(s, store, agent_id).any


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# --- decline and no-answer rules (README: "Decline and no-answer rules") -------------------

# A starved item's new round is due this much early: the dispatcher's timer and the store's
# clock are different clocks, and a pass a moment early must not wait a whole sweep again.
RETRY_TOLERANCE = timedelta(milliseconds=200)


def decline_counts(s: Session, case: CaseRow) -> dict[str, int]:
    rows = s.exec(select(DeclineCountRow).where(DeclineCountRow.case_id == case.id)).all()
    return {r.agent_id: r.count for r in rows}


def _blocked(s: Session, case: CaseRow, ws: Workstream) -> dict[str, int]:
    """Agents who declined or let this item time out ``max_declines_per_item`` times."""
    return {a: n for a, n in decline_counts(s, case).items() if n >= ws.max_declines_per_item}


def _count_decline(s: Session, case: CaseRow, agent_id: str, now: datetime) -> int:
    """One more decline or timeout of ``case`` by ``agent_id`` (the caller holds the case)."""
    assert case.id is not None
    row = s.get(DeclineCountRow, (case.id, agent_id), with_for_update=True, populate_existing=True)
    if row is None:
        row = DeclineCountRow(case_id=case.id, agent_id=agent_id, count=0)
    row.count += 1
    row.last_at = now
    s.add(row)
    return row.count


def raise_alert(s: Session, store: Store, case: CaseRow, kind: str, detail: str) -> bool:
    """A supervisor alert, once per case, kind and round, sent to the supervisors' channels
    after the commit. False when it was raised already."""
    assert case.id is not None
    inserted = (
        s.connection()
        .execute(
            insert_ignoring_conflict(
                s,
                AlertRow,
                ["case_id", "kind", "round"],
                case_id=case.id,
                case_number=case.number or f"case {case.id}",
                round=case.round,
                kind=kind,
                detail=detail,
                queue_id=case.queue_id,
                created_at=utcnow(),
            ).returning(AlertRow.id)  # type: ignore[attr-defined]
        )
        .first()
    )
    if inserted is None:
        return False
    key = f"alert:{inserted[0]}"
    channels = pushes.supervisor_channels(s, store)
    number = case.number or f"case {case.id}"
    url = f"{pushes.console_url(s)}/cases/{number}"
    text = f"Alert on {number} ({kind.replace('_', ' ')}): {detail}"
    generic = {
        "event": "alert",
        "kind": kind,
        "case_number": number,
        "subject": case.subject,
        "priority": case.priority,
        "queue": case.queue_id,
        "detail": detail,
        "case_url": url,
    }
    pushes.record(
        s,
        key=key,
        kind="alert",
        recipient="supervisors",
        webhook=channels.webhook,
        slack_webhook=channels.slack_webhook,
        emails=channels.email,
        generic=generic,
        slack=pushes.slack_payload(
            text, {"Queue": case.queue_id or "-", "Priority": case.priority}, {"Open the case": url}
        ),
        mail={
            **pushes.email_payload(f"[{number}] {kind.replace('_', ' ')}", [text, "", url]),
            "from": case.mailbox_address,
        },
    )
    pushes.note(key)
    return True


def _switch_presence(
    s: Session, store: Store, case: CaseRow, agent: AgentRow, ws: Workstream, key: str
) -> TraceEntry | None:
    """``missed_offers_to_away``: the agent missed that many offers in a row; switch them to
    ``missed_offers_presence`` and tell them. The agent's row is locked by the caller."""
    limit = ws.missed_offers_to_away
    if limit is None or agent.missed_offers < limit:
        return None
    target = ws.missed_offers_presence.value
    missed = agent.missed_offers
    agent.missed_offers = 0
    if agent.presence == target:
        return None
    before, agent.presence = agent.presence, target
    s.add(agent)
    record_runtime_edit(s, config_diff.PRESENCE, agent.id, target, "routedesk (missed offers)")
    channels = pushes.agent_channels(s, store, agent.id)
    text = (
        f"You missed {missed} offers in a row, so your presence was set from {before} to {target}. "
        "Set it back when you can take work."
    )
    pushes.record(
        s,
        key=key,
        kind="presence",
        recipient=agent.id,
        webhook=channels.webhook,
        slack_webhook=channels.slack_webhook,
        emails=[channels.email] if channels.email else [],
        generic={
            "event": "presence_changed",
            "agent_id": agent.id,
            "presence": target,
            "previous": before,
            "missed_offers": missed,
            "reason": text,
            "console_url": pushes.console_url(s),
        },
        slack=pushes.slack_payload(text, {}, {"Open the console": pushes.console_url(s)}),
        mail={**pushes.email_payload(f"Your presence was set to {target}", [text]), "from": case.mailbox_address},
    )
    pushes.note(key)
    return TraceEntry(
        STAGE,
        agent.id,
        "presence_changed",
        f"missed {missed} offers in a row (missed_offers_to_away: {limit}); presence {before} -> {target}",
    )


def _new_offer(s: Session, case: CaseRow, agent_id: str, kind: str, key: str) -> OfferRow:
    """Insert a live offer; the partial unique indexes refuse a second one per agent or case."""
    assert case.id is not None and case.number is not None and case.workflow_id is not None
    offer = OfferRow(
        case_id=case.id,
        case_number=case.number,
        agent_id=agent_id,
        queue_id=case.queue_id,
        workflow_id=case.workflow_id,
        kind=kind,
        idempotency_key=key,
    )
    s.add(offer)
    s.flush()
    return offer


def _assign(s: Session, case: CaseRow, agent: AgentRow, now: datetime) -> str | None:
    """Assign ``case`` to ``agent`` inside the caller's transaction; a reason when refused."""
    if case.assigned_agent_id is not None:
        return f"case is already assigned to {case.assigned_agent_id}"
    if case.status == "resolved":
        return "case is resolved"
    if agent.active_count >= agent.capacity:
        return f"{agent.id} is at capacity ({agent.active_count}/{agent.capacity})"
    agent.active_count += 1
    agent.last_assigned_at = now
    member = s.get(QueueMemberRow, (case.queue_id, agent.id)) if case.queue_id else None
    if member is not None:
        member.last_assigned_at = now
        s.add(member)
    case.assigned_agent_id = agent.id
    case.assigned_at = now
    touch_agent_activity(s, case, now)  # assigned (or accepted): the idle clock starts here
    case.status = "assigned"
    case.awaiting_dispatch = False
    s.add(agent)
    s.add(case)
    return None


def _withdraw(s: Session, offer: OfferRow | None, reason: str, now: datetime) -> str | None:
    """Close ``offer`` (the case's live offer, locked), if any; returns the agent who held it."""
    if offer is None:
        return None
    offer.status, offer.reason, offer.closed_at = "withdrawn", reason, now
    s.add(offer)
    return offer.agent_id


# --- the queue's assignment method, shared by dispatch passes and routing ----------------


def queue_members(s: Session, queue_id: str) -> list[tuple[AgentRow, QueueMemberRow]]:
    """The queue's members with their agent rows locked, in id order: whoever decides on
    their eligibility holds them until commit (see the module doc)."""
    return list(
        s.exec(
            select(AgentRow, QueueMemberRow)
            .join(QueueMemberRow, col(QueueMemberRow.agent_id) == col(AgentRow.id))
            .where(QueueMemberRow.queue_id == queue_id)
            .order_by(col(AgentRow.id))
            .with_for_update(of=AgentRow)
            .execution_options(populate_existing=True)
        ).all()
    )


def live_offer_agents(s: Session) -> set[str]:
    return set(s.exec(select(OfferRow.agent_id).where(OfferRow.status == "live")).all())


def _wait_step(case: CaseRow) -> str:
    return f"r{case.round}:waiting:{len(case.excluded_agents)}"


def _anyone_free(members: Iterable[tuple[AgentRow, QueueMemberRow]], offering: set[str]) -> bool:
    return any(a.active_count < a.capacity and a.id not in offering and a.presence != "Offline" for a, _ in members)


def _eligible(
    case: CaseRow,
    ws: Workstream,
    members: Iterable[tuple[AgentRow, QueueMemberRow]],
    offering: set[str],
    defs: time_routing.TimeDefinitions | None = None,
    blocked: dict[str, int] | None = None,
    s: Session | None = None,
    store: Store | None = None,
) -> tuple[list[assignment.Candidate], list[str]]:
    # Required skills with levels (a name alone is level 1); agents' levels from the config.
    required = time_routing.required_skills(case.attributes)
    defs = defs or time_routing.TimeDefinitions(0)
    allowed = {p.value for p in ws.allowed_presences}
    eligible: list[assignment.Candidate] = []
    skipped: list[str] = []
    distance: dict[str, int] = {}
    blocked = blocked or {}
    for agent, member in members:
        has = time_routing.agent_skills(defs, agent.id, list(agent.skills))
        lack = time_routing.lacks(required, has, ws.skill_match)
        if agent.id in blocked:
            skipped.append(
                f"{agent.id} declined or let it time out {blocked[agent.id]} times "
                f"(max_declines_per_item: {ws.max_declines_per_item})"
            )
        elif agent.id in case.excluded_agents:
            skipped.append(f"{agent.id} declined or timed out this round")
        elif agent.presence not in allowed:
            skipped.append(f"{agent.id} is {agent.presence}")
        elif agent.active_count >= agent.capacity:
            skipped.append(f"{agent.id} at capacity ({agent.active_count}/{agent.capacity})")
        elif agent.id in offering:
            skipped.append(f"{agent.id} holds a live offer")
        elif lack is not None:
            skipped.append(f"{agent.id} {lack}")
        elif s is not None and store is not None and (better := better_elsewhere(s, store, case, agent)):
            skipped.append(f"{agent.id} gets a better item first: {better}")
        else:
            distance[agent.id] = time_routing.skill_distance(required, has) or 0
            eligible.append(
                assignment.Candidate(
                    agent_id=agent.id,
                    free_capacity=agent.capacity - agent.active_count,
                    last_assigned_at=agent.last_assigned_at,
                    queue_last_assigned_at=member.last_assigned_at,
                    last_released_at=agent.last_released_at,
                )
            )
    if ws.skill_match == "closest" and required and eligible:
        # Closest match: the agents whose levels are nearest the required ones; the queue's
        # method chooses among them.
        best = min(distance[c.agent_id] for c in eligible)
        for c in eligible:
            if distance[c.agent_id] > best:
                skipped.append(f"{c.agent_id} is a farther skill match (distance {distance[c.agent_id]} > {best})")
        eligible = [c for c in eligible if distance[c.agent_id] == best]
    return eligible, skipped


def eligible_or_note_wait(
    s: Session,
    store: Store,
    queue: QueueRow,
    case: CaseRow,
    members: list[tuple[AgentRow, QueueMemberRow]],
    offering: set[str],
    *,
    sweep_key: str | None = None,
) -> tuple[list[assignment.Candidate], list[str], Workstream]:
    """The members who may be offered ``case`` now; with none, why it waits is traced.

    ``sweep_key`` is set by a dispatcher pass: a case that every eligible member declined or
    let time out (starved) starts a new round there once it has been starved for
    ``routing.sweep_interval_seconds``, however often the queue is woken meanwhile (the
    pass tells the dispatcher when: ``DispatchResult.retry_in_seconds``). Agents who reached
    ``max_declines_per_item`` stay out of every round; when they are all the queue's
    members, the item is marked ``no_eligible_agent``, a supervisor alert fires, and it does
    not cycle.
    """
    ws = store.workstream(case.workstream_id)
    defs = time_routing.definitions(store)
    blocked = _blocked(s, case, ws)
    eligible, skipped = _eligible(case, ws, members, offering, defs, blocked, s, store)
    now = utcnow()
    if not eligible and sweep_key is not None and case.excluded_agents:
        retry = timedelta(seconds=store.routing_settings().sweep_interval_seconds)
        starved = case.starved_at
        if starved is not None and now + RETRY_TOLERANCE >= _aware(starved) + retry:
            case.excluded_agents = []
            case.waiting_noted = None
            case.starved_at = None
            _trace(
                s,
                case,
                f"r{case.round}:new-round@{sweep_key}",
                TraceEntry(STAGE, queue.id, "new_round", "every eligible member declined or timed out; offering again"),
            )
            eligible, skipped = _eligible(case, ws, members, offering, defs, blocked, s, store)
    if eligible:
        if case.no_eligible_agent_at is not None or case.starved_at is not None:
            case.no_eligible_agent_at = case.starved_at = None
            s.add(case)
    elif members and all(a.id in blocked for a, _ in members):
        # Nobody is left who may be offered it: marked, traced and alerted once; no cycling.
        case.starved_at = None
        if case.no_eligible_agent_at is None:
            case.no_eligible_agent_at = now
            detail = (
                f"every member of queue {queue.id} declined or let it time out "
                f"{ws.max_declines_per_item} times (max_declines_per_item); it is no longer offered "
                "automatically: pick it or assign it"
            )
            _trace(
                s,
                case,
                f"r{case.round}:no-eligible:{len(blocked)}",
                TraceEntry(STAGE, queue.id, "no_eligible_agent", detail),
            )
            raise_alert(s, store, case, "no_eligible_agent", detail)
        s.add(case)
    elif case.excluded_agents and case.starved_at is None:
        case.starved_at = now  # the new round's timer starts now
        s.add(case)
        # Offered to every eligible member, taken by none: the supervisors hear of it once per
        # case round (raise_alert's key), not on every new dispatcher round.
        sweep = store.routing_settings().sweep_interval_seconds
        detail = (
            f"offered to every eligible member of queue {queue.id} ({', '.join(case.excluded_agents)}) "
            f"and taken by none; it is offered again in {sweep:g}s, or pick it or assign it"
        )
        if raise_alert(s, store, case, "offered_to_everyone", detail):
            _trace(s, case, f"r{case.round}:alert:offered-to-everyone", TraceEntry(STAGE, queue.id, "alerted", detail))
    if not eligible:
        # Traced once per round and exclusion set, not on every pass (agents out for good
        # count too: the wait's reason changed).
        step = _wait_step(case) + (f":out{len(blocked)}" if blocked else "")
        if case.waiting_noted != step:
            _trace(
                s,
                case,
                step,
                TraceEntry(
                    STAGE,
                    queue.id,
                    "waiting",
                    "no eligible agent: " + ("; ".join(skipped) or "the queue has no members"),
                ),
            )
            case.waiting_noted = step
            s.add(case)
    return eligible, skipped, ws


def offer_or_note_wait(
    s: Session,
    store: Store,
    queue: QueueRow,
    case: CaseRow,
    members: list[tuple[AgentRow, QueueMemberRow]],
    offering: set[str],
    key: str,
    *,
    sweep_key: str | None = None,
) -> tuple[OfferRow | None, Workstream]:
    """Offer one waiting item to the agent the queue's method picks, or trace why it waits.

    ``offering`` (agents holding a live offer) is updated in place, so a pass over many
    items never offers two of them to one agent.
    """
    eligible, skipped, ws = eligible_or_note_wait(s, store, queue, case, members, offering, sweep_key=sweep_key)
    if not eligible:
        return None, ws
    best, why = assignment.choose(queue.assignment_method, eligible)
    offer = _new_offer(s, case, best.agent_id, "queue", key)
    case.awaiting_dispatch = False
    s.add(case)
    offering.add(best.agent_id)
    detail = why + (f"; skipped {'; '.join(skipped)}" if skipped else "")
    _trace(
        s,
        case,
        f"r{case.round}:offer{offer.id}",
        TraceEntry(STAGE, best.agent_id, "offered", f"{detail}; answer within {ws.offer_timeout_seconds:g}s"),
        new=True,  # the offer was just made
    )
    return offer, ws


def wake_for(s: Session, store: Store, queue: QueueRow, case: CaseRow) -> list[str]:
    """The queue, if its dispatcher must be woken for ``case``, which now waits in it behind
    other items; else nothing, and why it waits is traced.

    A cycle decides in queue order, so it is needed only if somebody may take this case:
    the other items waited already, and whatever made an agent free for them woke the
    dispatcher then.
    """
    members = queue_members(s, queue.id)
    eligible, _, _ = eligible_or_note_wait(s, store, queue, case, members, live_offer_agents(s))
    return claim_wakes(s, [queue.id]) if eligible else []


def offer_on_arrival(s: Session, store: Store, case: CaseRow) -> tuple[OfferInfo | None, bool]:
    """Run the queue's assignment method for a case that has just joined its queue.

    Inside the routing transaction. When no other item waits in the queue, the dispatcher's
    next cycle would look at this case alone and decide exactly this, so deciding here saves
    a dispatcher wake-up, a cycle and a signal per email; with nobody eligible, why it waits
    is traced. When items wait ahead of it, the dispatcher decides, in priority-then-age
    order, if anybody may take this case (see :func:`wake_for`). Returns ``(offer, wake)``.
    """
    assert case.id is not None and case.queue_id is not None
    queue = s.get(QueueRow, case.queue_id)
    if queue is None:
        return None, bool(claim_wakes(s, [case.queue_id]))
    if _note_closed(s, store, case):
        # Its dispatcher is woken to time its next pass to the opening.
        return None, bool(claim_wakes(s, [case.queue_id]))
    ahead = s.exec(
        select(CaseRow.id)
        .where(
            CaseRow.queue_id == case.queue_id,
            CaseRow.status == "queued",
            col(CaseRow.awaiting_dispatch),
            CaseRow.id != case.id,
        )
        .limit(1)
    ).first()
    if ahead is not None:
        return None, bool(wake_for(s, store, queue, case))
    members = queue_members(s, queue.id)
    offering = live_offer_agents(s)
    offer, ws = offer_or_note_wait(s, store, queue, case, members, offering, f"{case.id}:r{case.round}:on-arrival")
    return (_info(offer, ws, _notify(s, store, offer.agent_id)) if offer is not None else None), False


def _note_closed(s: Session, store: Store, case: CaseRow) -> bool:
    """True when the case's queue is closed and offers none until it opens (issue 18); the
    wait is traced once."""
    until = time_routing.closed_until(time_routing.definitions(store), case.queue_id, utcnow())
    if until is None:
        return False
    step = f"{_wait_step(case)}:closed"
    if case.waiting_noted != step:
        _trace(
            s,
            case,
            step,
            TraceEntry(
                STAGE, case.queue_id or "-", "waiting", f"queue closed: offered from {until:%Y-%m-%d %H:%M} UTC"
            ),
        )
        case.waiting_noted = step
        s.add(case)
    return True


def arrival_offer(s: Session, store: Store, case: CaseRow) -> OfferInfo | None:
    """The offer :func:`offer_on_arrival` made for this case's round, for a retried routing."""
    offer = s.exec(select(OfferRow).where(OfferRow.idempotency_key == f"{case.id}:r{case.round}:on-arrival")).first()
    if offer is None:
        return None
    return _info(offer, store.workstream(case.workstream_id), _notify(s, store, offer.agent_id))


# --- ordering across queues -------------------------------------------------------------
#
# An agent in several queues gets the best item across all of them: queue priority first
# (lower first), then item priority, then SLA due time (items with one first), then age.
# Each queue's dispatcher still decides alone, holding its members' rows locked; before it
# offers an item to an agent, it looks (reading only) for an item in the agent's other
# queues that ranks higher and that the agent may take. If there is one, the agent is left
# for that queue's dispatcher, which a kick wakes: the agent's row lock serialises the two
# decisions, so capacity is never booked twice, and whichever dispatcher wakes first, the
# better item is offered first.

_FAR = datetime.max.replace(tzinfo=UTC)


def _utc(t: datetime | None) -> datetime:
    if t is None:
        return _FAR
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def rank_key(queue_priority: int, case: CaseRow) -> tuple[int, int, int, datetime, datetime, int]:
    """Smaller is better: the order in which an agent's items across queues are offered."""
    return (
        queue_priority,
        -case.priority_rank,
        0 if case.sla_due_at is not None else 1,
        _utc(case.sla_due_at),
        _utc(case.queued_at),
        case.id or 0,
    )


# How many better-ranked items of other queues are looked at per agent before concluding the
# agent may take none of them (excluded, lacking skills): a bound on the cost per decision.
BETTER_LOOKAHEAD = 20


def better_elsewhere(s: Session, store: Store, case: CaseRow, agent: AgentRow) -> str | None:
    """Why ``agent`` should not be offered ``case`` now: an item in another of the agent's
    queues ranks higher and the agent may take it. None when there is none. Cached per
    transaction and agent (the items of other queues do not change during a pass); the
    deferred-to queue is claimed for a wake-up."""
    cache: dict[tuple[str, str], tuple[tuple[int, int, int, datetime, datetime, int], str] | None]
    cache = s.info.setdefault("better_elsewhere", {})
    queue_priorities: dict[str, int] = s.info.setdefault("queue_priorities", {})
    if not queue_priorities:
        queue_priorities.update({q.id: q.priority for q in s.exec(select(QueueRow)).all()})
    if case.queue_id is None:
        return None
    key = (agent.id, case.queue_id)
    if key not in cache:
        cache[key] = _best_elsewhere(s, store, case.queue_id, agent, queue_priorities)
    best = cache[key]
    if best is None or best[0] >= rank_key(queue_priorities.get(case.queue_id, 0), case):
        return None
    _, where = best
    s.info.setdefault("deferred_to", set()).add(where.split(" ", 1)[0])
    return f"{where}"


def _best_elsewhere(
    s: Session, store: Store, queue_id: str, agent: AgentRow, queue_priorities: dict[str, int]
) -> tuple[tuple[int, int, int, datetime, datetime, int], str] | None:
    # Only queues that rank no lower than this one can hold a better item: a backlog in a
    # lower-priority queue is not even read (it used to fill the look-ahead and hide a
    # higher-priority queue's item).
    own = queue_priorities.get(queue_id, 0)
    others = [
        q
        for q in s.exec(select(QueueMemberRow.queue_id).where(QueueMemberRow.agent_id == agent.id)).all()
        if q != queue_id and queue_priorities.get(q, 0) <= own
    ]
    if not others:
        return None
    # In rank_key order (queue priority first), so the look-ahead reads the best items.
    rows = s.exec(
        select(CaseRow)
        .join(QueueRow, col(QueueRow.id) == col(CaseRow.queue_id))
        .where(col(CaseRow.queue_id).in_(others), CaseRow.status == "queued", col(CaseRow.awaiting_dispatch))
        .order_by(
            col(QueueRow.priority),
            col(CaseRow.priority_rank).desc(),
            col(CaseRow.sla_due_at).asc().nulls_last(),
            col(CaseRow.queued_at),
            col(CaseRow.id),
        )
        .limit(BETTER_LOOKAHEAD * len(others))
    ).all()
    best: tuple[tuple[int, int, int, datetime, datetime, int], str] | None = None
    defs = time_routing.definitions(store)
    has = time_routing.agent_skills(defs, agent.id, list(agent.skills))
    now = utcnow()
    closed = {q for q in others if time_routing.closed_until(defs, q, now) is not None}
    for other in rows:
        if agent.id in other.excluded_agents or other.queue_id in closed:
            continue  # a closed queue offers nothing now (unless offer_when_closed)
        ws = store.workstream(other.workstream_id)
        if time_routing.lacks(time_routing.required_skills(other.attributes), has, ws.skill_match) is not None:
            continue
        if agent.presence not in {p.value for p in ws.allowed_presences}:
            continue
        k = rank_key(queue_priorities.get(other.queue_id or "", 0), other)
        if best is None or k < best[0]:
            best = (k, f"{other.queue_id} ({other.number}, queue priority {k[0]})")
    return best


def deferred_wakes(s: Session) -> list[str]:
    """The queues a decision in this transaction left an agent to (claimed for a kick)."""
    deferred = sorted(s.info.pop("deferred_to", set()))
    return claim_wakes(s, deferred) if deferred else []


def _wake_after_pass(
    s: Session,
    queue_id: str,
    members: list[tuple[AgentRow, QueueMemberRow]],
    offering: set[str],
    offered: bool,
) -> list[str]:
    """After a pass: the queues an agent was left to, and, when this pass made offers, the
    other queues of members still free (an agent another queue's pass left to this one may
    not have been chosen here: its other items are theirs again)."""
    wake = deferred_wakes(s)
    if offered:
        free = [a.id for a, _ in members if a.active_count < a.capacity and a.id not in offering]
        if free:
            others = s.exec(
                select(QueueMemberRow.queue_id).where(
                    col(QueueMemberRow.agent_id).in_(free), QueueMemberRow.queue_id != queue_id
                )
            ).all()
            wake += queues_to_wake(s, list(others))
    return sorted(set(wake))


class Assignments:
    """The assignment transactions over one store; each public method is one transaction.

    Methods that change what a queue's dispatcher could decide return the queues whose
    dispatcher must be woken after the commit (see :mod:`routedesk.assignment.wake`).
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    def offer_preferred(self, inp: PreferredOfferRequest) -> OfferAttempt:
        """Offer to the first eligible agent among ``agent_id`` and then ``more``: a queue
        member in an allowed presence. Each one skipped is traced with the reason.

        As in Dynamics 365, capacity, skills and assignment rules are not checked for a
        preferred agent; capacity is still enforced when the agent accepts.
        """
        key = f"{inp.case_id}:{inp.step}"
        candidates = [inp.agent_id, *inp.more]
        last = inp.position + len(candidates) - 1
        with self.store.db.write() as s:
            case = _case(s, inp.case_id)
            ws = self.store.workstream(case.workstream_id)
            done = s.exec(select(OfferRow).where(OfferRow.idempotency_key == key)).first()
            if done is not None:  # a retry: the same offer
                return OfferAttempt(
                    offer=_info(done, ws, _notify(s, self.store, done.agent_id)),
                    position=inp.position + candidates.index(done.agent_id),
                )
            previous = _step_reason(s, case, inp.step)
            if previous is not None:  # a retry: everyone was skipped
                return OfferAttempt(reason=previous, position=last)
            # Locked before their live offers are looked for: a concurrent offer to one of
            # them waits for this transaction, or this one sees it.
            agents = lock_agents(s, candidates)
            skipped: list[TraceEntry] = []
            for i, agent_id in enumerate(candidates):
                position = inp.position + i
                label = (inp.label if i == 0 else None) or f"preferred agent #{position}"
                reason = self._preferred_ineligible(s, case, ws, agents.get(agent_id), agent_id)
                if reason is not None:
                    skipped.append(TraceEntry(STAGE, agent_id, "skipped", f"{label}: {reason}"))
                    continue
                offer = _new_offer(s, case, agent_id, "preferred", key)
                _trace(
                    s,
                    case,
                    inp.step,
                    *skipped,
                    TraceEntry(
                        STAGE,
                        agent_id,
                        "offered",
                        f"{label}; capacity, skills and assignment rules skipped for preferred agents; "
                        f"answer within {ws.offer_timeout_seconds:g}s",
                    ),
                )
                return OfferAttempt(offer=_info(offer, ws, _notify(s, self.store, agent_id)), position=position)
            _trace(s, case, inp.step, *skipped)
            return OfferAttempt(reason=skipped[-1].reason if skipped else None, position=last)

    def _preferred_ineligible(
        self, s: Session, case: CaseRow, ws: Workstream, agent: AgentRow | None, agent_id: str
    ) -> str | None:
        if case.assigned_agent_id is not None:
            return f"case is already assigned to {case.assigned_agent_id}"
        if agent is None:
            return "no such agent"
        if s.get(QueueMemberRow, (case.queue_id, agent_id)) is None:
            return f"not a member of queue {case.queue_id}"
        until = time_routing.closed_until(time_routing.definitions(self.store), case.queue_id, utcnow())
        if until is not None:
            return f"queue {case.queue_id} is closed until {until:%Y-%m-%d %H:%M} UTC"
        if agent.presence not in ws.allowed_presences:
            allowed = ", ".join(p.value for p in ws.allowed_presences)
            return f"presence {agent.presence} is not allowed (workstream {ws.id} allows {allowed})"
        declined = _blocked(s, case, ws).get(agent_id)
        if declined is not None:
            return f"declined or let it time out {declined} times (max_declines_per_item: {ws.max_declines_per_item})"
        held = _live_offer_of_agent(s, agent_id)
        if held is not None:
            # One live offer per agent: a preferred agent busy with another offer is skipped.
            return f"holds a live offer on {held.case_number}"
        return None

    # --- answers -----------------------------------------------------------------------

    def accept_offer(self, inp: AnswerInput) -> tuple[AssignResult, list[str]]:
        with self.store.db.write() as s:
            case = _case(s, inp.case_id)  # the case before its offer (see the module doc)
            offer = s.get(OfferRow, inp.offer_id, with_for_update=True, populate_existing=True)
            if offer is None:
                raise ApplicationError(f"offer {inp.offer_id} does not exist", type="OfferMissing", non_retryable=True)
            if offer.status == "accepted":
                return AssignResult(assigned=True, agent_id=offer.agent_id, reason="accepted"), []
            if offer.status != "live":
                return AssignResult(assigned=False, reason=f"the offer was {offer.status}"), []
            now = utcnow()
            agent = lock_agents(s, [offer.agent_id]).get(offer.agent_id)
            refusal = "no such agent" if agent is None else _assign(s, case, agent, now)
            offer.closed_at = now
            if agent is not None and agent.missed_offers:
                agent.missed_offers = 0  # an answered offer ends a run of missed ones
                s.add(agent)
            if refusal is None:
                offer.status = "accepted"
                _trace(
                    s,
                    case,
                    inp.step,
                    TraceEntry(STAGE, offer.agent_id, "assigned", f"accepted the {offer.kind} offer"),
                    new=True,  # the offer was live: no attempt has answered it yet
                )
            else:
                offer.status, offer.reason = "refused", refusal
                _trace(
                    s,
                    case,
                    inp.step,
                    TraceEntry(STAGE, offer.agent_id, "refused", f"accepted, but {refusal}"),
                    new=True,
                )
                if offer.kind == "queue" and case.assigned_agent_id is None and case.status == "queued":
                    case.excluded_agents = [*case.excluded_agents, offer.agent_id]
                    case.waiting_noted = None  # a new wait, traced again
                    case.awaiting_dispatch = True
                    s.add(case)
            s.add(offer)
            # The agent holds no offer any more: their queues may have work for them.
            queues = queues_to_wake(s, [*_queues_of(s, offer.agent_id), case.queue_id])
            if refusal is None:
                return AssignResult(assigned=True, agent_id=offer.agent_id, reason="accepted"), queues
            return AssignResult(assigned=False, reason=refusal), queues

    def close_offer(self, inp: AnswerInput) -> tuple[None, list[str]]:
        with self.store.db.write() as s:
            case = _case(s, inp.case_id)  # the case before its offer (see the module doc)
            offer = s.get(OfferRow, inp.offer_id, with_for_update=True, populate_existing=True)
            if offer is None or offer.status != "live":
                return None, []
            # The agent is free for other offers from this commit on: locked, so a
            # transaction queueing an item for them either sees that or is seen below.
            agent = lock_agents(s, [offer.agent_id]).get(offer.agent_id)
            now = utcnow()
            offer.status, offer.reason, offer.closed_at = inp.outcome, inp.reason, now
            s.add(offer)
            ws = self.store.workstream(case.workstream_id)
            why = {
                "declined": f"declined{': ' + inp.reason if inp.reason else ''}",
                "timed_out": f"no answer within {ws.offer_timeout_seconds:g}s",
                "withdrawn": inp.reason or "withdrawn",
            }.get(inp.outcome, inp.outcome)
            entries = [TraceEntry(STAGE, offer.agent_id, inp.outcome, why)]
            if inp.outcome in ("declined", "timed_out"):
                n = _count_decline(s, case, offer.agent_id, now)
                if n >= ws.max_declines_per_item:
                    entries.append(
                        TraceEntry(
                            STAGE,
                            offer.agent_id,
                            "excluded",
                            f"declined or let it time out {n} times (max_declines_per_item: "
                            f"{ws.max_declines_per_item}): not offered this item again automatically",
                        )
                    )
            if agent is not None and inp.outcome in ("declined", "timed_out"):
                agent.missed_offers = agent.missed_offers + 1 if inp.outcome == "timed_out" else 0
                s.add(agent)
                switched = _switch_presence(s, self.store, case, agent, ws, f"presence:{agent.id}:{offer.id}")
                if switched is not None:
                    entries.append(switched)
            _trace(s, case, inp.step, *entries)
            if inp.outcome in ("declined", "timed_out"):
                # Not offered this case again this round, by the queue either.
                case.excluded_agents = [*case.excluded_agents, offer.agent_id]
                case.waiting_noted = None  # a new wait, traced again
            if offer.kind == "queue" and case.assigned_agent_id is None and case.status == "queued":
                case.awaiting_dispatch = True
            s.add(case)
            return None, queues_to_wake(s, [*_queues_of(s, offer.agent_id), case.queue_id])

    # --- the queue ---------------------------------------------------------------------

    def enqueue(self, inp: DispatchRequest) -> tuple[None, list[str]]:
        with self.store.db.write() as s:
            case = _case(s, inp.case_id)
            if case.assigned_agent_id is not None or case.status != "queued":
                return None, []
            queue = s.get(QueueRow, case.queue_id) if case.queue_id else None
            method = queue.assignment_method if queue else "?"
            case.awaiting_dispatch = True
            s.add(case)
            _trace(
                s,
                case,
                inp.step,
                TraceEntry(
                    STAGE,
                    case.queue_id or "-",
                    "queued",
                    f"waiting for the next best agent ({method})",
                ),
            )
            if queue is None:
                # A queue missing from the config: its dispatcher reports it; no queue, no wake.
                return None, claim_wakes(s, [case.queue_id]) if case.queue_id else []
            return None, wake_for(s, self.store, queue, case)

    def waiting_alert(self, inp: CaseStepInput) -> None:
        """``alert_waiting_longer_than``: the case's workflow timer fired; alert the
        supervisors if the case still waits for an agent (once per round)."""
        with self.store.db.write() as s:
            case = _case(s, inp.case_id)
            if case.assigned_agent_id is not None or case.status != "queued":
                return
            detail = inp.reason or "waiting for an agent too long"
            if raise_alert(s, self.store, case, "waiting_too_long", detail):
                _trace(s, case, inp.step, TraceEntry(STAGE, case.queue_id or "-", "alerted", detail))

    def leave_unassigned(self, inp: CaseStepInput) -> None:
        with self.store.db.write() as s:
            case = _case(s, inp.case_id)
            _trace(
                s,
                case,
                inp.step,
                TraceEntry(
                    STAGE,
                    case.queue_id or "-",
                    "unassigned",
                    inp.reason or "left unassigned in the queue: waiting for a pick or a supervisor",
                ),
            )

    def dispatch(self, inp: DispatchPass) -> tuple[DispatchResult, bool]:
        result, contended, _ = self.dispatch_and_wake(inp)
        return result, contended

    def dispatch_and_wake(self, inp: DispatchPass) -> tuple[DispatchResult, bool, list[str]]:
        """One assignment cycle for a queue: waiting items in priority, SLA due time, then
        age order, each offered to the agent the queue's method picks among eligible members.
        Also says whether an item was skipped because another transaction held it, and which
        other queues' dispatchers must look again (see :func:`better_elsewhere`)."""
        wake: list[str] = []
        result, contended = self._dispatch(inp, wake)
        return result, contended, wake

    def _dispatch(self, inp: DispatchPass, wake: list[str]) -> tuple[DispatchResult, bool]:
        sweep_interval = self.store.routing_settings().sweep_interval_seconds
        with self.store.db.write() as s:
            made = s.exec(select(OfferRow).where(col(OfferRow.idempotency_key).startswith(f"{inp.pass_key}:"))).all()
            if made:  # a retry of a pass that committed: report the same offers
                return DispatchResult(
                    offers=[self._dispatched(o) for o in made],
                    sweep_interval_seconds=sweep_interval,
                ), False
            queue = s.get(QueueRow, inp.queue_id)
            # The members' rows first, locked for the whole pass (see the module doc).
            members = queue_members(s, inp.queue_id) if queue is not None else []
            # This pass reads the store from here on: later changes must signal again.
            s.connection().execute(delete(QueueWakeRow).where(col(QueueWakeRow.queue_id) == inp.queue_id))
            if queue is None:
                return DispatchResult(sweep_interval_seconds=sweep_interval), False
            until = time_routing.closed_until(time_routing.definitions(self.store), queue.id, utcnow())
            if until is not None:
                # Closed (issue 18): nothing is offered; the next pass comes at the opening
                # at the latest.
                wait = max(1.0, min(sweep_interval, (until - utcnow()).total_seconds()))
                return DispatchResult(sweep_interval_seconds=wait), False
            # Only the keys here: a backlog of thousands is walked as index rows, and a case
            # is loaded only when it may be offered or its wait is not traced yet.
            items = s.exec(
                select(CaseRow.id, CaseRow.waiting_noted)
                .where(
                    CaseRow.queue_id == inp.queue_id,
                    CaseRow.status == "queued",
                    col(CaseRow.awaiting_dispatch),
                )
                .order_by(
                    col(CaseRow.priority_rank).desc(),
                    col(CaseRow.sla_due_at).asc().nulls_last(),
                    col(CaseRow.queued_at),
                    col(CaseRow.id),
                )
            ).all()
            if not items:
                return DispatchResult(sweep_interval_seconds=sweep_interval), False
            offering = live_offer_agents(s)
            offers: list[DispatchedOffer] = []
            # The soonest a starved item here is due for a new round: the dispatcher passes
            # then, however often it is woken meanwhile.
            retry = timedelta(seconds=sweep_interval)
            retry_in: float | None = None
            waiting = 0
            contended = False
            anyone_free = _anyone_free(members, offering)
            for case_id, noted in items:
                if not anyone_free and noted is not None:
                    # Nobody in the queue can take anything and this item's wait is traced
                    # (``waiting_noted`` is cleared whenever its round or exclusions change).
                    waiting += 1
                    continue
                # Locked, and read again: since the list above was read, a pick, a
                # supervisor or an offer on arrival may have taken the item, and an offer
                # made now would never be closed (a phantom offer). A case another
                # transaction holds is skipped rather than waited for: this pass holds
                # agents that transaction may need.
                case = s.get(CaseRow, case_id, with_for_update={"skip_locked": True}, populate_existing=True)
                if case is None:
                    contended = True
                    waiting += 1
                    continue
                if (
                    case.status != "queued"
                    or not case.awaiting_dispatch
                    or case.assigned_agent_id is not None
                    or case.queue_id != inp.queue_id
                ):
                    continue
                offer, ws = offer_or_note_wait(
                    s,
                    self.store,
                    queue,
                    case,
                    members,
                    offering,
                    f"{inp.pass_key}:{case.id}",
                    sweep_key=inp.pass_key,
                )
                if offer is None:
                    waiting += 1
                    if case.starved_at is not None:
                        due = (_aware(case.starved_at) + retry - utcnow()).total_seconds()
                        retry_in = max(0.0, due) if retry_in is None else min(retry_in, max(0.0, due))
                    continue
                anyone_free = _anyone_free(members, offering)
                offers.append(self._dispatched(offer, ws, _notify(s, self.store, offer.agent_id)))
            wake += _wake_after_pass(s, inp.queue_id, members, offering, bool(offers))
            return DispatchResult(
                offers=offers, waiting=waiting, sweep_interval_seconds=sweep_interval, retry_in_seconds=retry_in
            ), contended

    def _dispatched(self, offer: OfferRow, ws: Workstream | None = None, notify: bool | None = None) -> DispatchedOffer:
        if ws is None or notify is None:
            with self.store.db.read() as s:
                case = s.get(CaseRow, offer.case_id)
                assert case is not None
                ws = self.store.workstream(case.workstream_id)
                notify = _notify(s, self.store, offer.agent_id)
        return DispatchedOffer(case_id=offer.case_id, workflow_id=offer.workflow_id, offer=_info(offer, ws, notify))

    # --- picks, supervisors, resolution ----------------------------------------------

    def assign_direct(self, inp: DirectAssignInput) -> tuple[AssignResult, list[str]]:
        with self.store.db.write() as s:
            case = _case(s, inp.case_id)
            previous = _step_reason(s, case, inp.step)
            if previous is not None:  # a retry
                ok = case.assigned_agent_id == inp.agent_id
                return AssignResult(assigned=ok, agent_id=case.assigned_agent_id, reason=previous), []
            live = _live_offer_of_case(s, case)
            agent = lock_agents(s, [inp.agent_id, live.agent_id if live else None]).get(inp.agent_id)
            now = utcnow()
            refusal: str | None
            if agent is None:
                refusal = f"no agent {inp.agent_id}"
            elif inp.by == "pick" and s.get(QueueMemberRow, (case.queue_id, inp.agent_id)) is None:
                refusal = f"{inp.agent_id} is not a member of queue {case.queue_id}"
            else:
                refusal = _assign(s, case, agent, now)
            if refusal is not None:
                # Not traced: a refused pick changes nothing, and the caller gets the reason.
                return AssignResult(assigned=False, agent_id=case.assigned_agent_id, reason=refusal), []
            withdrawn = _withdraw(s, live, f"assigned to {inp.agent_id} by {inp.by}", now)
            what = "picked the case from the queue" if inp.by == "pick" else "assigned by a supervisor"
            entries = [TraceEntry(STAGE, inp.agent_id, "assigned", what)]
            if withdrawn:
                entries.insert(
                    0,
                    TraceEntry(STAGE, withdrawn, "withdrawn", f"offer withdrawn: {what} to {inp.agent_id}"),
                )
            _trace(s, case, inp.step, *entries)
            return AssignResult(assigned=True, agent_id=inp.agent_id, reason=what), (
                queues_to_wake(s, _queues_of(s, withdrawn)) if withdrawn else []
            )

    def resolve(self, inp: CaseStepInput) -> tuple[None, list[str]]:
        with self.store.db.write() as s:
            case = _case(s, inp.case_id)
            if case.status == "resolved":
                return None, []
            now = utcnow()
            freed: list[str] = []
            live = _live_offer_of_case(s, case)
            owner = case.assigned_agent_id
            agents = lock_agents(s, [owner, live.agent_id if live else None])
            withdrawn = _withdraw(s, live, "case resolved", now)
            if withdrawn:
                freed += _queues_of(s, withdrawn)
            if owner is not None:
                agent = agents.get(owner)
                if agent is not None:
                    agent.active_count = max(0, agent.active_count - 1)
                    agent.last_released_at = now
                    s.add(agent)
                    freed += _queues_of(s, owner)
            case.status, case.resolved_at, case.awaiting_dispatch = "resolved", now, False
            from routedesk import sla  # imports this module

            sla.on_resolved(case, now)
            s.add(case)
            _trace(
                s,
                case,
                inp.step,
                TraceEntry(
                    "resolution",
                    owner or "-",
                    "resolved",
                    f"{inp.reason or 'resolved'}" + (f"; {owner}'s capacity released" if owner else ""),
                ),
                new=True,  # the case was not resolved: no attempt has traced this
            )
            return None, queues_to_wake(s, freed)

    # --- transfers (issue 18) -----------------------------------------------------------

    def transfer_to_queue(self, inp: TransferInput) -> tuple[TransferResult, list[str]]:
        """Move a waiting (not assigned, not resolved) case to another queue, for overflow and
        SLA actions.

        The case keeps its ``queued_at``, so it keeps its age for ordering in the new queue;
        a live offer is withdrawn (its agent is free again); an item that was waiting for its
        queue's assignment method waits for the new queue's, whose dispatcher is woken after
        the commit. An item left unassigned for a pick, or still with its preferred agents,
        stays so. Idempotent by ``inp.step``: a retry returns what the first attempt did.
        """
        with self.store.db.write() as s:
            case = _case(s, inp.case_id)
            done = s.exec(
                select(TraceRow).where(
                    TraceRow.email_id == case.source_email_id,
                    TraceRow.step == inp.step,
                    TraceRow.outcome == "transferred",
                )
            ).first()
            if done is not None:  # a retry: the first attempt moved it
                withdrawn_id = s.exec(
                    select(OfferRow.id).where(
                        OfferRow.case_id == case.id, OfferRow.reason == f"transferred ({inp.step})"
                    )
                ).first()
                at = done.at if done.at.tzinfo else done.at.replace(tzinfo=UTC)
                return TransferResult(
                    transferred=True,
                    queue_id=done.subject,
                    from_queue=case.queue_id if case.queue_id != done.subject else None,
                    withdrawn_offer_id=withdrawn_id,
                    in_queue_overflow=time_routing.in_queue_overflow(
                        time_routing.definitions(self.store), done.subject, at
                    ),
                ), []
            refusal: str | None = None
            if case.status == "resolved":
                refusal = "the case is resolved"
            elif case.assigned_agent_id is not None:
                refusal = f"the case is assigned to {case.assigned_agent_id}"
            elif case.queue_id == inp.queue_id:
                refusal = f"the case is in queue {inp.queue_id} already"
            target = s.get(QueueRow, inp.queue_id)
            if refusal is None and target is None:
                refusal = f"queue {inp.queue_id} is not in the config"
            if refusal is not None or target is None:
                # Not traced: nothing changed, and the caller gets the reason.
                return TransferResult(transferred=False, queue_id=case.queue_id, reason=refusal), []
            now = utcnow()
            live = _live_offer_of_case(s, case)
            lock_agents(s, [live.agent_id if live else None])
            withdrawn_id = live.id if live is not None else None
            dispatching = case.awaiting_dispatch or (live is not None and live.kind == "queue")
            withdrawn = _withdraw(s, live, f"transferred ({inp.step})", now)
            source = case.queue_id
            case.queue_id = target.id
            case.awaiting_dispatch = dispatching
            case.waiting_noted = None  # a new wait, in the new queue, traced again
            s.add(case)
            entries = [
                TraceEntry(STAGE, target.id, "transferred", f"from queue {source or '-'} to {target.id}: {inp.reason}")
            ]
            if withdrawn:
                entries.insert(
                    0, TraceEntry(STAGE, withdrawn, "withdrawn", f"offer withdrawn: case transferred to {target.id}")
                )
            _trace(s, case, inp.step, *entries)
            s.flush()
            wake = wake_for(s, self.store, target, case) if dispatching else []
            freed = queues_to_wake(s, _queues_of(s, withdrawn)) if withdrawn else []
            return TransferResult(
                transferred=True,
                queue_id=target.id,
                from_queue=source,
                withdrawn_offer_id=withdrawn_id,
                in_queue_overflow=time_routing.in_queue_overflow(time_routing.definitions(self.store), target.id, now),
            ), sorted({*wake, *freed})
