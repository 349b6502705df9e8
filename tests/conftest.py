"""Test fixtures: one real Temporal dev server per session, one isolated stack per test.

The dev server is the pinned Temporal CLI (scripts/temporal-cli.sh), started through
``WorkflowEnvironment.start_local(dev_server_existing_path=...)`` with our search
attributes registered. Each test gets its own SQLite case store, task queue and workflow-ID
prefix, so tests never see each other's workflows.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from routedesk import search_attributes as sa
from routedesk.config import RoutingConfig, load_config
from tests.support import ROOT, Stack


def temporal_cli_path() -> str:
    if os.environ.get("TEMPORAL_CLI"):
        return os.environ["TEMPORAL_CLI"]
    out = subprocess.run([str(ROOT / "scripts" / "temporal-cli.sh")], check=True, capture_output=True, text=True)
    return out.stdout.strip()


@pytest_asyncio.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli_path(),
        search_attributes=sa.ALL,
        data_converter=pydantic_data_converter,
        dev_server_log_level="error",
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
def client(temporal_env: WorkflowEnvironment) -> Client:
    return temporal_env.client


@pytest.fixture
def example_config() -> RoutingConfig:
    return load_config(ROOT / "examples" / "routing.yaml")


MakeStack = Callable[..., Awaitable[Stack]]


@pytest_asyncio.fixture
async def make_stack(client: Client, tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[MakeStack]:
    """Build stacks (store + config + running worker); all are shut down after the test."""
    stacks: list[Stack] = []

    async def make(config: RoutingConfig | None = None, *, start_worker: bool = True, **worker_kw: Any) -> Stack:
        n = len(stacks)
        stack = Stack.create(client, tmp_path / f"stack{n}", request.node.name, config)
        stacks.append(stack)
        if start_worker:
            await stack.start_worker(**worker_kw)
        return stack

    yield make
    for stack in stacks:
        await stack.close()


@pytest_asyncio.fixture
async def stack(make_stack: MakeStack) -> Stack:
    """The example configuration with a running worker."""
    return await make_stack()


@pytest_asyncio.fixture
async def stack_without_worker(make_stack: MakeStack) -> Stack:
    """The example configuration, no worker yet."""
    return await make_stack(start_worker=False)
