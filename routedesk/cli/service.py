"""The service's processes, each runnable on its own machine, and ``routedesk temporal setup``.

``routedesk worker``, ``routedesk intake smtp`` and ``routedesk intake http`` read the same
settings as everything else (the environment, README *Setup*) and the routing config loaded
in the case store (``routedesk config load``); ``make run`` runs all three in one process.
Each stops gracefully on SIGTERM or Ctrl-C, the way ``make run`` does (starter/run.py).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import TYPE_CHECKING

import typer

from routedesk import settings
from routedesk.cli.common import fail, friendly
from routedesk.db import StoreUnavailable
from routedesk.store import Store

if TYPE_CHECKING:
    from routedesk.config import IntakeSettings

# Temporal's SDK (and everything importing it) is imported inside the commands that run it:
# every other command starts without it.

log = logging.getLogger("routedesk")

temporal_app = typer.Typer(no_args_is_help=True, help="Prepare a Temporal server or namespace for routedesk.")


def _describe_temporal() -> str:
    from routedesk.temporal import resolve_connection

    conn = resolve_connection()
    how = conn.describe()
    return f"{conn.address} ({how})" if how else conn.address


async def _serve(
    *,
    worker: bool = False,
    smtp: bool = False,
    http: bool = False,
    health_port: int | None = None,
    **overrides: object,
) -> int:
    # starter holds the servers; imported here so that the rest of the CLI stays light.
    from temporalio.service import RPCError

    from routedesk import search_attributes as sa
    from routedesk.health import HealthServer
    from routedesk.metrics import sdk_runtime
    from routedesk.temporal import TemporalUnavailable, connect
    from starter.run import IntakeChannels, Parts, StopDeadline, run_parts

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    s = settings.get_settings()
    if worker and health_port is None:
        health_port = s.health_port
    if not worker:
        health_port = None  # the HTTP intake serves them on its own port
    # The SDK's own metrics exist only where /metrics is served.
    runtime, sdk_url = sdk_runtime() if (http or health_port is not None) else (None, None)
    try:
        client = await connect(runtime=runtime)
        address = settings.temporal_address()
        # Refuse here, in one line, rather than let every routing workflow wedge on an upsert.
        await sa.check(client, address)
        store = Store().init()
        intake = await asyncio.to_thread(_stored_intake, store, required=smtp or http)
    except (TemporalUnavailable, StoreUnavailable, sa.SearchAttributesMissing, sa.SearchAttributesRefused) as exc:
        print(f"routedesk: {exc}", file=sys.stderr)
        return 2
    except RPCError as exc:
        print(f"routedesk: the Temporal server at {settings.temporal_address()} failed: {exc.message}", file=sys.stderr)
        return 2
    if intake is None:
        print(
            f"routedesk: no routing config in the case store at {store.db.address}; "
            "load one first: routedesk config load FILE",
            file=sys.stderr,
        )
        return 2
    intake = _override(intake, smtp=smtp, http=http, **overrides)
    parts = Parts(worker=worker, smtp=smtp, http=http, health_port=health_port, health_host=s.health_host)

    def banner(channels: IntakeChannels, health: HealthServer | None) -> str:
        lines = [f"routedesk {'worker' if worker else 'intake'} running; Temporal {_describe_temporal()}"]
        if worker:
            lines.append(f"  worker        task queue {settings.task_queue()}")
        lines.append(f"  case store    {store.db.address}")
        if channels.describe():
            lines.append(channels.describe().rstrip("\n"))
        if health is not None:
            lines.append(f"  health        http://{health.host}:{health.port}/readyz (and /healthz, /metrics)")
        return "\n".join(lines) + "\n"

    return await run_parts(
        client,
        store,
        intake,
        parts,
        StopDeadline(),
        banner,
        sdk_metrics_url=sdk_url,
        closing="SIGTERM or Ctrl-C stops it.\n",
    )


def _stored_intake(store: Store, *, required: bool) -> IntakeSettings | None:
    from routedesk.config import IntakeSettings
    from routedesk.operations import loaded_intake_settings

    intake = loaded_intake_settings(store)
    if intake is None:
        if required:
            return None
        log.warning("no routing config in the case store yet; load one with `routedesk config load FILE`")
        return IntakeSettings()
    return intake


def _override(intake: IntakeSettings, *, smtp: bool, http: bool, **kw: object) -> IntakeSettings:
    """This machine's host and port over the stored config's; the channel asked for is on."""
    host, port = kw.get("host"), kw.get("port")
    changes: dict[str, object] = {"enabled": True}
    if host is not None:
        changes["host"] = host
    if port is not None:
        changes["port"] = port
    if smtp:
        return intake.model_copy(update={"smtp": intake.smtp.model_copy(update=changes)})
    if http:
        return intake.model_copy(update={"http": intake.http.model_copy(update=changes)})
    return intake


def run_worker(health_port: int | None = None) -> int:
    return asyncio.run(_serve(worker=True, health_port=health_port))


def worker(
    health_port: int | None = typer.Option(
        None, "--health-port", help="serve /healthz, /readyz and /metrics here (default: ROUTEDESK_HEALTH_PORT; off)"
    ),
) -> None:
    """Run the worker: routing workflows and case-store activities (as many as you like)."""
    raise typer.Exit(run_worker(health_port))


HOST = typer.Option(None, "--host", help="listen address (default: the loaded config's)")
PORT = typer.Option(None, "--port", help="port (default: the loaded config's)")


def intake_smtp(host: str | None = HOST, port: int | None = PORT) -> None:
    """Run the SMTP intake alone (intake.smtp of the loaded config)."""
    raise typer.Exit(asyncio.run(_serve(smtp=True, host=host, port=port)))


def intake_http(host: str | None = HOST, port: int | None = PORT) -> None:
    """Run the HTTP intake alone, with /healthz, /readyz and /metrics (intake.http of the loaded config)."""
    raise typer.Exit(asyncio.run(_serve(http=True, host=host, port=port)))


async def _setup(check_only: bool) -> str:
    from routedesk import search_attributes as sa
    from routedesk.temporal import connect

    client = await connect()
    address = settings.temporal_address()
    where = f"namespace {client.namespace} at {address}"
    if check_only:
        await sa.check(client, address)
        return f"all {len(sa.ALL)} search attributes are registered on {where}"
    added = await sa.register(client, address)
    if added:
        return f"registered {', '.join(added)} on {where} (checked)"
    return f"all {len(sa.ALL)} search attributes were already registered on {where}"


@temporal_app.command("setup")
@friendly
def setup(
    check: bool = typer.Option(False, "--check", help="only check; exit 1 when something is missing"),
) -> None:
    """Register routedesk's search attributes on the namespace (idempotent), then check them."""
    from temporalio.service import RPCError

    from routedesk import search_attributes as sa

    try:
        print(asyncio.run(_setup(check)))
    except (sa.SearchAttributesMissing, sa.SearchAttributesRefused) as exc:
        fail(str(exc))
    except RPCError as exc:
        fail(f"the Temporal server at {settings.temporal_address()} failed: {exc.message}", code=2)
