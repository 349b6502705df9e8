"""Console passwords, sign-in with lock-out, and browser sessions.

Passwords are argon2id hashes (argon2-cffi: salted, slow, parameters kept in the hash and
upgraded on the next sign-in when the library's defaults grow). A session is a random cookie
value; the store keeps only its SHA-256 and the session's CSRF token, so reading the
database gives no way in. A wrong password counts a failure; ``lockout_failures`` in a row
lock the user out for ``lockout_minutes`` (the right password is refused too meanwhile).
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlmodel import col, delete

from routedesk.auth import Actor, AuthRefusal, Role
from routedesk.config import ConsoleSettings
from routedesk.models import ConsolePasswordRow, ConsoleSessionRow, UserRow, utcnow
from routedesk.store import Store

MIN_PASSWORD = 8
_hasher = PasswordHasher()
# Verified when the user is unknown, so that the answer takes as long as for a known user.
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))


class SignInRefused(Exception):
    """Wrong user or password, or locked out: the message is what the page shows."""


@dataclass(frozen=True)
class Session:
    actor: Actor
    csrf_token: str
    token_hash: str


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def set_password(store: Store, user: str, password: str) -> None:
    """Store ``password``'s argon2 hash for ``user`` and lift any lock-out; their open
    sessions end (a password change after a leak must shut the door)."""
    if len(password) < MIN_PASSWORD:
        raise AuthRefusal(f"a console password needs at least {MIN_PASSWORD} characters")
    hashed = _hasher.hash(password)
    with store.db.write() as s:
        if s.get(UserRow, user) is None:
            raise AuthRefusal(f"no user {user!r}; add one first: routedesk user add {user} --role ROLE")
        row = s.get(ConsolePasswordRow, user) or ConsolePasswordRow(user_name=user, password_hash=hashed)
        row.password_hash, row.failures, row.locked_until, row.changed_at = hashed, 0, None, utcnow()
        s.add(row)
        s.exec(delete(ConsoleSessionRow).where(col(ConsoleSessionRow.user_name) == user))  # type: ignore[call-overload]


def sign_in(store: Store, user: str, password: str, rules: ConsoleSettings) -> tuple[str, Session]:
    """A new session for the user (cookie value, session), or :class:`SignInRefused`."""
    now = utcnow()
    refusal: str | None = None
    with store.db.write() as s:
        row = s.get(ConsolePasswordRow, user)
        person = s.get(UserRow, user)
        if row is None or person is None:
            with contextlib.suppress(VerificationError):
                _hasher.verify(_DUMMY_HASH, password)
            raise SignInRefused("wrong user name or password")
        if row.locked_until is not None and _aware(row.locked_until) > now:
            minutes = max(1, round((_aware(row.locked_until) - now).total_seconds() / 60))
            raise SignInRefused(
                f"too many wrong passwords: {user} is locked out for {minutes} more minute(s); "
                f"an admin can lift it with routedesk user passwd {user}"
            )
        try:
            _hasher.verify(row.password_hash, password)
        except (VerificationError, InvalidHashError):
            # Counted in this transaction (committed), refused after it.
            row.failures += 1
            if row.failures >= rules.lockout_failures:
                row.locked_until = now + timedelta(minutes=rules.lockout_minutes)
                row.failures = 0
            s.add(row)
            refusal = "wrong user name or password"
        else:
            if _hasher.check_needs_rehash(row.password_hash):
                row.password_hash = _hasher.hash(password)
            row.failures, row.locked_until = 0, None
            s.add(row)
            cookie = secrets.token_urlsafe(32)
            session = ConsoleSessionRow(
                token_hash=token_hash(cookie),
                user_name=user,
                csrf_token=secrets.token_urlsafe(32),
                expires_at=now + timedelta(hours=rules.session_hours),
            )
            s.add(session)
            # Expired sessions go here, where sessions are made: no sweeper needed.
            s.exec(delete(ConsoleSessionRow).where(col(ConsoleSessionRow.expires_at) < now))  # type: ignore[call-overload]
            actor = Actor(user=person.name, role=Role(person.role), agent_id=person.agent_id)
            result = cookie, Session(actor, session.csrf_token, session.token_hash)
    if refusal is not None:
        raise SignInRefused(refusal)
    return result


def session_for(store: Store, cookie: str) -> Session | None:
    """The signed-in session a cookie names, or None (unknown, expired, user removed)."""
    if not cookie:
        return None
    digest = token_hash(cookie)
    with store.db.read() as s:
        row = s.get(ConsoleSessionRow, digest)
        if row is None or _aware(row.expires_at) <= utcnow():
            return None
        person = s.get(UserRow, row.user_name)
        if person is None:
            return None
        actor = Actor(user=person.name, role=Role(person.role), agent_id=person.agent_id)
        return Session(actor, row.csrf_token, digest)


def sign_out(store: Store, session: Session) -> None:
    with store.db.write() as s:
        row = s.get(ConsoleSessionRow, session.token_hash)
        if row is not None:
            s.delete(row)
