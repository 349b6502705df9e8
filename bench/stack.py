"""A fresh, isolated routedesk stack for one benchmark run, and the meters around it.

Everything lives in a new directory ``.routedesk/bench-<timestamp>/``: the Temporal dev
server's SQLite file, the case store, and one log per process. Each part is its own OS
process so that CPU and memory are measured per part:

- ``server``: ``temporal server start-dev`` (headless, history in a file, as ``make run``);
- ``worker``: the real ``python worker.py`` (environment: DATABASE_URL, TEMPORAL_ADDRESS,
  ROUTEDESK_TASK_QUEUE), with whatever tuning worker.py has;
- ``intake``: the real SMTP intake (:mod:`bench.intake`, i.e. ``starter.smtp``);
- ``floor``: the engine-floor worker (:mod:`bench.floor`), started after the routing phase.

The harness process itself (load generator and simulated agents) is metered as ``harness``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

ROOT = Path(__file__).resolve().parents[1]
PRODUCT_PATHS = ["routedesk", "workflows", "activities", "starter", "worker.py", "pyproject.toml"]


def product_root() -> Path:
    """The checkout whose product code runs (``BENCH_SRC``), by default this one."""
    return Path(os.environ.get("BENCH_SRC") or ROOT).resolve()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def temporal_cli() -> str:
    if os.environ.get("TEMPORAL_CLI"):
        return os.environ["TEMPORAL_CLI"]
    out = subprocess.run([str(ROOT / "scripts" / "temporal-cli.sh")], check=True, stdout=subprocess.PIPE, text=True)
    return out.stdout.strip()


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass
class Child:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 20) -> None:
        if not self.alive():
            return
        # Each child leads its own process group (start_new_session): signal only that group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=10)


class StackError(RuntimeError):
    pass


@dataclass
class Stack:
    workdir: Path
    task_queue: str = "bench-routing"
    namespace: str = "default"
    port: int = field(default_factory=free_port)
    children: dict[str, Child] = field(default_factory=dict)
    server_launch: str = ""

    @classmethod
    def fresh(cls, label: str) -> Stack:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        workdir = ROOT / ".routedesk" / f"{label}-{stamp}-{os.getpid()}"
        workdir.mkdir(parents=True)
        return cls(workdir)

    # --- addresses ---------------------------------------------------------------------

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def db_path(self) -> Path:
        return self.workdir / "routedesk.db"

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.db_path}"

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            DATABASE_URL=self.database_url,
            TEMPORAL_ADDRESS=self.address,
            TEMPORAL_NAMESPACE=self.namespace,
            ROUTEDESK_TASK_QUEUE=self.task_queue,
            ROUTEDESK_ID_PREFIX="",
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")])),
            PYTHONUNBUFFERED="1",
        )
        env.update(extra)
        return env

    def spawn(self, name: str, cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> Child:
        log = self.workdir / f"{name}.log"
        with open(log, "ab") as out:
            popen = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env or self.env(),
                cwd=str(cwd or self.workdir),
                start_new_session=True,
            )
        child = Child(name, popen, log)
        self.children[name] = child
        return child

    # --- the parts ---------------------------------------------------------------------

    async def start_server(self, extra_args: list[str] | None = None) -> Client:
        """The dev server as ``make run`` starts it (``starter.run.start_dev_server``: history
        in a file, our search attributes), on free ports. ``extra_args`` (experiments, e.g.
        ``--sqlite-pragma journal_mode=wal``) switch to an equivalent command of our own."""
        launcher: Callable[[Path, int], subprocess.Popen[bytes]] | None = None
        if not extra_args:
            try:
                from starter.run import start_dev_server as launcher
            except ImportError:  # an older checkout (SRC=) without it
                launcher = None
        if launcher is not None:
            saved = {k: os.environ.get(k) for k in ("TEMPORAL_ADDRESS", "TEMPORAL_CLI")}
            os.environ["TEMPORAL_ADDRESS"] = self.address
            os.environ["TEMPORAL_CLI"] = temporal_cli()
            try:
                popen = launcher(self.workdir, free_port())
            finally:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
            server = Child("server", popen, self.workdir / "temporal.log")
            self.children["server"] = server
            self.server_launch = "starter.run.start_dev_server (as make run)"
        else:
            from routedesk import search_attributes as sa

            cmd = [
                temporal_cli(),
                "server",
                "start-dev",
                "--ip",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--headless",
                "--db-filename",
                str(self.workdir / "temporal.db"),
                "--log-level",
                "warn",
                *sa.dev_server_args(),
                *(extra_args or []),
            ]
            server = self.spawn("server", cmd)
            self.server_launch = " ".join(cmd[1:])
        return await self.connect(wait_for=server)

    async def connect(self, wait_for: Child | None = None, timeout: float = 90) -> Client:
        from routedesk.temporal import TemporalUnavailable, connect

        deadline = time.monotonic() + timeout
        while True:
            try:
                client = await connect(self.address, self.namespace)
                # The frontend can answer before the default namespace is ready.
                await client.count_workflows()
                return client
            except (TemporalUnavailable, RuntimeError, Exception) as exc:  # noqa: B014
                if wait_for is not None and not wait_for.alive():
                    raise StackError(f"{wait_for.name} exited:\n{tail(wait_for.log)}") from exc
                if time.monotonic() > deadline:
                    raise StackError(f"Temporal at {self.address} not ready after {timeout:.0f}s: {exc}") from exc
                await asyncio.sleep(0.25)

    def init_store(self, cfg: Any) -> None:
        from routedesk.store import Store

        store = Store(self.database_url).init()
        store.load_config(cfg)
        store.db.dispose()

    async def start_worker(self, client: Client) -> Child:
        src = product_root()
        worker = self.spawn("worker", [sys.executable, str(src / "worker.py")], cwd=self.workdir)
        await self.wait_for_pollers(client, self.task_queue, worker)
        return worker

    async def start_intake(self, timeout: float = 60) -> tuple[Child, int]:
        port = free_port()
        intake = self.spawn("intake", [sys.executable, "-m", "bench.intake", "--port", str(port)])
        deadline = time.monotonic() + timeout
        while True:
            if "READY" in tail(intake.log, 5):
                return intake, port
            if not intake.alive():
                raise StackError(f"intake exited:\n{tail(intake.log)}")
            if time.monotonic() > deadline:
                raise StackError(f"intake not ready after {timeout:.0f}s:\n{tail(intake.log)}")
            await asyncio.sleep(0.1)

    async def start_floor_worker(self, client: Client, task_queue: str) -> Child:
        floor = self.spawn(
            "floor",
            [sys.executable, "-m", "bench.floor"],
            env=self.env(ROUTEDESK_TASK_QUEUE=task_queue),
        )
        await self.wait_for_pollers(client, task_queue, floor)
        return floor

    async def wait_for_pollers(self, client: Client, task_queue: str, child: Child, timeout: float = 90) -> None:
        """Until a worker polls both the workflow and the activity task queue."""
        deadline = time.monotonic() + timeout
        kinds = (TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY)
        while True:
            ready = True
            for kind in kinds:
                resp = await client.workflow_service.describe_task_queue(
                    DescribeTaskQueueRequest(
                        namespace=self.namespace,
                        task_queue=TaskQueue(name=task_queue),
                        task_queue_type=kind,
                    )
                )
                ready = ready and bool(resp.pollers)
            if ready:
                return
            if not child.alive():
                raise StackError(f"{child.name} exited:\n{tail(child.log)}")
            if time.monotonic() > deadline:
                raise StackError(f"{child.name} not polling {task_queue} after {timeout:.0f}s:\n" + tail(child.log))
            await asyncio.sleep(0.2)

    def stop(self, name: str) -> None:
        child = self.children.get(name)
        if child is not None:
            child.stop()

    def stop_all(self) -> None:
        for name in ("floor", "intake", "worker", "server"):
            self.stop(name)

    def remove(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


# --- meters --------------------------------------------------------------------------------


def _peak_rss_kb(pid: int) -> int | None:
    """VmHWM: the kernel's own record of the peak resident set (Linux)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _cpu_s(p: psutil.Process) -> float:
    t = p.cpu_times()
    return float(t.user + t.system + getattr(t, "children_user", 0.0) + getattr(t, "children_system", 0.0))


