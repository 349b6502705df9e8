"""The case store: queries and writes shared by activities, intake and the CLI."""

from __future__ import annotations

import getpass
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlmodel import Session, SQLModel, col, delete, func, insert, select, update

from routedesk import config_diff, ids
from routedesk.config import IntakeSettings, Mailbox, RoutingConfig, RoutingSettings, Workstream
from routedesk.db import CONFIG_LOCK, Database
from routedesk.limits import cap_text
from routedesk.models import (
    AgentRow,
    CaseRow,
    ConfigVersionRow,
    ContactEmailRow,
    ContactRow,
    EmailRow,
    MailboxRow,
    QueueMemberRow,
    QueueRow,
    RuntimeEditRow,
    SettingRow,
    TraceRow,
    WorkstreamRow,
    utcnow,
)


@dataclass(frozen=True)
class SavedEmail:
    email_id: int
    dedupe_key: str
    workflow_id: str
    created: bool


@dataclass(frozen=True)
class Reprocess:
    email_id: int
    workflow_id: str  # the workflow that evaluates the email again
    started: bool  # a new workflow is to be started (rejected or ignored email)
    held: bool  # a held email: its own workflow is to be sent `release`


_REPROCESS_SUFFIX = re.compile(r"-reprocess-\d+$")


@dataclass(frozen=True)
class TraceEntry:
    stage: str
    subject: str
    outcome: str
    reason: str


TRACE_SUBJECT_LIMIT = 200  # characters of the rule, candidate or address a trace entry is about
# How many other emails a Message-ID collision's trace names.
COLLISIONS_NAMED = 5


# How often a process asks the store for the number of the config version in force (one
# primary-key lookup): a config loaded anywhere reaches every worker and intake process within
# this long after their next use of the definitions, with no restart.
VERSION_CHECK_SECONDS = 1.0


def os_user() -> str:
    """Who runs this process, for "loaded by" and runtime edits when the caller names nobody."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's numeric user)
        return "unknown"


@dataclass(frozen=True)
class Definitions:
    """The mailboxes and workstreams of one config version (0: a store loaded before
    versions were recorded, read from the tables)."""

    version: int
    mailboxes: dict[str, Mailbox]  # config order
    workstreams: dict[str, Workstream]

    def workstream(self, ws_id: str) -> Workstream:
        try:
            return self.workstreams[ws_id]
        except KeyError:
            raise KeyError(f"unknown workstream {ws_id!r} in config version {self.version}") from None


@dataclass(frozen=True)
class LoadResult:
    version: int  # the version in force after the load
    changed: bool  # False: same content as the version in force; nothing was written
    previous: int | None  # the version in force before (None: the first load)
    changes: list[config_diff.Change] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # runtime edits the file does not contradict
    conflicts: list[str] = field(default_factory=list)  # runtime edits the file overrides
    # Queues with items waiting for their assignment method that the load gave a new member
    # (or an agent more capacity): their dispatchers must be kicked (see ``wake_after_load``).
    wake_queues: list[str] = field(default_factory=list)

    def report(self, source: str) -> list[str]:
        """What ``make run`` and ``config load`` print: the version, then every runtime edit
        kept or overridden (nothing is reverted silently)."""
        if not self.changed:
            return [f"{source}: unchanged (config version {self.version} has the same content); nothing loaded"]
        lines = [f"{source}: loaded as config version {self.version} ({config_diff.summary(self.changes)})"]
        lines += [f"  kept runtime edit: {k}" for k in self.kept]
        lines += [f"  overridden by the file: {c}" for c in self.conflicts]
        return lines


def insert_ignoring_conflict(s: Session, table: type[SQLModel], conflict: list[str], **values: Any) -> Any:
    """``INSERT ... ON CONFLICT (conflict) DO NOTHING`` on SQLite and PostgreSQL: for rows that
    may already exist, so a concurrent writer's row is found, not a unique violation raised."""
    dialect = s.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).values(**values).on_conflict_do_nothing(index_elements=conflict)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table).values(**values).on_conflict_do_nothing(index_elements=conflict)


