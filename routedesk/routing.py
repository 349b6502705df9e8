"""Stages 2 to 4 in one transaction: open the case, classification rules set attributes,
route-to-queue rules pick the queue.

Store transactions only (:class:`Router`). For a new email this runs inside intake's
transaction (``parse_email`` calls :meth:`Router.route_in` through its ``RoutingActivities``);
the ``route_case`` activity (``RoutingActivities``) runs :meth:`Router.route_case` on its own
for a case a reply reopened, and for workflows whose history predates that."""

from __future__ import annotations

from datetime import UTC
from typing import Any

from sqlmodel import Session, select
from temporalio.exceptions import ApplicationError

from routedesk import rules, sla, time_routing
from routedesk.assignment.transactions import arrival_offer, offer_on_arrival
from routedesk.assignment.wake import claim_wakes
from routedesk.cases import open_case
from routedesk.config import Priority
from routedesk.contracts import AssignmentPlan, CaseRef, OfferInfo, QueueDecision, RouteCaseInput, RoutedCase
from routedesk.models import CaseRow, ContactRow, EmailRow, QueueRow, TraceRow, utcnow
from routedesk.store import Store, TraceEntry, add_trace


def rule_context(case: CaseRow, email: EmailRow) -> rules.RuleContext:
    return rules.RuleContext(
        subject=email.subject or "",
        body=email.body_text or "",
        sender=email.from_address or "",
        sender_name=email.from_name or "",
        mailbox=case.mailbox_address,
        to=list(email.to),
        cc=list(email.cc),
        contact=case.contact_id or "",
        priority=case.priority,
        headers=dict(email.headers),
        attributes=dict(case.attributes),
    )


def _load(s: Session, case_id: int) -> tuple[CaseRow, EmailRow]:
    case = s.get(CaseRow, case_id)
    email = s.get(EmailRow, case.source_email_id) if case else None
    if case is None or email is None:
        raise ApplicationError(f"case {case_id} is not in the case store", type="CaseMissing", non_retryable=True)
    return case, email


def _hit_entries(stage: str, hits: list[rules.RuleHit]) -> list[TraceEntry]:
    return [TraceEntry(stage, h.rule, "matched" if h.matched else "not_matched", h.detail) for h in hits]


