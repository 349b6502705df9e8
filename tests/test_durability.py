"""Idempotency, retries, malformed input and worker restarts against the real dev server."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from temporalio import activity

from activities.intake import IntakeActivities
from activities.routing import RoutingActivities
from routedesk.assignment.wake import Kicker
from routedesk.contracts import IntakeRequest, IntakeResult
from tests.cli import stack_env
from tests.support import (
    ROOT,
    Stack,
    activities_with,
    activity_attempts,
    eventually,
    example_email,
    history_events,
    make_email,
)


async def test_same_email_ten_times_concurrently_is_one_workflow_and_one_case(stack: Stack) -> None:
    raw = example_email("02-invoice-question.eml")
    subs = await asyncio.gather(*(stack.submit(raw) for _ in range(10)))
    assert len({s.workflow_id for s in subs}) == 1
    assert sum(s.new_email for s in subs) == 1
    handle = stack.handle(subs[0].workflow_id)
    result = await stack.queued(subs[0].workflow_id)
    # Once more after routing: still the same workflow.
    again = await stack.submit(raw)
    assert again.workflow_id == subs[0].workflow_id and not again.new_email
    assert len(stack.emails()) == 1
    assert [c.id for c in stack.cases()] == [result.case_id]
    events = await history_events(handle)
    assert activity_attempts(events, "parse_email") == [1]
    assert activity_attempts(events, "route_case") == []  # intake routed the accepted email


def _crash_after_commit() -> None:
    """Make attempt 1 fail after the activity's transaction committed: the worst moment."""
    if activity.info().attempt == 1:
        raise RuntimeError("simulated worker crash after the commit")


class FlakyIntakeActivities(IntakeActivities):
    @activity.defn(name="parse_email")
    async def parse_email(self, inp: IntakeRequest) -> IntakeResult:
        result = await super().parse_email(inp)
        _crash_after_commit()
        return result


async def test_transient_failure_is_retried_and_the_case_created_once(make_stack: Any) -> None:
    stack: Stack = await make_stack(start_worker=False)
    kicker = Kicker(stack.client, stack.id_prefix)
    flaky = FlakyIntakeActivities(stack.store, RoutingActivities(stack.store, stack.client, kicker))
    acts = activities_with(stack.store, stack.client, flaky.parse_email, id_prefix=stack.id_prefix)
    await stack.start_worker(activities=acts)
    sub = await stack.submit(example_email("01-password-reset.eml"))
    result = await stack.queued(sub.workflow_id)
    assert len(stack.cases()) == 1
    events = await history_events(stack.handle(sub.workflow_id))
    assert activity_attempts(events, "parse_email") == [2]  # the retry is the attempt that completed
    trace = stack.trace(case_id=result.case_id)
    assert [t.stage for t in trace].count("case") == 1
    # The retry reported the first attempt's decisions instead of writing them again.
    assert len({(t.step, t.seq) for t in trace}) == len(trace)
    # The queue was empty, so routing also offered the case, once; the retry handed the
    # workflow that same offer.
    [offer] = stack.offers(result.case_id)
    assert {t.step for t in trace} == {"intake", "case", "r1:classify", "r1:route", f"r1:offer{offer.id}"}
    status = await stack.wait_stage(sub.workflow_id, "offered")
    assert status.live_offer == offer.agent_id


BROKEN_NO_FROM = (
    b"To: support@acme.example\r\nSubject: who am I\r\nMessage-ID: <nofrom-1@x.example>\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed\r\n\r\n--\r\n\x00\xff\xfe garbage\r\n"
)
BROKEN_WITH_SENDER = (
    b"From: Kim <kim@customer.example>\r\nTo: support@acme.example\r\nSubject: attached\r\n"
    b"Message-ID: <broken-2@customer.example>\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="never-closed"\r\n\r\n--never-closed\r\n'
    b"Content-Type: text/plain; charset=no-such-charset\r\n\r\nthe printer \xe9 is broken\r\n"
)


async def test_malformed_email_is_recorded_and_the_worker_stays_healthy(stack: Stack) -> None:
    sub = await stack.submit(BROKEN_NO_FROM)
    outcome = await stack.handle(sub.workflow_id).result()  # a recorded outcome, not a failure
    assert outcome.stage == "rejected" and "no usable From address" in (outcome.reason or "")
    [email] = stack.emails()
    assert email.raw == BROKEN_NO_FROM and email.status == "rejected"

    # Broken MIME with a usable sender and a routing address still makes a case.
    sub2 = await stack.submit(BROKEN_WITH_SENDER)
    result = await stack.queued(sub2.workflow_id)
    assert stack.case(result.case_id or 0).subject == "attached"

    # And the same worker routes the next good email.
    ok = await stack.submit(make_email(subject="Still there?"))
    assert (await stack.queued(ok.workflow_id)).queue == "general"


async def test_worker_killed_mid_workflow_and_restarted_completes(
    stack_without_worker: Stack,
) -> None:
    """SIGKILL a worker after intake committed the routing but before the workflow recorded it; a new
    worker finishes the workflow from history: the case is not created, classified or routed
    a second time."""
    stack = stack_without_worker
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.faulty_worker",
        cwd=ROOT,
        env={**os.environ, **stack_env(stack)},
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        assert (await asyncio.wait_for(proc.stdout.readline(), 60)).strip() == b"ready"
        sub = await stack.submit(example_email("05-sales-inquiry.eml"))
        await eventually(
            lambda: [c for c in stack.cases() if c.status == "queued"],
            what="the faulty worker to commit the case's routing",
        )
    finally:
        proc.kill()  # SIGKILL: no graceful shutdown, the workflow task dies with the process
        await proc.wait()
    # Committed in the store, but the workflow never recorded it.
    assert activity_attempts(await history_events(stack.handle(sub.workflow_id)), "parse_email") == []

    await stack.start_worker()  # a healthy worker, as after a redeploy
    result = await stack.queued(sub.workflow_id, timeout=60)
    assert result.queue == "sales"
    [case] = stack.cases()
    trace = stack.trace(case_id=case.id)
    stages = [t.stage for t in trace]
    assert stages.count("classification") == len(stack.config.workstreams[0].classification_rules)
    assert stages.count("case") == 1
    assert len({(t.step, t.seq) for t in trace}) == len(trace)
