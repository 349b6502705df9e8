"""``make bench-backlog``: worker memory with a large backlog of unassigned work.

    python -m bench.backlog [--count 10000] [--concurrency 16]

The bench routing config with every agent Offline: each email is parsed, becomes a case,
is classified and routed, its preferred agents are skipped (not in an allowed presence) and
it is handed to its queue, where no one can take it. Its workflow then waits, parked, for
an agent that never comes. Once all ``count`` workflows are parked (every case waiting in
its queue, and the server's visibility showing them at ``waiting_for_agent``), RSS is
sampled for a while; the result is the worker's RSS then and its peak over the whole run.
The stack is torn down afterwards (the workflows die with its directory).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import yaml

import bench  # noqa: F401  (BENCH_SRC first on sys.path)
from bench import histories, report
from bench.agents import open_db
from bench.load import SmtpLoad, generate
from bench.run import CONFIG, make_progress
from bench.stack import (
    Monitor,
    Stack,
    StackError,
    machine,
    provenance,
    tail,
    wait_for_quiet_machine,
)

PARKED_STAGES = ("waiting_for_agent", "unassigned")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.backlog",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--count", type=int, default=10000, help="unassigned items to park (BACKLOG)")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--rate", type=float, default=0)
    p.add_argument("--seed", type=int, default=2)
    p.add_argument("--settle", type=float, default=15, help="seconds of RSS sampling once all are parked")
    p.add_argument("--timeout", type=float, default=3600)
    p.add_argument("--config", type=Path, default=CONFIG)
    p.add_argument("--tag", default="")
    p.add_argument("--name", default="backlog-latest")
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=180,
        help="wait up to this many seconds for an idle machine first",
    )
    p.add_argument("--keep", action="store_true")
    return p.parse_args(argv)


def offline_config(path: Path) -> Any:
    from routedesk.config import parse_config

    data = yaml.safe_load(path.read_text())
    for agent in data.get("agents", []):
        agent["presence"] = "Offline"
    return parse_config(data, source=f"{path} (all agents Offline)")


def parked_in_store(db: Any) -> dict[str, int]:
    row = db.execute(
        "SELECT count(*), count(queued_at), coalesce(sum(status = 'queued' AND awaiting_dispatch "
        'AND assigned_agent_id IS NULL), 0) FROM "case"'
    ).fetchone()
    return {"cases": row[0], "queued": row[1], "waiting": row[2]}


async def main_async(args: argparse.Namespace) -> int:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    cfg = offline_config(args.config)
    result: dict[str, Any] = {
        "scenario": "backlog",
        "tag": args.tag,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": provenance(),
        "machine": machine(),
        "backlog": args.count,
        "concurrency": args.concurrency,
        "rate": args.rate,
    }
    if args.quiet_wait > 0:
        print(
            f"bench-backlog: waiting up to {args.quiet_wait:.0f}s for the machine to be idle",
            file=sys.stderr,
        )
        result["machine"]["quiet_before_start"] = wait_for_quiet_machine(args.quiet_wait)
    stack = Stack.fresh("bench-backlog")
    print(f"bench-backlog: stack in {stack.workdir}", file=sys.stderr)
    mon = Monitor()
    mon.start()
    ok = False
    try:
        client = await stack.start_server()
        mon.watch("server", stack.children["server"].pid)
        stack.init_store(cfg)
        worker = await stack.start_worker(client)
        mon.watch("worker", worker.pid)
        intake, port = await stack.start_intake()
        mon.watch("intake", intake.pid)
        baseline_rss = mon.current_rss_mb("worker")

        emails = generate(args.count, args.seed, "bl" + dt.datetime.now().strftime("%H%M%S"))
        load = SmtpLoad("127.0.0.1", port, args.concurrency, args.rate)
        db = open_db(stack.db_path)
        sent = {"n": 0}
        parked_t: list[float] = []
        parked_n: list[int] = []
        mon.mark("start")
        t0 = time.time()
        send_task = asyncio.create_task(load.run(emails, on_done=lambda e, d: sent.__setitem__("n", sent["n"] + 1)))
        progress = make_progress()
        with progress:
            bars = {
                k: progress.add_task(label, total=args.count, rate="")
                for k, label in (
                    ("sent", "sent over SMTP"),
                    ("cases", "cases created"),
                    ("waiting", "waiting in a queue"),
                    ("visible", "parked (visibility)"),
                )
            }
            visible = 0
            t_store: float | None = None
            while True:
                await asyncio.sleep(1.0)
                st = parked_in_store(db)
                elapsed = time.time() - t0
                parked_t.append(elapsed)
                parked_n.append(st["waiting"])
                if st["waiting"] >= args.count:
                    t_store = t_store or time.time()
                    q = " OR ".join(f'RoutingStage="{s}"' for s in PARKED_STAGES)
                    visible = (await client.count_workflows(f'WorkflowType="EmailRoutingWorkflow" AND ({q})')).count
                for k, v in (
                    ("sent", sent["n"]),
                    ("cases", st["cases"]),
                    ("waiting", st["waiting"]),
                    ("visible", visible),
                ):
                    progress.update(bars[k], completed=v, rate=f"{v / elapsed:6.1f}/s")
                if (
                    st["waiting"] >= args.count
                    and t_store is not None
                    and (visible >= args.count or time.time() - t_store > 120)
                ):
                    break
                if elapsed > args.timeout:
                    raise StackError(f"only {st['waiting']} of {args.count} parked after {args.timeout:.0f}s")
                if not worker.alive():
                    raise StackError(f"the worker exited:\n{tail(worker.log)}")
        await send_task
        t_parked = time.time()
        mon.mark("parked")
        result["seconds_to_park"] = round(t_parked - t0, 1)
        result["parked_per_s"] = round(args.count / (t_parked - t0), 2)
        result["visibility_parked"] = visible
        # Let the worker settle (dispatcher passes, cache) and sample RSS.
        settle: list[float] = []
        end = time.time() + args.settle
        while time.time() < end:
            await asyncio.sleep(0.5)
            rss = mon.current_rss_mb("worker")
            if rss is not None:
                settle.append(rss)
        mon.mark("settled")
        result["worker_rss_mb_at_start"] = baseline_rss
        result["worker_rss_mb_parked"] = round(statistics.median(settle), 1) if settle else None
        result["worker_peak_rss_mb"] = mon.rss_mb("worker")
        result["server_rss_mb_parked"] = mon.current_rss_mb("server")
        result["server_peak_rss_mb"] = mon.rss_mb("server")
        result["intake_peak_rss_mb"] = mon.rss_mb("intake")
        cpu = mon.cpu_between("start", "parked")
        result["cpu_s"] = cpu
        result["cpu_s_per_email"] = {k: round(v / args.count, 5) for k, v in cpu.items()}
        result["cpu_s_while_parked"] = mon.cpu_between("parked", "settled")
        wall = mon.marks["parked"].at - mon.marks["start"].at
        result["other_load_share"] = round(cpu["other"] / (wall * (result["machine"]["cores"] or 1)), 3)
        ids = [r[0] for r in db.execute("SELECT workflow_id FROM email ORDER BY id DESC LIMIT 50").fetchall()]
        stats = await histories.fetch(client, ids)
        summary = histories.summarise(stats)
        result["parked_history"] = summary.as_dict() if summary else None
        dispatchers = await histories.list_executions(client, 'WorkflowType="QueueDispatcherWorkflow"')
        dstats = await histories.fetch(client, [d.id for d in dispatchers], run_ids=[d.run_id for d in dispatchers])
        result["dispatcher"] = {
            "runs": len(dstats),
            "passes": sum(sum(v for k, v in s.activities.items() if k.startswith("dispatch_queue")) for s in dstats),
            "events_total": sum(s.events for s in dstats),
        }
        db.close()
        result["targets"] = {
            "backlog_worker_rss_mb": report.check("backlog_worker_rss_mb", result["worker_peak_rss_mb"])
        }
        path = report.write_json(result, args.name, stamp)
        samples = mon.samples
        t_start = mon.marks["start"].at
        series: dict[str, Any] = {
            "t": [s[0] - t_start for s in samples],
            "parked_t": parked_t,
            "parked": parked_n,
        }
        for name in ("worker", "server", "intake"):
            series[f"rss_{name}"] = [s[1].get(name, 0) / 2**20 for s in samples]
        png = path.with_suffix(".png")
        report.plot_backlog(png, result, series)
        rows = [
            ("backlog (unassigned items)", args.count, "all agents Offline"),
            (
                "seconds to park all",
                result["seconds_to_park"],
                f"{result['parked_per_s']} items/s through intake -> queue",
            ),
            ("worker RSS at start MB", baseline_rss, ""),
            ("worker RSS parked (median) MB", result["worker_rss_mb_parked"], ""),
            (
                "worker peak RSS MB",
                result["worker_peak_rss_mb"],
                report.target_note(result["targets"]["backlog_worker_rss_mb"]),
            ),
            (
                "server RSS parked / peak MB",
                f"{result['server_rss_mb_parked']} / {result['server_peak_rss_mb']}",
                "",
            ),
            (
                "worker / server CPU s per item",
                f"{result['cpu_s_per_email'].get('worker')} / {result['cpu_s_per_email'].get('server')}",
                "",
            ),
            (
                "dispatcher passes",
                result["dispatcher"]["passes"],
                f"{result['dispatcher']['runs']} dispatcher runs",
            ),
            ("other processes' CPU share", result["other_load_share"], "should be ~0"),
        ]
        report.print_table(f"routedesk bench-backlog ({result['date']})", rows)
        print(f"results: {path}\nplot:    {png}")
        ok = True
        return 0
    except StackError as exc:
        print(f"bench-backlog: {exc}", file=sys.stderr)
        return 1
    except Exception:
        traceback.print_exc()
        return 1
    finally:
        mon.stop()
        stack.stop_all()
        if ok and not args.keep:
            stack.remove()
        else:
            print(f"bench-backlog: the stack's files are in {stack.workdir}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