def _system_busy_s() -> float:
    t = psutil.cpu_times()
    idle = t.idle + getattr(t, "iowait", 0.0)
    return float(sum(t) - idle)


@dataclass
class Mark:
    at: float
    cpu: dict[str, float]
    system_busy: float


class Monitor(threading.Thread):
    """Samples RSS and CPU of the stack's processes twice a second; marks phase boundaries."""

    def __init__(self, interval: float = 0.5) -> None:
        super().__init__(daemon=True, name="bench-monitor")
        self.interval = interval
        self.procs: dict[str, psutil.Process] = {"harness": psutil.Process()}
        self.peak_rss: dict[str, int] = {}
        self.last_rss: dict[str, int] = {}
        self.last_cpu: dict[str, float] = {}
        self.samples: list[tuple[float, dict[str, int], dict[str, float]]] = []
        self.marks: dict[str, Mark] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def watch(self, name: str, pid: int) -> None:
        with self._lock:
            self.procs[name] = psutil.Process(pid)
        self.sample()

    def sample(self) -> None:
        now = time.time()
        rss: dict[str, int] = {}
        cpu: dict[str, float] = {}
        with self._lock:
            procs = dict(self.procs)
        for name, p in procs.items():
            try:
                with p.oneshot():
                    rss[name] = p.memory_info().rss
                    cpu[name] = _cpu_s(p)
                hwm = _peak_rss_kb(p.pid)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            peak = max(rss[name], (hwm or 0) * 1024)
            with self._lock:
                self.peak_rss[name] = max(self.peak_rss.get(name, 0), peak)
                self.last_rss[name] = rss[name]
                self.last_cpu[name] = cpu[name]
        with self._lock:
            self.samples.append((now, rss, cpu))

    def run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self._stop.set()

    def mark(self, label: str) -> Mark:
        self.sample()
        with self._lock:
            m = Mark(time.time(), dict(self.last_cpu), _system_busy_s())
            self.marks[label] = m
        return m

    def cpu_between(self, start: str, end: str) -> dict[str, float]:
        a, b = self.marks[start], self.marks[end]
        out = {name: round(b.cpu[name] - a.cpu.get(name, 0.0), 3) for name in b.cpu if name in a.cpu}
        ours = sum(out.values())
        out["system_busy"] = round(b.system_busy - a.system_busy, 3)
        out["other"] = round(max(0.0, out["system_busy"] - ours), 3)
        return out

    def rss_mb(self, name: str) -> float | None:
        with self._lock:
            v = self.peak_rss.get(name)
        return round(v / 2**20, 1) if v else None

    def current_rss_mb(self, name: str) -> float | None:
        with self._lock:
            v = self.last_rss.get(name)
        return round(v / 2**20, 1) if v else None


