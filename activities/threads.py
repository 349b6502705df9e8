"""Replies: a threaded email joins its case, or reopens it when it was resolved."""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from routedesk.contracts import CaseRef, ThreadDecision, ThreadInput
from routedesk.models import CaseRow, EmailRow
from routedesk.store import Store, TraceEntry, add_trace


class ThreadActivities:
    def __init__(self, store: Store) -> None:
        self.store = store

    @activity.defn(name="thread_reply")
    def thread_reply(self, inp: ThreadInput) -> ThreadDecision:
        """Attach the reply to its case; reopen a resolved case for another routing round.

        Idempotent: the trace step ``reply:<email id>`` marks the decision as made; a retry
        sees it and reports the same decision without reopening twice.
        """
        with self.store.db.write() as s:
            case = s.get(CaseRow, inp.case_id, with_for_update=True)
            email = s.get(EmailRow, inp.email_id)
            if case is None or email is None or case.id is None or case.number is None:
                raise ApplicationError(
                    f"case {inp.case_id} or email {inp.email_id} is missing",
                    type="CaseMissing",
                    non_retryable=True,
                )
            step = f"reply:{inp.email_id}"
            reopened_here = case.workflow_id == inp.workflow_id
            if reopened_here or case.status == "resolved":
                if not reopened_here:
                    previous = case.assigned_agent_id
                    case.round += 1
                    case.previous_agent_id = previous
                    case.assigned_agent_id = None
                    case.assigned_at = None
                    case.resolved_at = None
                    case.status = "new"
                    case.stage = "reopened"
                    case.awaiting_dispatch = False
                    case.excluded_agents = []
                    case.waiting_noted = None
                    case.workflow_id = inp.workflow_id
                    s.add(case)
                why = f"customer replied (email {inp.email_id}) to a resolved case: reopened for round {case.round}" + (
                    f", previous owner {case.previous_agent_id} first" if case.previous_agent_id else ""
                )
                action = "reopen"
            else:
                why = (
                    f"customer replied (email {inp.email_id}): "
                    f"customer_replied signal sent to workflow {case.workflow_id}"
                )
                action = "signal"
            email.case_id = case.id
            s.add(email)
            add_trace(
                s,
                email_id=inp.email_id,
                case_id=case.id,
                round_=case.round,
                step=step,
                entries=[TraceEntry("threading", case.number, action, why)],
            )
            ref = CaseRef(
                case_id=case.id,
                case_number=case.number,
                contact_id=case.contact_id,
                created=False,
                round=case.round,
                previous_agent=case.previous_agent_id if action == "reopen" else None,
            )
            return ThreadDecision(action=action, case=ref, case_workflow_id=case.workflow_id, reason=why)  # type: ignore[arg-type]
