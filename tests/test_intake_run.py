"""`make run` (python -m starter.run) with its SMTP and HTTP intake, as a user drives it."""

from __future__ import annotations

import asyncio
import os
import signal
import smtplib
import socket
import sys
import uuid
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
from tests.support import EXAMPLES, eventually, example_email, make_email


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


async def test_make_run_accepts_mail_over_smtp_and_http(client: Client, tmp_path: Path) -> None:
    smtp_port, http_port = free_port(), free_port()
    config = tmp_path / "routing.yaml"
    data = yaml.safe_load((EXAMPLES / "routing.yaml").read_text())
    data.setdefault("intake", {}).update({"smtp": {"port": smtp_port}, "http": {"port": http_port}})
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
    assert not (tmp_path / ".routedesk" / "http-token").exists()  # the token came from the env


def test_http_token_is_generated_once_and_kept_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ROUTEDESK_HTTP_TOKEN", raising=False)
    token, source = http_token("ROUTEDESK_HTTP_TOKEN", tmp_path)
    assert len(token) >= 32 and source == str(tmp_path / "http-token")
    assert (tmp_path / "http-token").stat().st_mode & 0o077 == 0
    assert http_token("ROUTEDESK_HTTP_TOKEN", tmp_path)[0] == token  # a restart keeps it
    monkeypatch.setenv("ROUTEDESK_HTTP_TOKEN", "from-env")
    assert http_token("ROUTEDESK_HTTP_TOKEN", tmp_path) == ("from-env", "$ROUTEDESK_HTTP_TOKEN")