class Store:
    """The case store over a :class:`Database`; safe to share between activity threads."""

    def __init__(self, db: Database | str | None = None) -> None:
        self.db = db if isinstance(db, Database) else Database(db)
        self._cache_lock = threading.Lock()
        # The definitions of the version last seen, and when the store was last asked which
        # version is in force (monotonic; checked at most every VERSION_CHECK_SECONDS).
        self._defs: Definitions | None = None
        self._checked_at = 0.0

    # --- setup ---------------------------------------------------------------------------

    def init(self) -> Store:
        self.db.create_all()
        return self

    def load_config(self, cfg: RoutingConfig, *, by: str | None = None, source: str | None = None) -> LoadResult:
        """Store ``cfg`` as a new numbered version and replace the definitions with it, unless
        its content hash is the version in force's (then nothing is written: ``changed`` is
        False). Runtime state (presence, capacity in use, verifications done by hand) of agents
        and mailboxes that remain is kept; runtime edits of preferred agents survive unless
        the file changed that value (:func:`routedesk.config_diff.reconcile`)."""
        data = config_diff.config_json(cfg)
        digest = config_diff.content_hash(data)
        with self.db.write() as s:
            # Two loads at once (two processes starting, or `config load` beside `make run`)
            # would both delete and both insert the same keys: the second fails on them.
            self.db.advisory_lock(s, CONFIG_LOCK)
            current = s.exec(select(ConfigVersionRow).order_by(col(ConfigVersionRow.number).desc()).limit(1)).first()
            if current is not None and current.content_hash == digest:
                return LoadResult(current.number, False, current.number)
            edits = [
                config_diff.Edit(e.kind, e.key, e.value, e.set_by, e.set_at.strftime("%Y-%m-%d %H:%M"))
                for e in s.exec(select(RuntimeEditRow).order_by(col(RuntimeEditRow.kind), col(RuntimeEditRow.key)))
            ]
            previous = current.config if current is not None else None
            rec = config_diff.reconcile(previous, data, edits)
            # Agents first, in id order, as every other transaction that locks several takes
            # them (see activities/assignment.py): a load never deadlocks with an assignment.
            old_agents = {
                a.id: a
                for a in s.exec(
                    select(AgentRow)
                    .order_by(col(AgentRow.id))
                    .with_for_update()
                    .execution_options(populate_existing=True)
                ).all()
            }
            old_members = {(m.queue_id, m.agent_id): m for m in s.exec(select(QueueMemberRow)).all()}
            kept_capacity = {a.id: a.capacity for a in old_agents.values()}
            old_mailboxes = {m.address: m for m in s.exec(select(MailboxRow)).all()}
            for table in (
                MailboxRow,
                WorkstreamRow,
                QueueRow,
                QueueMemberRow,
                ContactRow,
                ContactEmailRow,
            ):
                s.exec(delete(table))  # type: ignore[call-overload]
            for pos, m in enumerate(cfg.mailboxes):
                prev = old_mailboxes.get(m.address)
                s.add(
                    MailboxRow(
                        address=m.address,
                        name=m.name,
                        workstream_id=m.workstream,
                        position=pos,
                        verified=m.verified or bool(prev and prev.verified),
                        config=m.model_dump(mode="json"),
                    )
                )
            for w in cfg.workstreams:
                s.add(WorkstreamRow(id=w.id, name=w.name, config=w.model_dump(mode="json", by_alias=True)))
            for q in cfg.queues:
                s.add(
                    QueueRow(
                        id=q.id,
                        name=q.name,
                        assignment_method=q.assignment_method.value,
                        priority=q.priority,
                    )
                )
                for agent_id in q.members:
                    prev_m = old_members.get((q.id, agent_id))
                    s.add(
                        QueueMemberRow(
                            queue_id=q.id,
                            agent_id=agent_id,
                            last_assigned_at=prev_m.last_assigned_at if prev_m else None,
                        )
                    )
            for a in cfg.agents:
                row = old_agents.pop(a.id, None)
                if row is None:
                    s.add(
                        AgentRow(
                            id=a.id,
                            name=a.name,
                            capacity=a.capacity,
                            skills=list(a.skills),
                            presence=a.presence.value,
                        )
                    )
                else:
                    row.name, row.capacity, row.skills = a.name, a.capacity, list(a.skills)
                    s.add(row)
            for gone in old_agents.values():
                s.delete(gone)
            # Who may now take waiting work: a new member, or a member with more capacity.
            grown = {a.id for a in cfg.agents if a.id in kept_capacity and a.capacity > kept_capacity[a.id]}
            eligible_more = {
                q.id
                for q in cfg.queues
                for agent_id in q.members
                if (q.id, agent_id) not in old_members or agent_id in grown
            }
            from routedesk.assignment.wake import queues_to_wake  # it imports the Temporal client

            wake_queues = queues_to_wake(s, eligible_more)
            s.merge(SettingRow(key="routing", value=cfg.routing.model_dump(mode="json")))
            s.merge(SettingRow(key="intake", value=cfg.intake.model_dump(mode="json")))
            for c in cfg.contacts:
                preferred = rec.keep.get((config_diff.PREFERRED, c.id), c.preferred_agents)
                s.add(ContactRow(id=c.id, name=c.name, preferred_agents=list(preferred)))
                for e in c.emails:
                    s.add(ContactEmailRow(email=e, contact_id=c.id))
            for kind, key in rec.drop:
                s.exec(delete(RuntimeEditRow).where(col(RuntimeEditRow.kind) == kind, col(RuntimeEditRow.key) == key))  # type: ignore[call-overload]
            number = (current.number if current is not None else 0) + 1
            s.add(
                ConfigVersionRow(
                    number=number, loaded_by=by or os_user(), source=source, content_hash=digest, config=data
                )
            )
        self.forget_cached_definitions()
        return LoadResult(
            number,
            True,
            current.number if current is not None else None,
            config_diff.diff(previous, data),
            rec.kept,
            rec.conflicts,
            wake_queues,
        )

    def newer_than_last_load_of(self, cfg: RoutingConfig, source: str) -> tuple[ConfigVersionRow, int] | None:
        """When ``source`` was last loaded with this very content and another version was
        loaded after it (``config load`` of another file, the API), that version in force and
        the number ``source`` was loaded as; None otherwise. ``make run`` loads its file only
        when the file changed since its last load: restarting it must not revert a config an
        administrator loaded meanwhile."""
        digest = config_diff.content_hash(config_diff.config_json(cfg))
        with self.db.read() as s:
            current = s.exec(select(ConfigVersionRow).order_by(col(ConfigVersionRow.number).desc()).limit(1)).first()
            last = s.exec(
                select(ConfigVersionRow)
                .where(ConfigVersionRow.source == source)
                .order_by(col(ConfigVersionRow.number).desc())
                .limit(1)
            ).first()
        if current is None or last is None or last.number == current.number or last.content_hash != digest:
            return None
        return current, last.number

    # --- cached definitions --------------------------------------------------------------

    def definitions(self, max_age: float = VERSION_CHECK_SECONDS) -> Definitions:
        """The mailboxes and workstreams of the config version in force, cached per version.

        Every process keeps them for as long as the version number stays the same: when the
        last check is older than ``max_age`` seconds it asks the store for the highest number
        (a primary-key lookup) and rebuilds them when that changed, so a config loaded by any
        process takes effect here without a restart.
        """
        now = time.monotonic()
        with self._cache_lock:
            defs = self._defs
            if defs is not None and now - self._checked_at < max_age:
                return defs
            self._checked_at = now  # one thread asks; the others use the definitions they have
        with self.db.read() as s:
            number = s.exec(select(func.max(ConfigVersionRow.number))).one()
            if defs is not None and number is not None and defs.version == number:
                return defs
            fresh = self._read_definitions(s, number)
        with self._cache_lock:
            if self._defs is None or self._defs.version <= fresh.version:
                self._defs = fresh
        return fresh

    @staticmethod
    def _read_definitions(s: Session, number: int | None) -> Definitions:
        if number is not None:
            row = s.get(ConfigVersionRow, number)
            assert row is not None  # versions are never deleted
            cfg = row.config
            return Definitions(
                number,
                {m.address: m for m in (Mailbox.model_validate(m) for m in cfg["mailboxes"])},
                {w.id: w for w in (Workstream.model_validate(w) for w in cfg["workstreams"])},
            )
        # A store loaded before versions were recorded: its tables are the definitions.
        boxes = s.exec(select(MailboxRow).order_by(col(MailboxRow.position))).all()
        streams = s.exec(select(WorkstreamRow)).all()
        return Definitions(
            0,
            {r.address: Mailbox.model_validate(r.config) for r in boxes},
            {r.id: Workstream.model_validate(r.config) for r in streams},
        )

    def intake_settings(self) -> IntakeSettings:
        """The loaded config's ``intake`` section; defaults when none was loaded yet."""
        with self.db.read() as s:
            row = s.get(SettingRow, "intake")
        return IntakeSettings.model_validate(row.value) if row is not None else IntakeSettings()

    def workstream(self, ws_id: str) -> Workstream:
        return self.definitions().workstream(ws_id)

    def mailboxes(self) -> dict[str, Mailbox]:
        """Routing addresses in config order (dicts keep insertion order).

        Always checks the version number: intake calls this once per email before deciding,
        so an email that arrives after a load is decided, and then routed, by that load (the
        SMTP intake accepts by the store's current mailboxes; the worker must not reject it).
        """
        return self.definitions(max_age=0).mailboxes

    def config_loaded(self) -> tuple[bool, int]:
        """Whether a routing config was loaded, and how many mailboxes it has (readiness)."""
        with self.db.read() as s:
            loaded = s.get(SettingRow, "routing") is not None
            return loaded, int(s.exec(select(func.count()).select_from(MailboxRow)).one())

    def routing_settings(self) -> RoutingSettings:
        with self.db.read() as s:
            row = s.get(SettingRow, "routing")
            return RoutingSettings.model_validate(row.value) if row else RoutingSettings()

    def forget_cached_definitions(self) -> None:
        with self._cache_lock:
            self._defs = None
            self._checked_at = 0.0

    # --- emails --------------------------------------------------------------------------

    def save_raw_email(
        self,
        raw: bytes,
        *,
        source: str = "python",
        envelope_to: list[str] | None = None,
        id_prefix: str = "",
    ) -> SavedEmail:
        """Store the raw bytes once per message; returns the row either way.

        A delivery is the same message when its Message-ID and its content fingerprint match
        (:func:`routedesk.ids.message_dedupe_key`): a redelivery counts as seen again and keeps
        the stored workflow ID; a reused Message-ID with other content is a new email, and
        both emails' traces name the collision. Insert-or-ignore on the unique key, so
        concurrent copies of one message (any database) end in one row, none refused.
        """
        mid = ids.message_id_of(raw)
        fingerprint = ids.content_fingerprint(raw)
        key = ids.message_dedupe_key(mid, fingerprint)
        wf_id = ids.email_workflow_id(key, id_prefix)
        with self.db.write() as s:
            found = self._stored_copy(s, raw, mid, fingerprint, key)
            if found is None:
                row = EmailRow(
                    dedupe_key=key,
                    message_id=mid,
                    raw=raw,
                    size=len(raw),
                    source=source,
                    envelope_to=[a.strip().lower() for a in (envelope_to or [])],
                    workflow_id=wf_id,
                )
                new_id = s.exec(  # type: ignore[call-overload]
                    insert_ignoring_conflict(s, EmailRow, ["dedupe_key"], **row.model_dump(exclude={"id"})).returning(
                        EmailRow.id
                    )
                ).scalar()
                if new_id is not None:
                    if mid:
                        self._trace_collisions(s, new_id, mid)
                    return SavedEmail(new_id, key, wf_id, created=True)
                found = self._stored_copy(s, raw, mid, fingerprint, key)  # a concurrent writer's row
                assert found is not None
            email_id, stored_wf = found
            s.exec(  # type: ignore[call-overload]
                update(EmailRow)
                .where(col(EmailRow.id) == email_id)
                .values(deliveries=EmailRow.deliveries + 1, last_delivered_at=utcnow())
            )
            return SavedEmail(email_id, key, stored_wf or wf_id, created=False)

    @staticmethod
    def _stored_copy(
        s: Session, raw: bytes, mid: str | None, fingerprint: str, key: str
    ) -> tuple[int, str | None] | None:
        """(id, workflow ID) of a stored copy of this message, under today's key or the key a
        store made before content fingerprints gave it (same Message-ID, or same bytes)."""
        row = s.exec(select(EmailRow.id, EmailRow.workflow_id).where(EmailRow.dedupe_key == key)).first()
        if row is not None:
            return int(row[0] or 0), row[1]
        legacy = s.exec(
            select(EmailRow.id, EmailRow.workflow_id, EmailRow.raw).where(
                col(EmailRow.dedupe_key).in_(ids.legacy_dedupe_keys(raw, mid))
            )
        ).first()
        if legacy is not None and (not mid or ids.content_fingerprint(legacy[2]) == fingerprint):
            return int(legacy[0] or 0), legacy[1]
        return None

    @staticmethod
    def _trace_collisions(s: Session, email_id: int, mid: str) -> None:
        others: list[int] = s.exec(  # type: ignore[assignment]
            select(EmailRow.id)
            .where(EmailRow.message_id == mid, EmailRow.id != email_id)
            .order_by(col(EmailRow.id))
            .limit(COLLISIONS_NAMED + 1)
        ).all()
        if not others:
            return
        named = ", ".join(str(i) for i in others[:COLLISIONS_NAMED])
        if len(others) > COLLISIONS_NAMED:
            named += ", ..."
        shown = cap_text(mid, 200)
        add_trace(
            s,
            email_id=email_id,
            case_id=None,
            round_=1,
            step="message-id",
            entries=[
                TraceEntry(
                    "intake",
                    f"<{shown}>",
                    "message_id_reused",
                    f"Message-ID also used by email {named} with other content: a different message, routed on its own",
                )
            ],
            new=True,
        )
        for other in others[:COLLISIONS_NAMED]:
            add_trace(
                s,
                email_id=other,
                case_id=None,
                round_=1,
                step=f"message-id:{email_id}",
                entries=[
                    TraceEntry(
                        "intake",
                        f"<{shown}>",
                        "message_id_reused",
                        f"Message-ID also used by email {email_id}, which has other content and is routed on its own",
                    )
                ],
                new=True,
            )

    def prepare_reprocess(self, email_id: int, *, envelope_to: list[str], by: str) -> Reprocess:
        """Clear a rejected or ignored email's decision so a new workflow evaluates it again
        with the configuration as it is now; a held one is evaluated again by its own workflow.

        The new workflow's ID is derived from the email and the reprocess count, and an email
        already being reprocessed returns that workflow: a repeated command is one case. An
        email that already has a case is refused.
        """
        added = [a.strip().lower() for a in envelope_to if a.strip()]
        with self.db.write() as s:
            email = s.get(EmailRow, email_id)
            if email is None:
                raise StoreRefusal(f"no email {email_id}; `routedesk intake list` shows the stored ones")
            if email.case_id is not None:
                case = s.get(CaseRow, email.case_id)
                number = case.number if case is not None else f"case {email.case_id}"
                raise StoreRefusal(f"email {email_id} is already on {number}; there is nothing to reprocess")
            email.envelope_to = list(dict.fromkeys([*email.envelope_to, *added]))
            if email.status == "received":  # a reprocess (or the first evaluation) is under way
                s.add(email)
                return Reprocess(email_id, email.workflow_id or "", started=False, held=False)
            if email.status == "held":  # its workflow waits: evaluated again there on `release`
                s.add(email)
                return Reprocess(email_id, email.workflow_id or "", started=False, held=True)
            earlier = f"{email.status}: {email.reason or '-'}"
            email.reprocessed += 1
            first_run = _REPROCESS_SUFFIX.sub("", email.workflow_id or ids.email_workflow_id(email.dedupe_key))
            email.workflow_id = f"{first_run}-reprocess-{email.reprocessed}"
            email.status, email.reason = "received", None
            s.add(email)
            with_to = f" with envelope recipient(s) {', '.join(added)}" if added else ""
            add_trace(
                s,
                email_id=email_id,
                case_id=None,
                round_=1,
                step=f"reprocess#{email.reprocessed}",
                entries=[
                    TraceEntry(
                        "intake",
                        by,
                        "reprocess",
                        cap_text(
                            f"reprocessed by {by}{with_to}; earlier decision {earlier}; "
                            f"evaluated again by workflow {email.workflow_id}"
                        ),
                    )
                ],
                new=True,
            )
            return Reprocess(email_id, email.workflow_id, started=True, held=False)

    def email_with_case_number(self, email_id: int) -> tuple[EmailRow, str | None] | None:
        """An email and the number of its case (the one it opened or threads onto), if any."""
        with self.db.read() as s:
            email = s.get(EmailRow, email_id)
            if email is None:
                return None
            case = s.get(CaseRow, email.case_id) if email.case_id else None
            if case is None:
                case = s.exec(select(CaseRow).where(CaseRow.source_email_id == email_id)).first()
            return email, case.number if case else None

    def email(self, email_id: int) -> EmailRow | None:
        with self.db.read() as s:
            return s.get(EmailRow, email_id)

    # --- cases and trace -----------------------------------------------------------------

    def case_by_number(self, number: str) -> CaseRow | None:
        number = number.strip().upper()
        if number.isdigit():
            number = ids.case_number(int(number))
        with self.db.read() as s:
            return s.exec(select(CaseRow).where(CaseRow.number == number)).first()

    def trace(self, *, case_id: int | None = None, email_id: int | None = None) -> list[TraceRow]:
        with self.db.read() as s:
            q = select(TraceRow)
            if case_id is not None:
                emails = select(EmailRow.id).where(EmailRow.case_id == case_id)
                q = q.where((col(TraceRow.case_id) == case_id) | col(TraceRow.email_id).in_(emails))
            else:
                q = q.where(TraceRow.email_id == email_id)
            return list(s.exec(q.order_by(col(TraceRow.at), col(TraceRow.id))).all())

    def contact_for(self, s: Session, address: str | None) -> ContactRow | None:
        if not address:
            return None
        link = s.get(ContactEmailRow, address.lower())
        return s.get(ContactRow, link.contact_id) if link else None

    def touch_agent_activity(self, case_id: int, when: datetime | None = None) -> None:
        """Record that the case's assigned agent acted on it (see :func:`touch_agent_activity`)."""
        with self.db.write() as s:
            case = s.get(CaseRow, case_id, with_for_update=True)
            if case is not None:
                touch_agent_activity(s, case, when or utcnow())


