"""A bound on how long an intake answer waits for the case store and Temporal.

The store's SQLite ``busy_timeout`` is 30 s, and a store locked by another process (a
backup holding ``BEGIN EXCLUSIVE``, a long transaction) would keep an SMTP or HTTP client
waiting that long or longer. Intake answers within ``intake.submit_timeout_seconds``
instead: a temporary failure (SMTP ``451``, HTTP ``503`` with ``Retry-After``) makes the
sender retry, which is what sending mail servers do best.

A submission that outlives its answer is not abandoned: it keeps running in the background,
so bytes committed after the ``451`` still get their workflow, and the sender's retry is
deduplicated onto that same stored email and workflow. Nothing is lost, nothing doubles.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from temporalio.client import Client
from temporalio.service import RPCError

from routedesk.db import StoreUnavailable
from routedesk.store import Store
from routedesk.temporal import TemporalUnavailable
from starter.send import Submission, submit_email

log = logging.getLogger("routedesk.intake")

# Failures the service expects (store locked, read-only or down; Temporal unreachable): one
# WARNING line each. Anything else is a bug and is logged with its traceback.
EXPECTED_FAILURES: tuple[type[BaseException], ...] = (
    TimeoutError,
    SQLAlchemyError,
    StoreUnavailable,
    TemporalUnavailable,
    RPCError,
    OSError,
)


class SubmitTimeout(TimeoutError):
    def __init__(self, seconds: float) -> None:
        super().__init__(f"the case store or Temporal did not answer within {seconds:g}s")


class SubmitAbandoned(SubmitTimeout):
    """The server is shutting down and stopped waiting for the submission."""

    def __init__(self) -> None:
        TimeoutError.__init__(self, "the service is shutting down before the case store answered")


def failure_summary(exc: BaseException) -> str:
    """One line naming what failed, for the log (no traceback, no message content)."""
    orig = getattr(exc, "orig", None)  # SQLAlchemy wraps the driver's error
    text = str(orig or exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


class BoundedSubmitter:
    """``submit_email`` with an answer within ``timeout`` seconds; late work finishes in the background."""

    def __init__(
        self,
        client: Client,
        store: Store,
        *,
        timeout: float,
        task_queue: str | None = None,
        id_prefix: str | None = None,
    ) -> None:
        self.client = client
        self.store = store
        self.timeout = timeout
        self.task_queue = task_queue
        self.id_prefix = id_prefix
        self.pending: set[asyncio.Task[Submission]] = set()

    async def submit(
        self,
        raw: bytes,
        *,
        source: str,
        envelope_to: list[str],
        give_up: Iterable[asyncio.Future[None]] = (),
    ) -> Submission:
        """The submission, or :class:`SubmitTimeout` after ``timeout`` (or when ``give_up`` fires).

        Cancelling the caller (a client that hung up) does not cancel the submission.
        """
        task = asyncio.ensure_future(
            submit_email(
                self.client,
                self.store,
                raw,
                source=source,
                envelope_to=envelope_to,
                task_queue=self.task_queue,
                id_prefix=self.id_prefix,
            )
        )
        self.pending.add(task)
        task.add_done_callback(self._finished)
        waiting: set[asyncio.Future[Any]] = {task, *give_up}
        done, _ = await asyncio.wait(waiting, timeout=self.timeout, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        task.add_done_callback(self._finished_late)
        if any(f.done() for f in give_up):
            raise SubmitAbandoned
        raise SubmitTimeout(self.timeout)

    def _finished(self, task: asyncio.Task[Submission]) -> None:
        self.pending.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a caller that hung up must not leave a "never retrieved" error

    def _finished_late(self, task: asyncio.Task[Submission]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            sub = task.result()
            log.info("a submission answered as a temporary failure completed later: email %s", sub.email_id)
        elif isinstance(exc, EXPECTED_FAILURES):
            log.warning("a submission answered as a temporary failure failed later: %s", failure_summary(exc))
        else:
            log.error("a submission answered as a temporary failure failed later", exc_info=exc)

    async def drain(self, timeout: float) -> None:
        """Give background submissions up to ``timeout`` seconds to finish (at shutdown)."""
        if self.pending:
            await asyncio.wait(set(self.pending), timeout=timeout)


def log_submit_failure(logger: logging.Logger, channel: str, exc: BaseException) -> None:
    if isinstance(exc, EXPECTED_FAILURES):
        logger.warning("%s: message not stored, answered as a temporary failure: %s", channel, failure_summary(exc))
    else:
        logger.error("%s: message not stored, answered as a temporary failure", channel, exc_info=exc)
