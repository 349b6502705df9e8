"""``make bench``: routed emails per second and latency, against the engine's own floor.

    python -m bench.run [--emails N] [--rate R] [--concurrency C] [--think-ms T] [--hold-ms H]

1. A fresh stack (see :mod:`bench.stack`): dev server, the real worker, the real SMTP
   intake, a new case store loaded with bench/routing.yaml.
2. N generated emails (:mod:`bench.load`) are delivered over SMTP, at most C in flight,
   paced at R per second (0: as fast as they are accepted). Arrival = the moment the
   harness hands an email to SMTP.
3. Simulated agents (:mod:`bench.agents`) accept every offer after T ms and resolve the case
   H ms after it is assigned, which frees capacity.
4. When every case is assigned, resolved and every routing workflow has completed, the
   latencies are read from the case store (created_at, queued_at, assigned_at, joined on
   the Message-ID) and the histories of the routing workflows are read from the server.
5. The engine floor (:mod:`bench.floor`): N no-op workflows, each making the activity calls
   one real email made (read from its history), started with the same C and R through the
   same server, on a worker with the same tuning.
6. Results: a table, bench/results/latest.json and bench/results/latest.png.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import random
import sys
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

import bench  # noqa: F401  (BENCH_SRC first on sys.path)
from bench import histories, report
from bench.agents import AgentPool, epoch, open_db
from bench.floor import FLOOR_TASK_QUEUE, NOTES
from bench.load import SmtpLoad, generate
from bench.profile import Profiler
from bench.profile import summarise as summarise_profile
from bench.stack import (
    Monitor,
    Stack,
    StackError,
    machine,
    provenance,
    tail,
    wait_for_quiet_machine,
)

CONFIG = Path(__file__).resolve().parent / "routing.yaml"
NOT_ROUTED = ("rejected", "ignored", "held", "threaded")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--emails", "-n", type=int, default=1000, help="emails to route (N, default 1000)")
    p.add_argument("--rate", type=float, default=0, help="emails per second, 0 = as fast as accepted (RATE)")
    p.add_argument(
        "--concurrency",
        type=int,
        default=16,
        help="SMTP sessions / workflow starts in flight (CONC)",
    )
    p.add_argument("--think-ms", type=float, default=50, help="agent think time before accepting (THINK_MS)")
    p.add_argument(
        "--hold-ms",
        type=float,
        default=200,
        help="time an agent holds a case before resolving (HOLD_MS)",
    )
    p.add_argument("--poll-ms", type=float, default=25, help="how often simulated agents look at the store")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--config", type=Path, default=CONFIG)
    p.add_argument("--history-sample", type=int, default=0, help="histories to read; 0 = all (at most 2000)")
    p.add_argument("--no-floor", action="store_true", help="skip the engine floor (and the handshake floor)")
    p.add_argument(
        "--no-handshake-floor",
        action="store_true",
        help="skip the handshake floor (the floor's calls plus an accept signal, a resolve update and 3 upserts)",
    )
    p.add_argument(
        "--floor-only",
        metavar="CALLS",
        help="only the floor, each workflow making CALLS (e.g. AAAAAAA or LLLLLLL)",
    )
    p.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="extra dev-server argument (experiments; repeatable)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="sample the worker with py-spy (costs CPU; not for figures of record)",
    )
    p.add_argument("--timeout", type=float, default=1800, help="give up after this many seconds of routing")
    p.add_argument("--tag", default="", help="a label stored in the results (e.g. baseline)")
    p.add_argument("--name", default="latest", help="results file name under bench/results (default latest)")
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=180,
        help="wait up to this many seconds for an idle machine first",
    )
    p.add_argument("--keep", action="store_true", help="keep the stack's directory (always kept on failure)")
    return p.parse_args(argv)


def counts(db: Any) -> dict[str, int]:
    c = db.execute(
        "SELECT count(*), count(queued_at), count(assigned_at), coalesce(sum(status = 'resolved'), 0) FROM \"case\""
    ).fetchone()
    emails = dict(db.execute("SELECT status, count(*) FROM email GROUP BY status").fetchall())
    return {
        "cases": c[0],
        "queued": c[1],
        "assigned": c[2],
        "resolved": c[3],
        "emails": sum(emails.values()),
        "not_routed": sum(v for k, v in emails.items() if k in NOT_ROUTED),
        **{f"email_{k}": v for k, v in emails.items()},
    }


async def running(client: Any, workflow_type: str, task_queue: str) -> int:
    resp = await client.count_workflows(
        f'WorkflowType="{workflow_type}" AND TaskQueue="{task_queue}" AND ExecutionStatus="Running"'
    )
    return int(resp.count)


def make_progress() -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description:<22}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        refresh_per_second=4,
    )


async def route_phase(
    args: argparse.Namespace,
    stack: Stack,
    client: Any,
    mon: Monitor,
    port: int,
    out: dict[str, Any],
) -> dict[str, Any]:
    """Deliver the emails and run the agents until every case is resolved and every routing
    workflow has completed."""
    tag = dt.datetime.now().strftime("%H%M%S")
    emails = generate(args.emails, args.seed, tag)
    load = SmtpLoad("127.0.0.1", port, args.concurrency, args.rate)
    pool = AgentPool(client, stack.db_path, think_ms=args.think_ms, hold_ms=args.hold_ms, poll_ms=args.poll_ms)
    db = open_db(stack.db_path)
    stop_agents = asyncio.Event()
    agents_task = asyncio.create_task(pool.run(stop_agents))
    sent = {"n": 0}

    def delivered(_e: Any, d: Any) -> None:
        sent["n"] += 1

    n = args.emails
    profiler = None
    if args.profile:
        profiler = Profiler(stack.children["worker"].pid, stack.workdir / "worker.pyspy.txt")
        mon.watch("py-spy", profiler.pid)
    mon.mark("start")
    t_start = time.time()
    send_task = asyncio.create_task(load.run(emails, on_done=delivered))
    progress = make_progress()
    last: dict[str, int] = {}
    with progress:
        bars = {
            k: progress.add_task(label, total=n, rate="")
            for k, label in (
                ("sent", "sent over SMTP"),
                ("cases", "cases created"),
                ("queued", "queued"),
                ("assigned", "assigned (accepted)"),
                ("resolved", "resolved"),
            )
        }
        assigned_mark = False
        while True:
            await asyncio.sleep(0.5)
            last = counts(db)
            elapsed = max(1e-6, time.time() - t_start)
            values = {
                "sent": sent["n"],
                **{k: last[k] for k in ("cases", "queued", "assigned", "resolved")},
            }
            for k, v in values.items():
                progress.update(bars[k], completed=v, rate=f"{v / elapsed:6.1f}/s")
            failed = sum(
                1 for d in load.deliveries.values() if d.done == 0 and d.error and d.attempts >= 1 and send_task.done()
            )
            expected = n - last["not_routed"] - failed
            if send_task.done() and not assigned_mark and last["assigned"] >= expected:
                mon.mark("assigned")
                assigned_mark = True
            if send_task.done() and assigned_mark and last["resolved"] >= expected:
                break
            if send_task.done() and send_task.exception() is not None:
                raise send_task.exception()  # type: ignore[misc]
            if elapsed > args.timeout:
                raise StackError(f"routing did not finish within {args.timeout:.0f}s: {last}")
            if not stack.children["worker"].alive():
                raise StackError(f"the worker exited:\n{tail(stack.children['worker'].log)}")
        # Every routing workflow completes once its case is resolved.
        deadline = time.monotonic() + 120
        while (left := await running(client, "EmailRoutingWorkflow", stack.task_queue)) > 0:
            if time.monotonic() > deadline:
                raise StackError(f"{left} routing workflows still running 120 s after the last resolve")
            await asyncio.sleep(0.25)
    mon.mark("done")
    if profiler is not None:
        profiler.stop()
        out["worker_profile"] = summarise_profile(stack.workdir / "worker.pyspy.txt")
    stop_agents.set()
    await agents_task
    await pool.drain()
    pool.close()

    deliveries = load.deliveries
    undelivered = [mid for mid, d in deliveries.items() if d.done == 0]
    smtp = {
        "delivered": len(deliveries) - len(undelivered),
        "failed": len(undelivered),
        "retries_4xx": load.retries,
        "reconnects": load.reconnects,
        "errors": Counter(d.error for d in deliveries.values() if d.done == 0).most_common(5),
    }
    arrivals = [d.arrival for d in deliveries.values() if d.arrival]
    if arrivals:
        span = max(arrivals) - min(arrivals)
        smtp["offered_per_s"] = round(len(arrivals) / span, 2) if span > 0 else None
    if args.rate > 0:
        smtp["send_lag_ms"] = report.dist([(d.arrival - d.scheduled) * 1000 for d in deliveries.values() if d.arrival])
    smtp["smtp_250_ms"] = report.dist([(d.done - d.arrival) * 1000 for d in deliveries.values() if d.done])
    out["smtp"] = smtp
    out["final_counts"] = last
    out["agents"] = {
        "accept_signals": pool.accepts,
        "resolve_updates": pool.resolves,
        "errors": pool.errors,
        "polls": pool.polls,
    }
    rows = db.execute(
        "SELECT e.message_id, e.workflow_id, c.id, c.created_at, c.queued_at, c.assigned_at, "
        "c.resolved_at, c.queue_id "
        'FROM email e JOIN "case" c ON c.source_email_id = e.id'
    ).fetchall()
    offers = db.execute("SELECT id, case_id, status, kind, created_at FROM offer").fetchall()
    offer_spans = db.execute("SELECT agent_id, created_at, closed_at FROM offer WHERE closed_at IS NOT NULL").fetchall()
    agents = db.execute("SELECT id, capacity FROM agent").fetchall()
    db.close()
    return {
        "rows": rows,
        "offers": offers,
        "offer_spans": offer_spans,
        "agents": agents,
        "deliveries": deliveries,
        "pool": pool,
    }


async def floor_phase(
    args: argparse.Namespace,
    stack: Stack,
    client: Any,
    mon: Monitor,
    plans: list[str],
    out: dict[str, Any],
) -> list[float]:
    """The engine floor, then (unless --no-handshake-floor) the handshake floor, on one
    floor worker; returns the floor's completion offsets for the plot."""
    floor = await stack.start_floor_worker(client, FLOOR_TASK_QUEUE)
    mon.watch("floor", floor.pid)
    try:
        offsets, out["floor"] = await _floor_run(args, stack, client, mon, plans, handshake=False)
        if not args.no_handshake_floor:
            out["handshake_floor_offsets"], out["handshake_floor"] = await _floor_run(
                args, stack, client, mon, plans, handshake=True
            )
    finally:
        if "floor" in out:  # not when the floor itself failed
            out["floor"]["worker_peak_rss_mb"] = mon.rss_mb("floor")
        stack.stop("floor")
    return offsets


