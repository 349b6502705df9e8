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
if str(ROOT) not in sys.path:  # run as a script (--seed-into): the product code comes from PYTHONPATH
    sys.path.append(str(ROOT))
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

    # The examples of the checkout whose code runs (an older one may not read today's).
    root = Path(sys.modules["routedesk.store"].__file__ or ROOT).resolve().parents[1]
    store = Store().init()
    store.load_config(load_config(root / "examples" / "routing.yaml"), source="examples/routing.yaml")
    intake = IntakeActivities(store, RoutingActivities(store))

    async def take_in() -> int:
        cases = 0
        for n in range(copies):
            for path in sorted((root / "examples" / "emails").glob("*.eml")):
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
        cwd=env["BENCH_CWD"],  # not a checkout: `-m` would put it before PYTHONPATH
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
    parser.add_argument("--seed-into", help=argparse.SUPPRESS)  # internal: seed this store, with this code
    args = parser.parse_args()
    if args.seed_into:
        print(seed(args.seed_into))
        return
    sources = [p.resolve() for p in args.src or [ROOT]]
    with tempfile.TemporaryDirectory(prefix="routedesk-bench-cli-") as tmp:
        envs = []
        for n, src in enumerate(sources):
            env = {
                **os.environ,
                "PYTHONPATH": os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")])),
                "COLUMNS": "120",
            }
            env.pop("ROUTEDESK_TOKEN", None)
            url = args.database_url
            if url is None:
                # Each checkout's own code makes its store: its schema revision is that checkout's.
                url = f"sqlite:///{Path(tmp) / f'routedesk-{n}.db'}"
                made = subprocess.run(
                    [sys.executable, __file__, "--seed-into", url],
                    env=env,
                    check=True,
                    stdout=subprocess.PIPE,
                    text=True,
                ).stdout.split()[-1]
                print(f"seeded a store with {made} cases with the code from {src}", file=sys.stderr)
            envs.append({**env, "DATABASE_URL": url, "BENCH_CWD": tmp})
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
