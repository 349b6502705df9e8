"""``python -m routedesk.migrations MESSAGE``: autogenerate the next revision against the store
at ``DATABASE_URL`` (which must be at head), for a developer to read and complete."""

from __future__ import annotations

import sys

from alembic import command

from routedesk import migrations
from routedesk.db import Database


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit("usage: DATABASE_URL=... python -m routedesk.migrations 'what changed'")
    db = Database()
    with db.write_engine.begin() as conn:
        command.revision(
            migrations.config(conn), message=sys.argv[1], autogenerate=True, rev_id=f"{int(migrations.head()) + 1:04d}"
        )
        # A revision file is all this makes: nothing in the store changes.
        conn.rollback()


if __name__ == "__main__":
    main()