class StoreRefusal(Exception):
    """A request the store refuses for a reason the user can act on."""


def record_runtime_edit(s: Session, kind: str, key: str, value: Any, by: str | None) -> None:
    """Remember who changed a value the config file also declares (inside the caller's
    transaction, which holds the row's lock): the next load keeps it or lists it."""
    version = s.exec(select(func.max(ConfigVersionRow.number))).one()
    s.merge(
        RuntimeEditRow(kind=kind, key=key, value=value, set_at=utcnow(), set_by=by or os_user(), config_version=version)
    )


def set_presence(store: Store, agent_id: str, presence: str, *, by: str | None = None) -> list[str]:
    """Set an agent's presence; returns the agent's queues, whose dispatchers should wake."""
    from routedesk.config import Presence

    try:
        value = Presence(presence.capitalize()).value
    except ValueError:
        raise StoreRefusal(f"presence must be one of {', '.join(p.value for p in Presence)}") from None
    with store.db.write() as s:
        # Locked: a transaction deciding on this agent's eligibility (they lock it too) sees
        # the new presence, or this one waits for it and the caller's kick follows it.
        agent = s.get(AgentRow, agent_id, with_for_update=True)
        if agent is None:
            raise StoreRefusal(f"no agent {agent_id!r}")
        agent.presence = value
        s.add(agent)
        record_runtime_edit(s, config_diff.PRESENCE, agent_id, value, by)
        return list(s.exec(select(QueueMemberRow.queue_id).where(QueueMemberRow.agent_id == agent_id)).all())


