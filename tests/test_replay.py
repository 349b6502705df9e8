"""Replay: histories made by real runs must replay against the current workflow code.

Fresh histories prove the code replays itself; the histories committed under
``tests/histories/`` were recorded by earlier code, so a change that breaks determinism for
workflows already in flight fails here. Re-record them (after making such a change safe with
``workflow.patched``) with ``ROUTEDESK_RECORD_HISTORIES=1 make test PYTEST_ARGS=tests/test_replay.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from temporalio.client import WorkflowFailureError, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from tests.support import Stack, example_email, make_email
from workflows import WORKFLOWS

HISTORIES = Path(__file__).parent / "histories"


def replayer() -> Replayer:
    return Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter)


async def test_fresh_histories_replay(stack: Stack) -> None:
    scenarios = {
        "queued_vip": example_email("03-key-account-outage.eml"),
        "queued_fallback": example_email("06-general-question.eml"),
        "rejected_no_mailbox": example_email("07-no-routing-address.eml"),
        "rejected_no_from": make_email(sender="").replace(b"From: \r\n", b""),
    }
    histories: dict[str, WorkflowHistory] = {}
    for name, raw in scenarios.items():
        sub = await stack.submit(raw)
        if name.startswith("rejected"):
            with pytest.raises(WorkflowFailureError):  # rejections fail the workflow on purpose
                await stack.handle(sub.workflow_id).result()
        else:
            await stack.wait_stage(sub.workflow_id, "offered", "waiting_for_agent", "unassigned")
        histories[name] = await stack.handle(sub.workflow_id).fetch_history()
    for history in histories.values():
        await replayer().replay_workflow(history)  # raises on any non-determinism
    if os.environ.get("ROUTEDESK_RECORD_HISTORIES") == "1":
        HISTORIES.mkdir(exist_ok=True)
        for name, history in histories.items():
            (HISTORIES / f"{name}.json").write_text(history.to_json())


@pytest.mark.parametrize("path", sorted(HISTORIES.glob("*.json")), ids=lambda p: p.stem)
async def test_committed_history_replays(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    await replayer().replay_workflow(history)
