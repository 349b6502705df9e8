"""``routedesk case show|list``."""

from __future__ import annotations

import typer
from rich.table import Table

from routedesk.cli.common import UserError, console, friendly, open_store, print_json, run
from routedesk.cli.workflow_calls import update_case
from routedesk.contracts import AssignRequest
from routedesk.store import as_dict
from workflows.email_routing import EmailRoutingWorkflow

app = typer.Typer(no_args_is_help=True, help="Inspect and manage cases.")


@app.command("show")
@friendly
def show(
    case: str = typer.Argument(..., help="Case number, e.g. CASE-000123 or 123"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Print the case, its queue and its routing trace."""
    store = open_store()
    row = store.case_by_number(case)
    if row is None:
        raise UserError(f"no case {case} in {store.db.address}")
    trace = store.trace(case_id=row.id)
    if as_json:
        print_json({"case": as_dict(row), "trace": [as_dict(t) for t in trace]})
        return
    console.print(f"[bold]{row.number}[/bold]  {row.subject}")
    fields = [
        ("status", row.status),
        ("queue", row.queue_id or "-"),
        ("assigned to", row.assigned_agent_id or "-"),
        ("priority", row.priority),
        ("origin", row.origin),
        ("mailbox", row.mailbox_address),
        ("contact", row.contact_id or "-"),
        ("attributes", ", ".join(f"{k}={v}" for k, v in row.attributes.items()) or "-"),
        ("workflow", row.workflow_id or "-"),
    ]
    for k, v in fields:
        console.print(f"  {k:<12} {v}", markup=False)
    console.print("routing trace", style="bold")
    for t in trace:
        console.print(
            f"  {t.at.strftime('%H:%M:%S.%f')[:-3]}  {t.stage:<15} {t.subject:<28} {t.outcome:<12} {t.reason}",
            markup=False,
            soft_wrap=True,
        )


@app.command("list")
@friendly
def list_cases(
    queue: str | None = typer.Option(None),
    status: str | None = typer.Option(None),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """List cases, newest first."""
    from sqlmodel import col, select

    from routedesk.models import CaseRow

    store = open_store()
    with store.db.read() as s:
        q = select(CaseRow).order_by(col(CaseRow.id).desc()).limit(200)
        if queue:
            q = q.where(CaseRow.queue_id == queue)
        if status:
            q = q.where(CaseRow.status == status)
        rows = list(s.exec(q).all())
    if as_json:
        print_json([as_dict(r) for r in rows])
        return
    table = Table()
    for c in ("case", "status", "queue", "agent", "priority", "subject"):
        table.add_column(c)
    for r in rows:
        table.add_row(
            r.number or "-",
            r.status,
            r.queue_id or "-",
            r.assigned_agent_id or "-",
            r.priority,
            r.subject[:60],
        )
    console.print(table)


@app.command("assign")
@friendly
def assign(case: str, agent: str = typer.Option(..., "--agent", "-a", help="Agent id")) -> None:
    """Supervisor: assign CASE to AGENT by hand (withdraws any live offer; capacity still holds)."""
    console.print(run(update_case(case, EmailRoutingWorkflow.assign, AssignRequest(agent_id=agent))))


@app.command("resolve")
@friendly
def resolve(case: str) -> None:
    """Close CASE and release its agent's capacity."""
    console.print(run(update_case(case, EmailRoutingWorkflow.resolve)))
