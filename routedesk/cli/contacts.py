"""``routedesk contact preferred set|clear``."""

from __future__ import annotations

import typer

from routedesk.cli.common import UserError, console, friendly, open_store
from routedesk.store import StoreRefusal, clear_preferred_agents, set_preferred_agents

app = typer.Typer(no_args_is_help=True, help="Contacts and their preferred agents.")
preferred = typer.Typer(no_args_is_help=True, help="A contact's 1 to 3 preferred agents, in offer order.")
app.add_typer(preferred, name="preferred")


@preferred.command("set")
@friendly
def set_(contact: str, agents: list[str] = typer.Argument(..., help="1 to 3 agent ids, in offer order")) -> None:
    """Replace CONTACT's preferred agents (order is the offer order)."""
    try:
        set_preferred_agents(open_store(), contact, agents)
    except StoreRefusal as exc:
        raise UserError(str(exc)) from None
    console.print(f"{contact}: preferred agents {', '.join(agents)}")


@preferred.command("clear")
@friendly
def clear(contact: str) -> None:
    """Remove all of CONTACT's preferred agents."""
    try:
        clear_preferred_agents(open_store(), contact)
    except StoreRefusal as exc:
        raise UserError(str(exc)) from None
    console.print(f"{contact}: no preferred agents")
