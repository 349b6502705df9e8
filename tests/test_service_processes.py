"""The service's processes run apart (``routedesk worker``, ``routedesk intake smtp``,
``routedesk intake http``), each stopping on SIGTERM; and a Temporal server without our
search attributes: workers refuse, ``routedesk temporal setup`` registers them (twice is fine)."""

from __future__ import annotations

import asyncio
import os
import signal
import smtplib
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest_asyncio
from sqlmodel import select
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from routedesk.health import Probe
from routedesk.metrics import free_local_port
from routedesk.models import CaseRow
from routedesk.store import Store
from starter.http import create_app
from starter.send import submit_email
from tests.cli import routedesk, stack_env
from tests.conftest import temporal_cli_path
from tests.support import EXAMPLES, ROOT, Stack, eventually, example_email

TOKEN = "service-test-token"


@dataclass
class Service:
    """A long-running ``routedesk ...`` process, its output collected as it runs."""

    proc: asyncio.subprocess.Process
    output: list[str] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, *args: str, env: dict[str, str]) -> Service:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "routedesk.cli.app",
            *args,
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL,
        )
        svc = cls(proc)
        svc.reader = asyncio.create_task(svc._read())
        return svc

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.output.append(line.decode(errors="replace").rstrip())

    @property
    def text(self) -> str:
        return "\n".join(self.output)

    async def running(self) -> None:
        def probe() -> bool:
            if self.proc.returncode is not None:
                raise AssertionError(f"exited {self.proc.returncode}:\n{self.text}")
            return "SIGTERM or Ctrl-C stops it." in self.text

        await eventually(probe, timeout=30, what="the process to be running")

    async def stop(self) -> tuple[int, float]:
        """SIGTERM; the exit code and how long it took."""
        started = time.monotonic()
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.proc.wait(), 15)
        if self.reader is not None:
            await self.reader
        return code, time.monotonic() - started


async def test_worker_and_intakes_run_as_separate_processes(stack_without_worker: Stack) -> None:
    stack = stack_without_worker
    smtp_port, http_port, health_port = free_local_port(), free_local_port(), free_local_port()
    env = {**stack_env(stack), "ROUTEDESK_HTTP_TOKEN": TOKEN}
    worker = await Service.start("worker", "--health-port", str(health_port), env=env)
    smtp = await Service.start("intake", "smtp", "--port", str(smtp_port), env=env)
    http = await Service.start("intake", "http", "--port", str(http_port), env=env)
    services = [worker, smtp, http]
    try:
        for svc in services:
            await svc.running()
        assert f"SMTP intake   127.0.0.1:{smtp_port}" in smtp.text and "HTTP intake" not in smtp.text
        assert f"HTTP intake   POST http://127.0.0.1:{http_port}/v1/emails" in http.text
        assert f"health        http://127.0.0.1:{health_port}/readyz" in worker.text

        raw = example_email("03-key-account-outage.eml")
        await asyncio.to_thread(
            lambda: smtplib.SMTP("127.0.0.1", smtp_port, timeout=10).sendmail(
                "jane@globex.example", ["support@acme.example"], raw
            )
        )
        async with httpx.AsyncClient(timeout=10) as web:
            posted = await web.post(
                f"http://127.0.0.1:{http_port}/v1/emails",
                content=example_email("02-invoice-question.eml"),
                headers={"Content-Type": "message/rfc822", "Authorization": f"Bearer {TOKEN}"},
            )
            assert posted.status_code == 202, posted.text

            def routed() -> list[str]:
                with stack.store.db.read() as s:
                    rows = s.exec(select(CaseRow).where(CaseRow.queue_id != None)).all()  # noqa: E711
                    return sorted(str(c.queue_id) for c in rows)

            # Routed by the worker process: this test runs no worker of its own.
            assert await eventually(lambda: routed() == ["billing", "vip"], what="both emails routed") is True

            for base in (f"http://127.0.0.1:{http_port}", f"http://127.0.0.1:{health_port}"):
                assert (await web.get(f"{base}/healthz")).status_code == 200
                ready = await web.get(f"{base}/readyz")
                assert ready.status_code == 200, ready.text
            metrics = (await web.get(f"http://127.0.0.1:{health_port}/metrics")).text
        assert 'routedesk_cases_routed_total{queue="vip"} 1.0' in metrics
        # The SDK's own worker metrics, from the worker's runtime.
        assert "temporal_worker_task_slots_available" in metrics or "temporal_workflow_task_" in metrics
    finally:
        results = [await svc.stop() for svc in services]
    for svc, (code, took) in zip(services, results, strict=True):
        assert code == 0, svc.text
        assert took < 10, f"took {took:.1f}s to stop"
        assert "Traceback" not in svc.text
    assert "stopping the worker" in worker.text and "stopping the intake channels" in smtp.text


