"""``routedesk intake list|held|release|show``: what intake did with each email, and why."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from routedesk import operations as ops
from routedesk.cli.common import UserError, actor, console, context, dump, friendly, open_store, print_json, run

app = typer.Typer(no_args_is_help=True, help="Inspect intake: held, ignored and rejected email.")


@app.command("held")
@friendly
def held(as_json: bool = typer.Option(False, "--json")) -> None:
    """List held emails (unverified mailbox, sender over the rate limit) and why."""
    store = open_store()
    rows = ops.held_emails(store, actor(store))
    if as_json:
        print_json(dump(rows))
        return
    if not rows:
        console.print("no held emails")
        return
    table = Table()
    for c in ("email", "received", "sender", "mailbox", "hold", "subject"):
        table.add_column(c)
    for e in rows:
        table.add_row(
            str(e.email_id),
            e.received_at.strftime("%Y-%m-%d %H:%M:%S"),
            e.sender or "-",
            e.mailbox or "-",
            e.hold or "-",
            (e.subject or "")[:50],
        )
    console.print(table)
    for e in rows:
        console.print(f"  {e.email_id}: {e.reason}", markup=False, soft_wrap=True)


@app.command("release")
@friendly
def release(
    email_ids: Annotated[list[int] | None, typer.Argument(help="Held email ids (see `routedesk intake held`)")] = None,
    sender: str | None = typer.Option(None, help="Release every held email from this sender"),
    release_all: bool = typer.Option(False, "--all", help="Release every held email"),
) -> None:
    """Release held emails by hand: they are routed even if over the rate limit."""
    if not email_ids and not sender and not release_all:
        raise UserError("name email ids, --sender ADDRESS or --all")
    store = open_store()
    req = ops.ReleaseRequest(email_ids=email_ids or [], sender=sender, all=release_all)
    res = run(ops.release_emails(context(store), actor(store), req))
    console.print(f"released {len(res.signalled)} held email(s)")
    for wf in res.gone:
        console.print(f"  workflow {wf} is no longer running", markup=False)


@app.command("reprocess")
@friendly
def reprocess(
    email_id: Annotated[int, typer.Argument(help="A rejected, ignored or held email (see `routedesk intake list`)")],
    envelope_to: list[str] = typer.Option([], "--to", help="Add an envelope recipient (repeatable)"),
    wait: float = typer.Option(30.0, help="Seconds to wait for the new decision"),
) -> None:
    """Evaluate an email again with the configuration as it is now; routed like new mail."""
    store = open_store()
    try:
        res = run(ops.reprocess(context(store), actor(store), email_id, envelope_to=envelope_to, wait=wait))
    except TimeoutError as exc:
        raise UserError(str(exc)) from None
    console.print(f"workflow {res.workflow_id}", markup=False)
    status = res.status
    if status is None:
        return
    if status.case_number:
        queue = f", queue {status.queue}" if status.queue else ""
        console.print(f"case     {status.case_number} ({status.stage}{queue})", markup=False)
    else:
        console.print(f"no case: {status.stage}: {status.reason or ''}".rstrip(": "), markup=False)


@app.command("list")
@friendly
def list_emails(
    status: str | None = typer.Option(None, help=", ".join(ops.EMAIL_STATUSES)),
    limit: int = typer.Option(50),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Recent emails, newest first, with what intake decided and why."""
    store = open_store()
    rows = ops.list_emails(store, actor(store), status=status, limit=limit)
    if as_json:
        print_json(dump(rows))
        return
    table = Table()
    for c in ("email", "source", "status", "seen", "sender", "mailbox", "case", "reason"):
        table.add_column(c)
    for e in rows:
        table.add_row(
            str(e.email_id),
            e.source,
            e.status,
            f"{e.deliveries}x" if e.deliveries > 1 else "1",
            e.sender or "-",
            e.mailbox or "-",
            e.case_number or "-",
            (e.reason or "")[:80],
        )
    console.print(table)


@app.command("show")
@friendly
def show(
    email_id: int,
    as_json: bool = typer.Option(False, "--json"),
    raw_base64: bool = typer.Option(
        False, "--raw-base64", help="With --json: include the raw message, base64-encoded, as raw_base64"
    ),
) -> None:
    """One email: what intake decided, its text, attachments, replies sent, and its trace."""
    if raw_base64 and not as_json:
        raise UserError("--raw-base64 goes with --json")
    store = open_store()
    d = ops.show_email(store, actor(store), email_id, raw_base64=raw_base64)
    if as_json:
        email = {k: v for k, v in d.email.items() if k != "body_text"}
        print_json({"email": email, "hold": d.hold, "notifications": d.notifications, "trace": d.trace})
        return
    e = d.email
    console.print(f"[bold]email {e['id']}[/bold]  {e['subject'] or '(no subject)'}")
    for k, v in [
        ("status", e["status"]),
        ("reason", e["reason"] or "-"),
        ("from", f"{e['from_name'] or ''} <{e['from_address'] or '-'}>".strip()),
        ("to", ", ".join(e["to"]) or "-"),
        ("cc", ", ".join(e["cc"]) or "-"),
        ("envelope", ", ".join(e["envelope_to"]) or "-"),
        ("mailbox", e["mailbox_address"] or "-"),
        ("case", str(e["case_id"] or "-")),
        ("source", e["source"]),
        ("message-id", e["message_id"] or "-"),
        ("size", f"{e['size']} bytes"),
        ("workflow", e["workflow_id"] or "-"),
    ]:
        console.print(f"  {k:<11} {v}", markup=False, soft_wrap=True)
    if d.hold:
        console.print(f"  {'hold':<11} {d.hold['kind']}, released: {d.hold['released_by'] or 'no'}", markup=False)
    for a in e["attachments"]:
        console.print(
            f"  attachment  {a.get('filename') or '(unnamed)'}  {a.get('content_type')}  {a.get('size')} bytes",
            markup=False,
        )
    for defect in e["defects"]:
        console.print(f"  defect      {defect}", markup=False, soft_wrap=True)
    for n in d.notifications:
        console.print(
            f"  {n['kind']:<11} to {n['to_address']}: {n['status']} {n['reason'] or ''}",
            markup=False,
            soft_wrap=True,
        )
    for t in d.trace:
        console.print(
            f"  {t['at'][11:19]}  {t['stage']:<15} {t['outcome']:<10} {t['reason']}",
            markup=False,
            soft_wrap=True,
        )
    if e.get("body_text"):
        console.print("  text", markup=False)
        for line in e["body_text"].strip().splitlines():
            console.print(f"      {line}", markup=False, soft_wrap=True)


@app.command("imap")
@friendly
def imap(
    mailboxes: Annotated[
        list[str] | None, typer.Option("--mailbox", help="Only this routing address (repeatable)")
    ] = None,
) -> None:
    """Fetch mail from the IMAP folders of the loaded config's mailboxes until Ctrl-C or SIGTERM."""
    import logging

    from starter.imap import serve_imap

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    store = open_store()
    try:
        code = run(serve_imap(store, mailboxes))
    except LookupError as exc:
        raise UserError(str(exc)) from None
    raise typer.Exit(code)
