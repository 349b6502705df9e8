"""``make run``: the whole service on embedded defaults, stopped cleanly by Ctrl-C.

Starts (or reuses) the Temporal dev server with its UI and a history file under
``.routedesk/``, registers our search attributes, loads the routing config into the SQLite
case store (a new config version only when the file's content changed since), and runs the
worker and the intake channels (SMTP on 127.0.0.1:2525, HTTP on 127.0.0.1:8088 by default)
in this process.

SIGTERM or Ctrl-C stops it within ``STOP_DEADLINE`` seconds: the intake channels stop
listening, finish the transactions in flight (an SMTP message whose store call is still
waiting at the end of the grace period is answered 451, so its sender retries), then the
worker stops. If a call is still stuck after that (SQLite waits up to 30 s for a locked
store and a thread cannot be interrupted), the process exits anyway at the deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from temporalio.client import Client

from routedesk import pushes, settings
from routedesk import search_attributes as sa
from routedesk.config import ConfigError, ConsoleSettings, IntakeSettings, RoutingConfig, load_config
from routedesk.db import DEFAULT_DIR, StoreUnavailable
from routedesk.health import HealthServer, Probe, start_health_server
from routedesk.metrics import sdk_runtime
from routedesk.store import LoadResult, Store
from routedesk.temporal import TemporalUnavailable, connect
from starter.http import HttpIntakeServer, start_http_intake
from starter.imap import start_imap_intake
from starter.smtp import SmtpIntakeServer, SmtpTlsError, start_smtp_intake

if TYPE_CHECKING:
    from routedesk.console.app import ConsoleServer

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("routedesk")


def _log_failure(task: asyncio.Task[int]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("could not send the notices left pending: %s", task.exception())


STOP_DEADLINE = 8.0  # seconds from SIGTERM to exit, whatever is still waiting
CHANNEL_GRACE = 4.0  # of which the intake channels get this long to answer what is in flight


class StopDeadline:
    """A last resort: exit at the deadline even when a thread is stuck in a store call."""

    def __init__(self) -> None:
        self.deadline: float | None = None
        self.dev_server: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self.deadline is not None:
            return
        self.deadline = time.monotonic() + STOP_DEADLINE
        timer = threading.Timer(STOP_DEADLINE, self._force)
        timer.daemon = True  # it must not itself keep the process alive
        timer.start()

    def left(self) -> float:
        return STOP_DEADLINE if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def _force(self) -> None:
        print(
            f"routedesk: still stopping after {STOP_DEADLINE:g}s (a store or Temporal call is stuck); exiting now",
            file=sys.stderr,
            flush=True,
        )
        if self.dev_server is not None and self.dev_server.poll() is None:
            self.dev_server.kill()
        os._exit(1)


def temporal_cli() -> str:
    configured = settings.get_settings().temporal_cli
    if configured:
        return configured
    out = subprocess.run([str(ROOT / "scripts" / "temporal-cli.sh")], check=True, stdout=subprocess.PIPE, text=True)
    return out.stdout.strip()


def start_dev_server(state_dir: Path, ui_port: int) -> subprocess.Popen[bytes]:
    host, _, port = settings.temporal_address().rpartition(":")
    cmd = [
        temporal_cli(),
        "server",
        "start-dev",
        "--ip",
        host or "127.0.0.1",
        "--port",
        port,
        "--ui-port",
        str(ui_port),
        "--db-filename",
        str(state_dir / "temporal.db"),  # history survives a restart
        # WAL with synchronous=NORMAL: commits survive a crash of the process (not of the
        # machine's power) and the server does about twice the work per CPU second
        # (docs/benchmarks.md).
        "--sqlite-pragma",
        "journal_mode=wal",
        "--sqlite-pragma",
        "synchronous=normal",
        "--log-level",
        "warn",
        *sa.dev_server_args(),
    ]
    logfile = open(state_dir / "temporal.log", "ab")  # noqa: SIM115  (owned by the child)
    # Own process group: Ctrl-C reaches us first and we stop the server after the worker.
    return subprocess.Popen(cmd, stdout=logfile, stderr=subprocess.STDOUT, start_new_session=True)


async def wait_for_server(timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            await connect()
            return
        except TemporalUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.25)


async def serve(config_path: Path, ui_port: int) -> int:
    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        print(f"routedesk: {exc}", file=sys.stderr)
        return 1
    DEFAULT_DIR.mkdir(exist_ok=True)
    server: subprocess.Popen[bytes] | None = None
    stopping = StopDeadline()
    # The SDK's own metrics, appended to the HTTP intake's /metrics.
    runtime, sdk_metrics_url = sdk_runtime()
    try:
        try:
            client = await connect(runtime=runtime)
            log.info("reusing the Temporal server already at %s", settings.temporal_address())
            # A server we did not start may lack our search attributes.
            await sa.check(client, settings.temporal_address())
        except TemporalUnavailable:
            server = stopping.dev_server = start_dev_server(DEFAULT_DIR, ui_port)
            await wait_for_server()
            client = await connect(runtime=runtime)
        store = Store().init()
        load_step(store, cfg, config_path)

        def banner(channels: IntakeChannels, health: HealthServer | None) -> str:
            return (
                "\nroutedesk is running\n"
                f'  Temporal UI   http://127.0.0.1:{ui_port}  (filter e.g. RoutingQueue="billing")\n'
                f"  Temporal      {settings.temporal_address()}, task queue {settings.task_queue()}\n"
                f"  case store    {store.db.address}\n"
                f"  config        {config_path}\n"
                f"{channels.describe()}"
                "  try           .venv/bin/routedesk send examples/emails/03-key-account-outage.eml\n"
            )

        parts = Parts(worker=True, smtp=True, http=True, imap=True, console=cfg.console.enabled)
        return await run_parts(
            client, store, cfg.intake, parts, stopping, banner, sdk_metrics_url=sdk_metrics_url, console=cfg.console
        )
    except (TemporalUnavailable, StoreUnavailable, sa.SearchAttributesMissing, sa.SearchAttributesRefused) as exc:
        print(f"routedesk: {exc}", file=sys.stderr)
        return 2
    finally:
        if server is not None:
            log.info("stopping the Temporal dev server")
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=max(0.5, stopping.left() - 0.5))
            except subprocess.TimeoutExpired:
                server.kill()


def load_step(store: Store, cfg: RoutingConfig, config_path: Path) -> LoadResult:
    """Load the file only when it changed since it was last loaded (content hash): a restart
    with the same file changes nothing, so runtime edits stay, and neither does a config an
    administrator loaded since (``config load``, the API) get reverted. When it loads, print
    the runtime edits kept and the ones the file overrides."""
    source = str(config_path.resolve())
    newer = store.newer_than_last_load_of(cfg, source)
    if newer is not None:
        current, loaded_as = newer
        print(
            f"{config_path}: unchanged since it was loaded as config version {loaded_as}; "
            f"config version {current.number} (loaded by {current.loaded_by} from {current.source or 'the API'}) "
            "stays in force",
            flush=True,
        )
        return LoadResult(current.number, False, current.number)
    result = store.load_config(cfg, source=source)
    for line in result.report(str(config_path)):
        print(line, flush=True)
    return result


@dataclass(frozen=True)
class Parts:
    """Which parts of the service this process runs: all three under ``make run``, one each
    under ``routedesk worker``, ``routedesk intake smtp`` and ``routedesk intake http``."""

    worker: bool = False
    smtp: bool = False
    http: bool = False
    imap: bool = False  # a fetcher for every mailbox with an imap section
    health_port: int | None = None  # the worker's /healthz, /readyz, /metrics
    health_host: str = "127.0.0.1"
    console: bool = False  # the browser console (routedesk/console), config section console:


def stop_on_signals(stopping: StopDeadline) -> asyncio.Event:
    """An event set by SIGINT or SIGTERM, which also starts the exit deadline."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        stopping.start()
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    return stop


