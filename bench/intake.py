"""The SMTP intake as its own process (``python -m bench.intake --port P``).

Exactly what ``make run`` starts (``starter.smtp.start_smtp_intake`` with the Temporal
client and the case store from the environment), alone in a process so its CPU and memory
are measured apart from the worker, the server and the load generator. Prints ``READY``
once listening; SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

import bench  # noqa: F401  (BENCH_SRC first on sys.path)
from routedesk.store import Store
from routedesk.temporal import connect
from starter.smtp import start_smtp_intake


async def main(port: int, max_message_bytes: int) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    client = await connect()
    store = Store().init()
    server = await start_smtp_intake(client, store, host="127.0.0.1", port=port, max_message_bytes=max_message_bytes)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"READY {server.host}:{server.port}", flush=True)
    await stop.wait()
    await server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-message-bytes", type=int, default=25 * 1024 * 1024)
    args = parser.parse_args()
    asyncio.run(main(args.port, args.max_message_bytes))
