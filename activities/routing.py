"""Stages 3 and 4: classification rules set attributes, route-to-queue rules pick the queue."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlmodel import Session, select
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from routedesk import dispatch, rules
from routedesk.config import Priority
from routedesk.contracts import AssignmentPlan, Classification, QueueDecision, StepInput
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


class RoutingActivities:
    def __init__(self, store: Store, client: Client | None = None) -> None:
        self.store = store
        self.client = client  # wakes queue dispatchers; optional for store-only use

    @activity.defn(name="classify")
    def classify(self, inp: StepInput) -> Classification:
        """Run the workstream's classification rules in order; every matching rule applies.

        The attributes and the trace of this step are written in one transaction; a retry
        finds the step traced and returns the stored attributes unchanged.
        """
        with self.store.db.write() as s:
            case, email = _load(s, inp.case_id)
            ws = self.store.workstream(case.workstream_id)
            attributes: dict[str, Any]
            ctx = rule_context(case, email)
            attributes, hits = rules.classify(ws.classification_rules, ctx)
            priority = Priority(str(attributes.get("priority", case.priority)))
            entries = _hit_entries("classification", hits) or [
                TraceEntry("classification", "-", "none", f"workstream {ws.id} has no classification rules")
            ]
            if add_trace(
                s,
                email_id=case.source_email_id,
                case_id=case.id,
                round_=inp.round,
                step=inp.step,
                entries=entries,
            ):
                case.attributes = attributes
                case.priority, case.priority_rank = priority.value, priority.rank
                case.stage = "classified"
                s.add(case)
            return Classification(
                attributes=case.attributes,
                priority=case.priority,
                matched_rules=[h.rule for h in hits if h.matched],
            )

    @activity.defn(name="route_to_queue")
    async def route_to_queue(self, inp: StepInput) -> QueueDecision:
        """First matching route-to-queue rule wins, else the workstream's fallback queue.

        Puts the case in that queue, unassigned, in the same transaction as the trace. When
        there is no preferred agent to try, the case is handed to the queue's assignment
        method in that transaction too, and the queue's dispatcher is woken.
        """
        decision = await asyncio.to_thread(self._route, inp)
        if decision.dispatched and self.client is not None:
            await dispatch.kick(
                self.client, [decision.queue_id], task_queue=activity.info().task_queue, id_prefix=inp.id_prefix
            )
        return decision

    def _route(self, inp: StepInput) -> QueueDecision:
        with self.store.db.write() as s:
            case, email = _load(s, inp.case_id)
            ws = self.store.workstream(case.workstream_id)
            queue_id, hits = rules.route(ws.route_to_queue_rules, ws.fallback_queue, rule_context(case, email))
            rule = next((h.rule for h in hits if h.matched), "fallback")
            contact = s.get(ContactRow, case.contact_id) if case.contact_id else None
            plan = AssignmentPlan(
                preferred_enabled=ws.preferred_agents.enabled,
                preferred_agents=list(contact.preferred_agents) if contact else [],
                fallback=ws.preferred_agents.fallback,
                offer_timeout_seconds=ws.offer_timeout_seconds,
            )
            straight_to_queue = not (plan.preferred_enabled and plan.preferred_agents) and not case.previous_agent_id
            entries = _hit_entries("queue_routing", hits)
            if straight_to_queue:
                queue = s.get(QueueRow, queue_id)
                method = queue.assignment_method if queue else "?"
                entries.append(
                    TraceEntry("assignment", queue_id, "queued", f"waiting for the next best agent ({method})")
                )
            if add_trace(
                s,
                email_id=case.source_email_id,
                case_id=case.id,
                round_=inp.round,
                step=inp.step,
                entries=entries,
            ):
                case.queue_id = queue_id
                case.status = "queued"
                case.stage = "queued"
                case.queued_at = utcnow()
                case.awaiting_dispatch = straight_to_queue
                s.add(case)
            else:  # a retry: report what the first attempt decided
                straight_to_queue = (
                    s.exec(
                        select(TraceRow.id).where(
                            TraceRow.email_id == case.source_email_id,
                            TraceRow.step == inp.step,
                            TraceRow.stage == "assignment",
                        )
                    ).first()
                    is not None
                )
            assert case.queue_id is not None
            return QueueDecision(queue_id=case.queue_id, rule=rule, plan=plan, dispatched=straight_to_queue)
