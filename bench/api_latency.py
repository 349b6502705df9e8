"""``make bench-api``: how fast ``GET /api/v1/agents/{id}/offers`` answers (issue 15: < 50 ms).

Starts an idle service the way a deployment runs it: a Temporal dev server as ``make run``
starts it (``starter.run.start_dev_server``) and ``routedesk intake http`` (the HTTP intake
and API) in a process of its own, over a SQLite case store seeded with the example config
and the example emails routed ``--copies`` times over (bench/cli_startup.py's seed: real
intake and routing code, so agents hold live offers). Then, with one agent's bearer token and
one keep-alive connection, it sends ``--requests`` GETs one after the other (after 20 warm-up
requests) and prints the median, p95 and maximum latency, client-side (request sent to body
read).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time

import httpx

from bench.stack import Stack, free_port, tail

WARMUP = 20


def pick_agent(url: str) -> tuple[str, int, str]:
    """The agent holding the most offers, its live offer count and a new agent token of theirs."""
    os.environ["DATABASE_URL"] = url
    from routedesk import auth
    from routedesk import operations as ops
    from routedesk.store import Store

    store = Store(url)
    admin = auth.local_admin()
    agents = ops.list_agents(store, admin)
    counts = {a.id: len(ops.agent_offers(store, admin, a.id, include_closed=True)) for a in agents}
    agent = max(counts, key=lambda a: counts[a])
    auth.add_user(store, "bench-agent", "agent", agent)
    token = auth.create_token(store, "bench-agent")
    store.db.dispose()
    return agent, counts[agent], token


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def serve_and_measure(copies: int, requests: int) -> None:
    from bench.cli_startup import seed

    stack = Stack.fresh("bench-api")
    try:
        made = await asyncio.to_thread(seed, stack.database_url, copies)
        agent, offers, token = pick_agent(stack.database_url)
        await stack.start_server()
        port = free_port()
        api = stack.spawn(
            "api",
            [sys.executable, "-m", "routedesk.cli.app", "intake", "http", "--port", str(port)],
            env=stack.env(ROUTEDESK_HTTP_TOKEN="bench-intake-token"),
        )
        base = f"http://127.0.0.1:{port}"
        urls = [f"/api/v1/agents/{agent}/offers", f"/api/v1/agents/{agent}/offers?all=true"]
        headers = {"Authorization": f"Bearer {token}"}
        times: dict[str, list[float]] = {u: [] for u in urls}
        shown: dict[str, int] = {}
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            deadline = time.monotonic() + 90
            while True:
                try:
                    if (await http.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if not api.alive() or time.monotonic() > deadline:
                    raise SystemExit(f"routedesk intake http did not start:\n{tail(api.log)}")
                await asyncio.sleep(0.2)  # bounded: the deadline above ends the wait
            for i in range(WARMUP + requests):
                for url in urls:  # interleaved: other load on the machine hits both alike
                    start = time.perf_counter()
                    res = await http.get(url, headers=headers)
                    res.read()
                    elapsed = time.perf_counter() - start
                    if res.status_code != 200:
                        raise SystemExit(f"GET {url}: {res.status_code} {res.text}")
                    shown[url] = len(res.json())
                    if i >= WARMUP:
                        times[url].append(elapsed)
        print(
            f"agent {agent} ({offers} offers in all; store: {made} cases); {requests} requests each after "
            f"{WARMUP} warm-up, one keep-alive connection, client-side latency"
        )
        for url in urls:
            ms = [t * 1000 for t in times[url]]
            print(
                f"GET {url:<42} ({shown[url]} shown)  median {statistics.median(ms):.1f} ms  "
                f"p95 {percentile(ms, 0.95):.1f} ms  max {max(ms):.1f} ms  min {min(ms):.1f} ms"
            )
    finally:
        stack.stop("api")
        stack.stop_all()
        stack.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", "-n", type=int, default=200)
    parser.add_argument("--copies", type=int, default=10, help="times the example emails are routed into the store")
    args = parser.parse_args()
    asyncio.run(serve_and_measure(args.copies, args.requests))


if __name__ == "__main__":
    main()
