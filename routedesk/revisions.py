"""The schema revisions in ``routedesk/migrations/versions``, read from the files' text.

No Alembic and no SQLAlchemy: every process start and every CLI command compares the store's
revision with this version's head, and the read-only commands do it without loading either
(routedesk.views). ``routedesk.migrations.revisions`` asks Alembic when this cannot tell.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

VERSIONS = Path(__file__).parent / "migrations" / "versions"

_REVISION = re.compile(r"^revision(?:\s*:[^=]*)?\s*=\s*[\"']([^\"']+)[\"']", re.MULTILINE)
_DOWN_REVISION = re.compile(r"^down_revision(?:\s*:[^=]*)?\s*=\s*(?:None|[\"']([^\"']+)[\"'])\s*$", re.MULTILINE)


@cache
def from_files() -> tuple[frozenset[str], str] | None:
    """Every revision id and the head; None for a layout this does not understand (a merge
    revision, two heads), which only Alembic can read."""
    revs: set[str] = set()
    downs: set[str] = set()
    for path in sorted(VERSIONS.glob("*.py")):
        body = path.read_text()
        rev, down = _REVISION.search(body), _DOWN_REVISION.search(body)
        if rev is None:
            continue
        if down is None:  # not a single string or None
            return None
        revs.add(rev.group(1))
        if down.group(1):
            downs.add(down.group(1))
    heads = revs - downs
    if len(heads) != 1 or not downs <= revs:
        return None
    return frozenset(revs), heads.pop()
