"""The activities of ``SendReplyWorkflow``: thin Temporal wrappers over :mod:`routedesk.replies`,
which renders, records and delivers agents' replies."""

from __future__ import annotations

from temporalio import activity

from routedesk.notifications import NotificationResult
from routedesk.replies import ReplyNotifier
from routedesk.store import Store


class ReplyActivities:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.notifier = ReplyNotifier(store)

    @activity.defn(name="send_reply")
    def send_reply(self, reply_id: int) -> NotificationResult:
        """Deliver a queued reply once, from the mailbox's address (a person's mail has a
        real envelope sender, so the relay's bounces reach the support mailbox)."""
        return self.notifier.send(reply_id)

    @activity.defn(name="give_up_reply")
    def give_up_reply(self, reply_id: int) -> NotificationResult:
        """The relay stayed unreachable for the whole retry period: record the reply
        ``failed`` with the last error, so the case shows it was not sent."""
        return self.notifier.give_up(reply_id)
