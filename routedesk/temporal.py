"""Connecting to Temporal with the pydantic data converter, failing in one readable line."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from routedesk import settings


class TemporalUnavailable(Exception):
    def __init__(self, address: str, detail: str) -> None:
        self.address = address
        super().__init__(f"cannot reach the Temporal server at {address}: {detail}")


async def connect(address: str | None = None, namespace: str | None = None) -> Client:
    target = address or settings.temporal_address()
    try:
        return await Client.connect(
            target,
            namespace=namespace or settings.temporal_namespace(),
            data_converter=pydantic_data_converter,
        )
    except RuntimeError as exc:
        detail = str(exc).splitlines()[0].removeprefix("Failed client connect: ")
        raise TemporalUnavailable(target, detail[:200]) from None
