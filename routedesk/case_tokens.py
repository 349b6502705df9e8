"""Signed case reference tokens: ``[CASE-000123:k7f2qa]``.

Case numbers are sequential, so a bare ``[CASE-000123]`` is guessable and proves nothing.
The key after the colon is a short HMAC of the case number under a per-installation secret:
only someone who saw our mail (an acknowledgement, later an agent's reply) can quote it. The
secret is generated once, kept in the case store (``setting`` row ``secret``), and never
logged, traced or passed to a workflow.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from routedesk.models import SettingRow

SECRET_KEY = "secret"
# 6 base32 characters: 30 bits, one chance in a billion per guess; short enough for a subject.
TOKEN_KEY_LENGTH = 6


def installation_secret(s: Session, *, create: bool = False) -> bytes | None:
    """The installation's token secret; made on first use when ``create``.

    First writer wins: the insert runs in a savepoint and, if another process inserted the
    row meanwhile, the stored secret is read back instead, so every token ever issued stays
    valid.
    """
    row = s.get(SettingRow, SECRET_KEY)
    if row is None and create:
        try:
            with s.begin_nested():
                s.add(SettingRow(key=SECRET_KEY, value={"hex": secrets.token_hex(32)}))
        except IntegrityError:
            pass
        row = s.get(SettingRow, SECRET_KEY)
    if row is None:
        return None
    return bytes.fromhex(str(row.value["hex"]))


def token_key(secret: bytes, case_number: str) -> str:
    digest = hmac.new(secret, case_number.upper().encode("ascii"), hashlib.sha256).digest()
    return base64.b32encode(digest).decode("ascii")[:TOKEN_KEY_LENGTH].lower()


def key_matches(secret: bytes | None, case_number: str, key: str) -> bool:
    """Constant-time check of a quoted token key (case-insensitive: clients may upper-case)."""
    if secret is None:
        return False
    return hmac.compare_digest(token_key(secret, case_number), key.lower())
