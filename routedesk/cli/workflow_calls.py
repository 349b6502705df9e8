"""Calls from the CLI into a case's routing workflow (updates), with one-line failures."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sqlmodel import select
from temporalio.client import WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from routedesk.cli.common import UserError, open_store
from routedesk.models import CaseRow, OfferRow
from routedesk.store import Store
from routedesk.temporal import connect

OFFER_PROPAGATION_SECONDS = 3.0


def find_case(store: Store, number: str) -> CaseRow:
    case = store.case_by_number(number)
    if case is None:
        raise UserError(f"no case {number} in {store.db.address}")
    if not case.workflow_id:
        raise UserError(f"{case.number} has no routing workflow")
    return case


def _live_offer_in_store(store: Store, case_id: int | None, agent_id: str) -> bool:
    with store.db.read() as s:
        row = s.exec(
            select(OfferRow).where(
                OfferRow.case_id == case_id,
                OfferRow.agent_id == agent_id,
                OfferRow.status == "live",
            )
        ).first()
        return row is not None


async def update_case(number: str, update: str, arg: Any | None = None) -> str:
    """Run ``update`` on the case's workflow and return its result, or raise a UserError."""
    store = open_store()
    case = find_case(store, number)
    client = await connect()
    handle = client.get_workflow_handle(case.workflow_id or "")
    args = [] if arg is None else [arg]
    # The store shows a new offer the moment it commits; the workflow hears of it a moment
    # later. An agent answering in between is retried briefly instead of refused.
    deadline = time.monotonic() + OFFER_PROPAGATION_SECONDS
    while True:
        try:
            result: str = await handle.execute_update(update, args=args, result_type=str)
            return result
        except WorkflowUpdateFailedError as exc:
            cause = exc.cause
            message = getattr(cause, "message", None) or str(cause)
            agent_id = getattr(arg, "agent_id", None)
            racing = update == "respond" and agent_id and _live_offer_in_store(store, case.id, agent_id)
            if not racing or time.monotonic() > deadline:
                raise UserError(message) from None
            await asyncio.sleep(0.1)
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                raise UserError(f"{case.number}: its routing workflow {case.workflow_id} is not running") from None
            raise UserError(f"{case.number}: {exc.message}") from None