async def _floor_run(
    args: argparse.Namespace,
    stack: Stack,
    client: Any,
    mon: Monitor,
    plans: list[str],
    *,
    handshake: bool,
) -> tuple[list[float], dict[str, Any]]:
    """N floor workflows through the floor worker. A handshake workflow notes "offered" and
    "assigned" in a file the way the product's offers reach the simulated agents through
    the store; a reader polling it as often as the agents poll the store sends the
    ``accept`` signal after their think time and the ``resolve`` update after their hold
    time, so each answer finds the workflow task before it done, as in a routed email."""
    workflow_type = "BenchHandshakeFloorWorkflow" if handshake else "BenchFloorWorkflow"
    name = "handshake-floor" if handshake else "floor"
    n = args.emails
    sem = asyncio.Semaphore(args.concurrency)
    starts: list[float] = []
    answers: list[asyncio.Task[None]] = []
    answered = {"n": 0}
    mon.mark(f"{name}_start")
    t0 = time.time()

    async def answer(wid: str, what: str) -> None:
        handle = client.get_workflow_handle(wid)
        if what == "offered":
            await asyncio.sleep(args.think_ms / 1000)
            await handle.signal("accept")
        else:
            await asyncio.sleep(args.hold_ms / 1000)
            await handle.execute_update("resolve")
            answered["n"] += 1

    async def agents() -> None:
        notes = stack.workdir / NOTES
        offset = 0
        while answered["n"] < n:
            await asyncio.sleep(args.poll_ms / 1000)
            if not notes.exists():
                continue
            with notes.open() as f:
                f.seek(offset)
                chunk = f.read()
            complete = chunk[: chunk.rfind("\n") + 1]  # a line still being written waits
            offset += len(complete)
            for line in complete.splitlines():
                wid, what = line.split()
                answers.append(asyncio.create_task(answer(wid, what)))

    async def start(i: int) -> None:
        try:
            starts.append(time.time())
            await client.start_workflow(
                workflow_type,
                plans[i % len(plans)],
                id=f"{name}-{i}",
                task_queue=FLOOR_TASK_QUEUE,
            )
        finally:
            sem.release()

    tasks = []
    pool = asyncio.create_task(agents()) if handshake else None
    progress = make_progress()
    query = f'TaskQueue="{FLOOR_TASK_QUEUE}" AND WorkflowType="{workflow_type}"'
    with progress:
        bar = progress.add_task(name.replace("-", " ") if handshake else "engine floor", total=n, rate="")
        for i in range(n):
            if args.rate > 0:
                delay = t0 + i / args.rate - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            await sem.acquire()
            tasks.append(asyncio.create_task(start(i)))
        await asyncio.gather(*tasks)
        deadline = time.monotonic() + args.timeout
        while True:
            done = (await client.count_workflows(f'{query} AND ExecutionStatus="Completed"')).count
            progress.update(bar, completed=done, rate=f"{done / max(1e-6, time.time() - t0):6.1f}/s")
            if done >= n:
                break
            if time.monotonic() > deadline:
                raise StackError(f"{name}: only {done} of {n} workflows completed")
            await asyncio.sleep(0.25)
        if pool is not None:
            await pool
        await asyncio.gather(*answers)
    mon.mark(f"{name}_end")
    execs = await histories.list_executions(client, query)
    closes = [e.close_time.timestamp() for e in execs if e.close_time]
    first, last = min(starts), max(closes)
    cpu = mon.cpu_between(f"{name}_start", f"{name}_end")
    seconds = last - first
    sample = await histories.fetch(client, [e.id for e in execs[:100]])
    shape = histories.summarise(sample)
    return [c - first for c in closes], {
        "history_events_per_workflow": round(shape.mean_events, 2) if shape else None,
        "history_events_by_type": shape.by_type if shape else {},
        "workflows": n,
        "seconds": round(seconds, 2),
        "workflows_per_s": round(n / seconds, 2),
        "calls_per_workflow": round(sum(len(plans[i % len(plans)]) for i in range(n)) / n, 2),
        "regular_calls_per_workflow": round(sum(plans[i % len(plans)].count("A") for i in range(n)) / n, 2),
        "local_calls_per_workflow": round(sum(plans[i % len(plans)].count("L") for i in range(n)) / n, 2),
        "cpu_s_per_workflow": {k: round(v / n, 5) for k, v in cpu.items()},
        "rate_limited": args.rate > 0,
    }


