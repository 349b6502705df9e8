"""Schema migrations of the case store (Alembic), configured in code: no alembic.ini.

``versions/`` holds one revision per schema change since the first release (0001 is that
release's schema). :class:`routedesk.db.Database` uses these functions: an empty store is
created at the head revision directly, a store at an older revision is refused until
``routedesk db upgrade`` runs :func:`upgrade`.

After changing ``routedesk/models.py``, write the next revision against a store at head::

    DATABASE_URL=sqlite:///scratch.db routedesk db upgrade
    DATABASE_URL=sqlite:///scratch.db python -m routedesk.migrations "what changed"

then read the generated file (autogenerate misses renames, and rows may need a server default
or a data step) and test it with tests/test_migrations.py.
"""

from __future__ import annotations

import logging
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, inspect, text
from sqlmodel import SQLModel

from routedesk import models  # noqa: F401  (registers the tables)
from routedesk.revisions import from_files

# Alembic (with Mako and its dialect modules) costs more than a read-only CLI command's whole
# query: it is imported only to create, stamp or migrate a store. Every process start and
# every command reads the store's revision with plain SQL and this version's head from the
# revision files' text (:func:`revisions`), which tests/test_cli.py checks against Alembic.
if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

# Alembic says which dialect it uses each time it looks at a store (every process start, every
# CLI command): at routedesk's INFO level that would be noise on stderr. Its warnings stay.
logging.getLogger("alembic").setLevel(logging.WARNING)

SCRIPT_LOCATION = Path(__file__).parent
# The schema of the first release (commit e307fd7): a store made before migrations existed
# has its tables and no alembic_version table, and is at this revision.
BASELINE = "0001"


def config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPT_LOCATION))
    cfg.attributes["connection"] = connection
    return cfg


@cache
def script() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(config())


@cache
def revisions() -> tuple[frozenset[str], str]:
    """Every revision id in ``versions/`` and the head: read from the files' text
    (routedesk.revisions), or by Alembic for a layout that cannot tell (a merge, two heads)."""
    return from_files() or _alembic_revisions()


def _alembic_revisions() -> tuple[frozenset[str], str]:
    rev = script().get_current_head()
    assert rev is not None, "routedesk/migrations/versions has no revision"
    return frozenset(s.revision for s in script().walk_revisions()), rev


def head() -> str:
    return revisions()[1]


def known(revision: str) -> bool:
    return revision in revisions()[0]


def stamped_revision(conn: Connection) -> str | None:
    """The revision in ``alembic_version``; None when the table is missing or empty."""
    if not inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def current(conn: Connection) -> str | None:
    """The store's revision: None for a store without routedesk tables (empty), the baseline
    for one made before migrations existed."""
    rev = stamped_revision(conn)
    if rev is not None:
        return rev
    return BASELINE if set(inspect(conn).get_table_names()) & set(SQLModel.metadata.tables) else None


def create(conn: Connection) -> None:
    """Make the tables of an empty store from the models and record it at head."""
    from alembic.migration import MigrationContext

    SQLModel.metadata.create_all(conn)
    MigrationContext.configure(conn).stamp(script(), "head")


def upgrade(conn: Connection) -> None:
    """Bring a store at an older revision to head, on ``conn`` (the caller commits)."""
    from alembic import command
    from alembic.migration import MigrationContext

    if stamped_revision(conn) is None:
        MigrationContext.configure(conn).stamp(script(), BASELINE)
    command.upgrade(config(conn), "head")
