"""Test fixtures: one real Temporal dev server per session, one isolated stack per test.

The dev server is the pinned Temporal CLI (scripts/temporal-cli.sh), started through
``WorkflowEnvironment.start_local(dev_server_existing_path=...)`` with our search
attributes registered. Each test gets its own case store, task queue and workflow-ID
prefix, so tests never see each other's workflows.

Every test that builds a stack (``stack``, ``make_stack``) or asks for ``new_store_url`` runs
twice: on SQLite (``[sqlite]``) and on PostgreSQL (``[postgres]``), in a database of its own
on a throwaway cluster (tests/postgres.py) or on the server a PostgreSQL ``DATABASE_URL``
names. ``-k "not postgres"`` runs without starting PostgreSQL.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from routedesk import search_attributes as sa
from routedesk.config import RoutingConfig, load_config
from tests import postgres
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


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The URL of a PostgreSQL server on which tests may create databases."""
    external = postgres.external_admin_url()
    if external is not None:
        yield external
        return
    try:
        cluster = postgres.Cluster.start()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield cluster.admin_url
    finally:
        cluster.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest) -> str:
    """The kind of case store the test runs on."""
    return str(request.param)


NewStoreUrl = Callable[[str], str]


@pytest.fixture
def new_store_url(db: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[NewStoreUrl]:
    """Make the URL of a new, empty case store of the test's kind (``name`` names the SQLite
    file); a PostgreSQL database made here is dropped after the test."""
    admin = str(request.getfixturevalue("postgres_server")) if db == "postgres" else None
    made: list[str] = []

    def make(name: str) -> str:
        if admin is None:
            return f"sqlite:///{tmp_path / name}.db"
        made.append(postgres.create_database(admin))
        return made[-1]

    yield make
    for url in made:
        assert admin is not None
        postgres.drop_database(admin, url)


MakeStack = Callable[..., Awaitable[Stack]]


@pytest_asyncio.fixture
async def make_stack(
    client: Client, tmp_path: Path, new_store_url: NewStoreUrl, request: pytest.FixtureRequest
) -> AsyncIterator[MakeStack]:
    """Build stacks (store + config + running worker); all are shut down after the test."""
    stacks: list[Stack] = []

    async def make(config: RoutingConfig | None = None, *, start_worker: bool = True, **worker_kw: Any) -> Stack:
        n = len(stacks)
        directory = tmp_path / f"stack{n}"
        directory.mkdir(parents=True, exist_ok=True)
        url = new_store_url(f"stack{n}/routedesk")
        stack = Stack.create(client, directory, request.node.name, config, url=url)
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
