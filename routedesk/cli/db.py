"""``routedesk db upgrade|status``: the case store's schema revision (Alembic migrations)."""

from __future__ import annotations

import typer

from routedesk.cli.common import console, friendly
from routedesk.db import Database

app = typer.Typer(no_args_is_help=True, help="Upgrade the case store's schema to this version of routedesk.")


def out(line: str) -> None:
    console.print(line, markup=False, soft_wrap=True)


def _name(revision: str | None) -> str:
    return revision if revision is not None else "none (no routedesk tables)"


@app.command("upgrade")
@friendly
def upgrade() -> None:
    """Migrate the case store (DATABASE_URL) to the revision this version needs.

    Safe to run while other processes start (one migration at a time, all or nothing), and
    again: a store already at that revision is left alone. Stop workers and intakes of the
    older version first: they do not know the new schema.
    """
    db = Database()
    try:
        before, after = db.upgrade()
    finally:
        db.dispose()
    if before is None:
        out(f"created the case store at {db.address} at revision {after} (it had no routedesk tables)")
    elif before == after:
        out(f"the case store at {db.address} is at revision {after}: nothing to do")
    else:
        out(f"upgraded the case store at {db.address} from revision {before} to {after}")


@app.command("status")
@friendly
def status() -> None:
    """Print the case store's revision and the one this version needs."""
    db = Database()
    try:
        current, head = db.revision()
    finally:
        db.dispose()
    out(f"case store   {db.address}")
    out(f"revision     {_name(current)}")
    out(f"needed       {head}")
    if current is None:
        out("the store is empty: any routedesk process creates it (or routedesk db upgrade)")
    elif current != head:
        out("run `routedesk db upgrade` before starting this version")
    else:
        out("up to date")
