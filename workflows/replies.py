"""SendReplyWorkflow: delivers one agent's reply, already rendered and stored, through the relay.

Started by :func:`routedesk.operations.reply_to_case` with an ID stored on the reply (one
workflow per reply, however often the start is repeated). The history carries the reply id
and the delivery's status only, never the text.

The relay's 4xx answers and outages are retried with backoff for up to a day (mail servers
themselves retry for days; an agent's answer an hour late still helps the customer); a 5xx
is final and recorded ``failed`` with the relay's answer by the activity. When the retries
run out, the reply is recorded ``failed`` with the last error, so the case never shows a
reply as queued forever.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.replies import ReplyActivities
    from routedesk.notifications import NotificationResult

RELAY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=5),
)
SEND_START_TO_CLOSE = timedelta(seconds=60)  # one SMTP conversation, the relay's timeouts inside
SEND_PERIOD = timedelta(hours=24)
STORE_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=10))


@workflow.defn
class SendReplyWorkflow:
    @workflow.run
    async def run(self, reply_id: int) -> NotificationResult:
        try:
            return await workflow.execute_activity_method(
                ReplyActivities.send_reply,
                reply_id,
                start_to_close_timeout=SEND_START_TO_CLOSE,
                schedule_to_close_timeout=SEND_PERIOD,
                retry_policy=RELAY_RETRY,
            )
        except ActivityError:
            # Out of retries (or the reply vanished): say so on the case instead of failing
            # the workflow with the reply still shown as queued.
            return await workflow.execute_activity_method(
                ReplyActivities.give_up_reply,
                reply_id,
                start_to_close_timeout=timedelta(seconds=30),
                schedule_to_close_timeout=SEND_PERIOD,
                retry_policy=STORE_RETRY,
            )
