"""Running the real ``routedesk`` CLI in a subprocess while the test's worker keeps running."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass

from tests.support import ROOT, Stack


@dataclass
class CliResult:
    code: int
    out: str
    err: str


async def routedesk(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60, input: str | None = None
) -> CliResult:
    """``input``: the text on the command's standard input (none: /dev/null)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "routedesk.cli.app",
        *args,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL if input is None else asyncio.subprocess.PIPE,
    )
    data = None if input is None else input.encode()
    out, err = await asyncio.wait_for(proc.communicate(data), timeout)
    assert proc.returncode is not None
    return CliResult(proc.returncode, out.decode(), err.decode())


def stack_env(stack: Stack) -> dict[str, str]:
    """Point the CLI at the test's stack: its store, task queue, ID prefix and dev server."""
    return {
        "DATABASE_URL": stack.store.db.url,
        "TEMPORAL_ADDRESS": stack.client.service_client.config.target_host,
        "ROUTEDESK_TASK_QUEUE": stack.task_queue,
        "ROUTEDESK_ID_PREFIX": stack.id_prefix,
    }