class Router:
    """Opens, classifies and routes a case in the store. :meth:`route_in` and
    :meth:`route_case` also say whether the case's queue dispatcher must be woken once the
    transaction commits: the caller (an activity) wakes it, as the store reaches no client."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def route_case(self, inp: RouteCaseInput) -> tuple[RoutedCase, bool]:
        """:meth:`route_in` in its own write transaction (the ``route_case`` activity)."""
        with self.store.db.write() as s:
            return self.route_in(s, inp)

    def route_in(self, s: Session, inp: RouteCaseInput) -> tuple[RoutedCase, bool]:
        """Open (or reopen), classify and route inside the caller's transaction ``s``; also
        says whether the queue's dispatcher must be woken once ``s`` commits."""
        if inp.case_id is None:
            ref = open_case(s, self.store, inp.email_id)
        else:
            case = s.get(CaseRow, inp.case_id)
            if case is None or case.id is None or case.number is None:
                raise ApplicationError(
                    f"case {inp.case_id} is not in the case store", type="CaseMissing", non_retryable=True
                )
            ref = CaseRef.of(case, round=inp.round)
        # A case this transaction created has no classify or route steps traced yet.
        self._classify(s, ref.case_id, ref.round, fresh=ref.created)
        decision, wake = self._route(s, ref.case_id, ref.round, fresh=ref.created)
        return RoutedCase(case=ref, decision=decision), wake

    def _classify(self, s: Session, case_id: int, round_: int, *, fresh: bool = False) -> None:
        """Run the workstream's classification rules in order; every matching rule applies."""
        case, email = _load(s, case_id)
        ws = self.store.workstream(case.workstream_id)
        attributes: dict[str, Any]
        attributes, hits = rules.classify(ws.classification_rules, rule_context(case, email))
        priority = Priority(str(attributes.get("priority", case.priority)))
        entries = _hit_entries("classification", hits) or [
            TraceEntry("classification", "-", "none", f"workstream {ws.id} has no classification rules")
        ]
        if add_trace(
            s,
            email_id=case.source_email_id,
            case_id=case.id,
            round_=round_,
            step=f"r{round_}:classify",
            entries=entries,
            new=fresh,
        ):
            case.attributes = attributes
            case.priority, case.priority_rank = priority.value, priority.rank
            case.stage = "classified"
            s.add(case)

    def _route(self, s: Session, case_id: int, round_: int, *, fresh: bool = False) -> tuple[QueueDecision, bool]:
        """First matching route-to-queue rule wins, else the workstream's fallback queue; the
        case waits in that queue, unassigned. Also says whether the queue's dispatcher must
        be woken."""
        step = f"r{round_}:route"
        case, email = _load(s, case_id)
        defs = self.store.definitions()
        ws = defs.workstream(case.workstream_id)
        queue_id, hits = rules.route(
            ws.route_to_queue_rules, ws.fallback_queue, rule_context(case, email), seed=f"email:{case.source_email_id}"
        )
        rule = next((h.rule for h in hits if h.matched), "fallback")
        if defs.version:
            # The rule that decided names the config version it came from: after a live
            # reload, the trace shows which rules routed this case.
            decided = next(h for h in hits if h.matched)
            decided.detail += f" (config v{defs.version})"
        contact = s.get(ContactRow, case.contact_id) if case.contact_id else None
        plan = AssignmentPlan(
            preferred_enabled=ws.preferred_agents.enabled,
            preferred_agents=list(contact.preferred_agents) if contact else [],
            fallback=ws.preferred_agents.fallback,
            offer_timeout_seconds=ws.offer_timeout_seconds,
            alert_waiting_after_seconds=ws.alert_waiting_longer_than,
        )
        straight_to_queue = not (plan.preferred_enabled and plan.preferred_agents) and not case.previous_agent_id
        entries = _hit_entries("queue_routing", hits)
        # Issue 18: overflow before queueing, checked once, here; a rule may turn it off.
        tdefs = time_routing.definitions(self.store)
        route_rule = next((r for r in ws.route_to_queue_rules if r.name == rule), None)
        overflow = route_rule is None or route_rule.overflow
        now = utcnow()
        if overflow:
            queue_id, overflow_entries = time_routing.overflow_before_queueing(s, tdefs, queue_id, case.id, now)
            entries += overflow_entries
        elif any(q.overflow for q in tdefs.queues.values() if q.id == queue_id):
            entries.append(TraceEntry("overflow", queue_id, "disabled", f"rule {rule} turns overflow off"))
        if straight_to_queue:
            queue = s.get(QueueRow, queue_id)
            method = queue.assignment_method if queue else "?"
            entries.append(TraceEntry("assignment", queue_id, "queued", f"waiting for the next best agent ({method})"))
        offer: OfferInfo | None = None
        wake = False
        if add_trace(
            s,
            email_id=case.source_email_id,
            case_id=case.id,
            round_=round_,
            step=step,
            entries=entries,
            new=fresh,
        ):
            case.queue_id = queue_id
            case.status = "queued"
            case.stage = "queued"
            case.queued_at = now
            case.awaiting_dispatch = straight_to_queue
            s.add(case)
            if straight_to_queue:
                offer, wake = offer_on_arrival(s, self.store, case)
        else:  # a retry: report what the first attempt decided
            straight_to_queue = (
                s.exec(
                    select(TraceRow.id).where(
                        TraceRow.email_id == case.source_email_id,
                        TraceRow.step == step,
                        TraceRow.stage == "assignment",
                    )
                ).first()
                is not None
            )
            assert case.queue_id is not None  # set by the attempt that traced the step
            if straight_to_queue:
                offer = arrival_offer(s, self.store, case)
                # The first attempt's signal may not have been sent.
                wake = offer is None and case.awaiting_dispatch and bool(claim_wakes(s, [case.queue_id]))
        assert case.queue_id is not None
        since = case.queued_at or now
        decision = QueueDecision(
            queue_id=case.queue_id,
            rule=rule,
            plan=plan,
            dispatched=straight_to_queue,
            offer=offer,
            in_queue_overflow=(
                time_routing.in_queue_overflow(
                    tdefs, case.queue_id, since if since.tzinfo else since.replace(tzinfo=UTC)
                )
                if overflow
                else None
            ),
        )
        decision.timers = sla.on_route(s, self.store, case, rule_context(case, email))
        return decision, wake
