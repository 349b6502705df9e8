"""``routedesk user add|list|passwd`` and ``routedesk token create``: who may use the HTTP API
and the console."""

from __future__ import annotations

import typer
from rich.table import Table

from routedesk import auth
from routedesk.cli.common import UserError, actor, console, friendly, open_store

app = typer.Typer(no_args_is_help=True, help="Users of the HTTP API and their roles.")
token_app = typer.Typer(no_args_is_help=True, help="API tokens (shown once, stored hashed).")


@app.command("add")
@friendly
def add(
    name: str,
    role: str = typer.Option(..., "--role", help="agent, supervisor or admin"),
    agent: str | None = typer.Option(None, "--agent", help="For --role agent: the agent id they act for"),
) -> None:
    """Add (or change) user NAME with ROLE; an agent user names the agent they are."""
    store = open_store(create=True)
    who = actor(store)
    auth.require(who, auth.Role.ADMIN, "add users")
    try:
        row = auth.add_user(store, name, role, agent, by=who.describe())
    except auth.AuthRefusal as exc:
        raise UserError(str(exc)) from None
    console.print(f"user {row.name}: {row.role}{' for agent ' + row.agent_id if row.agent_id else ''}", markup=False)


@app.command("list")
@friendly
def list_users() -> None:
    """Users and their roles."""
    store = open_store(create=True)
    table = Table()
    for c in ("user", "role", "agent"):
        table.add_column(c)
    for u in auth.list_users(store):
        table.add_row(u.name, u.role, u.agent_id or "-")
    console.print(table)


@token_app.command("create")
@friendly
def create(name: str) -> None:
    """Create a bearer token for user NAME; printed once, alone on the last line."""
    store = open_store(create=True)
    who = actor(store)
    auth.require(who, auth.Role.ADMIN, "create tokens")
    try:
        token = auth.create_token(store, name, by=who.describe())
    except auth.AuthRefusal as exc:
        raise UserError(str(exc)) from None
    console.print(f"token for {name} (shown once; only its hash is stored):", markup=False)
    print(token, flush=True)


@app.command("passwd")
@friendly
def passwd(
    name: str,
    password_stdin: bool = typer.Option(False, "--password-stdin", help="read the password from standard input"),
) -> None:
    """Set user NAME's console password (asked twice, or read from stdin); lifts a lock-out."""
    import getpass
    import sys

    from routedesk.sessions import set_password

    store = open_store(create=True)
    auth.require(actor(store), auth.Role.ADMIN, "set passwords")
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(f"console password for {name}: ")
        if getpass.getpass("again: ") != password:
            raise UserError("the two passwords differ; nothing was changed")
    try:
        set_password(store, name, password)
    except auth.AuthRefusal as exc:
        raise UserError(str(exc)) from None
    console.print(f"console password set for {name} (stored as an argon2 hash)", markup=False)
