"""The intake and mailbox commands: output, and one-line errors when things are down."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.cli import routedesk, stack_env
from tests.intake_support import settled
from tests.support import EXAMPLES, Stack, make_email

UNREACHABLE_TEMPORAL = "127.0.0.1:1"


async def test_intake_list_and_show_explain_each_decision(stack: Stack) -> None:
    env = stack_env(stack)
    ignored = await stack.submit(make_email(subject="Out of office", extra_headers=["Auto-Submitted: auto-replied"]))
    await settled(stack, ignored.email_id)
    listed = json.loads((await routedesk("intake", "list", "--status", "ignored", "--json", env=env)).out)
    assert [(e["email_id"], e["status"]) for e in listed] == [(ignored.email_id, "ignored")]
    assert "Auto-Submitted" in listed[0]["reason"]

    shown = await routedesk("intake", "show", str(ignored.email_id), env=env)
    assert shown.code == 0, shown.err
    for text in ("ignored", "Auto-Submitted: auto-replied", "someone@customer.example", "intake"):
        assert text in shown.out
    as_json = json.loads((await routedesk("intake", "show", str(ignored.email_id), "--json", env=env)).out)
    assert as_json["email"]["status"] == "ignored" and as_json["trace"][0]["outcome"] == "ignored"
    missing = await routedesk("intake", "show", "999", env=env)
    assert missing.code == 1 and "no email 999" in missing.err


async def test_release_needs_something_to_release(stack: Stack) -> None:
    res = await routedesk("intake", "release", env=stack_env(stack))
    assert res.code == 1 and "name email ids, --sender ADDRESS or --all" in res.err


@pytest.mark.parametrize(
    "args",
    [
        ["mailbox", "verify", "support@acme.example"],
        ["intake", "release", "--all"],
    ],
)
async def test_commands_say_in_one_line_when_temporal_is_unreachable(args: list[str], tmp_path: Path) -> None:
    env = {
        "TEMPORAL_ADDRESS": UNREACHABLE_TEMPORAL,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'ok.db'}",
    }
    config = tmp_path / "unverified.yaml"
    data = yaml.safe_load((EXAMPLES / "routing.yaml").read_text())
    data["mailboxes"][0]["verified"] = False
    config.write_text(yaml.safe_dump(data))
    loaded = await routedesk("config", "load", str(config), env=env)
    assert loaded.code == 0, loaded.err
    res = await routedesk(*args, env=env)
    assert res.code == 2
    assert res.err.strip().count("\n") == 0, res.err
    assert f"cannot reach the Temporal server at {UNREACHABLE_TEMPORAL}" in res.err
    assert "Traceback" not in res.err + res.out
    # Nothing was changed before Temporal answered.
    boxes = json.loads((await routedesk("mailbox", "list", "--json", env=env)).out)
    assert [b["verified"] for b in boxes] == [False, True, True]


@pytest.mark.parametrize(
    "args",
    [
        ["mailbox", "verify", "support@acme.example"],
        ["mailbox", "list"],
        ["intake", "held"],
        ["intake", "release", "--all"],
        ["intake", "list"],
        ["intake", "show", "1"],
    ],
)
async def test_commands_say_in_one_line_when_the_store_is_unreachable(args: list[str]) -> None:
    url = "sqlite:////nonexistent-dir/routedesk.db"
    res = await routedesk(*args, env={"DATABASE_URL": url, "TEMPORAL_ADDRESS": UNREACHABLE_TEMPORAL})
    assert res.code == 2
    assert res.err.strip().count("\n") == 0, res.err
    assert "cannot reach the case store at sqlite:////nonexistent-dir/routedesk.db" in res.err
    assert "Traceback" not in res.err + res.out