async def main_async(args: argparse.Namespace) -> int:
    from routedesk.config import load_config

    cfg = load_config(args.config)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    result: dict[str, Any] = {
        "scenario": "bench",
        "tag": args.tag,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": provenance(),
        "machine": machine(),
        "emails": args.emails,
        "rate": args.rate,
        "concurrency": args.concurrency,
        "think_ms": args.think_ms,
        "hold_ms": args.hold_ms,
        "poll_ms": args.poll_ms,
        "config": str(args.config),
        "profiled": args.profile,
    }
    if args.quiet_wait > 0:
        print(
            f"bench: waiting up to {args.quiet_wait:.0f}s for the machine to be idle",
            file=sys.stderr,
        )
        result["machine"]["quiet_before_start"] = wait_for_quiet_machine(args.quiet_wait)
    stack = Stack.fresh("bench")
    print(f"bench: stack in {stack.workdir}", file=sys.stderr)
    mon = Monitor()
    mon.start()
    ok = False
    try:
        client = await stack.start_server(args.server_arg)
        result["server_launch"] = stack.server_launch
        mon.watch("server", stack.children["server"].pid)
        stack.init_store(cfg)
        if args.floor_only:
            await floor_phase(args, stack, client, mon, [args.floor_only], result)
            result.pop("handshake_floor_offsets", None)
            result["floor_emails_per_s"] = round(args.emails / result["floor"]["seconds"], 2)
            result["server_peak_rss_mb"] = mon.rss_mb("server")
            report.write_json(result, args.name, stamp)
            print(
                json.dumps(
                    {k: result.get(k) for k in ("floor_emails_per_s", "floor", "handshake_floor", "server_launch")},
                    indent=2,
                )
            )
            ok = True
            return 0
        worker = await stack.start_worker(client)
        mon.watch("worker", worker.pid)
        intake, port = await stack.start_intake()
        mon.watch("intake", intake.pid)

        routed = await route_phase(args, stack, client, mon, port, result)
        pool: AgentPool = routed["pool"]
        deliveries = routed["deliveries"]
        n_ok = len(routed["rows"])

        # --- latencies and throughput, from the case store ---------------------------------
        arrival = {mid: d.arrival for mid, d in deliveries.items() if d.arrival}
        lat: dict[str, list[float]] = {"created": [], "queued": [], "assigned": []}
        stage: dict[str, list[float]] = {
            k: []
            for k in (
                "queued_to_offer",
                "offer_to_accept_signal",
                "accept_signal_to_assigned",
                "assigned_to_resolved",
            )
        }
        accepted_offer = {
            case_id: (oid, epoch(created), kind)
            for oid, case_id, status, kind, created in routed["offers"]
            if status == "accepted"
        }
        offers_per_case = Counter(case_id for _oid, case_id, *_ in routed["offers"])
        first_offer_wids: set[str] = set()
        assigned_times, created_times = [], []
        for mid, wid, case_id, created, queued, assigned, resolved, _queue in routed["rows"]:
            a = arrival.get(mid)
            c, q, s, r = epoch(created), epoch(queued), epoch(assigned), epoch(resolved)
            if a is None:
                continue
            if c is not None:
                lat["created"].append((c - a) * 1000)
                created_times.append(c)
            if q is not None:
                lat["queued"].append((q - a) * 1000)
            if s is not None:
                lat["assigned"].append((s - a) * 1000)
                assigned_times.append(s)
            acc = accepted_offer.get(case_id)
            if acc is not None:
                oid, offered, _kind = acc
                if q is not None and offered is not None:
                    stage["queued_to_offer"].append((offered - q) * 1000)
                sig = pool.accept_signal_at.get(oid)
                if sig is not None and offered is not None:
                    stage["offer_to_accept_signal"].append((sig - offered) * 1000)
                if sig is not None and s is not None:
                    stage["accept_signal_to_assigned"].append((s - sig) * 1000)
                if offers_per_case[case_id] == 1:
                    first_offer_wids.add(wid)
            if s is not None and r is not None:
                stage["assigned_to_resolved"].append((r - s) * 1000)
        t_first = min(arrival.values())
        t_last = max(assigned_times)
        seconds = t_last - t_first
        result["seconds"] = round(seconds, 2)
        result["emails_per_s"] = round(len(assigned_times) / seconds, 2)
        result["routed_emails"] = n_ok
        for q in (50, 95, 99):
            result[f"p{q}_ms"] = {k: report.pct(v, q) for k, v in lat.items()}
        result["latency_ms"] = {k: report.dist(v) for k, v in lat.items()}
        result["stage_latency_ms"] = {k: report.dist(v) for k, v in stage.items()}
        result["offers"] = {
            "by_status": dict(Counter(status for _o, _c, status, _k, _t in routed["offers"])),
            "by_kind": dict(Counter(kind for _o, _c, _s, kind, _t in routed["offers"])),
            "per_case_mean": round(len(routed["offers"]) / max(1, n_ok), 2),
            "cases_accepted_on_first_offer": len(first_offer_wids),
        }
        # Is the simulated pool the limit? An agent holds at most one live offer, so with
        # offer occupancy near 1 every agent is always mid-handshake and throughput is
        # agents / handshake time; capacity occupancy near 1 means no capacity is free.
        n_agents = len(routed["agents"]) or 1
        capacity = sum(c for _a, c in routed["agents"]) or 1
        held = sum((epoch(closed) or 0) - (epoch(created) or 0) for _a, created, closed in routed["offer_spans"])
        busy = sum(
            (epoch(r) or 0) - (epoch(s_) or 0) for *_x, s_, r, _q in routed["rows"] if s_ is not None and r is not None
        )
        result["agent_pool"] = {
            "agents": n_agents,
            "capacity": capacity,
            "offer_occupancy": round(held / (n_agents * seconds), 3),
            "capacity_occupancy": round(busy / (capacity * seconds), 3),
            "handshake_ms_mean": round(1000 * held / max(1, len(routed["offer_spans"])), 1),
        }

        # --- CPU and memory ------------------------------------------------------------------
        cpu = mon.cpu_between("start", "done")
        result["cpu_s"] = cpu
        result["cpu_s_per_email"] = {k: round(v / max(1, n_ok), 5) for k, v in cpu.items()}
        result["cpu_s_to_last_assignment"] = mon.cpu_between("start", "assigned")
        result["worker_cpu_s_per_email"] = result["cpu_s_per_email"].get("worker")
        result["server_cpu_s_per_email"] = result["cpu_s_per_email"].get("server")
        result["intake_cpu_s_per_email"] = result["cpu_s_per_email"].get("intake")
        result["harness_cpu_s_per_email"] = result["cpu_s_per_email"].get("harness")
        wall = mon.marks["done"].at - mon.marks["start"].at
        cores = result["machine"]["cores"] or 1
        result["other_load_share"] = round(cpu["other"] / (wall * cores), 3)  # foreign processes on the machine
        result["cpu_utilisation_share"] = round(cpu["system_busy"] / (wall * cores), 3)
        for name in ("worker", "server", "intake", "harness"):
            result[f"{name}_peak_rss_mb"] = mon.rss_mb(name)

        # --- histories ------------------------------------------------------------------------
        wids = [row[1] for row in routed["rows"] if row[1]]
        limit = args.history_sample or min(len(wids), 2000)
        sample = wids if limit >= len(wids) else random.Random(args.seed).sample(wids, limit)
        print(f"bench: reading {len(sample)} routing histories", file=sys.stderr)
        stats = await histories.fetch(client, sample)
        summary = histories.summarise(stats)
        first = histories.summarise([s for s in stats if s.workflow_id in first_offer_wids])
        assert summary is not None
        result["history_events_per_email"] = round(summary.mean_events, 2)
        result["history"] = summary.as_dict()
        result["history_first_offer"] = first.as_dict() if first else None
        result["first_offer_history_events_max"] = first.max_events if first else None
        result["first_offer_history_events_mean"] = round(first.mean_events, 2) if first else None
        dispatchers = await histories.list_executions(
            client, f'WorkflowType="QueueDispatcherWorkflow" AND TaskQueue="{stack.task_queue}"'
        )
        dstats = await histories.fetch(client, [d.id for d in dispatchers], run_ids=[d.run_id for d in dispatchers])
        dsum = histories.summarise(dstats)
        result["dispatcher"] = {
            "runs": len(dstats),
            "events_total": sum(s.events for s in dstats),
            "events_per_email": round(sum(s.events for s in dstats) / max(1, n_ok), 2),
            "activities_total": dict(sum((s.activities for s in dstats), Counter())),
            "events_by_type_per_run": dsum.by_type if dsum else {},
        }
        stack.stop("intake")
        stack.stop("worker")

        # --- the floor ------------------------------------------------------------------------
        floor_offsets: list[float] = []
        if not args.no_floor:
            plans = [s.calls for s in stats if s.calls]
            floor_offsets = await floor_phase(args, stack, client, mon, plans, result)
            f = result["floor"]
            result["floor_emails_per_s"] = round(args.emails / f["seconds"], 2)
            result["floor_ratio"] = round(result["emails_per_s"] / result["floor_emails_per_s"], 3)
            if "handshake_floor" in result:
                hf = result["handshake_floor"]["workflows_per_s"]
                result["handshake_floor_emails_per_s"] = hf
                result["handshake_floor_ratio"] = round(result["emails_per_s"] / hf, 3)
        result["server_peak_rss_mb"] = mon.rss_mb("server")

        # --- targets, output ---------------------------------------------------------------------
        targets: dict[str, Any] = {}
        if args.rate == 0:
            targets["emails_per_s"] = report.check("emails_per_s", result["emails_per_s"])
            if "floor_ratio" in result:
                targets["floor_ratio"] = report.check("floor_ratio", result["floor_ratio"])
        if 0 < args.rate <= 10:
            targets["p99_queued_ms_at_10_per_s"] = report.check("p99_queued_ms_at_10_per_s", result["p99_ms"]["queued"])
        targets["first_offer_history_events_max"] = report.check(
            "first_offer_history_events_max", result["first_offer_history_events_max"]
        )
        result["targets"] = targets
        series = {
            "arrivals": report.per_second([t - t_first for t in arrival.values()]),
            "created": report.per_second([t - t_first for t in created_times]),
            "assigned": report.per_second([t - t_first for t in assigned_times]),
            "floor": report.per_second(floor_offsets),
            "handshake_floor": report.per_second(result.pop("handshake_floor_offsets", [])),
            "lat_created": lat["created"],
            "lat_queued": lat["queued"],
            "lat_assigned": lat["assigned"],
        }
        result["timeline_per_s"] = {
            k: series[k] for k in ("arrivals", "created", "assigned", "floor", "handshake_floor")
        }
        path = report.write_json(result, args.name, stamp)
        png = path.with_suffix(".png")
        report.plot_bench(png, result, series)
        (path.parent / f"{stamp}-{args.name}.png").write_bytes(png.read_bytes())
        print_result(result, path, png)
        ok = True
        return 0
    except StackError as exc:
        print(f"bench: {exc}", file=sys.stderr)
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
            print(f"bench: the stack's files are in {stack.workdir}", file=sys.stderr)


