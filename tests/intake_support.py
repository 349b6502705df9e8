"""Helpers for the intake tests: configs with intake options, a local SMTP sink, waits."""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any, TypeVar

import yaml
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlmodel import col, select

from routedesk.config import RoutingConfig, parse_config
from routedesk.models import CaseRow, EmailRow, NotificationRow
from tests.support import EXAMPLES, Stack, eventually

T = TypeVar("T")

# Blocking SMTP/HTTP clients get their own threads: on the default executor they could take
# every thread while the server under test (same event loop) waits for one to store mail.
_CLIENT_THREADS = concurrent.futures.ThreadPoolExecutor(64, thread_name_prefix="test-client")


async def in_client_thread(fn: Callable[..., T], *args: object) -> T:
    return await asyncio.get_running_loop().run_in_executor(_CLIENT_THREADS, fn, *args)


_EXAMPLE = yaml.safe_load((EXAMPLES / "routing.yaml").read_text())


def config_with(
    support: dict[str, Any] | None = None,
    intake: dict[str, Any] | None = None,
    billing: dict[str, Any] | None = None,
) -> RoutingConfig:
    """The example config with options merged into the support / billing mailboxes."""
    data = copy.deepcopy(_EXAMPLE)
    for box in data["mailboxes"]:
        if box["address"] == "support@acme.example":
            box.update(support or {})
        if box["address"] == "billing@acme.example":
            box.update(billing or {})
    if intake is not None:
        data["intake"] = intake
    return parse_config(data)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Delivered:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes

    @property
    def message(self) -> EmailMessage:
        return BytesParser(policy=policy.default).parsebytes(self.raw)  # type: ignore[return-value]


@dataclass
class SmtpSink:
    """A relay that keeps what it receives (aiosmtpd Controller, its own thread)."""

    host: str
    port: int
    refuse: bool = False  # answer RCPT with 550, as a relay does for a dead mailbox
    messages: list[Delivered] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.refuse:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self.lock:
            self.messages.append(
                Delivered(
                    str(envelope.mail_from),
                    [str(r) for r in envelope.rcpt_tos],
                    bytes(envelope.original_content or b""),
                )
            )
        return "250 2.0.0 OK"

    def received(self) -> list[Delivered]:
        with self.lock:
            return list(self.messages)

    def relay(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port, "timeout_seconds": 5}


@contextmanager
def smtp_sink(port: int | None = None, *, refuse: bool = False) -> Iterator[SmtpSink]:
    sink = SmtpSink("127.0.0.1", port or free_port(), refuse=refuse)
    controller = Controller(sink, hostname=sink.host, port=sink.port, ready_timeout=5, server_hostname="sink.localhost")
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


# --- reading the store ------------------------------------------------------------------


def email_row(stack: Stack, email_id: int) -> EmailRow:
    row = stack.store.email(email_id)
    assert row is not None
    return row


async def settled(stack: Stack, email_id: int, *statuses: str, timeout: float = 15.0) -> EmailRow:
    """Wait until intake has decided about the email (one of ``statuses``, default any)."""
    wanted = statuses or ("accepted", "threaded", "rejected", "ignored", "held")

    def probe() -> EmailRow | None:
        row = stack.store.email(email_id)
        return row if row is not None and row.status in wanted else None

    return await eventually(probe, timeout=timeout, what=f"email {email_id} to be {'/'.join(wanted)}")


async def case_for(stack: Stack, email_id: int, timeout: float = 15.0) -> CaseRow:
    """Wait until the email's case exists and is routed to a queue."""

    def probe() -> CaseRow | None:
        with stack.store.db.read() as s:
            case = s.exec(select(CaseRow).where(CaseRow.source_email_id == email_id)).first()
            return case if case is not None and case.queue_id is not None else None

    return await eventually(probe, timeout=timeout, what=f"a queued case for email {email_id}")


def notifications(stack: Stack, kind: str | None = None) -> list[NotificationRow]:
    with stack.store.db.read() as s:
        q = select(NotificationRow).order_by(col(NotificationRow.id))
        if kind:
            q = q.where(NotificationRow.kind == kind)
        return list(s.exec(q).all())
