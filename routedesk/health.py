"""Health and metrics endpoints: ``/healthz``, ``/readyz``, ``/metrics``.

The HTTP intake serves them beside its API; ``routedesk worker`` serves them on
``ROUTEDESK_HEALTH_PORT`` when set.

- ``/healthz`` (liveness): the process answers. Restart it when this fails.
- ``/readyz`` (readiness): 200 only when every check passes, else 503 naming the failing
  ones: the case store answers, Temporal answers, our search attributes are registered on
  the namespace, and a routing config is loaded in the store. Each check really runs, with a
  bound, at every request.
- ``/metrics``: Prometheus text (routedesk/metrics.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.client import Client

from routedesk import metrics
from routedesk import search_attributes as sa
from routedesk.db import StoreEmpty, StoreUnavailable
from routedesk.operations import imap_statuses
from routedesk.store import Store
from routedesk.web import ServedApp, serve

CHECK_TIMEOUT = 3.0  # seconds per check: a probe must answer before the orchestrator gives up
OK = "ok"


class NotReady(Exception):
    pass


@dataclass
class Probe:
    """What ``/readyz`` and ``/metrics`` look at in this process."""

    store: Store
    client: Client
    sdk_metrics_url: str | None = None
    timeout: float = CHECK_TIMEOUT
    registry: CollectorRegistry = field(init=False)

    def __post_init__(self) -> None:
        self.registry = metrics.store_registry(self.store)

    @property
    def temporal_address(self) -> str:
        return self.client.service_client.config.target_host

    # --- the checks: each returns a short "ok" or raises with what is wrong ------------------

    async def check_store(self) -> str:
        try:
            await asyncio.to_thread(self.store.db.check)
        except (StoreUnavailable, StoreEmpty) as exc:
            raise NotReady(str(exc)) from None
        return OK

    async def check_config(self) -> str:
        try:
            loaded, mailboxes = await asyncio.to_thread(self.store.config_loaded)
        except Exception as exc:
            raise NotReady(f"cannot read the config from the case store: {str(exc).splitlines()[0][:200]}") from None
        if not loaded:
            raise NotReady("no routing config loaded in the case store; run `routedesk config load FILE`")
        return f"{OK} ({mailboxes} mailboxes)"

    async def check_temporal(self) -> str:
        try:
            await self.client.workflow_service.get_system_info(
                GetSystemInfoRequest(), timeout=timedelta(seconds=self.timeout)
            )
        except Exception as exc:
            detail = " ".join(str(exc).split())[:200] or type(exc).__name__
            raise NotReady(f"cannot reach the Temporal server at {self.temporal_address}: {detail}") from None
        return OK

    async def check_search_attributes(self) -> str:
        try:
            await sa.check(self.client, self.temporal_address)
        except (sa.SearchAttributesMissing, sa.SearchAttributesRefused) as exc:
            raise NotReady(str(exc)) from None
        except Exception as exc:
            detail = " ".join(str(exc).split())[:200] or type(exc).__name__
            raise NotReady(f"cannot list search attributes: {detail}") from None
        return OK

    async def check_mailboxes(self) -> str:
        """IMAP mailboxes whose fetcher cannot log in (or keeps failing) are not silently
        retried forever: they make the service not ready, naming the mailbox and the error."""

        try:
            failing = await asyncio.to_thread(lambda: imap_statuses(self.store, failing_only=True))
        except Exception as exc:
            raise NotReady(f"cannot read the mailboxes' state: {str(exc).splitlines()[0][:200]}") from None
        if failing:
            raise NotReady(
                "; ".join(f"IMAP {r.mailbox_address} ({r.folder}): {r.status}: {r.last_error or '-'}" for r in failing)
            )
        return OK

    async def readiness(self) -> tuple[bool, dict[str, str]]:
        checks: dict[str, Callable[[], Awaitable[str]]] = {
            "store": self.check_store,
            "temporal": self.check_temporal,
            "search_attributes": self.check_search_attributes,
            "config": self.check_config,
            "mailboxes": self.check_mailboxes,
        }

        async def run(check: Callable[[], Awaitable[str]]) -> tuple[bool, str]:
            try:
                return True, await asyncio.wait_for(check(), self.timeout)
            except NotReady as exc:
                return False, str(exc)
            except TimeoutError:
                return False, f"no answer within {self.timeout:g}s"

        results = await asyncio.gather(*(run(c) for c in checks.values()))
        return all(ok for ok, _ in results), {name: text for name, (_, text) in zip(checks, results, strict=True)}

    async def metrics(self) -> bytes:
        return await metrics.exposition(self.registry, self.sdk_metrics_url)


def add_health_routes(app: FastAPI, probe: Probe | None) -> None:
    """``/healthz`` always; ``/readyz`` and ``/metrics`` when there is something to probe."""

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    if probe is None:
        return

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        ready, checks = await probe.readiness()
        failing = [name for name, text in checks.items() if not text.startswith(OK)]
        body = {"ready": ready, "failing": failing, "checks": checks}
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(await probe.metrics(), media_type=CONTENT_TYPE_LATEST)


class HealthServer(ServedApp):
    """The worker's /healthz, /readyz and /metrics on their own port."""


async def start_health_server(probe: Probe, host: str, port: int) -> HealthServer:
    """Serve the three endpoints on their own port (the worker's); OSError when taken."""
    app = FastAPI(title="routedesk health", openapi_url=None, docs_url=None, redoc_url=None)
    add_health_routes(app, probe)
    return HealthServer(*serve(app, host, port))