async def run_parts(
    client: Client,
    store: Store,
    intake: IntakeSettings,
    parts: Parts,
    stopping: StopDeadline,
    banner: Callable[[IntakeChannels, HealthServer | None], str],
    *,
    sdk_metrics_url: str | None = None,
    console: ConsoleSettings | None = None,
    closing: str = "Ctrl-C stops everything.\n",
) -> int:
    """Run the parts until SIGTERM or Ctrl-C, then stop them in order within the deadline.

    The intake channels stop first (no new mail; what is in flight is answered within
    ``CHANNEL_GRACE``), then the worker, which lets running activities finish
    (``worker.WORKER_GRACE``, within ``STOP_DEADLINE`` with the channels') before it cancels them.
    """
    from worker import WORKER_GRACE, build_worker

    stop = stop_on_signals(stopping)
    probe = Probe(store, client, sdk_metrics_url=sdk_metrics_url)
    worker = build_worker(client, store) if parts.worker else None
    if worker is not None:
        # Alerts and presence notices a stopped worker left unsent go out now.
        resume = asyncio.get_running_loop().create_task(pushes.resume_pending(store))
        resume.add_done_callback(_log_failure)
    async with worker if worker is not None else contextlib.nullcontext():
        try:
            channels = await start_intake_channels(client, store, intake, smtp=parts.smtp, http=parts.http, probe=probe)
        except IntakeChannelError as exc:
            print(f"routedesk: {exc}", file=sys.stderr)
            return 2
        # The fetchers follow config loads from here on (starter/imap.py, ImapIntake).
        defs = store.definitions(max_age=0)
        boxes = list(defs.mailboxes.values()) if parts.imap else []
        imap = start_imap_intake(client, store, boxes, intake, watch=parts.imap, version=defs.version)
        health: HealthServer | None = None
        web: ConsolePart | None = None
        try:
            if parts.health_port is not None:
                try:
                    health = await start_health_server(probe, parts.health_host, parts.health_port)
                except OSError as exc:
                    where = f"{parts.health_host}:{parts.health_port}"
                    print(
                        f"routedesk: cannot listen for health checks on {where}: {exc.strerror or exc}", file=sys.stderr
                    )
                    return 2
            try:
                web = await start_console_part(client, store, console if parts.console else None)
            except IntakeChannelError as exc:
                print(f"routedesk: {exc}", file=sys.stderr)
                return 2
            lines = banner(channels, health) + (web.describe() if web else "") + imap.describe()
            print(lines + closing, flush=True)
            await stop.wait()
        finally:
            log.info("stopping the intake channels")
            await asyncio.gather(imap.stop(CHANNEL_GRACE), channels.stop(CHANNEL_GRACE))
            if web:
                await web.stop()
            if health is not None:
                await health.stop()
        if worker is not None:
            log.info("stopping the worker (running activities get %gs)", WORKER_GRACE)
    return 0


