"""The IMAP fetchers' positions in the case store: how far each mailbox folder was fetched.

Written only by the fetcher of that folder (starter/imap.py), but safe with several: each
write locks the folder's row (created insert-or-ignore), so two processes never lose each
other's progress.
"""

from __future__ import annotations

from sqlmodel import Session

from routedesk.models import ImapPositionRow, utcnow
from routedesk.store import Store, insert_ignoring_conflict


def position(store: Store, address: str, folder: str) -> ImapPositionRow | None:
    with store.db.read() as s:
        return s.get(ImapPositionRow, (address, folder))


def _row(s: Session, address: str, folder: str) -> ImapPositionRow:
    """The folder's row, created if missing, locked for this transaction."""
    s.exec(  # type: ignore[call-overload]
        insert_ignoring_conflict(
            s,
            ImapPositionRow,
            ["mailbox_address", "folder"],
            **ImapPositionRow(mailbox_address=address, folder=folder).model_dump(),
        )
    )
    row = s.get(ImapPositionRow, (address, folder), with_for_update=True, populate_existing=True)
    assert row is not None
    return row


def set_status(store: Store, address: str, folder: str, status: str, error: str | None = None) -> None:
    with store.db.write() as s:
        row = _row(s, address, folder)
        row.status, row.updated_at = status, utcnow()
        if error is not None:
            row.last_error, row.last_error_at = error, row.updated_at
        elif status in ("idle", "polling"):
            row.last_ok_at = row.updated_at
        s.add(row)


def open_position(store: Store, address: str, folder: str, uidvalidity: int) -> tuple[int, int | None]:
    """The last UID fetched under ``uidvalidity``; with the previous UIDVALIDITY when it changed."""
    with store.db.write() as s:
        row = _row(s, address, folder)
        previous = None
        if row.uidvalidity is not None and row.uidvalidity != uidvalidity:
            previous = row.uidvalidity
            row.previous_uidvalidity = previous
            row.uidvalidity_changes += 1
            row.uidvalidity_changed_at = utcnow()
            row.last_uid = 0
        row.uidvalidity, row.status, row.updated_at = uidvalidity, "fetching", utcnow()
        s.add(row)
        return row.last_uid, previous


def advance(store: Store, address: str, folder: str, uidvalidity: int, uid: int, count: int) -> None:
    with store.db.write() as s:
        row = _row(s, address, folder)
        if row.uidvalidity == uidvalidity:  # another fetcher may have seen a newer UIDVALIDITY
            row.last_uid = max(row.last_uid, uid)
            row.fetched += count
            row.updated_at = utcnow()
            s.add(row)


def record_error(store: Store, address: str, folder: str, message: str) -> None:
    with store.db.write() as s:
        row = _row(s, address, folder)
        row.last_error, row.last_error_at = message, utcnow()
        s.add(row)
