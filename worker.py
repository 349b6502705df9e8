"""The routedesk worker: runs the routing workflows and the case-store activities."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from activities import build_activities
from routedesk import settings
from routedesk.store import Store
from workflows import WORKFLOWS

ACTIVITY_THREADS = 16
# On SIGTERM, running activities (store transactions, a relay send) get this long to finish
# before they are cancelled; with the intake channels' 4 s it fits make run's 8 s deadline.
WORKER_GRACE = 3.0


def build_worker(
    client: Client,
    store: Store,
    task_queue: str | None = None,
    *,
    activities: Sequence[Callable[..., Any]] | None = None,
    executor: concurrent.futures.ThreadPoolExecutor | None = None,
    sandbox: bool | None = None,
    id_prefix: str | None = None,
) -> Worker:
    """A worker for one task queue; ``activities`` lets tests substitute faulty ones.

    ``sandbox`` (default: ``ROUTEDESK_WORKFLOW_SANDBOX``, off) runs workflows in Temporal's
    sandbox. The sandbox re-imports the workflow modules for every workflow instance it
    creates, which cost 40% of this worker's CPU in ``make bench`` (docs/benchmarks.md). The
    test suite runs every workflow sandboxed, so a non-deterministic call (time, random, I/O)
    fails there, and the recorded histories in tests/histories/ are replayed on every run;
    the sandbox only adds checks, so code that passes sandboxed behaves the same without it.
    """
    tuning = settings.get_settings()
    if sandbox is None:
        sandbox = tuning.workflow_sandbox
    return Worker(
        client,
        task_queue=task_queue or settings.task_queue(),
        workflows=WORKFLOWS,
        activities=list(activities if activities is not None else build_activities(store, client, id_prefix=id_prefix)),
        activity_executor=executor or concurrent.futures.ThreadPoolExecutor(ACTIVITY_THREADS),
        max_concurrent_activities=ACTIVITY_THREADS,
        # Parked routing workflows (waiting for an agent or a resolve) beyond this are evicted
        # and replayed on wake-up. 1,000 holds a burst's worth of live ones (make bench at
        # RATE=0 keeps hundreds open) while memory stays bounded with 10,000 parked (make
        # bench-backlog; figures in docs/benchmarks.md).
        max_cached_workflows=tuning.workflow_cache,
        # As many workflow tasks in flight as activity threads. With the SDK's 100, a burst's
        # tasks queue their local activities behind each other's, long-running tasks get
        # extra workflow tasks (3 history events each), and make bench's largest first-offer
        # history was 30-31 events; with 16 it is 28, at the same throughput.
        max_concurrent_workflow_tasks=tuning.workflow_tasks,
        workflow_runner=SandboxedWorkflowRunner() if sandbox else UnsandboxedWorkflowRunner(),
        graceful_shutdown_timeout=timedelta(seconds=WORKER_GRACE),
    )


def main() -> None:
    """``python worker.py``: the same as ``routedesk worker``."""
    from routedesk.cli.service import run_worker

    raise SystemExit(run_worker())


if __name__ == "__main__":
    main()
