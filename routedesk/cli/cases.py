"""``routedesk case list|show|emails|assign|resolve|reply|wait``."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from routedesk import views
from routedesk.cli.common import (
    UserError,
    actor,
    console,
    context,
    dump,
    friendly,
    open_store,
    print_json,
    read_view,
    run,
)

if TYPE_CHECKING:
    from routedesk.auth import Actor
    from routedesk.store import Store
from routedesk.contracts import CASE_STATUSES

app = typer.Typer(no_args_is_help=True, help="Inspect and manage cases.")


@app.command("show")
@friendly
def show(
    case: str = typer.Argument(..., help="Case number, e.g. CASE-000123 or 123"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Print the case, its emails (with text), its offers and its routing trace."""

    def full(store: Store, who: Actor) -> views.CaseDetail:
        from routedesk import operations as ops

        return ops.show_case(store, who, case)

    d = read_view(lambda r: views.show_case(r, case, views.now(), views.stored_offer_timeouts(r)), full)
    if as_json:
        print_json(dump(d))
        return
    c = d.case
    console.print(f"[bold]{c.number}[/bold]  {c.subject}", soft_wrap=True)
    fields = [
        ("status", c.status.value),
        ("queue", c.queue_id or "-"),
        ("assigned to", c.assigned_agent_id or "-"),
        ("priority", c.priority),
        ("origin", d.origin),
        ("mailbox", d.mailbox),
        ("contact", c.contact_id or "-"),
        ("attributes", ", ".join(f"{k}={v}" for k, v in d.attributes.items()) or "-"),
        ("workflow", d.workflow_id or "-"),
    ]
    for k, v in fields:
        console.print(f"  {k:<12} {v}", markup=False)
    _print_sla(d.sla)
    _print_emails(d.emails)
    if d.offers:
        console.print("offers", style="bold")
        for o in d.offers:
            left = f", {o.seconds_left:.0f}s left" if o.seconds_left is not None else ""
            console.print(
                f"  {o.offered_at.strftime('%H:%M:%S')}  {o.agent_id:<12} {o.kind:<10} {o.status}{left}"
                f"{': ' + o.reason if o.reason else ''}",
                markup=False,
                soft_wrap=True,
            )
    _print_replies(d.replies)
    console.print("routing trace", style="bold")
    for t in d.trace:
        console.print(
            f"  {t.at.strftime('%H:%M:%S.%f')[:-3]}  {t.stage:<15} {t.subject:<28} {t.outcome:<12} {t.reason}",
            markup=False,
            soft_wrap=True,
        )


def _print_emails(emails: list[views.EmailText]) -> None:
    console.print(f"emails ({len(emails)})", style="bold")
    for e in emails:
        who = f"{e.from_name} <{e.from_address}>" if e.from_name else (e.from_address or "-")
        console.print(
            f"  #{e.email_id} {e.kind:<5} {e.received_at.strftime('%Y-%m-%d %H:%M:%S')}  {who}  {e.subject or ''}",
            markup=False,
            soft_wrap=True,
        )
        for line in (e.text.strip() or "(no text)").splitlines():
            console.print(f"      {line}", markup=False, soft_wrap=True)


