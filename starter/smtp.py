"""SMTP intake: the address a mail server forwards routing-address mail to (aiosmtpd).

- RCPT TO an address that is not a routing address: ``550 5.1.1``, so the sending server
  bounces it at once instead of us accepting mail we cannot route.
- Larger than ``intake.max_message_bytes``: ``552`` (announced as SIZE in EHLO, so most
  clients learn it at MAIL FROM already).
- ``250`` only after :func:`starter.send.submit_email` returned: the raw bytes are committed
  to the case store and the workflow is started, so a 250 means nothing can be lost. Any
  failure before that is ``451``, and the sending server retries later; the retry is
  deduplicated on the Message-ID (or, without one, on the identical bytes).

The server runs on the caller's event loop because the Temporal client is bound to it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlmodel import col, select
from temporalio.client import Client

from routedesk.config import Mailbox
from routedesk.intake_policy import mailbox_for_address
from routedesk.models import MailboxRow
from routedesk.store import Store
from starter.send import submit_email

log = logging.getLogger("routedesk.smtp")


class IntakeSMTP(SMTP):
    # RFC 5321 caps lines at 1000 octets, but real mail (long HTML lines from some
    # clients) breaks it; refusing such a message would lose it, so allow long lines.
    line_length_limit = 1 << 20


def routing_mailboxes(store: Store) -> dict[str, Mailbox]:
    """Read fresh from the store: a config loaded by another process takes effect at once."""
    with store.db.read() as s:
        rows = s.exec(select(MailboxRow).order_by(col(MailboxRow.position))).all()
        return {r.address: Mailbox.model_validate(r.config) for r in rows}


def with_return_path(raw: bytes, mail_from: str | None) -> bytes:
    """Prepend ``Return-Path`` as the final-delivery server does (RFC 5321 section 4.4).

    It carries the envelope sender, which is how a null-sender bounce (``MAIL FROM:<>``)
    is recognised later. Deterministic, so a retried delivery yields the same bytes. A
    message that already has one keeps it: forwarding kept the original delivery's
    Return-Path, and for a forwarded bounce that original ``<>`` is the one that matters.
    """
    if mail_from is None:
        return raw
    try:
        present = "Return-Path" in BytesHeaderParser(policy=compat32).parsebytes(raw)
    except Exception:  # unparseable headers: add ours, it can only help
        present = False
    if present:
        return raw
    sender = mail_from.strip()
    if sender.startswith("<") and sender.endswith(">"):  # aiosmtpd keeps "<>" as given
        sender = sender[1:-1].strip()
    return b"Return-Path: <" + sender.encode("utf-8", "replace") + b">\r\n" + raw


class IntakeHandler:
    """aiosmtpd handler: routing-address recipients only, 250 after the durable submit."""

    def __init__(
        self,
        client: Client,
        store: Store,
        *,
        task_queue: str | None = None,
        id_prefix: str | None = None,
    ) -> None:
        self.client = client
        self.store = store
        self.task_queue = task_queue
        self.id_prefix = id_prefix

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        try:
            boxes = await asyncio.to_thread(routing_mailboxes, self.store)
        except Exception:
            log.exception("cannot read the routing addresses")
            return "451 4.3.0 Routing addresses unavailable, try again later"
        if mailbox_for_address(boxes, address) is None:
            return f"550 5.1.1 <{address}>: not a routing address here"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content
        if content is None:
            return "554 5.6.0 No message data"
        raw = with_return_path(bytes(content), envelope.mail_from)
        try:
            sub = await submit_email(
                self.client,
                self.store,
                raw,
                source="smtp",
                envelope_to=[str(r) for r in envelope.rcpt_tos],
                task_queue=self.task_queue,
                id_prefix=self.id_prefix,
            )
        except Exception:
            # Not stored or not started: a temporary failure makes the sender retry.
            log.exception("SMTP intake could not submit a message from %s", envelope.mail_from)
            return "451 4.3.0 Temporary failure storing the message, try again later"
        log.info(
            "smtp: %s -> %s stored as email %s, workflow %s",
            envelope.mail_from,
            envelope.rcpt_tos,
            sub.email_id,
            sub.workflow_id,
        )
        return f"250 2.0.0 OK queued as {sub.workflow_id}"


@dataclass
class SmtpIntakeServer:
    server: asyncio.Server
    host: str
    port: int

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()


async def start_smtp_intake(
    client: Client,
    store: Store,
    *,
    host: str = "127.0.0.1",
    port: int = 2525,
    max_message_bytes: int = 25 * 1024 * 1024,
    task_queue: str | None = None,
    id_prefix: str | None = None,
) -> SmtpIntakeServer:
    """Listen on ``host:port`` (0: a free port) on the running loop; raises OSError if taken."""
    loop = asyncio.get_running_loop()
    handler = IntakeHandler(client, store, task_queue=task_queue, id_prefix=id_prefix)
    hostname = socket.gethostname() or "localhost"  # not getfqdn(): it may block on DNS

    def factory() -> Any:
        return IntakeSMTP(
            handler,
            data_size_limit=max_message_bytes,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=hostname,
            ident="routedesk intake",
            loop=loop,
        )

    server = await loop.create_server(factory, host=host, port=port)
    bound = server.sockets[0].getsockname()
    return SmtpIntakeServer(server, bound[0], bound[1])
