"""The ``thread_reply`` activity: a thin wrapper around the reply's store transaction
(routedesk/threads.py: who may join a case, attaching a reply, reopening a resolved case)."""

from __future__ import annotations

from temporalio import activity

from routedesk import threads
from routedesk.contracts import ThreadDecision, ThreadInput
from routedesk.store import Store


class ThreadActivities:
    def __init__(self, store: Store) -> None:
        self.store = store

    @activity.defn(name="thread_reply")
    def thread_reply(self, inp: ThreadInput) -> ThreadDecision:
        """Attach the reply to its case; reopen a resolved case for another routing round.

        Idempotent: the trace step ``reply:<email id>`` marks the decision as made; a retry
        sees it and reports the same decision without reopening twice.
        """
        return threads.thread_reply(self.store, inp)
