"""``routedesk intake list|held|release|show``: what intake did with each email, and why."""

from __future__ import annotations

import base64
import getpass
import hashlib
from collections.abc import Iterable
from typing import Annotated

import typer
from rich.table import Table
from sqlmodel import col, select
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from routedesk.cli.common import UserError, console, friendly, open_store, print_json, run
from routedesk.models import EmailRow, IntakeHoldRow, NotificationRow, utcnow
from routedesk.store import Store, StoreRefusal, as_dict
from routedesk.temporal import connect
from workflows.email_routing import EmailRoutingWorkflow

app = typer.Typer(no_args_is_help=True, help="Inspect intake: held, ignored and rejected email.")


async def signal_release(client: Client, workflow_ids: Iterable[str]) -> tuple[list[str], list[str]]:
    """Send ``release`` to each workflow; returns (signalled, no longer running)."""
    done: list[str] = []
    gone: list[str] = []
    for wf_id in workflow_ids:
        try:
            await client.get_workflow_handle_for(EmailRoutingWorkflow.run, wf_id).signal(EmailRoutingWorkflow.release)
            done.append(wf_id)
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise UserError(f"cannot signal workflow {wf_id}: {exc.message}") from None
            gone.append(wf_id)
    return done, gone


def held_emails(store: Store, *, mailbox: str | None = None) -> list[tuple[EmailRow, IntakeHoldRow | None]]:
    with store.db.read() as s:
        q = select(EmailRow).where(EmailRow.status == "held").order_by(col(EmailRow.id))
        if mailbox is not None:
            q = q.where(EmailRow.mailbox_address == mailbox)
        emails = list(s.exec(q).all())
        return [(e, s.get(IntakeHoldRow, e.id)) for e in emails]


@app.command("held")
@friendly
def held(as_json: bool = typer.Option(False, "--json")) -> None:
    """List held emails (unverified mailbox, sender over the rate limit) and why."""
    store = open_store()
    rows = held_emails(store)
    if as_json:
        print_json(
            [
                {
                    "email_id": e.id,
                    "received_at": e.received_at,
                    "sender": e.from_address,
                    "mailbox": e.mailbox_address,
                    "subject": e.subject,
                    "hold": h.kind if h else None,
                    "reason": e.reason,
                    "workflow_id": e.workflow_id,
                }
                for e, h in rows
            ]
        )
        return
    if not rows:
        console.print("no held emails")
        return
    table = Table()
    for c in ("email", "received", "sender", "mailbox", "hold", "subject"):
        table.add_column(c)
    for e, h in rows:
        table.add_row(
            str(e.id),
            e.received_at.strftime("%Y-%m-%d %H:%M:%S"),
            e.from_address or "-",
            e.mailbox_address or "-",
            h.kind if h else "-",
            (e.subject or "")[:50],
        )
    console.print(table)
    for e, _ in rows:
        console.print(f"  {e.id}: {e.reason}", markup=False, soft_wrap=True)


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

    async def go() -> None:
        client = await connect()  # before changing anything: fail without half a release
        rows = held_emails(store)
        chosen = [
            e
            for e, _ in rows
            if release_all
            or (email_ids and e.id in email_ids)
            or (sender and (e.from_address or "") == sender.strip().lower())
        ]
        missing = sorted(set(email_ids or []) - {e.id for e in chosen})
        if missing:
            raise UserError(f"not held: email {', '.join(map(str, missing))}")
        by = f"{getpass.getuser()} (routedesk intake release)"
        with store.db.write() as s:
            for e in chosen:
                hold = s.get(IntakeHoldRow, e.id)
                if hold is not None:
                    hold.released_at, hold.released_by = utcnow(), by
                    s.add(hold)
        done, gone = await signal_release(client, [e.workflow_id for e in chosen if e.workflow_id])
        console.print(f"released {len(done)} held email(s)")
        for wf in gone:
            console.print(f"  workflow {wf} is no longer running", markup=False)

    run(go())


@app.command("reprocess")
@friendly
def reprocess(
    email_id: Annotated[int, typer.Argument(help="A rejected, ignored or held email (see `routedesk intake list`)")],
    envelope_to: list[str] = typer.Option([], "--to", help="Add an envelope recipient (repeatable)"),
    wait: float = typer.Option(30.0, help="Seconds to wait for the new decision"),
) -> None:
    """Evaluate an email again with the configuration as it is now; routed like new mail."""
    from routedesk.operations import reprocess_email, wait_for_case

    store = open_store()

    async def go() -> None:
        client = await connect()  # before changing anything
        by = f"{getpass.getuser()} (routedesk intake reprocess)"
        try:
            plan = await reprocess_email(client, store, email_id, envelope_to=envelope_to, by=by)
        except StoreRefusal as exc:
            raise UserError(str(exc)) from None
        status = await wait_for_case(client, plan.workflow_id, timeout=wait)
        console.print(f"workflow {plan.workflow_id}", markup=False)
        if status.case_number:
            queue = f", queue {status.queue}" if status.queue else ""
            console.print(f"case     {status.case_number} ({status.stage}{queue})", markup=False)
        else:
            console.print(f"no case: {status.stage}: {status.reason or ''}".rstrip(": "), markup=False)

    try:
        run(go())
    except TimeoutError as exc:
        raise UserError(str(exc)) from None


