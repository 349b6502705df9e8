"""Calls from the CLI into a case's routing workflow (updates), with one-line failures."""

from __future__ import annotations

from typing import Any

from temporalio.client import WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from routedesk.cli.common import UserError, open_store
from routedesk.models import CaseRow
from routedesk.store import Store
from routedesk.temporal import connect
from workflows.email_routing import EmailRoutingWorkflow


def find_case(store: Store, number: str) -> CaseRow:
    case = store.case_by_number(number)
    if case is None:
        raise UserError(f"no case {number} in {store.db.address}")
    if not case.workflow_id:
        raise UserError(f"{case.number} has no routing workflow")
    return case


async def update_case(number: str, update: Any, arg: Any | None = None) -> str:
    """Run ``update`` (a method of :class:`EmailRoutingWorkflow`) on the case's workflow and
    return its result, or raise a UserError with the workflow's reason.

    An answer that reaches the workflow a moment before the offer it answers (the store
    shows an offer first) waits for it in the workflow; nothing is retried here.
    """
    store = open_store()
    case = find_case(store, number)
    client = await connect()
    handle = client.get_workflow_handle_for(EmailRoutingWorkflow.run, case.workflow_id or "")
    try:
        result: str = await (handle.execute_update(update) if arg is None else handle.execute_update(update, arg))
        return result
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        raise UserError(getattr(cause, "message", None) or str(cause)) from None
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise UserError(f"{case.number}: its routing workflow {case.workflow_id} is not running") from None
        raise UserError(f"{case.number}: {exc.message}") from None
