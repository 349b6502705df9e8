"""The ``routedesk`` command line."""

from __future__ import annotations

from pathlib import Path

import typer

from routedesk.cli import cases, config_cmd, send

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Durable email-to-case routing on Temporal.")
app.command("send")(send.send)
app.add_typer(config_cmd.app, name="config")
app.add_typer(cases.app, name="case")


def main() -> None:
    app(prog_name=Path("routedesk").name)


if __name__ == "__main__":
    main()
