"""The acknowledgement activity: a thin Temporal wrapper over :mod:`routedesk.notifications`,
which records the notification and delivers it (rendering, automatic-reply limits, relay)."""

from __future__ import annotations

from temporalio import activity

from routedesk.notifications import NotificationResult, Notifier, record_acknowledgement
from routedesk.store import Store


class NotifyActivities:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.notifier = Notifier(store)

    @activity.defn(name="send_acknowledgement")
    def send_acknowledgement(self, case_id: int) -> NotificationResult:
        """Acknowledge a new case to its sender, at most once per case.

        Never to auto-replies, bounces or unauthorized senders: those never get cases, and
        the rules are checked again here in case a case was made some other way. Within the
        automatic-reply limits (see ``record_auto_reply``).
        """
        return self.notifier.deliver(record_acknowledgement(self.store, case_id))