@app.command("emails")
@friendly
def emails(case: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """The case's first email and every customer reply, with their text."""

    def full(store: Store, who: Actor) -> list[views.EmailText]:
        from routedesk import operations as ops

        return ops.case_emails(store, who, case)

    rows = read_view(lambda r: views.case_emails(r, views.find_case(r, case)), full)
    if as_json:
        print_json(dump(rows))
        return
    _print_emails(rows)


@app.command("list")
@friendly
def list_cases(
    agent: str | None = typer.Option(None, help="Assigned to this agent"),
    queue: str | None = typer.Option(None),
    status: str | None = typer.Option(None, help=", ".join(s.value for s in CASE_STATUSES)),
    limit: int = typer.Option(200, min=1, max=1000),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """List cases, newest first."""
    flt = views.CaseFilter(agent=agent, queue=queue, status=status, limit=limit)

    def full(store: Store, who: Actor) -> list[views.CaseSummary]:
        from routedesk import operations as ops

        return ops.list_cases(store, who, flt)

    rows = read_view(lambda r: views.list_cases(r, flt), full)
    if as_json:
        print_json(dump(rows))
        return
    table = Table()
    for c in ("case", "status", "queue", "agent", "priority", "subject"):
        table.add_column(c)
    for r in rows:
        table.add_row(
            r.number, r.status.value, r.queue_id or "-", r.assigned_agent_id or "-", r.priority, r.subject[:60]
        )
    console.print(table)


@app.command("assign")
@friendly
def assign(case: str, agent: str = typer.Option(..., "--agent", "-a", help="Agent id")) -> None:
    """Supervisor: assign CASE to AGENT by hand (withdraws any live offer; capacity still holds)."""
    from routedesk import operations as ops

    store = open_store()
    console.print(run(ops.assign(context(store), actor(store), case, agent)).message, markup=False)


@app.command("resolve")
@friendly
def resolve(case: str) -> None:
    """Close CASE and release its agent's capacity."""
    from routedesk import operations as ops

    store = open_store()
    console.print(run(ops.resolve(context(store), actor(store), case)).message, markup=False)


def _print_replies(replies: list[views.CaseReplyView]) -> None:
    if not replies:
        return
    console.print(f"replies ({len(replies)})", style="bold")
    for r in replies:
        who = f"{r.agent_id}{' (supervisor)' if r.by_supervisor else ''}"
        console.print(
            f"  #{r.reply_id:<4} {r.created_at.strftime('%Y-%m-%d %H:%M:%S')}  {who:<20} {r.status:<8} "
            f"to {r.to}  <{r.message_id}>" + (f"  {r.reason}" if r.reason else ""),
            markup=False,
            soft_wrap=True,
        )
        for line in r.body.strip().splitlines():
            console.print(f"      {line}", markup=False, soft_wrap=True)


# How long `case reply` waits to report "sent": a relay answers in well under a second; a
# slow or failing one must not hold the agent's terminal (delivery goes on regardless).
REPLY_WAIT_SECONDS = 3.0


@app.command("reply")
@friendly
def reply(
    case: str = typer.Argument(..., help="Case number, e.g. CASE-000123 or 123"),
    agent: str | None = typer.Option(
        None, "--agent", "-a", help="The agent who writes: the case's assigned agent (default: your token's agent)"
    ),
    body: str | None = typer.Option(None, "--body", help="The reply's text"),
    file: Path | None = typer.Option(None, "--file", help="A file with the reply's text (- reads standard input)"),
    as_supervisor: bool = typer.Option(False, "--as-supervisor", help="Reply in your own name, as a supervisor"),
    request_key: str | None = typer.Option(None, "--request-key", help="Idempotency key: the same key is one reply"),
) -> None:
    """Write to the customer of CASE from the case's mailbox, threaded with the case."""
    from routedesk import operations as ops

    if (body is None) == (file is None):
        raise UserError("give the reply's text with exactly one of --body TEXT or --file PATH")
    if file is not None:
        try:
            text = sys.stdin.read() if str(file) == "-" else file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read the reply from {file}: {exc}") from None
    else:
        text = body or ""
    store = open_store()
    who = actor(store)
    if agent is None and not as_supervisor and who.agent_id is None:
        raise UserError("name the agent who replies (--agent A), or reply as a supervisor (--as-supervisor)")
    req = ops.ReplyRequest(body=text, agent_id=agent, as_supervisor=as_supervisor, request_key=request_key)
    queued = run(ops.reply_to_case(context(store), who, case, req))
    status, reason = queued.status, None
    deadline = time.monotonic() + REPLY_WAIT_SECONDS
    while status == "queued" and time.monotonic() < deadline:
        time.sleep(0.1)  # bounded: the deadline above ends the wait
        shown = [r for r in ops.case_replies(store, who, queued.case) if r.reply_id == queued.reply_id]
        if shown:
            status, reason = shown[0].status, shown[0].reason
    line = f"{queued.case}: reply #{queued.reply_id} to {queued.to} {status} (Message-ID <{queued.message_id}>)"
    if status == "queued":
        line += f"; the relay is being retried, `routedesk case show {queued.case}` shows when it goes out"
    elif status != "sent":
        line += f": {reason}"
    console.print(line, markup=False, soft_wrap=True)


@app.command("wait")
@friendly
def wait(
    case: str,
    on: bool = typer.Option(..., "--on/--off", help="The case waits on the customer (SLA timers pause), or not"),
) -> None:
    """Mark CASE as waiting on the customer (--on) or not (--off); a customer reply ends it."""
    from routedesk import operations as ops

    store = open_store()
    console.print(run(ops.set_waiting_on_customer(context(store), actor(store), case, on)).message, markup=False)


def _print_sla(sla: dict[str, object] | None) -> None:
    if not sla:
        return
    paused = " (paused: waiting on the customer)" if sla.get("paused") else ""
    rows = [
        ("sla policy", f"{sla.get('policy') or '-'}{paused}"),
        (
            "first resp.",
            f"due {sla.get('first_response_due') or '-'}"
            + (f", met {sla['first_response_met_at']}" if sla.get("first_response_met_at") else ""),
        ),
        ("resolution", f"due {sla.get('resolution_due') or '-'}"),
    ]
    if sla.get("waiting_on_customer_since"):
        rows.append(("waiting", f"on the customer since {sla['waiting_on_customer_since']}"))
    breaches = sla.get("breaches") or []
    assert isinstance(breaches, list)
    rows.append(("breaches", ", ".join(f"{b['target']} {b['kind']} at {b['at']}" for b in breaches) or "none"))
    for k, v in rows:
        console.print(f"  {k:<12} {v}", markup=False)