@app.command("list")
@friendly
def list_emails(
    status: str | None = typer.Option(None, help="received, accepted, threaded, rejected, ignored or held"),
    limit: int = typer.Option(50),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Recent emails, newest first, with what intake decided and why."""
    store = open_store()
    with store.db.read() as s:
        q = select(EmailRow).order_by(col(EmailRow.id).desc()).limit(limit)
        if status:
            q = q.where(EmailRow.status == status)
        rows = list(s.exec(q).all())
    if as_json:
        print_json([_summary(e) for e in rows])
        return
    table = Table()
    for c in ("email", "source", "status", "seen", "sender", "mailbox", "case", "reason"):
        table.add_column(c)
    for e in rows:
        table.add_row(
            str(e.id),
            e.source,
            e.status,
            f"{e.deliveries}x" if e.deliveries > 1 else "1",
            e.from_address or "-",
            e.mailbox_address or "-",
            str(e.case_id or "-"),
            (e.reason or "")[:80],
        )
    console.print(table)


def _summary(e: EmailRow) -> dict[str, object]:
    return {
        "email_id": e.id,
        "source": e.source,
        "status": e.status,
        "reason": e.reason,
        "sender": e.from_address,
        "mailbox": e.mailbox_address,
        "subject": e.subject,
        "case_id": e.case_id,
        "received_at": e.received_at,
        "deliveries": e.deliveries,
        "last_delivered_at": e.last_delivered_at,
        "reprocessed": e.reprocessed,
        "workflow_id": e.workflow_id,
    }


def _email_json(e: EmailRow, *, raw_base64: bool) -> dict[str, object]:
    """The stored email as JSON: the raw bytes are often not UTF-8, so never as text."""
    data: dict[str, object] = e.model_dump(mode="json", exclude={"raw", "body_text"})
    data["raw_size"] = len(e.raw)
    data["raw_sha256"] = hashlib.sha256(e.raw).hexdigest()
    if raw_base64:
        data["raw_base64"] = base64.b64encode(e.raw).decode("ascii")
    return data


@app.command("show")
@friendly
def show(
    email_id: int,
    as_json: bool = typer.Option(False, "--json"),
    raw_base64: bool = typer.Option(
        False, "--raw-base64", help="With --json: include the raw message, base64-encoded, as raw_base64"
    ),
) -> None:
    """One email: what intake decided, its attachments, replies sent, and its trace."""
    if raw_base64 and not as_json:
        raise UserError("--raw-base64 goes with --json")
    store = open_store()
    with store.db.read() as s:
        e = s.get(EmailRow, email_id)
        if e is None:
            raise UserError(f"no email {email_id} in {store.db.address}")
        notes = list(s.exec(select(NotificationRow).where(NotificationRow.email_id == email_id)).all())
        hold = s.get(IntakeHoldRow, email_id)
    trace = store.trace(email_id=email_id)
    if as_json:
        print_json(
            {
                "email": _email_json(e, raw_base64=raw_base64),
                "hold": as_dict(hold) if hold else None,
                "notifications": [as_dict(n) for n in notes],
                "trace": [as_dict(t) for t in trace],
            }
        )
        return
    console.print(f"[bold]email {e.id}[/bold]  {e.subject or '(no subject)'}")
    for k, v in [
        ("status", e.status),
        ("reason", e.reason or "-"),
        ("from", f"{e.from_name or ''} <{e.from_address or '-'}>".strip()),
        ("to", ", ".join(e.to) or "-"),
        ("cc", ", ".join(e.cc) or "-"),
        ("envelope", ", ".join(e.envelope_to) or "-"),
        ("mailbox", e.mailbox_address or "-"),
        ("case", str(e.case_id or "-")),
        ("source", e.source),
        ("message-id", e.message_id or "-"),
        ("size", f"{e.size} bytes"),
        ("workflow", e.workflow_id or "-"),
    ]:
        console.print(f"  {k:<11} {v}", markup=False, soft_wrap=True)
    if hold:
        console.print(f"  {'hold':<11} {hold.kind}, released: {hold.released_by or 'no'}", markup=False)
    for a in e.attachments:
        console.print(
            f"  attachment  {a.get('filename') or '(unnamed)'}  {a.get('content_type')}  {a.get('size')} bytes",
            markup=False,
        )
    for d in e.defects:
        console.print(f"  defect      {d}", markup=False, soft_wrap=True)
    for n in notes:
        console.print(
            f"  {n.kind:<11} to {n.to_address}: {n.status} {n.reason or ''}",
            markup=False,
            soft_wrap=True,
        )
    for t in trace:
        console.print(
            f"  {t.at.strftime('%H:%M:%S')}  {t.stage:<15} {t.outcome:<10} {t.reason}",
            markup=False,
            soft_wrap=True,
        )


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
