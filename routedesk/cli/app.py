"""The ``routedesk`` command line."""

from __future__ import annotations

import os
import sys

import typer

from routedesk.cli import agents, cases, config_cmd, contacts, queues, send, service, users
from routedesk.cli import db as db_cmd
from routedesk.cli import intake as intake_cmd
from routedesk.cli import mailbox as mailbox_cmd

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Durable email-to-case routing on Temporal.")
app.command("send")(send.send)
app.add_typer(config_cmd.app, name="config")
app.add_typer(cases.app, name="case")
app.add_typer(agents.app, name="agent")
app.add_typer(queues.app, name="queue")
app.add_typer(users.app, name="user")
app.add_typer(users.token_app, name="token")
app.add_typer(contacts.app, name="contact")
app.add_typer(mailbox_cmd.app, name="mailbox")
app.add_typer(intake_cmd.app, name="intake")
# The service's processes, to run apart (make run runs them together).
app.command("worker")(service.worker)
intake_cmd.app.command("smtp")(service.intake_smtp)
intake_cmd.app.command("http")(service.intake_http)
app.add_typer(service.temporal_app, name="temporal")
app.add_typer(db_cmd.app, name="db")


def main() -> None:
    try:
        app(prog_name="routedesk")
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter shutdown: once a Temporal client existed, its runtime threads can abort
    # the process while Python tears down (temporalio/sdk-python#300), turning a clean exit
    # code into SIGABRT.
    os._exit(code)


if __name__ == "__main__":
    main()