def set_preferred_agents(store: Store, contact_id: str, agent_ids: list[str], *, by: str | None = None) -> None:
    """Replace a contact's ordered preferred agents: 1 to 3 existing agents, no repeats."""
    from routedesk.config import MAX_PREFERRED_AGENTS

    if not agent_ids:
        raise StoreRefusal("a contact needs at least one preferred agent; use 'clear' to remove them all")
    if len(agent_ids) > MAX_PREFERRED_AGENTS:
        raise StoreRefusal(f"a contact has at most {MAX_PREFERRED_AGENTS} preferred agents, not {len(agent_ids)}")
    if len(set(agent_ids)) != len(agent_ids):
        raise StoreRefusal("an agent is listed twice")
    with store.db.write() as s:
        contact = s.get(ContactRow, contact_id, with_for_update=True)
        if contact is None:
            raise StoreRefusal(f"no contact {contact_id!r}")
        unknown = [a for a in agent_ids if s.get(AgentRow, a) is None]
        if unknown:
            raise StoreRefusal(f"no agent {', '.join(map(repr, unknown))}")
        contact.preferred_agents = list(agent_ids)
        s.add(contact)
        record_runtime_edit(s, config_diff.PREFERRED, contact_id, list(agent_ids), by)


def clear_preferred_agents(store: Store, contact_id: str, *, by: str | None = None) -> None:
    with store.db.write() as s:
        contact = s.get(ContactRow, contact_id, with_for_update=True)
        if contact is None:
            raise StoreRefusal(f"no contact {contact_id!r}")
        contact.preferred_agents = []
        s.add(contact)
        record_runtime_edit(s, config_diff.PREFERRED, contact_id, [], by)


