"""`make run` (python -m starter.run) with its SMTP and HTTP intake, as a user drives it."""

from __future__ import annotations

import asyncio
import os
import signal
import smtplib
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from sqlmodel import select
from temporalio.client import Client

from routedesk.models import CaseRow, EmailRow
from routedesk.store import Store
from starter.run import http_token
from tests.intake_support import free_port, in_client_thread
from tests.store_faults import store_locked
from tests.support import EXAMPLES, eventually, example_email, make_email


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Running:
    proc: asyncio.subprocess.Process
    smtp_port: int
    http_port: int
    db_url: str
    tag: str
    console_port: int


async def start_make_run(client: Client, tmp_path: Path) -> Running:
    smtp_port, http_port, console_port = free_port(), free_port(), free_port()
    config = tmp_path / "routing.yaml"
    data = yaml.safe_load((EXAMPLES / "routing.yaml").read_text())
    data.setdefault("intake", {}).update({"smtp": {"port": smtp_port}, "http": {"port": http_port}})
    # Not the default 8080: another test's `make run` (or a developer's) may hold it.
    data.setdefault("console", {})["port"] = console_port
    config.write_text(yaml.safe_dump(data))
    tag = uuid.uuid4().hex[:8]
    db_url = f"sqlite:///{tmp_path / 'routedesk.db'}"
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": client.service_client.config.target_host,
        "DATABASE_URL": db_url,
        "ROUTEDESK_TASK_QUEUE": f"run-{tag}",
        "ROUTEDESK_ID_PREFIX": f"run{tag}-",
        "ROUTEDESK_HTTP_TOKEN": "run-token",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "starter.run", "--config", str(config),
        cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    return Running(proc, smtp_port, http_port, db_url, tag, console_port)


async def test_make_run_accepts_mail_over_smtp_and_http(client: Client, tmp_path: Path) -> None:
    run = await start_make_run(client, tmp_path)
    proc, smtp_port, http_port, db_url, tag = run.proc, run.smtp_port, run.http_port, run.db_url, run.tag
    store = Store(db_url)
    try:
        await eventually(
            lambda: listening(smtp_port) and listening(http_port),
            timeout=60,
            what="make run to listen",
        )

        def deliver() -> dict[str, tuple[int, bytes]]:
            with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10, local_hostname="swaks.test") as smtp:
                return smtp.sendmail(
                    "jane@globex.example",
                    ["support@acme.example"],
                    example_email("03-key-account-outage.eml"),
                )

        assert await in_client_thread(deliver) == {}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", timeout=10) as http:
            res = await http.post(
                "/v1/emails",
                content=make_email(subject="From the webhook"),
                headers={"Authorization": "Bearer run-token", "Content-Type": "message/rfc822"},
            )
            assert res.status_code == 202, res.text
            assert res.json()["workflow_id"].startswith(f"run{tag}-email-")

        def two_cases() -> list[CaseRow]:
            with store.db.read() as s:
                cases = list(s.exec(select(CaseRow).where(CaseRow.queue_id.is_not(None))).all())  # type: ignore[union-attr]
                return cases if len(cases) == 2 else []

        cases = await eventually(two_cases, timeout=30, what="both emails to become routed cases")
        assert {c.queue_id for c in cases} == {"vip", "general"}
        # The console is part of the service.
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{run.console_port}", timeout=10) as console:
            page = await console.get("/login")
            assert page.status_code == 200 and "Sign in" in page.text
        with store.db.read() as s:
            assert sorted(e.source for e in s.exec(select(EmailRow)).all()) == ["http", "smtp"]
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        store.db.dispose()
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text
    assert f"SMTP intake   127.0.0.1:{smtp_port}" in text and f"http://127.0.0.1:{http_port}/v1/emails" in text
    assert f"console       http://127.0.0.1:{run.console_port}" in text
    assert not (tmp_path / ".routedesk" / "http-token").exists()  # the token came from the env


def test_http_token_is_generated_once_and_kept_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ROUTEDESK_HTTP_TOKEN", raising=False)
    token, source = http_token("ROUTEDESK_HTTP_TOKEN", tmp_path)
    assert len(token) >= 32 and source == str(tmp_path / "http-token")
    assert (tmp_path / "http-token").stat().st_mode & 0o077 == 0
    assert http_token("ROUTEDESK_HTTP_TOKEN", tmp_path)[0] == token  # a restart keeps it
    monkeypatch.setenv("ROUTEDESK_HTTP_TOKEN", "from-env")
    assert http_token("ROUTEDESK_HTTP_TOKEN", tmp_path) == ("from-env", "$ROUTEDESK_HTTP_TOKEN")


async def test_sigterm_answers_what_is_in_flight_and_exits_within_10s(client: Client, tmp_path: Path) -> None:
    run = await start_make_run(client, tmp_path)
    store = Store(run.db_url)
    try:
        await eventually(lambda: listening(run.smtp_port), timeout=60, what="make run to listen")

        idle = socket.create_connection(("127.0.0.1", run.smtp_port), timeout=15)
        in_flight = socket.create_connection(("127.0.0.1", run.smtp_port), timeout=15)
        data_sent = threading.Event()

        def idle_session() -> bytes:
            with idle, idle.makefile("rb") as f:
                return f.read()  # the greeting, then whatever is said before the close

        def stuck_delivery() -> bytes:
            with in_flight, in_flight.makefile("rb") as f:
                f.readline()
                in_flight.sendall(b"EHLO mta.test\r\nMAIL FROM:<jane@globex.example>\r\n")
                in_flight.sendall(b"RCPT TO:<support@acme.example>\r\nDATA\r\n")
                while not f.readline().startswith(b"354"):
                    pass
                in_flight.sendall(make_email(message_id="sigterm@customer.example") + b".\r\n")
                data_sent.set()
                return f.readline()  # the answer to DATA

        with store_locked(store):  # the DATA answer cannot be a 250 before SIGTERM
            idle_said = asyncio.ensure_future(in_client_thread(idle_session))
            answer = asyncio.ensure_future(in_client_thread(stuck_delivery))
            await eventually(data_sent.is_set, what="the message to be sent")
            run.proc.send_signal(signal.SIGTERM)
            began = time.monotonic()
            await asyncio.wait_for(run.proc.wait(), 10)
            stopped_after = time.monotonic() - began
            assert (await answer).startswith(b"451 "), answer.result()  # retried later, not lost
            said = await idle_said
    finally:
        if run.proc.returncode is None:
            run.proc.kill()
        out, _ = await asyncio.wait_for(run.proc.communicate(), 60)
        store.db.dispose()
    assert stopped_after < 10, stopped_after
    assert said.startswith(b"220 ") and b"\r\n421 4.3.2 " in said, said
    assert "Traceback" not in out.decode(errors="replace")