@dataclass
class ConsolePart:
    server: ConsoleServer

    def describe(self) -> str:
        return f"  console       {self.server.url}  (sign in: routedesk user passwd NAME)\n"

    async def stop(self) -> None:
        await self.server.stop()


async def start_console_part(client: Client, store: Store, cfg: ConsoleSettings | None) -> ConsolePart | None:
    """The console when enabled (None when not); :class:`IntakeChannelError` when its port
    cannot be had."""
    if cfg is None:
        return None
    from routedesk.console.app import start_console
    from routedesk.operations import Context

    try:
        server = await start_console(Context(store=store, client=client), cfg)
    except OSError as exc:
        s = settings.get_settings()
        where = f"{s.console_host or cfg.host}:{s.console_port if s.console_port is not None else cfg.port}"
        raise IntakeChannelError(f"cannot listen for the console on {where}: {exc.strerror or exc}") from None
    return ConsolePart(server)


class IntakeChannelError(Exception):
    pass


@dataclass
class IntakeChannels:
    smtp: SmtpIntakeServer | None = None
    http: HttpIntakeServer | None = None
    token_source: str = ""

    def describe(self) -> str:
        lines = ""
        if self.smtp is not None:
            where = f"{self.smtp.host}:{self.smtp.port}"
            lines += f"  SMTP intake   {where}  (point your mail server's forwarding here)\n"
        if self.http is not None:
            url = self.http.url
            lines += f"  HTTP intake   POST {url}/v1/emails  (bearer token: {self.token_source}; API {url}/docs)\n"
        return lines

    async def stop(self, grace: float = CHANNEL_GRACE) -> None:
        """Both at once: each gets ``grace`` seconds for what is in flight."""
        stops = [ch.stop(grace) for ch in (self.http, self.smtp) if ch is not None]
        await asyncio.gather(*stops)


def http_token(env_name: str, state_dir: Path) -> tuple[str, str]:
    """The bearer token from ``env_name``, else one generated once and kept in state_dir."""
    token = os.environ.get(env_name, "").strip()
    if token:
        return token, f"${env_name}"
    path = state_dir / "http-token"
    if path.exists():
        return path.read_text().strip(), str(path)
    token = secrets.token_urlsafe(24)
    path.touch(mode=0o600)
    path.write_text(token + "\n")
    return token, str(path)


async def start_intake_channels(
    client: Client,
    store: Store,
    intake: IntakeSettings,
    *,
    smtp: bool = True,
    http: bool = True,
    probe: Probe | None = None,
) -> IntakeChannels:
    """Start the SMTP and HTTP intake servers the config enables (and the caller wants), on
    this event loop; the HTTP one serves /readyz and /metrics from ``probe``."""
    channels = IntakeChannels()
    if smtp and intake.smtp.enabled:
        try:
            channels.smtp = await start_smtp_intake(
                client,
                store,
                host=intake.smtp.host,
                port=intake.smtp.port,
                max_message_bytes=intake.max_message_bytes,
                timeout_seconds=intake.smtp.timeout_seconds,
                max_sessions=intake.smtp.max_sessions,
                submit_timeout=intake.submit_timeout_seconds,
                tls_cert=intake.smtp.tls_cert,
                tls_key=intake.smtp.tls_key,
                require_tls=intake.smtp.require_tls,
            )
        except SmtpTlsError as exc:
            raise IntakeChannelError(str(exc)) from None
        except OSError as exc:
            where = f"{intake.smtp.host}:{intake.smtp.port}"
            detail = exc.strerror or exc
            raise IntakeChannelError(f"cannot listen for SMTP on {where}: {detail}") from None
    if http and intake.http.enabled:
        token, channels.token_source = http_token(intake.http.token_env, DEFAULT_DIR)
        try:
            channels.http = await start_http_intake(
                client,
                store,
                token=token,
                host=intake.http.host,
                port=intake.http.port,
                max_message_bytes=intake.max_message_bytes,
                submit_timeout=intake.submit_timeout_seconds,
                probe=probe,
            )
        except OSError as exc:
            await channels.stop()
            where = f"{intake.http.host}:{intake.http.port}"
            detail = exc.strerror or exc
            raise IntakeChannelError(f"cannot listen for HTTP on {where}: {detail}") from None
    return channels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", type=Path, default=ROOT / "examples" / "routing.yaml")
    parser.add_argument("--ui-port", type=int, default=settings.get_settings().ui_port)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(asyncio.run(serve(args.config, args.ui_port)))


if __name__ == "__main__":
    main()
