"""Messages to outside channels: offer notifications to agents, presence switches, supervisor alerts.

Each message is a :class:`~routedesk.models.PushRow` per channel, written in the transaction
that decided it (the offer, the switch, the alert) or by the activity that sends it, before
anything is sent. Delivery marks it ``sent``; a failed attempt is counted and the caller
retries; after the last attempt it is ``failed`` with the error, and the case goes on
unaffected. Channels:

- ``webhook``: a POST of the generic JSON payload (``event``, ``case_number``, ``subject``,
  ``priority``, ``queue``, ``deadline``, ``accept_url``, ``decline_url``...);
- ``slack``: a POST of a Slack incoming-webhook payload, ``{"text": ..., "blocks": [...]}``;
- ``email``: a plain-text email through ``intake.relay`` (none configured: ``failed`` with
  that reason, at once), sent with :func:`routedesk.notifications.send_via_relay`.

An offer's rows are recorded by :func:`offer_payloads`, which the ``notify_offer`` activity
(``activities/offer_notify.py``) calls before it delivers them.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from contextvars import ContextVar, Token
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

import httpx
from sqlmodel import Session, col, select

from routedesk.config import NotifyChannels, RoutingSettings, SupervisorChannels
from routedesk.models import CaseRow, ConfigVersionRow, OfferRow, PushRow, SettingRow, utcnow
from routedesk.store import Store, insert_ignoring_conflict

WEBHOOK_TIMEOUT_SECONDS = 10.0

# --- the channels in force (from the config version in force, cached per version) ---------

_cache: weakref.WeakKeyDictionary[Store, tuple[int, dict[str, NotifyChannels], SupervisorChannels]] = (
    weakref.WeakKeyDictionary()
)
_cache_lock = threading.Lock()


def _channels(s: Session, store: Store) -> tuple[dict[str, NotifyChannels], SupervisorChannels]:
    # The version in force as the store's cached definitions know it (checked at most once a
    # second): no query per offer.
    number = store.definitions().version
    if not number:  # a store loaded before versions were recorded: no channels
        return {}, SupervisorChannels()
    with _cache_lock:
        hit = _cache.get(store)
    if hit is not None and hit[0] == number:
        return hit[1], hit[2]
    row = s.get(ConfigVersionRow, number)
    assert row is not None
    agents = {a["id"]: NotifyChannels.model_validate(a.get("notify") or {}) for a in row.config.get("agents", [])}
    supervisors = SupervisorChannels.model_validate(row.config.get("supervisors") or {})
    with _cache_lock:
        _cache[store] = (number, agents, supervisors)
    return agents, supervisors


def agent_channels(s: Session, store: Store, agent_id: str) -> NotifyChannels:
    return _channels(s, store)[0].get(agent_id) or NotifyChannels()


def supervisor_channels(s: Session, store: Store) -> SupervisorChannels:
    return _channels(s, store)[1]


def console_url(s: Session) -> str:
    row = s.get(SettingRow, "routing")
    return (RoutingSettings.model_validate(row.value) if row else RoutingSettings()).console_url


# --- payloads -------------------------------------------------------------------------------


def slack_payload(text: str, fields: dict[str, str], links: dict[str, str]) -> dict[str, Any]:
    """A Slack incoming-webhook message: ``text`` for notifications, blocks for the layout."""
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": text}},
    ]
    if fields:
        blocks.append(
            {"type": "section", "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{v}"} for k, v in fields.items()]}
        )
    if links:
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {"type": "button", "text": {"type": "plain_text", "text": label}, "url": url}
                    for label, url in links.items()
                ],
            }
        )
    return {"text": text, "blocks": blocks}


def email_payload(subject: str, lines: list[str]) -> dict[str, Any]:
    return {"subject": subject, "body": "\n".join(lines) + "\n"}


def record(
    s: Session,
    *,
    key: str,
    kind: str,
    recipient: str,
    webhook: str | None,
    slack_webhook: str | None,
    emails: list[str],
    generic: dict[str, Any],
    slack: dict[str, Any],
    mail: dict[str, Any],
) -> None:
    """One pending row per configured channel, unless the key already has it (a retry)."""
    rows: list[tuple[str, str, dict[str, Any]]] = []
    if webhook:
        rows.append(("webhook", webhook, generic))
    if slack_webhook:
        rows.append(("slack", slack_webhook, slack))
    rows += [("email", address, mail) for address in emails]
    for channel, target, payload in rows:
        s.connection().execute(
            insert_ignoring_conflict(
                s,
                PushRow,
                ["key", "channel", "target"],
                key=key,
                kind=kind,
                recipient=recipient,
                channel=channel,
                target=target,
                payload=payload,
                status="pending",
                attempts=0,
                created_at=utcnow(),
            )
        )


def pending(store: Store, key: str) -> list[int]:
    with store.db.read() as s:
        return [
            r
            for r in s.exec(
                select(PushRow.id).where(PushRow.key == key, PushRow.status == "pending").order_by(col(PushRow.id))
            ).all()
            if r is not None
        ]


# --- delivery -------------------------------------------------------------------------------


class PushFailed(Exception):
    """One attempt failed; the caller retries (or records it failed after the last)."""


async def deliver(store: Store, push_id: int, *, final: bool) -> str:
    """Send one pending push; its status after the attempt. ``final``: the last attempt, so a
    failure is recorded as ``failed`` instead of raised."""
    with store.db.read() as s:
        row = s.get(PushRow, push_id)
    if row is None or row.status != "pending":
        return row.status if row is not None else "missing"
    error: str | None = None
    try:
        if row.channel == "email":
            await asyncio.to_thread(_send_email, store, row)
        else:
            async with httpx.AsyncClient(timeout=WEBHOOK_TIMEOUT_SECONDS) as http:
                answer = await http.post(row.target, json=row.payload)
            if answer.status_code >= 300:
                error = f"{row.target} answered {answer.status_code} {answer.text[:200]}".strip()
    except _NoRelay as exc:
        error, final = str(exc), True  # no retry configures a relay
    except Exception as exc:  # the channel's error, recorded; the case is unaffected
        error = f"{type(exc).__name__}: {exc}"
    return await asyncio.to_thread(_finish, store, push_id, error, final)


def _finish(store: Store, push_id: int, error: str | None, final: bool) -> str:
    with store.db.write() as s:
        row = s.get(PushRow, push_id, with_for_update=True)
        assert row is not None
        row.attempts += 1
        if error is None:
            row.status, row.sent_at, row.last_error = "sent", utcnow(), None
        else:
            row.last_error = error
            if final:
                row.status = "failed"
        s.add(row)
        status = row.status
    if error is not None and not final:
        raise PushFailed(error)
    return status


class _NoRelay(Exception):
    pass


def _send_email(store: Store, row: PushRow) -> None:
    from routedesk.notifications import send_via_relay, wire_address

    relay = store.intake_settings().relay
    if relay is None:
        raise _NoRelay("no intake.relay configured: email notifications cannot be sent")
    msg = EmailMessage()
    sender = row.payload.get("from") or "routedesk@localhost"
    msg["From"] = sender
    msg["To"] = row.target
    msg["Subject"] = " ".join(str(row.payload.get("subject", "routedesk")).split())
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = make_msgid(f"push{row.id}", domain=sender.rpartition("@")[2] or "localhost")
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(str(row.payload.get("body", "")))
    send_via_relay(relay, wire_address(row.target), msg.as_bytes())


def iso(value: datetime) -> str:
    """ISO 8601 in UTC with a ``Z`` (a naive value from the store is UTC)."""
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat().replace("+00:00", "Z")


# --- keys decided by a transaction, delivered by its activity after the commit -----------------

_collected: ContextVar[list[str] | None] = ContextVar("routedesk_pushes", default=None)


def note(key: str) -> None:
    """A transaction recorded pushes under ``key``: the activity that ran it delivers them
    after its commit (see :func:`collecting`)."""
    keys = _collected.get()
    if keys is not None:
        keys.append(key)


def collecting() -> tuple[list[str], Token[list[str] | None]]:
    """Start collecting the keys noted by transactions run from this task (threads started
    with ``asyncio.to_thread`` share the list: they run in a copy of this context)."""
    keys: list[str] = []
    return keys, _collected.set(keys)


def stop_collecting(token: Token[list[str] | None]) -> None:
    _collected.reset(token)


_background: set[asyncio.Task[None]] = set()
BACKGROUND_ATTEMPTS = 4


def deliver_soon(store: Store, keys: list[str]) -> None:
    """Deliver presence switches and alerts in the background, a few attempts each: they are
    decided inside store transactions run by local activities, which must not wait for a
    webhook. The rows are recorded either way; a final failure is marked ``failed``."""
    if not keys:
        return
    task = asyncio.get_running_loop().create_task(_deliver_keys(store, list(dict.fromkeys(keys))))
    _background.add(task)
    task.add_done_callback(_background.discard)


async def _deliver_keys(store: Store, keys: list[str]) -> None:
    for key in keys:
        for push_id in await asyncio.to_thread(pending, store, key):
            for attempt in range(1, BACKGROUND_ATTEMPTS + 1):
                try:
                    await deliver(store, push_id, final=attempt == BACKGROUND_ATTEMPTS)
                    break
                except PushFailed:
                    await asyncio.sleep(0.5 * 2 ** (attempt - 1))  # bounded backoff between attempts


# A pending presence notice or alert this old was left by a worker that stopped before it
# sent it (they are sent right after their commit): the next worker to start sends it.
STALE_PENDING_SECONDS = 60.0


def stale_pending_keys(store: Store, older_than: float = STALE_PENDING_SECONDS) -> list[str]:
    """Keys of presence notices and alerts still pending after ``older_than`` seconds. Offer
    notifications are not among them: their activity retries them durably."""
    cutoff = utcnow() - timedelta(seconds=older_than)
    with store.db.read() as s:
        keys = s.exec(
            select(PushRow.key)
            .where(PushRow.status == "pending", PushRow.kind != "offer", col(PushRow.created_at) < cutoff)
            .order_by(col(PushRow.id))
        ).all()
    return list(dict.fromkeys(keys))


async def resume_pending(store: Store, older_than: float = STALE_PENDING_SECONDS) -> int:
    """Send what a stopped worker left pending (at worker start); how many messages' keys.
    At least once: a worker that died after sending but before recording sends it again."""
    keys = await asyncio.to_thread(stale_pending_keys, store, older_than)
    await _deliver_keys(store, keys)
    return len(keys)


# --- offer notifications (recorded and sent by the notify_offer activity) ---------------------


def offer_payloads(store: Store, offer_id: int) -> str | None:
    """Record the pending rows of the offer's notification; its key (None: nothing to send)."""
    with store.db.write() as s:
        offer = s.get(OfferRow, offer_id)
        if offer is None:
            return None
        case = s.get(CaseRow, offer.case_id)
        assert case is not None
        channels = agent_channels(s, store, offer.agent_id)
        if not channels.any:
            return None
        ws = store.workstream(case.workstream_id)
        base = console_url(s)
        deadline = offer.created_at + timedelta(seconds=ws.offer_timeout_seconds)
        accept_url = f"{base}/agent/offers/{offer_id}/accept"
        decline_url = f"{base}/agent/offers/{offer_id}/decline"
        generic = {
            "event": "offer",
            "offer_id": offer_id,
            "agent_id": offer.agent_id,
            "kind": offer.kind,
            "case_number": offer.case_number,
            "subject": case.subject,
            "priority": case.priority,
            "queue": offer.queue_id,
            "deadline": iso(deadline),
            "accept_url": accept_url,
            "decline_url": decline_url,
        }
        text = f"New offer: {offer.case_number} ({case.priority}) {case.subject}"
        record(
            s,
            key=f"offer:{offer_id}",
            kind="offer",
            recipient=offer.agent_id,
            webhook=channels.webhook,
            slack_webhook=channels.slack_webhook,
            emails=[channels.email] if channels.email else [],
            generic=generic,
            slack=slack_payload(
                text,
                {
                    "Case": offer.case_number,
                    "Priority": case.priority,
                    "Queue": offer.queue_id or "-",
                    "Answer by": iso(deadline),
                },
                {"Accept": accept_url, "Decline": decline_url},
            ),
            mail={
                **email_payload(
                    f"[{offer.case_number}] offered to you: {case.subject}",
                    [
                        text,
                        f"Queue: {offer.queue_id or '-'}",
                        f"Answer by: {iso(deadline)}",
                        f"Accept: {accept_url}",
                        f"Decline: {decline_url}",
                    ],
                ),
                "from": case.mailbox_address,
            },
        )
        return f"offer:{offer_id}"
