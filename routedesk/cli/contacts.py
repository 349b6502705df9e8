"""``routedesk contact preferred set|clear``."""

from __future__ import annotations

import typer

from routedesk import operations as ops
from routedesk.cli.common import actor, console, friendly, open_store

app = typer.Typer(no_args_is_help=True, help="Contacts and their preferred agents.")
preferred = typer.Typer(no_args_is_help=True, help="A contact's 1 to 3 preferred agents, in offer order.")
app.add_typer(preferred, name="preferred")


@preferred.command("set")
@friendly
def set_(contact: str, agents: list[str] = typer.Argument(..., help="1 to 3 agent ids, in offer order")) -> None:
    """Replace CONTACT's preferred agents (order is the offer order)."""
    store = open_store()
    ops.set_preferred(store, actor(store), contact, agents)
    console.print(f"{contact}: preferred agents {', '.join(agents)}", markup=False)


@preferred.command("clear")
@friendly
def clear(contact: str) -> None:
    """Remove all of CONTACT's preferred agents."""
    store = open_store()
    ops.clear_preferred(store, actor(store), contact)
    console.print(f"{contact}: no preferred agents", markup=False)
