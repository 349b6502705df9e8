"""Users, roles and API tokens: who is acting, and what they may do.

A token is ``rd_`` and 43 URL-safe characters (256 random bits), shown once by
``routedesk token create NAME``; the store keeps only its SHA-256. A presented token is looked
up by the first digits of its hash (an index) and its whole hash compared with
``hmac.compare_digest``, so the time taken does not tell how much of a guess was right.

Rules (README *Users, roles and tokens*): an agent acts only for their own agent (answers
their own offers, sets their own presence, picks into their own queues); a supervisor also
assigns, resolves, releases and reprocesses mail and sets preferred agents; an admin may do
everything (verify mailboxes, load configuration, manage users).
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import secrets
from datetime import timedelta
from enum import StrEnum

from pydantic import BaseModel
from sqlmodel import select

from routedesk.models import AgentRow, ApiTokenRow, UserRow, utcnow
from routedesk.store import Store

TOKEN_PREFIX = "rd_"
LOOKUP_DIGITS = 12
# last_used_at is written at most this often per token: a write on every request would cost
# the agent-facing endpoints (offers, polled) a write transaction each.
LAST_USED_RESOLUTION = timedelta(seconds=60)


class Role(StrEnum):
    AGENT = "agent"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"


_RANK = {Role.AGENT: 0, Role.SUPERVISOR: 1, Role.ADMIN: 2}


class Actor(BaseModel):
    """Who performs an operation; every action's trace entry names them."""

    user: str
    role: Role
    agent_id: str | None = None

    def describe(self) -> str:
        return f"{self.user} ({self.role.value})"

    def at_least(self, role: Role) -> bool:
        return _RANK[self.role] >= _RANK[role]


def local_admin() -> Actor:
    """The CLI without a token: the OS user, as an admin (they can reach the store anyway)."""
    try:
        name = getpass.getuser()
    except Exception:  # no passwd entry (containers): still someone
        name = "local"
    return Actor(user=name, role=Role.ADMIN)


class Forbidden(Exception):
    """The actor's role does not allow this; the message says who may."""


class Unauthenticated(Exception):
    """No token, or one that names no user."""


class AuthRefusal(Exception):
    """A user or token request that cannot be done (unknown user, bad role)."""


class UserExists(AuthRefusal):
    """Adding, as new, a user whose name is taken."""


class NoSuchUser(AuthRefusal):
    """A token for a user nobody added."""


def require(actor: Actor, role: Role, what: str) -> None:
    if not actor.at_least(role):
        raise Forbidden(f"{actor.describe()} may not {what}: it needs the {role.value} role or above")


def require_agent_or(actor: Actor, agent_id: str, what: str) -> None:
    """Agents act only for their own agent; supervisors and admins for any."""
    if actor.role is Role.AGENT and actor.agent_id != agent_id:
        raise Forbidden(
            f"{actor.describe()} may not {what} for agent {agent_id}: an agent token acts only for "
            f"agent {actor.agent_id}"
        )


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def hashes_match(given: str, stored: str) -> bool:
    """Constant-time comparison of two token hashes."""
    return hmac.compare_digest(given.encode(), stored.encode())


def add_user(
    store: Store, name: str, role: str, agent_id: str | None, *, by: str | None = None, new_only: bool = False
) -> UserRow:
    """Add user ``name`` (or change their role; with ``new_only``, :class:`UserExists`);
    ``by`` is who did it, as the trace names people."""
    name = name.strip()
    if not name:
        raise AuthRefusal("a user needs a name")
    try:
        r = Role(role.lower())
    except ValueError:
        raise AuthRefusal(f"role must be one of {', '.join(x.value for x in Role)}, not {role!r}") from None
    if r is Role.AGENT and not agent_id:
        raise AuthRefusal("an agent user needs --agent AGENT_ID: the agent they act for")
    if r is not Role.AGENT and agent_id:
        raise AuthRefusal(f"--agent goes with --role agent only, not {r.value}")
    with store.db.write() as s:
        if agent_id and s.get(AgentRow, agent_id) is None:
            raise AuthRefusal(f"no agent {agent_id!r}; `routedesk agent list` shows them")
        row = s.get(UserRow, name)
        if row is not None and new_only:
            raise UserExists(f"user {name!r} exists (role {row.role}); pick another name, or change their role")
        if row is None:
            row = UserRow(name=name, role=r.value, agent_id=agent_id, created_by=by)
        else:  # adding again changes the role: one user per name
            row.role, row.agent_id = r.value, agent_id
        s.add(row)
        return row


def create_token(store: Store, user: str, *, by: str | None = None) -> str:
    """A new token for ``user``; only its hash is stored, so this is the one time it is seen.
    ``by`` is who created it."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    digest = token_hash(token)
    with store.db.write() as s:
        if s.get(UserRow, user) is None:
            raise NoSuchUser(f"no user {user!r}; add one first: routedesk user add {user} --role ROLE")
        s.add(ApiTokenRow(user_name=user, lookup=digest[:LOOKUP_DIGITS], token_hash=digest, created_by=by))
    return token


def list_users(store: Store) -> list[UserRow]:
    with store.db.read() as s:
        return list(s.exec(select(UserRow).order_by(UserRow.name)).all())


def authenticate(store: Store, token: str) -> Actor:
    """The user a bearer token belongs to, or :class:`Unauthenticated`."""
    if not token:
        raise Unauthenticated("missing bearer token: send Authorization: Bearer <token> (routedesk token create NAME)")
    digest = token_hash(token)
    with store.db.read() as s:
        candidates = list(s.exec(select(ApiTokenRow).where(ApiTokenRow.lookup == digest[:LOOKUP_DIGITS])).all())
        match = None
        for c in candidates:  # every candidate compared: no early exit on the first
            if hashes_match(digest, c.token_hash) and match is None:
                match = c
        user = s.get(UserRow, match.user_name) if match is not None else None
    if match is None or user is None:
        raise Unauthenticated("wrong bearer token: create one with routedesk token create NAME")
    now = utcnow()
    last = match.last_used_at
    if last is None or now - (last if last.tzinfo else last.replace(tzinfo=now.tzinfo)) > LAST_USED_RESOLUTION:
        with store.db.write() as s:
            row = s.get(ApiTokenRow, match.id)
            if row is not None:
                row.last_used_at = now
                s.add(row)
    return Actor(user=user.name, role=Role(user.role), agent_id=user.agent_id)
