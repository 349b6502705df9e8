"""Operations on routing workflows: store an email and start (or find) its workflow,
reprocess a decided email, wait for its case. Used by every intake channel, the CLI and
integrations (also importable as ``starter.send``).

The raw email is stored before the workflow starts and the workflow ID is derived from the
message (Message-ID and content fingerprint), so the same email submitted twice, or ten
times at once, through any channel, is one stored email, one workflow and one case.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowQueryFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from routedesk import config_diff, rules, settings
from routedesk.config import RoutingConfig, load_config
from routedesk.contracts import TERMINAL_STAGES, EmailRoutingInput, RoutingOutcome, RoutingStatus, Stage
from routedesk.models import CaseRow, ConfigVersionRow, EmailRow, RuntimeEditRow, utcnow
from routedesk.store import LoadResult, Reprocess, Store, StoreRefusal
from workflows.email_routing import EmailRoutingWorkflow


@dataclass(frozen=True)
class Submission:
    workflow_id: str
    email_id: int
    new_email: bool


async def submit_email(
    client: Client,
    store: Store,
    raw: bytes,
    *,
    source: str = "python",
    envelope_to: list[str] | None = None,
    task_queue: str | None = None,
    id_prefix: str | None = None,
) -> Submission:
    """Store ``raw`` durably, then start (or find) its routing workflow."""
    prefix = settings.id_prefix() if id_prefix is None else id_prefix
    saved = await asyncio.to_thread(store.save_raw_email, raw, source=source, envelope_to=envelope_to, id_prefix=prefix)
    # Running: attach to it. Closed: never start a second run for the same email.
    with contextlib.suppress(WorkflowAlreadyStartedError):
        await client.start_workflow(
            EmailRoutingWorkflow.run,
            EmailRoutingInput(email_id=saved.email_id, id_prefix=prefix),
            id=saved.workflow_id,
            task_queue=task_queue or settings.task_queue(),
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
    return Submission(saved.workflow_id, saved.email_id, saved.created)


async def reprocess_email(
    client: Client,
    store: Store,
    email_id: int,
    *,
    envelope_to: list[str] | None = None,
    by: str = "python",
    task_queue: str | None = None,
    id_prefix: str | None = None,
) -> Reprocess:
    """Evaluate a rejected, ignored or held email again with the configuration as it is now
    (``envelope_to`` adds the routing address that only the envelope knew).

    A rejected or ignored email gets a new workflow, ID derived from the email and the
    reprocess count; a held one is evaluated again by its own waiting workflow. Repeating the
    call while that runs finds the same workflow, so it is still one case; an email that
    already has a case is refused with :class:`routedesk.store.StoreRefusal`.
    """
    prefix = settings.id_prefix() if id_prefix is None else id_prefix
    plan = await asyncio.to_thread(store.prepare_reprocess, email_id, envelope_to=envelope_to or [], by=by)
    if plan.held:
        await client.get_workflow_handle_for(EmailRoutingWorkflow.run, plan.workflow_id).signal(
            EmailRoutingWorkflow.release
        )
    else:
        # Also when a reprocess is already under way: starting is idempotent on the ID, and
        # it covers a crash between the store's commit and the first start.
        with contextlib.suppress(WorkflowAlreadyStartedError):
            await client.start_workflow(
                EmailRoutingWorkflow.run,
                EmailRoutingInput(email_id=email_id, id_prefix=prefix),
                id=plan.workflow_id,
                task_queue=task_queue or settings.task_queue(),
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            )
    return plan


async def wait_for_case(client: Client, workflow_id: str, timeout: float = 30.0) -> RoutingStatus:
    """Wait until the case is in a queue or routing stopped.

    A running workflow answers the ``routing_status`` query (which adds nothing to history,
    unlike an update); a closed one is read from its result or its failure.
    """
    handle = client.get_workflow_handle_for(EmailRoutingWorkflow.run, workflow_id)
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        try:
            desc = await handle.describe()
            running = desc.status == WorkflowExecutionStatus.RUNNING
        except RPCError:
            running = True  # not visible yet
        if not running:
            return await _closed_status(handle)
        try:
            status: RoutingStatus = await handle.query(EmailRoutingWorkflow.routing_status)
            if status.queue or status.stage in TERMINAL_STAGES:
                return status
        except (RPCError, WorkflowQueryFailedError):
            pass  # no worker has picked it up yet
        if time.monotonic() > deadline:
            raise TimeoutError(f"workflow {handle.id} did not queue a case within {timeout:.0f}s; is a worker running?")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.5)


async def _closed_status(handle: WorkflowHandle[Any, RoutingOutcome]) -> RoutingStatus:
    try:
        return await handle.result()  # the workflow's last status
    except WorkflowFailureError as err:
        cause = err.cause
        reason = getattr(cause, "message", None) or str(cause)
        # Rejections recorded before 2026-12-02 failed the workflow; since, they complete.
        stage = Stage.REJECTED if getattr(cause, "type", None) == "EmailRejected" else Stage.FAILED
        return RoutingStatus(stage=stage, email_id=0, reason=reason)


# --- configuration: load, diff, history, what-if (routedesk config ...) ------------------------
#
# The routing config is versioned in the store (``config_version``): a load that changes the
# content is a new number, which every running process picks up (Store.definitions).


@dataclass(frozen=True)
class ConfigPreview:
    """What loading a file would do: its changes against the version in force, and the
    runtime edits it would keep or override."""

    current_version: int | None
    unchanged: bool
    changes: list[config_diff.Change]
    kept: list[str]
    conflicts: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {
            "current_version": self.current_version,
            "unchanged": self.unchanged,
            "changes": [c.as_dict() for c in self.changes],
            "kept_runtime_edits": self.kept,
            "overridden_runtime_edits": self.conflicts,
        }


@dataclass(frozen=True)
class ConfigVersionInfo:
    number: int
    loaded_at: datetime
    loaded_by: str
    source: str | None
    content_hash: str
    summary: str  # the changes against the version before

    def as_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "loaded_at": self.loaded_at.isoformat(),
            "loaded_by": self.loaded_by,
            "source": self.source,
            "content_hash": self.content_hash,
            "summary": self.summary,
        }


@dataclass(frozen=True)
class WhatIfExample:
    case_number: str
    old_queue: str | None
    new_queue: str
    old_priority: str
    new_priority: str
    rule: str  # the route-to-queue rule that decided (or "fallback")
    priority_rule: str  # the last classification rule that set the priority (or "case_defaults")

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class WhatIf:
    since: datetime
    emails: int = 0  # first emails of cases received since then
    changed: int = 0  # a different queue or a different priority
    queue_changed: int = 0
    priority_changed: int = 0
    unrouted: int = 0  # their routing address is not in the file: they would be rejected
    examples: list[WhatIfExample] = dataclass_field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["since"] = self.since.isoformat()
        data["examples"] = [e.as_dict() for e in self.examples]
        return data


WHATIF_EXAMPLES = 10
_SINCE = re.compile(r"(\d+)\s*([mhdw])")
_SINCE_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str) -> timedelta:
    """``30m``, ``12h``, ``7d``, ``2w`` -> a timedelta; :class:`StoreRefusal` for anything else."""
    m = _SINCE.fullmatch(text.strip().lower())
    if m is None or int(m.group(1)) <= 0:
        raise StoreRefusal(f"--since takes a period like 30m, 12h, 7d or 2w, not {text!r}")
    return timedelta(**{_SINCE_UNITS[m.group(2)]: int(m.group(1))})


def load_config_file(
    store: Store, path: str | Path, *, by: str | None = None, cfg: RoutingConfig | None = None
) -> LoadResult:
    """Validate the file (unless ``cfg`` is its validated content) and load it as a new config
    version (no new version when its content is the version in force's)."""
    cfg = cfg or load_config(path)
    return store.load_config(cfg, by=by, source=str(Path(path).resolve()))


def _current_version(s: Session) -> ConfigVersionRow | None:
    return s.exec(select(ConfigVersionRow).order_by(col(ConfigVersionRow.number).desc()).limit(1)).first()


def preview_config_file(store: Store, path: str | Path) -> ConfigPreview:
    """What loading the file would change (nothing is written)."""
    data = config_diff.config_json(load_config(path))
    with store.db.read() as s:
        current = _current_version(s)
        edits = [
            config_diff.Edit(e.kind, e.key, e.value, e.set_by, e.set_at.strftime("%Y-%m-%d %H:%M"))
            for e in s.exec(select(RuntimeEditRow).order_by(col(RuntimeEditRow.kind), col(RuntimeEditRow.key)))
        ]
    previous = current.config if current is not None else None
    if current is not None and current.content_hash == config_diff.content_hash(data):
        return ConfigPreview(current.number, True, [], [], [])
    rec = config_diff.reconcile(previous, data, edits)
    return ConfigPreview(
        current.number if current is not None else None,
        False,
        config_diff.diff(previous, data),
        rec.kept,
        rec.conflicts,
    )


def config_history(store: Store) -> list[ConfigVersionInfo]:
    """Every stored version, oldest first, each with a summary of its changes."""
    out: list[ConfigVersionInfo] = []
    previous: dict[str, Any] | None = None
    with store.db.read() as s:
        for row in s.exec(select(ConfigVersionRow).order_by(col(ConfigVersionRow.number))):
            changes = config_diff.diff(previous, row.config)
            out.append(
                ConfigVersionInfo(
                    row.number,
                    row.loaded_at,
                    row.loaded_by,
                    row.source,
                    row.content_hash,
                    "first version" if previous is None else config_diff.summary(changes),
                )
            )
            previous = row.config
    return out


def config_whatif(store: Store, path: str | Path, since: timedelta) -> WhatIf:
    """Run the file's classification and route-to-queue rules (routedesk.rules, pure) over the
    first emails of the cases received in the period, and count those whose queue or priority
    would differ from their case's. Reads only: no workflow, no writes."""
    cfg = load_config(path)
    contacts = {e: c.id for c in cfg.contacts for e in c.emails}
    result = WhatIf(since=utcnow() - since)
    cols = (
        EmailRow.subject,
        EmailRow.body_text,
        EmailRow.from_address,
        EmailRow.from_name,
        EmailRow.to,
        EmailRow.cc,
        EmailRow.headers,
        CaseRow.number,
        CaseRow.mailbox_address,
        CaseRow.queue_id,
        CaseRow.priority,
    )
    query = (
        select(*cols)  # type: ignore[call-overload]  # sqlmodel types select() up to 4 columns
        .join(CaseRow, col(CaseRow.source_email_id) == col(EmailRow.id))
        .where(col(EmailRow.received_at) >= result.since)
        .order_by(col(EmailRow.id))
    )
    with store.db.read() as s:
        for subject, body, sender, sender_name, to, cc, headers, number, mailbox, queue, priority in s.exec(query):
            result.emails += 1
            box = cfg.mailbox(mailbox)
            if box is None:
                result.unrouted += 1
                continue
            ws = cfg.workstream(box.workstream)
            default = box.case_defaults.priority.value
            ctx = rules.RuleContext(
                subject=subject or "",
                body=body or "",
                sender=sender or "",
                sender_name=sender_name or "",
                mailbox=mailbox,
                to=list(to),
                cc=list(cc),
                contact=contacts.get((sender or "").lower(), ""),
                priority=default,
                headers=dict(headers),
            )
            attributes, class_hits = rules.classify(ws.classification_rules, ctx)
            new_priority = str(attributes.get("priority", default))
            new_queue, route_hits = rules.route(ws.route_to_queue_rules, ws.fallback_queue, ctx)
            queue_differs, priority_differs = new_queue != queue, new_priority != priority
            if not (queue_differs or priority_differs):
                continue
            result.changed += 1
            result.queue_changed += queue_differs
            result.priority_changed += priority_differs
            if len(result.examples) < WHATIF_EXAMPLES:
                setting = [
                    h.rule
                    for h, r in zip(class_hits, ws.classification_rules, strict=True)
                    if h.matched and "priority" in r.set
                ]
                result.examples.append(
                    WhatIfExample(
                        number or "?",
                        queue,
                        new_queue,
                        priority,
                        new_priority,
                        next(h.rule for h in route_hits if h.matched),
                        setting[-1] if setting else "case_defaults",
                    )
                )
    return result
