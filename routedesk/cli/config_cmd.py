"""``routedesk config check|load FILE``."""

from __future__ import annotations

from pathlib import Path

import typer

from routedesk.cli.common import console, friendly
from routedesk.config import load_config
from routedesk.store import Store

app = typer.Typer(no_args_is_help=True, help="Validate and load the routing configuration.")


@app.command("check")
@friendly
def check(file: Path) -> None:
    """Validate FILE; a bad file prints one line per problem, naming the key."""
    cfg = load_config(file)
    console.print(
        f"{file}: ok ({len(cfg.mailboxes)} mailboxes, {len(cfg.workstreams)} workstreams, "
        f"{len(cfg.queues)} queues, {len(cfg.agents)} agents, {len(cfg.contacts)} contacts)"
    )


@app.command("load")
@friendly
def load(file: Path) -> None:
    """Validate FILE and load it into the case store (runtime state such as presence is kept)."""
    cfg = load_config(file)
    store = Store().init()  # creates the tables on first use
    store.load_config(cfg)
    console.print(f"loaded {file} into {store.db.address}")
