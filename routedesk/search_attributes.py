"""Custom search attributes supervisors filter on in the Temporal UI (Keyword, and the
Datetime ``SlaDueAt``: the earliest SLA target still open, to sort and filter by).

Registered when the dev server starts (``make run`` and the test fixture), by
``routedesk temporal setup`` on any other server (operator service), and upserted by the
routing workflow as it advances, e.g. ``RoutingQueue="billing"``. Workers and intakes check
them at start: a workflow upserting an unknown attribute fails its workflow task and retries
for ever, so every routing workflow would wedge.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.service import RPCError, RPCStatusCode

CASE_NUMBER = SearchAttributeKey.for_keyword("CaseNumber")
MAILBOX = SearchAttributeKey.for_keyword("Mailbox")
ROUTING_QUEUE = SearchAttributeKey.for_keyword("RoutingQueue")
ROUTING_STAGE = SearchAttributeKey.for_keyword("RoutingStage")
CONTACT_ID = SearchAttributeKey.for_keyword("ContactId")
ASSIGNED_AGENT = SearchAttributeKey.for_keyword("AssignedAgent")
SLA_DUE_AT = SearchAttributeKey.for_datetime("SlaDueAt")

ALL: list[SearchAttributeKey[Any]] = [
    CASE_NUMBER,
    MAILBOX,
    ROUTING_QUEUE,
    ROUTING_STAGE,
    CONTACT_ID,
    ASSIGNED_AGENT,
    SLA_DUE_AT,
]


def type_name(key: SearchAttributeKey[Any]) -> str:
    """``Keyword``, ``Datetime``: the name the CLI and the server list."""
    return (
        IndexedValueType.Name(IndexedValueType.ValueType(key.indexed_value_type.value))
        .removeprefix("INDEXED_VALUE_TYPE_")
        .title()
    )


def dev_server_args() -> list[str]:
    """``--search-attribute`` flags for ``temporal server start-dev``."""
    args: list[str] = []
    for key in ALL:
        args += ["--search-attribute", f"{key.name}={type_name(key)}"]
    return args


# --- on a server that is not our dev server: `routedesk temporal setup` -------------------

SETUP_COMMAND = "routedesk temporal setup"


class SearchAttributesMissing(Exception):
    """The namespace lacks some of our attributes: every routing workflow would wedge."""

    def __init__(self, namespace: str, address: str, missing: list[str]) -> None:
        self.missing = missing
        super().__init__(
            f"the Temporal namespace {namespace} at {address} lacks the search attributes "
            f"{', '.join(missing)}; run `{SETUP_COMMAND}` (with the same TEMPORAL_* settings) first"
        )


class SearchAttributesRefused(Exception):
    """The server would not list or add them (e.g. Temporal Cloud with a namespace API key)."""


def _refusal(action: str, namespace: str, exc: RPCError) -> SearchAttributesRefused:
    sa_args = " ".join(f"--sa '{key.name}={type_name(key)}'" for key in ALL)
    return SearchAttributesRefused(
        f"the Temporal server refused to {action} search attributes of namespace {namespace} "
        f"({exc.status.name}: {exc.message[:120]}); on Temporal Cloud add them with "
        f"`tcld namespace search-attributes add -n {namespace} {sa_args}`, or in the Cloud UI"
    )


async def registered(client: Client) -> dict[str, str]:
    """Our attributes present on the client's namespace, by name, with their type."""
    try:
        resp = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=client.namespace), timeout=timedelta(seconds=10)
        )
    except RPCError as exc:
        if exc.status in (RPCStatusCode.PERMISSION_DENIED, RPCStatusCode.UNIMPLEMENTED):
            raise _refusal("list", client.namespace, exc) from None
        raise
    ours = {key.name for key in ALL}
    return {
        name: IndexedValueType.Name(kind).removeprefix("INDEXED_VALUE_TYPE_").title()
        for name, kind in resp.custom_attributes.items()
        if name in ours
    }


def problems(present: dict[str, str]) -> tuple[list[str], list[str]]:
    """(missing names, 'Name is Text' lines for ones registered with another type)."""
    missing = [key.name for key in ALL if key.name not in present]
    wrong = [
        f"{key.name} is {present[key.name]}" for key in ALL if present.get(key.name, type_name(key)) != type_name(key)
    ]
    return missing, wrong


async def check(client: Client, address: str) -> None:
    """Raise :class:`SearchAttributesMissing` unless every attribute is there with its type."""
    missing, wrong = problems(await registered(client))
    if wrong:
        raise SearchAttributesRefused(
            f"search attributes of namespace {client.namespace} have the wrong type ({', '.join(wrong)}); "
            "remove them (temporal operator search-attribute remove) and run "
            f"`{SETUP_COMMAND}`"
        )
    if missing:
        raise SearchAttributesMissing(client.namespace, address, missing)


async def register(client: Client, address: str) -> list[str]:
    """Add the missing attributes (idempotent: present ones are left alone); the names added.

    Checks afterwards: the server adds them asynchronously on some versions, so wait until
    they are listed (at most 30 s).
    """
    missing, _ = problems(await registered(client))
    if missing:
        try:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(
                    namespace=client.namespace,
                    search_attributes={
                        k.name: IndexedValueType.ValueType(k.indexed_value_type.value) for k in ALL if k.name in missing
                    },
                ),
                timeout=timedelta(seconds=30),
            )
        except RPCError as exc:
            if exc.status == RPCStatusCode.ALREADY_EXISTS:
                pass  # another `setup` got there first
            elif exc.status in (RPCStatusCode.PERMISSION_DENIED, RPCStatusCode.UNIMPLEMENTED):
                raise _refusal("add", client.namespace, exc) from None
            else:
                raise
    deadline = time.monotonic() + 30
    while True:
        try:
            await check(client, address)
            return missing
        except SearchAttributesMissing:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)  # bounded by the deadline above
