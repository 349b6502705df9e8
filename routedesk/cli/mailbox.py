"""``routedesk mailbox list|verify``: routing addresses and their verification."""

from __future__ import annotations

import typer
from rich.table import Table

from routedesk import operations as ops
from routedesk.cli.common import actor, console, context, dump, friendly, open_store, print_json, run

app = typer.Typer(no_args_is_help=True, help="Routing addresses (mailboxes).")


@app.command("list")
@friendly
def list_mailboxes(as_json: bool = typer.Option(False, "--json")) -> None:
    """Routing addresses in config order, with their intake options and held mail."""
    store = open_store()
    rows = ops.list_mailboxes(store, actor(store))
    if as_json:
        print_json(dump(rows))
        return
    table = Table()
    for c in ("address", "workstream", "verified", "accept_from", "unauthorized", "ack", "held", "imap"):
        table.add_column(c)
    for d in rows:
        table.add_row(
            d.address,
            d.workstream,
            "yes" if d.verified else "NO",
            ", ".join(d.accept_from) or "anyone",
            d.unauthorized_sender_action,
            "on" if d.acknowledgement else "off",
            str(d.held),
            _imap_state(d.imap),
        )
    console.print(table)
    for d in rows:  # why a fetcher is failing, in the server's words
        for p in d.imap or []:
            if p.failing and p.last_error:
                console.print(f"  {d.address} imap {p.status}: {p.last_error}", markup=False, soft_wrap=True)


def _imap_state(positions: list[ops.ImapStatus] | None) -> str:
    if positions is None:
        return "-"
    if not positions:
        return "not started"
    p = positions[0]
    note = f", UIDVALIDITY changed {p.uidvalidity_changes}x" if p.uidvalidity_changes else ""
    return f"{p.status} ({p.folder}, {p.fetched} fetched{note})"


@app.command("verify")
@friendly
def verify(address: str = typer.Argument(..., help="The routing address")) -> None:
    """Mark ADDRESS verified and release the emails held for it."""
    store = open_store()
    res = run(ops.verify_mailbox(context(store), actor(store), address))
    state = "already verified" if res.already_verified else "verified"
    console.print(f"{res.address} {state}; released {len(res.released)} held email(s)", markup=False)
    for wf in res.gone:
        console.print(f"  workflow {wf} is no longer running", markup=False)
