"""STARTTLS on the SMTP intake, with a self-signed certificate made by the test (``openssl``)
and ``smtplib.starttls``, against the real intake, worker and dev server."""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from pathlib import Path

import pytest
from temporalio.client import Client

from routedesk.config import ConfigError, IntakeSettings
from routedesk.store import Store
from starter.run import IntakeChannelError, start_intake_channels
from starter.smtp import SmtpIntakeServer, SmtpTlsError, start_smtp_intake
from tests.intake_support import case_for, config_with, in_client_thread
from tests.support import Stack, make_email, self_signed
from tests.test_intake_smtp import smtp_intake


def trusting(cert: Path) -> ssl.SSLContext:
    """A client that verifies the server against the test's certificate, as a mail server
    with ``smtp_tls_security_level = secure`` and that certificate as its CA would."""
    return ssl.create_default_context(cafile=str(cert))


@dataclass
class TlsSession:
    offered: bool  # STARTTLS in the EHLO answer
    before: tuple[int, bytes]  # the answer to MAIL before STARTTLS
    starttls: tuple[int, bytes]
    version: str | None  # the TLS version negotiated
    data: tuple[int, bytes]  # the answer to DATA, over TLS


async def deliver_over_tls(server: SmtpIntakeServer, cert: Path, raw: bytes) -> TlsSession:
    def talk() -> TlsSession:
        with smtplib.SMTP(server.host, server.port, timeout=10, local_hostname="client.test") as smtp:
            smtp.ehlo()
            offered = smtp.has_extn("starttls")
            before = smtp.mail("someone@customer.example")
            if before[0] == 250:
                smtp.rset()
            started = smtp.starttls(context=trusting(cert))
            assert isinstance(smtp.sock, ssl.SSLSocket)
            version = smtp.sock.version()
            smtp.ehlo()
            assert smtp.mail("someone@customer.example")[0] == 250
            assert smtp.rcpt("support@acme.example")[0] == 250
            return TlsSession(offered, before, started, version, smtp.data(raw))

    return await in_client_thread(talk)


async def test_required_starttls_refuses_mail_in_the_clear_then_accepts_it_encrypted(
    stack: Stack, tmp_path: Path
) -> None:
    cert, key = self_signed(tmp_path)
    raw = make_email(subject="Over TLS", message_id="tls-1@customer.example")
    async with smtp_intake(stack, tls_cert=str(cert), tls_key=str(key), require_tls=True) as server:
        seen = await deliver_over_tls(server, cert, raw)
    assert seen.offered
    assert seen.before[0] == 530 and b"STARTTLS" in seen.before[1]
    assert seen.starttls[0] == 220 and seen.version in ("TLSv1.2", "TLSv1.3")
    assert seen.data[0] == 250
    [email] = stack.emails()
    assert email.raw.endswith(raw) and email.source == "smtp"
    case = await case_for(stack, email.id or 0)
    assert case.subject == "Over TLS"


async def test_optional_starttls_still_takes_mail_in_the_clear(stack: Stack, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    async with smtp_intake(stack, tls_cert=str(cert), tls_key=str(key)) as server:
        seen = await deliver_over_tls(server, cert, make_email(message_id="tls-2@customer.example"))

        def plain() -> tuple[int, bytes]:
            with smtplib.SMTP(server.host, server.port, timeout=10, local_hostname="client.test") as smtp:
                smtp.ehlo()
                assert smtp.has_extn("starttls")
                smtp.mail("someone@customer.example")
                smtp.rcpt("support@acme.example")
                return smtp.data(make_email(message_id="plain-1@customer.example"))

        code, _ = await in_client_thread(plain)
    assert seen.offered and seen.before[0] == 250 and seen.data[0] == 250
    assert code == 250
    assert sorted(e.message_id or "" for e in stack.emails()) == ["plain-1@customer.example", "tls-2@customer.example"]


async def test_unusable_certificate_stops_the_intake_with_one_line(client: Client, tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'unused.db'}")  # never reached: TLS is checked first
    cert, key = self_signed(tmp_path)
    with pytest.raises(SmtpTlsError, match=r"^intake.smtp TLS: .*missing.pem does not exist$"):
        await start_smtp_intake(client, store, port=0, tls_cert=str(tmp_path / "missing.pem"), tls_key=str(key))
    (tmp_path / "other").mkdir()
    other_cert, _ = self_signed(tmp_path / "other")
    with pytest.raises(SmtpTlsError, match="the key must match the certificate"):
        await start_smtp_intake(client, store, port=0, tls_cert=str(other_cert), tls_key=str(key))
    intake = IntakeSettings.model_validate(
        {"smtp": {"port": 0, "tls_cert": str(cert), "tls_key": str(tmp_path / "nokey.pem")}, "http": {"enabled": False}}
    )
    with pytest.raises(IntakeChannelError, match=r"nokey.pem does not exist"):
        await start_intake_channels(client, store, intake, http=False)
    store.db.dispose()


def test_require_tls_without_a_certificate_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"intake.smtp: require_tls needs tls_cert and tls_key"):
        config_with(intake={"smtp": {"require_tls": True}})
    with pytest.raises(ConfigError, match=r"tls_cert and tls_key go together"):
        config_with(intake={"smtp": {"tls_cert": "/etc/ssl/cert.pem"}})
    ok = config_with(intake={"smtp": {"tls_cert": "c.pem", "tls_key": "k.pem", "require_tls": True}})
    assert (ok.intake.smtp.tls_cert, ok.intake.smtp.require_tls) == ("c.pem", True)
