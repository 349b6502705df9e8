"""``routedesk mailbox list|verify``: routing addresses and their verification."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table
from sqlmodel import col, func, select

from routedesk.cli.common import UserError, console, friendly, open_store, print_json, run
from routedesk.cli.intake import held_emails, signal_release
from routedesk.config import Mailbox
from routedesk.models import EmailRow, ImapPositionRow, MailboxRow
from routedesk.store import as_dict
from routedesk.temporal import connect

app = typer.Typer(no_args_is_help=True, help="Routing addresses (mailboxes).")


@app.command("list")
@friendly
def list_mailboxes(as_json: bool = typer.Option(False, "--json")) -> None:
    """Routing addresses in config order, with their intake options and held mail."""
    store = open_store()
    with store.db.read() as s:
        rows = list(s.exec(select(MailboxRow).order_by(col(MailboxRow.position))).all())
        held = dict(
            s.exec(  # type: ignore[arg-type]
                select(EmailRow.mailbox_address, func.count())
                .where(EmailRow.status == "held")
                .group_by(col(EmailRow.mailbox_address))
            ).all()
        )
        imap: dict[str, list[ImapPositionRow]] = {}
        for pos in s.exec(select(ImapPositionRow).order_by(col(ImapPositionRow.folder))).all():
            imap.setdefault(pos.mailbox_address, []).append(pos)
    data = []
    for r in rows:
        box = Mailbox.model_validate(r.config)
        data.append(
            {
                "address": r.address,
                "name": r.name,
                "workstream": r.workstream_id,
                "verified": r.verified,
                "allow_plus_addressing": box.allow_plus_addressing,
                "accept_from": box.accept_from,
                "unauthorized_sender_action": box.unauthorized_sender_action,
                "acknowledgement": box.acknowledgement.enabled,
                "held": held.get(r.address, 0),
                "imap": [as_dict(p) for p in imap.get(r.address, [])] if box.imap else None,
            }
        )
    if as_json:
        print_json(data)
        return
    table = Table()
    for c in ("address", "workstream", "verified", "accept_from", "unauthorized", "ack", "held", "imap"):
        table.add_column(c)
    for d in data:
        table.add_row(
            str(d["address"]),
            str(d["workstream"]),
            "yes" if d["verified"] else "NO",
            ", ".join(d["accept_from"]) or "anyone",  # type: ignore[arg-type]
            str(d["unauthorized_sender_action"]),
            "on" if d["acknowledgement"] else "off",
            str(d["held"]),
            _imap_state(d["imap"]),  # type: ignore[arg-type]
        )
    console.print(table)
    for d in data:  # why a fetcher is failing, in the server's words
        for p in d["imap"] or []:  # type: ignore[attr-defined]
            if p["status"] in ("login_failed", "error") and p["last_error"]:
                console.print(f"  {d['address']} imap {p['status']}: {p['last_error']}", markup=False, soft_wrap=True)


def _imap_state(positions: list[dict[str, Any]] | None) -> str:
    if positions is None:
        return "-"
    if not positions:
        return "not started"
    p = positions[0]
    note = f", UIDVALIDITY changed {p['uidvalidity_changes']}x" if p["uidvalidity_changes"] else ""
    return f"{p['status']} ({p['folder']}, {p['fetched']} fetched{note})"


@app.command("verify")
@friendly
def verify(address: str = typer.Argument(..., help="The routing address")) -> None:
    """Mark ADDRESS verified and release the emails held for it."""
    address = address.strip().lower()
    store = open_store()

    async def go() -> None:
        client = await connect()  # before changing anything: fail without half a verify
        with store.db.write() as s:
            row = s.get(MailboxRow, address)
            if row is None:
                raise UserError(f"no routing address {address} in {store.db.address}")
            was = row.verified
            row.verified = True
            s.add(row)
        # Held emails are looked up after the commit: an email evaluated concurrently
        # either saw the mailbox verified or is already stored as held and found here.
        held = [e.workflow_id for e, _ in held_emails(store, mailbox=address) if e.workflow_id]
        done, gone = await signal_release(client, held)
        state = "already verified" if was else "verified"
        console.print(f"{address} {state}; released {len(done)} held email(s)")
        for wf in gone:
            console.print(f"  workflow {wf} is no longer running", markup=False)

    run(go())