@pytest_asyncio.fixture
async def bare_server() -> AsyncIterator[WorkflowEnvironment]:
    """A second dev server, started without our search attributes (as any real cluster is)."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli_path(),
        data_converter=pydantic_data_converter,
        dev_server_log_level="error",
    )
    try:
        yield env
    finally:
        await env.shutdown()


async def test_workers_refuse_until_temporal_setup_registers_the_search_attributes(
    bare_server: WorkflowEnvironment, tmp_path: Path
) -> None:
    client: Client = bare_server.client
    address = client.service_client.config.target_host
    store = Store(f"sqlite:///{tmp_path / 'routedesk.db'}").init()
    from routedesk.config import load_config

    store.load_config(load_config(EXAMPLES / "routing.yaml"))
    env = {
        "DATABASE_URL": store.db.url,
        "TEMPORAL_ADDRESS": address,
        "ROUTEDESK_TASK_QUEUE": "bare-server",
        "ROUTEDESK_ID_PREFIX": "bare-",
    }

    refused = await routedesk("worker", env=env, timeout=30)
    assert refused.code == 2, refused.out + refused.err
    assert refused.err.strip().splitlines() == [
        f"routedesk: the Temporal namespace default at {address} lacks the search attributes CaseNumber, "
        "Mailbox, RoutingQueue, RoutingStage, ContactId, AssignedAgent, SlaDueAt; run `routedesk temporal setup` "
        "(with the same TEMPORAL_* settings) first"
    ]

    app = create_app(client, store, token="t", probe=Probe(store, client))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://intake") as http:
        not_ready = await http.get("/readyz")
        assert not_ready.status_code == 503 and not_ready.json()["failing"] == ["search_attributes"]
        assert "routedesk temporal setup" in not_ready.json()["checks"]["search_attributes"]

        setup = await routedesk("temporal", "setup", env=env)
        assert setup.code == 0, setup.err
        assert setup.out.strip() == (
            "registered CaseNumber, Mailbox, RoutingQueue, RoutingStage, ContactId, AssignedAgent, SlaDueAt "
            f"on namespace default at {address} (checked)"
        )
        again = await routedesk("temporal", "setup", env=env)
        assert again.code == 0, again.err
        assert again.out.strip() == f"all 7 search attributes were already registered on namespace default at {address}"
        assert (await http.get("/readyz")).status_code == 200

    worker = await Service.start("worker", env=env)
    try:
        await worker.running()
        sub = await submit_email(
            client, store, example_email("03-key-account-outage.eml"), task_queue="bare-server", id_prefix="bare-"
        )

        async def indexed() -> bool:
            # Routed, and findable by the attribute the workflow upserted.
            found = [w.id async for w in client.list_workflows('RoutingQueue="vip"')]
            return sub.workflow_id in found

        await eventually(indexed, timeout=20, what="the workflow to be listed under RoutingQueue=vip")
    finally:
        code, _ = await worker.stop()
        store.db.dispose()
    assert code == 0, worker.text
