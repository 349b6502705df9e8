"""Custom search attributes supervisors filter on in the Temporal UI (all Keyword).

Registered when the dev server starts (``make run`` and the test fixture) and upserted by
the routing workflow as it advances, e.g. ``RoutingQueue="billing"``.
"""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

CASE_NUMBER = SearchAttributeKey.for_keyword("CaseNumber")
MAILBOX = SearchAttributeKey.for_keyword("Mailbox")
ROUTING_QUEUE = SearchAttributeKey.for_keyword("RoutingQueue")
ROUTING_STAGE = SearchAttributeKey.for_keyword("RoutingStage")
CONTACT_ID = SearchAttributeKey.for_keyword("ContactId")
ASSIGNED_AGENT = SearchAttributeKey.for_keyword("AssignedAgent")

ALL = [CASE_NUMBER, MAILBOX, ROUTING_QUEUE, ROUTING_STAGE, CONTACT_ID, ASSIGNED_AGENT]


def dev_server_args() -> list[str]:
    """``--search-attribute`` flags for ``temporal server start-dev``."""
    args: list[str] = []
    for key in ALL:
        args += ["--search-attribute", f"{key.name}=Keyword"]
    return args