def print_result(r: dict[str, Any], path: Path, png: Path) -> None:
    t = r.get("targets", {})
    lat = r["latency_ms"]
    cpu = r["cpu_s_per_email"]
    rows = [
        (
            "emails",
            r["emails"],
            f"RATE={r['rate']:g} CONC={r['concurrency']} think {r['think_ms']:g} ms, hold {r['hold_ms']:g} ms",
        ),
        ("seconds (first arrival -> last assignment)", r["seconds"], ""),
        ("emails_per_s (sustained)", r["emails_per_s"], report.target_note(t.get("emails_per_s"))),
        (
            "floor_emails_per_s",
            r.get("floor_emails_per_s"),
            "no-op workflows, same activity calls" + (" (rate-limited)" if r["rate"] > 0 else ""),
        ),
        ("floor_ratio", r.get("floor_ratio"), report.target_note(t.get("floor_ratio"))),
        (
            "handshake_floor_emails_per_s",
            r.get("handshake_floor_emails_per_s"),
            "the same, plus accept signal, resolve update, 3 upserts",
        ),
        ("handshake_floor_ratio", r.get("handshake_floor_ratio"), "emails_per_s / handshake floor"),
    ]
    for key, label in (("created", "case created"), ("queued", "queued"), ("assigned", "assigned")):
        d = lat[key]
        note = report.target_note(t.get("p99_queued_ms_at_10_per_s")) if key == "queued" else ""
        rows.append(
            (
                f"arrival -> {label} p50/p95/p99 ms",
                f"{d['p50']:,.0f} / {d['p95']:,.0f} / {d['p99']:,.0f}",
                note,
            )
        )
    rows += [
        (
            "history events per email (mean)",
            r["history_events_per_email"],
            f"{r['history']['n']} histories",
        ),
        (
            "  accepted on first offer: mean / max",
            f"{r['first_offer_history_events_mean']} / {r['first_offer_history_events_max']}",
            report.target_note(t.get("first_offer_history_events_max")),
        ),
        (
            "  activity calls per email (regular + local)",
            f"{r['history']['regular_activity_calls']} + {r['history']['local_activity_calls']}",
            "",
        ),
        (
            "dispatcher events per email",
            r["dispatcher"]["events_per_email"],
            f"{r['dispatcher']['runs']} dispatcher runs",
        ),
        ("worker CPU s per email", cpu.get("worker"), f"peak RSS {r['worker_peak_rss_mb']} MB"),
        ("server CPU s per email", cpu.get("server"), f"peak RSS {r['server_peak_rss_mb']} MB"),
        ("intake CPU s per email", cpu.get("intake"), f"peak RSS {r['intake_peak_rss_mb']} MB"),
        ("harness CPU s per email", cpu.get("harness"), "load generator + simulated agents"),
        (
            "other processes' CPU share",
            r["other_load_share"],
            "of all cores, during the run (should be ~0)",
        ),
        (
            "commit",
            (r["commit"].get("sha") or "?")[:12] + (" +dirty" if r["commit"].get("dirty") else ""),
            r["commit"].get("src", ""),
        ),
        (
            "machine",
            f"{r['machine']['cores']} cores, {r['machine']['memory_gb']} GB",
            r["machine"].get("cpu_model") or "",
        ),
    ]
    report.print_table(f"routedesk bench ({r['date']})", rows)
    if r["other_load_share"] > 0.05:
        print(
            f"WARNING: other processes used {100 * r['other_load_share']:.0f}% of the machine "
            "during the run; the figures are not clean."
        )
    print(f"results: {path}\nplot:    {png}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