# --- provenance ----------------------------------------------------------------------------


def _git(*args: str, cwd: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args],
            cwd=cwd,
            check=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.rstrip("\n")  # not strip(): porcelain lines start with a status column


def provenance() -> dict[str, Any]:
    """Which product code ran: the commit, and whether the product files differ from it."""
    src = product_root()
    info: dict[str, Any] = {"src": str(src)}
    if os.environ.get("BENCH_SRC_COMMIT"):
        # An exported tree (git archive) carries no .git: whoever exported it says what it is.
        info.update(sha=os.environ["BENCH_SRC_COMMIT"], dirty=False, dirty_files=[])
        return info
    info["sha"] = (_git("rev-parse", "HEAD", cwd=src) or "").strip() or None
    info["subject"] = (_git("log", "-1", "--format=%s", cwd=src) or "").strip() or None
    status = _git("status", "--porcelain", "--", *PRODUCT_PATHS, cwd=src) or ""
    dirty = [line[3:] for line in status.splitlines() if line.strip()]
    info["dirty"] = bool(dirty)
    info["dirty_files"] = dirty
    if dirty:
        diff = _git("diff", "HEAD", "--", *PRODUCT_PATHS, cwd=src) or ""
        info["diff_sha256"] = hashlib.sha256(diff.encode()).hexdigest()[:16]
    return info


def machine() -> dict[str, Any]:
    model = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    try:
        cli_version = subprocess.run(
            [temporal_cli(), "--version"], check=True, stdout=subprocess.PIPE, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        cli_version = None
    import temporalio

    return {
        "cores": psutil.cpu_count(logical=True),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu_model": model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "temporalio": temporalio.__version__,
        "temporal_cli": cli_version,
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def wait_for_quiet_machine(max_wait: float, threshold_pct: float = 15.0, windows: int = 3) -> dict[str, Any]:
    """Wait (at most ``max_wait`` s) until the machine is idle before measuring: other
    processes (a test suite, a build) on a 2-core box would distort every figure. Returns
    what was seen; the run goes ahead either way and reports the foreign load it measured."""
    start = time.monotonic()
    quiet = 0
    last = 0.0
    while time.monotonic() - start < max_wait:
        last = psutil.cpu_percent(interval=2.0)
        quiet = quiet + 1 if last < threshold_pct else 0
        if quiet >= windows:
            return {"quiet": True, "waited_s": round(time.monotonic() - start, 1), "busy_pct": last}
    return {"quiet": False, "waited_s": round(time.monotonic() - start, 1), "busy_pct": last}