def add_trace(
    s: Session,
    *,
    email_id: int,
    case_id: int | None,
    round_: int,
    step: str,
    entries: list[TraceEntry],
    new: bool = False,
) -> bool:
    """Write the trace entries of one decision step unless that step was already written.

    Called inside the same transaction as the decision's effect, so a retried activity
    either finds both or neither. Returns False when the step existed. ``new`` says the
    caller knows it cannot exist (the same transaction just made what the step is about:
    the case, the offer, the first evaluation), which saves the lookup.
    """
    if not new:
        exists = s.exec(select(TraceRow.id).where(TraceRow.email_id == email_id, TraceRow.step == step)).first()
        if exists is not None:
            return False
    if entries:
        now = utcnow()
        # One multi-row INSERT on the session's connection, not an ORM object per entry: the
        # trace is write-only here, and this runs in every routing transaction.
        s.connection().execute(
            insert(TraceRow),
            [
                {
                    "email_id": email_id,
                    "case_id": case_id,
                    "round": round_,
                    "step": step,
                    "seq": seq,
                    "stage": e.stage,
                    # A sender controls subjects and reasons (addresses, header values): the
                    # trace keeps a bounded line; the email row keeps the whole value.
                    "subject": cap_text(e.subject, TRACE_SUBJECT_LIMIT),
                    "outcome": e.outcome,
                    "reason": cap_text(e.reason),
                    "at": now,
                }
                for seq, e in enumerate(entries)
            ],
        )
    return True


def as_dict(row: Any) -> dict[str, Any]:
    """A row as plain JSON-able data (for ``--json`` output)."""
    data: dict[str, Any] = row.model_dump(mode="json")
    data.pop("raw", None)
    return data


def touch_agent_activity(s: Session, case: CaseRow, when: datetime) -> None:
    """The case's assigned agent acted on it (was assigned, accepted it, replied), inside the
    caller's transaction: ``last_agent_activity_at`` is what an idle-reassignment timer
    measures from. It never moves back (a late retry of an older action)."""

    def aware(t: datetime) -> datetime:  # SQLite gives naive values back; they are UTC
        return t if t.tzinfo else t.replace(tzinfo=UTC)

    last = case.last_agent_activity_at
    if last is None or aware(when) > aware(last):
        case.last_agent_activity_at = when
        s.add(case)
