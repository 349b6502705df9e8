"""Optional sampling profile of the worker with py-spy (``PROFILE=1``).

py-spy samples another process from outside (no code change in the worker), all threads;
samples of threads that are only waiting (selectors, executor queues) are counted apart
and left out of the shares. It costs the
machine some CPU, so profiled runs are marked ``profiled`` and are not the figures of
record. The summary groups samples by where the innermost frame is (``self``) and by
what they are inside of (``inclusive``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

SELF_CATEGORIES = [
    ("sqlite (C)", ("sqlite3/", "_sqlite3")),
    ("sqlalchemy", ("sqlalchemy/",)),
    ("sqlmodel", ("sqlmodel/",)),
    ("pydantic", ("pydantic/", "pydantic_core/")),
    ("temporal sdk", ("temporalio/",)),
    ("protobuf", ("google/protobuf",)),
    ("email parsing (stdlib)", ("email/",)),
    ("asyncio", ("asyncio/",)),
    ("threads/executor", ("concurrent/", "threading.py", "queue.py")),
    ("json", ("json/",)),
    ("routedesk code", ("/routedesk/", "/activities/", "/workflows/", "/starter/", "worker.py")),
]

INCLUSIVE = [
    (
        "workflow activations (sandbox)",
        ("temporalio/worker/_workflow", "temporalio/worker/workflow_sandbox"),
    ),
    ("activities (any)", ("/activities/",)),
    ("SQLAlchemy/SQLModel (any)", ("sqlalchemy/", "sqlmodel/")),
    ("pydantic (any)", ("pydantic/", "pydantic_core/")),
    ("payload conversion", ("temporalio/converter.py", "temporalio/contrib/pydantic")),
    ("rule engine", ("routedesk/rules.py",)),
    ("MIME parsing", ("routedesk/mail/",)),
    ("client RPCs from activities (kicks)", ("routedesk/assignment/wake.py",)),
]


def pyspy() -> str | None:
    exe = Path(sys.executable).with_name("py-spy")
    if exe.exists():
        return str(exe)
    return shutil.which("py-spy")


class Profiler:
    def __init__(self, pid: int, out: Path, rate: int = 50) -> None:
        self.out = out
        exe = pyspy()
        if exe is None:
            raise RuntimeError("py-spy is not installed: .venv/bin/pip install py-spy")
        self.proc = subprocess.Popen(
            [
                exe,
                "record",
                "--pid",
                str(pid),
                "--rate",
                str(rate),
                "--format",
                "raw",
                "--nonblocking",
                *(["--gil"] if os.environ.get("BENCH_PYSPY_GIL") else []),
                "--output",
                str(out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(out.with_suffix(".log"), "wb"),  # noqa: SIM115
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    @property
    def pid(self) -> int:
        return self.proc.pid


# Innermost frames that are a thread waiting, not working (py-spy cannot always tell).
IDLE_LEAVES = (
    "EpollSelector.select (selectors.py",
    "_worker (concurrent/futures/thread.py",
    "Condition.wait (threading.py",
    "Event.wait (threading.py",
    "Queue.get (queue.py",
    "Thread.join",
)


def _frames(stack: str) -> list[str]:
    return stack.split(";")


def summarise(path: Path, top: int = 25) -> dict[str, Any]:
    samples = 0
    idle_samples = 0
    self_cat: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    with contextlib.suppress(OSError):
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count_s = line.rpartition(" ")
            if not stack or not count_s.isdigit():
                continue
            count = int(count_s)
            frames = _frames(stack)
            last = frames[-1]
            if any(last.startswith(idle) for idle in IDLE_LEAVES):
                idle_samples += count
                continue
            samples += count
            leaf[last] += count
            cat = "other"
            for name, needles in SELF_CATEGORIES:
                if any(n in last for n in needles):
                    cat = name
                    break
            self_cat[cat] += count
            for name, needles in INCLUSIVE:
                if any(any(n in f for n in needles) for f in frames):
                    incl[name] += count
    if not samples:
        return {"samples": 0}

    def share(c: Counter[str]) -> dict[str, float]:
        return {k: round(100 * v / samples, 1) for k, v in c.most_common()}

    return {
        "samples": samples,
        "idle_samples_excluded": idle_samples,
        "self_pct_by_area": share(self_cat),
        "inclusive_pct": share(incl),
        "top_self_frames_pct": {k: round(100 * v / samples, 1) for k, v in leaf.most_common(top)},
    }
