"""SMTP intake: the address a mail server forwards routing-address mail to (aiosmtpd).

- RCPT TO an address that is not a routing address: ``550 5.1.1``, so the sending server
  bounces it at once instead of us accepting mail we cannot route.
- Larger than ``intake.max_message_bytes``: ``552`` naming the limit (announced as SIZE in
  EHLO, so most clients learn it at MAIL FROM already). Lines of any length are accepted
  within that size.
- ``250`` only after :func:`starter.send.submit_email` returned: the raw bytes are committed
  to the case store and the workflow is started, so a 250 means nothing can be lost. Any
  failure before that is ``451`` (never a 5xx), and the sending server retries later; the
  retry is deduplicated onto the same stored email. The answer waits for the store at most
  ``intake.submit_timeout_seconds`` (:mod:`starter.bounded`).
- A session silent for ``intake.smtp.timeout_seconds`` is closed with ``421``; beyond
  ``intake.smtp.max_sessions`` concurrent sessions a new one gets ``421`` at connect.
- Every refusal is one INFO line without addresses; addresses are logged at DEBUG only.
- STARTTLS (RFC 3207) with ``intake.smtp.tls_cert`` and ``tls_key``; with ``require_tls``
  every command but EHLO/HELO, NOOP, QUIT and STARTTLS gets ``530`` until the session is
  encrypted, so mail never crosses the network in the clear.

The server runs on the caller's event loop because the Temporal client is bound to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import ssl
from dataclasses import dataclass
from typing import Any, AnyStr

from aiosmtpd.smtp import SMTP, Envelope, Session
from temporalio.client import Client

from routedesk.config import Mailbox
from routedesk.ids import MESSAGE_ID_SCAN_BYTES
from routedesk.intake_policy import mailbox_for_address
from routedesk.mail import first_header
from routedesk.store import Store
from starter.bounded import BoundedSubmitter, SubmitAbandoned, SubmitTimeout, failure_summary, log_submit_failure

log = logging.getLogger("routedesk.smtp")


def routing_mailboxes(store: Store) -> dict[str, Mailbox]:
    """The config version in force: a config loaded by another process takes effect at once
    (:meth:`Store.mailboxes` checks the version number on every call)."""
    return store.mailboxes()


def with_return_path(raw: bytes, mail_from: str | None) -> bytes:
    """Prepend ``Return-Path`` as the final-delivery server does (RFC 5321 section 4.4).

    It carries the envelope sender, which is how a null-sender bounce (``MAIL FROM:<>``)
    is recognised later. Deterministic, so a retried delivery yields the same bytes. A
    message that already has one keeps it: forwarding kept the original delivery's
    Return-Path, and for a forwarded bounce that original ``<>`` is the one that matters.
    """
    if mail_from is None:
        return raw
    # Runs on the event loop: only the first part of the header block is read (a header
    # block of megabytes must not stall every other session).
    if first_header(raw[:MESSAGE_ID_SCAN_BYTES], "Return-Path") is not None:
        return raw
    sender = mail_from.strip()
    if sender.startswith("<") and sender.endswith(">"):  # aiosmtpd keeps "<>" as given
        sender = sender[1:-1].strip()
    return b"Return-Path: <" + sender.encode("utf-8", "replace") + b">\r\n" + raw


def redact(reply: str) -> str:
    """A reply as it may be logged at INFO: without the addresses it names."""
    return _ADDRESS.sub("<address>", reply)


_ADDRESS = re.compile(r"<[^<>]*@[^<>]*>|[^\s<>]+@[^\s<>]+")


def _peer_ip(session: Session | None) -> str:
    peer = session.peer if session is not None else None
    return str(peer[0]) if isinstance(peer, tuple) and peer else str(peer or "?")


class Sessions:
    """The open SMTP sessions of one server: bounded, and closed in order at shutdown."""

    def __init__(self, max_sessions: int) -> None:
        self.max_sessions = max_sessions
        self.active: set[IntakeSMTP] = set()
        self.stopping = False
        self.empty = asyncio.Event()
        self.empty.set()
        # Set when shutdown's grace period is over: handlers still waiting answer 451.
        self.give_up: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def add(self, session: IntakeSMTP) -> None:
        self.active.add(session)
        self.empty.clear()

    def discard(self, session: IntakeSMTP) -> None:
        self.active.discard(session)
        if not self.active:
            self.empty.set()


class IntakeSMTP(SMTP):
    """aiosmtpd's SMTP with a session limit, a 421 on idle timeout and on shutdown, and
    replies logged at INFO without the addresses in them."""

    def __init__(self, handler: IntakeHandler, *, sessions: Sessions, max_message_bytes: int, **kw: Any) -> None:
        # RFC 5321 caps lines at 1000 octets, but real mail (long HTML lines from some
        # clients) breaks it; refusing such a message would lose it. So any line that fits
        # in the message size limit is accepted: a longer one makes the message too big
        # (552), never a separate "line too long". The limit is read in SMTP.__init__.
        self.line_length_limit = max_message_bytes + 2
        super().__init__(handler, data_size_limit=max_message_bytes, **kw)
        self._sessions = sessions
        self._refused = False
        self._too_big = f"552 5.3.4 Message too big: the limit is {max_message_bytes} bytes"
        self.in_data = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None  # STARTTLS calls this again on the same session
        if first and (self._sessions.stopping or len(self._sessions.active) >= self._sessions.max_sessions):
            self._refused = True
            why = "Service shutting down" if self._sessions.stopping else "Too many connections"
            peer = transport.get_extra_info("peername")
            log.info("smtp: %s refused at connect: %s", peer[0] if peer else "?", why.lower())
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(f"421 4.3.2 {self.hostname} {why}, try again later\r\n".encode())
            transport.close()
            return
        if first:
            self._sessions.add(self)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._refused:  # the session never started
            return
        self._sessions.discard(self)
        super().connection_lost(error)

    def _timeout_cb(self) -> None:
        # aiosmtpd closes silently; RFC 5321 section 3.8 lets a server say 421 first, and a
        # client that learns why does not count it as a network fault.
        log.info("smtp: %s disconnected after %gs without a command", _peer_ip(self.session), self._timeout_duration)
        self.close_with("421 4.4.2 {host} Timeout, closing connection")

    def close_with(self, reply: str) -> None:
        # A session the client just closed may not have been told yet; writing to a closed
        # TLS transport (after STARTTLS) raises, unlike a plain one.
        if self.transport is not None and not self.transport.is_closing():
            assert isinstance(self.transport, asyncio.WriteTransport)
            self.transport.write(reply.format(host=self.hostname).encode() + b"\r\n")
            self.transport.close()

    async def smtp_DATA(self, arg: str) -> None:
        self.in_data = True
        try:
            await super().smtp_DATA(arg)
        finally:
            self.in_data = False
        if self._sessions.stopping:  # the transaction is answered: now the session may go
            self.close_with("421 4.3.2 {host} Service shutting down")

    async def push(self, status: AnyStr) -> None:
        text = status.decode("utf-8", "surrogateescape") if isinstance(status, bytes) else status
        if text.startswith(("500 Line too long", "552 Error:")):
            # aiosmtpd's own wording names no limit; a line longer than the line limit
            # (the size limit) can only be part of a message that is too big.
            text = self._too_big
        if text[:1] in ("4", "5"):  # a routine refusal: one line, no addresses at INFO
            log.info("smtp: %s answered %s", _peer_ip(self.session), redact(text))
        # surrogateescape: a refused address echoed back may carry undecodable bytes
        await super().push(text.encode("utf-8" if self.enable_SMTPUTF8 else "ascii", "surrogateescape"))


class IntakeHandler:
    """aiosmtpd handler: routing-address recipients only, 250 after the durable submit."""

    def __init__(self, submitter: BoundedSubmitter, sessions: Sessions) -> None:
        self.submitter = submitter
        self.sessions = sessions

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        store = self.submitter.store
        try:
            boxes = await asyncio.wait_for(asyncio.to_thread(routing_mailboxes, store), self.submitter.timeout)
        except Exception as exc:
            log.warning("smtp: cannot read the routing addresses: %s", failure_summary(exc))
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
            sub = await self.submitter.submit(
                raw,
                source="smtp",
                envelope_to=[str(r) for r in envelope.rcpt_tos],
                give_up=[self.sessions.give_up],
            )
        except SubmitAbandoned as exc:
            log_submit_failure(log, "smtp", exc)
            return "451 4.3.2 Service shutting down, try again later"
        except SubmitTimeout as exc:
            # Not known to be stored: a temporary failure makes the sender retry, and the
            # retry finds the email if the late submission committed it after all.
            log_submit_failure(log, "smtp", exc)
            return "451 4.3.0 The case store is busy, try again later"
        except Exception as exc:
            log_submit_failure(log, "smtp", exc)
            return "451 4.3.0 Temporary failure storing the message, try again later"
        log.info("smtp: %s stored as email %s, workflow %s", _peer_ip(session), sub.email_id, sub.workflow_id)
        log.debug("smtp: email %s from %s to %s", sub.email_id, envelope.mail_from, envelope.rcpt_tos)
        return f"250 2.0.0 OK queued as {sub.workflow_id}"


class SmtpTlsError(Exception):
    """The configured certificate or key cannot be used; the message says which and why."""


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    """The server side of STARTTLS: ``cert`` (PEM, the chain after the certificate) and its
    ``key``. The standard library's server defaults: TLS 1.2 or later, no client
    certificate asked for (mail servers do not present one to a receiving server)."""
    for what, path in (("tls_cert", cert), ("tls_key", key)):
        # ssl names neither the file nor the problem; say which, before it tries.
        if not os.path.isfile(path):
            raise SmtpTlsError(f"intake.smtp TLS: {what} {path} does not exist")
        if not os.access(path, os.R_OK):
            raise SmtpTlsError(f"intake.smtp TLS: cannot read {what} {path} (permission denied)")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise SmtpTlsError(
            f"intake.smtp TLS: cannot use certificate {cert} with key {key}: {exc.strerror or exc} "
            "(both must be PEM, and the key must match the certificate)"
        ) from None
    return context


@dataclass
class SmtpIntakeServer:
    server: asyncio.Server
    host: str
    port: int
    sessions: Sessions
    submitter: BoundedSubmitter

    async def stop(self, grace: float = 5.0) -> None:
        """Stop listening, let transactions in flight finish (up to ``grace`` s), close the rest.

        Idle sessions get ``421`` at once; a session inside DATA gets its answer first (a
        store call still waiting when the grace ends answers ``451``), then ``421``.
        """
        self.sessions.stopping = True
        self.server.close()
        for session in list(self.sessions.active):
            if not session.in_data:
                session.close_with("421 4.3.2 {host} Service shutting down")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.sessions.empty.wait(), grace)
        if not self.sessions.give_up.done():
            self.sessions.give_up.set_result(None)
        with contextlib.suppress(TimeoutError):  # the 451s are being written
            await asyncio.wait_for(self.sessions.empty.wait(), 1.0)
        for session in list(self.sessions.active):  # still sending DATA after the grace
            session.close_with("421 4.3.2 {host} Service shutting down")
        await self.server.wait_closed()


async def start_smtp_intake(
    client: Client,
    store: Store,
    *,
    host: str = "127.0.0.1",
    port: int = 2525,
    max_message_bytes: int = 25 * 1024 * 1024,
    timeout_seconds: float = 300,
    max_sessions: int = 100,
    submit_timeout: float = 10,
    task_queue: str | None = None,
    id_prefix: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    require_tls: bool = False,
) -> SmtpIntakeServer:
    """Listen on ``host:port`` (0: a free port) on the running loop; raises OSError if taken.

    ``tls_cert`` and ``tls_key``: offer STARTTLS with them (:class:`SmtpTlsError` if they
    cannot be loaded); ``require_tls``: refuse mail before it (530).

    ``timeout_seconds``: a session that sends no command for that long (the DATA transfer
    included) is closed with 421. ``max_sessions``: more concurrent sessions get 421 at
    connect. ``submit_timeout``: the longest a DATA answer waits for the store and Temporal
    before it is a 451.
    """
    loop = asyncio.get_running_loop()
    if require_tls and not (tls_cert and tls_key):
        raise SmtpTlsError("intake.smtp.require_tls needs tls_cert and tls_key")
    context = tls_context(tls_cert, tls_key) if tls_cert and tls_key else None
    quiet_aiosmtpd()
    sessions = Sessions(max_sessions)
    submitter = BoundedSubmitter(client, store, timeout=submit_timeout, task_queue=task_queue, id_prefix=id_prefix)
    handler = IntakeHandler(submitter, sessions)
    hostname = socket.gethostname() or "localhost"  # not getfqdn(): it may block on DNS

    def factory() -> Any:
        return IntakeSMTP(
            handler,
            sessions=sessions,
            max_message_bytes=max_message_bytes,
            timeout=timeout_seconds,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=hostname,
            ident="routedesk intake",
            tls_context=context,
            require_starttls=require_tls,
            loop=loop,
        )

    server = await loop.create_server(factory, host=host, port=port)
    bound = server.sockets[0].getsockname()
    return SmtpIntakeServer(server, bound[0], bound[1], sessions, submitter)


def quiet_aiosmtpd() -> None:
    """aiosmtpd logs every command line (MAIL FROM and RCPT TO addresses included) at INFO.

    Addresses belong at DEBUG; our own INFO lines say what was refused or stored. Unless
    the application chose a level for aiosmtpd's logger (``mail.log``), keep its warnings only.
    """
    aiosmtpd_log = logging.getLogger("mail.log")
    if aiosmtpd_log.level == logging.NOTSET:
        aiosmtpd_log.setLevel(logging.WARNING)
