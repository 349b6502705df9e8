"""``make bench-cli``: how long the read-only CLI commands take, start to exit (issue 15).

Runs ``routedesk case list``, ``case show CASE-000001``, ``agent list`` and ``queue list``
(``python -m routedesk.cli.app``, as the ``routedesk`` script does) N times each, interleaved,
against an embedded SQLite store, and prints the median and minimum wall time and the median
CPU time (user + system, from the child's own rusage) of each. On a shared machine the wall
time varies with the other load; the minimum and the CPU time vary less.

The store is made fresh in a temporary directory unless ``--database-url`` names one: the
example config loaded and the example emails taken in and routed by the intake and routing
activities' own code (no Temporal server needed; nothing is offered to agents). ``--src DIR``
runs another checkout's product code (e.g. ``git archive`` of an older commit) for a
before/after comparison; the store is made by this tree's code either way.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = [
    ["case", "list"],
    ["case", "show", "CASE-000001"],
    ["agent", "list"],
    ["queue", "list"],
]


def seed(url: str, copies: int = 3) -> int:
    """Load examples/routing.yaml into the store at ``url`` and route the example emails
    ``copies`` times over (each copy a new Message-ID); returns the number of cases."""
    os.environ["DATABASE_URL"] = url
    from activities.intake import IntakeActivities
    from activities.routing import RoutingActivities
    from routedesk.config import load_config
    from routedesk.contracts import IntakeRequest
    from routedesk.store import Store

    store = Store().init()
    store.load_config(load_config(ROOT / "examples" / "routing.yaml"), source="examples/routing.yaml")
    intake = IntakeActivities(store, RoutingActivities(store))

    async def take_in() -> int:
        cases = 0
        for n in range(copies):
            for path in sorted((ROOT / "examples" / "emails").glob("*.eml")):
                raw = path.read_bytes().replace(b"Message-ID: <", f"Message-ID: <bench{n}-".encode(), 1)
                saved = store.save_raw_email(raw)
                result = await intake.parse_email(IntakeRequest(email_id=saved.email_id))
                cases += result.routed is not None
        return cases

    made = asyncio.run(take_in())
    store.db.dispose()
    return made


def run_once(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds of one command; the command must succeed."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "routedesk.cli.app", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"routedesk {' '.join(args)} exited {proc.returncode}: {err.decode(errors='replace')}")
    return wall, usage.ru_utime + usage.ru_stime


Samples = dict[str, tuple[list[float], list[float]]]  # command -> (wall, CPU) seconds


def measure(runs: int, envs: list[dict[str, str]], warmup: int = 2) -> list[Samples]:
    """Each command ``runs`` times under each environment (checkout), all interleaved."""
    results: list[Samples] = [{" ".join(c): ([], []) for c in COMMANDS} for _ in envs]
    for i in range(warmup + runs):
        for cmd in COMMANDS:  # interleaved: a burst of other load hits every command alike
            for env, samples in zip(envs, results, strict=True):
                wall, cpu = run_once(cmd, env)
                if i >= warmup:
                    samples[" ".join(cmd)][0].append(wall)
                    samples[" ".join(cmd)][1].append(cpu)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", "-n", type=int, default=20, help="runs of each command (after 2 warm-ups)")
    parser.add_argument("--database-url", help="an existing store to read (default: a fresh seeded one)")
    parser.add_argument(
        "--src",
        type=Path,
        action="append",
        help="a checkout whose product code runs (default: this one); give it twice to compare two, interleaved",
    )
    args = parser.parse_args()
    sources = [p.resolve() for p in args.src or [ROOT]]
    with tempfile.TemporaryDirectory(prefix="routedesk-bench-cli-") as tmp:
        url = args.database_url
        if url is None:
            url = f"sqlite:///{Path(tmp) / 'routedesk.db'}"
            print(f"seeded a store with {seed(url)} cases", file=sys.stderr)
        envs = []
        for src in sources:
            env = {
                **os.environ,
                "DATABASE_URL": url,
                "PYTHONPATH": os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")])),
                "COLUMNS": "120",
            }
            env.pop("ROUTEDESK_TOKEN", None)
            envs.append(env)
        results = measure(args.runs, envs)
    for src, samples in zip(sources, results, strict=True):
        print(f"routedesk CLI start-up, {args.runs} runs each, code from {src}")
        print(f"{'command':<28} {'median ms':>10} {'min ms':>8} {'max ms':>8} {'cpu ms':>8}")
        for name, (walls, cpus) in samples.items():
            print(
                f"{name:<28} {statistics.median(walls) * 1000:>10.0f} {min(walls) * 1000:>8.0f}"
                f" {max(walls) * 1000:>8.0f} {statistics.median(cpus) * 1000:>8.0f}"
            )


if __name__ == "__main__":
    main()
