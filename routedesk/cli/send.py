"""``routedesk send FILE.eml``: store the email, start its workflow, print the case."""

from __future__ import annotations

from pathlib import Path

import typer

from routedesk.cli.common import UserError, console, friendly, open_store, print_json, run


@friendly
def send(
    file: Path = typer.Argument(..., help="An RFC 5322 message (.eml)"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON"),
    envelope_to: list[str] = typer.Option([], "--to", help="Envelope recipient (repeatable), as Bcc is seen"),
    wait: float = typer.Option(30.0, help="Seconds to wait for the case number"),
) -> None:
    """Submit FILE for routing; the same email sent twice is one workflow and one case."""
    from routedesk.operations import submit_email, wait_for_case
    from routedesk.temporal import connect

    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {file}: {exc.strerror}") from None

    async def go() -> None:
        store = open_store(create=True)
        client = await connect()
        sub = await submit_email(client, store, raw, source="cli", envelope_to=envelope_to)
        status = await wait_for_case(client, sub.workflow_id, timeout=wait)
        if as_json:
            print_json({"workflow_id": sub.workflow_id, "email_id": sub.email_id, **status.model_dump()})
        else:
            console.print(f"workflow {sub.workflow_id}")
            if status.case_number:
                console.print(
                    f"case     {status.case_number} ({status.stage}{', queue ' + status.queue if status.queue else ''})"
                )
            else:
                console.print(f"no case: {status.stage}: {status.reason or ''}".rstrip(": "))
        if not status.case_number and status.stage == "rejected":
            raise typer.Exit(3)

    try:
        run(go())
    except TimeoutError as exc:
        raise UserError(str(exc)) from None
