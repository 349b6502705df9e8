"""``routedesk agent ...``: what agents do: answer offers, set presence, pick work."""

from __future__ import annotations

import typer
from rich.table import Table
from sqlmodel import col, select

from routedesk import settings
from routedesk.assignment import wake
from routedesk.cli.common import UserError, console, friendly, open_store, print_json, run
from routedesk.cli.workflow_calls import update_case
from routedesk.contracts import AssignRequest, RespondRequest
from routedesk.models import OfferRow
from routedesk.store import StoreRefusal, as_dict, set_presence
from routedesk.temporal import connect
from workflows.email_routing import EmailRoutingWorkflow

app = typer.Typer(no_args_is_help=True, help="Agents: answer offers, set presence, pick work.")

AGENT = typer.Option(..., "--agent", "-a", help="Agent id")


@app.command("accept")
@friendly
def accept(case: str, agent: str = AGENT) -> None:
    """Accept the live offer of CASE (an Update: the answer is checked before it is recorded)."""
    console.print(
        run(update_case(case, EmailRoutingWorkflow.respond, RespondRequest(agent_id=agent, decision="accept")))
    )


@app.command("decline")
@friendly
def decline(case: str, agent: str = AGENT, reason: str | None = typer.Option(None, help="Why")) -> None:
    """Decline the live offer of CASE; it goes to the next agent."""
    console.print(
        run(
            update_case(
                case, EmailRoutingWorkflow.respond, RespondRequest(agent_id=agent, decision="decline", reason=reason)
            )
        )
    )


@app.command("pick")
@friendly
def pick(case: str, agent: str = AGENT) -> None:
    """Take CASE from one of the agent's queues."""
    console.print(run(update_case(case, EmailRoutingWorkflow.pick, AssignRequest(agent_id=agent))))


@app.command("presence")
@friendly
def presence(agent: str, state: str = typer.Argument(..., help="Available, Busy, Away or Offline")) -> None:
    """Set the agent's presence; their queues' dispatchers wake to offer waiting work."""

    async def go() -> list[str]:
        store = open_store()
        try:
            queues = set_presence(store, agent, state)
        except StoreRefusal as exc:
            raise UserError(str(exc)) from None
        client = await connect()
        await wake.kick(client, queues, task_queue=settings.task_queue(), id_prefix=settings.id_prefix())
        return queues

    queues = run(go())
    console.print(f"{agent} is now {state.capitalize()} (queues: {', '.join(queues) or 'none'})")


@app.command("offers")
@friendly
def offers(
    agent: str,
    all_offers: bool = typer.Option(False, "--all", help="Include closed offers"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """The agent's live offer (at most one), or every offer with --all."""
    store = open_store()
    with store.db.read() as s:
        q = select(OfferRow).where(OfferRow.agent_id == agent).order_by(col(OfferRow.id).desc())
        if not all_offers:
            q = q.where(OfferRow.status == "live")
        rows = list(s.exec(q.limit(100)).all())
    if as_json:
        print_json([as_dict(r) for r in rows])
        return
    if not rows:
        console.print(f"{agent} holds no live offer")
        return
    table = Table()
    for c in ("offer", "case", "kind", "status", "offered at", "reason"):
        table.add_column(c)
    for r in rows:
        table.add_row(
            str(r.id),
            r.case_number,
            r.kind,
            r.status,
            r.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            r.reason or "",
        )
    console.print(table)
