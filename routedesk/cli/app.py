"""The ``routedesk`` command line.

Start-up time matters for the read-only commands (README, *CLI start-up*): a command group's
module is imported, and its Typer commands built, only when that group is asked for
(``routedesk case list`` loads routedesk/cli/cases.py alone); ``routedesk``, ``--help`` or
an unknown name build the whole tree, so help and error messages are those of the full app.
The guard against heavy imports on that path is tests/test_cli.py; the timing is
bench/cli_startup.py's.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Sequence

import typer

HELP = "Durable email-to-case routing on Temporal."


def _group(module: str, attr: str = "app") -> Callable[[typer.Typer, str], None]:
    def add(app: typer.Typer, name: str) -> None:
        app.add_typer(getattr(importlib.import_module(module), attr), name=name)

    return add


def _send(app: typer.Typer, name: str) -> None:
    from routedesk.cli import send

    app.command(name)(send.send)


def _worker(app: typer.Typer, name: str) -> None:
    from routedesk.cli import service

    app.command(name)(service.worker)


def _intake(app: typer.Typer, name: str) -> None:
    from routedesk.cli import intake as intake_cmd
    from routedesk.cli import service

    if all(c.name != "smtp" for c in intake_cmd.app.registered_commands):  # once per process
        intake_cmd.app.command("smtp")(service.intake_smtp)
        intake_cmd.app.command("http")(service.intake_http)
    app.add_typer(intake_cmd.app, name=name)


# Top-level names in the order `routedesk --help` lists them.
COMMANDS: dict[str, Callable[[typer.Typer, str], None]] = {
    "send": _send,
    "config": _group("routedesk.cli.config_cmd"),
    "case": _group("routedesk.cli.cases"),
    "agent": _group("routedesk.cli.agents"),
    "queue": _group("routedesk.cli.queues"),
    "user": _group("routedesk.cli.users"),
    "token": _group("routedesk.cli.users", "token_app"),
    "contact": _group("routedesk.cli.contacts"),
    "mailbox": _group("routedesk.cli.mailbox"),
    "intake": _intake,
    # The service's processes, to run apart (make run runs them together).
    "worker": _worker,
    "temporal": _group("routedesk.cli.service", "temporal_app"),
    "db": _group("routedesk.cli.db"),
}


def _root() -> None:
    pass


def build(argv: Sequence[str] = ()) -> typer.Typer:
    """The Typer app for this command line: only the group ``argv`` names, else every group."""
    app = typer.Typer(no_args_is_help=True, add_completion=False, help=HELP)
    # A group even when it holds one command: Typer would otherwise run a lone `send` or
    # `worker` as the program itself.
    app.callback()(_root)
    first = argv[0] if argv else None
    names = [first] if first in COMMANDS else list(COMMANDS)
    for name in names:
        COMMANDS[name](app, name)
    return app


def main() -> None:
    try:
        build(sys.argv[1:])(prog_name="routedesk")
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
