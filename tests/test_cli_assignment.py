"""The agent, contact and case CLI on the example config (the README walkthrough)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli import routedesk, stack_env
from tests.support import EXAMPLES, Stack


async def test_walkthrough_preferred_agent_declines_next_accepts(stack: Stack) -> None:
    env = stack_env(stack)
    sent = await routedesk("send", str(EXAMPLES / "emails" / "03-key-account-outage.eml"), "--json", env=env)
    assert sent.code == 0, sent.err
    wf = json.loads(sent.out)["workflow_id"]
    # Jane Doe (Globex) prefers dave, then alice; the case is routed to the vip queue.
    await stack.wait_offer(wf, "dave")
    offers = await routedesk("agent", "offers", "dave", env=env)
    assert "CASE-000001" in offers.out and "preferred" in offers.out

    declined = await routedesk(
        "agent", "decline", "CASE-000001", "--agent", "dave", "--reason", "in a workshop", env=env
    )
    assert (declined.code, declined.out.strip()) == (0, "declined")
    await stack.wait_offer(wf, "alice")
    accepted = await routedesk("agent", "accept", "CASE-000001", "--agent", "alice", env=env)
    assert (accepted.code, accepted.out.strip()) == (0, "assigned")

    shown = await routedesk("case", "show", "CASE-000001", env=env)
    assert "assigned to  alice" in shown.out
    lines = [line for line in shown.out.splitlines() if " assignment " in line]
    assert [line.split()[2:4] for line in lines] == [
        ["dave", "offered"],
        ["dave", "declined"],
        ["alice", "offered"],
        ["alice", "assigned"],
    ]
    assert "declined: in a workshop" in shown.out

    again = await routedesk("agent", "accept", "CASE-000001", "--agent", "dave", env=env)
    assert again.code == 1 and "dave holds no live offer on CASE-000001" in again.err

    resolved = await routedesk("case", "resolve", "CASE-000001", env=env)
    assert resolved.code == 0 and "CASE-000001 resolved" in resolved.out
    assert stack.agent("alice").active_count == 0


async def test_presence_pick_and_supervisor_assign(stack: Stack) -> None:
    env = stack_env(stack)
    for a in ("alice", "bob", "carol"):
        res = await routedesk("agent", "presence", a, "offline", env=env)
        assert res.code == 0 and f"{a} is now Offline" in res.out
    sent = json.loads(
        (await routedesk("send", str(EXAMPLES / "emails" / "06-general-question.eml"), "--json", env=env)).out
    )
    await stack.wait_stage(sent["workflow_id"], "waiting_for_agent")

    refused = await routedesk("agent", "pick", "CASE-000001", "--agent", "dave", env=env)
    assert refused.code == 1 and "dave is not a member of queue general" in refused.err
    picked = await routedesk("agent", "pick", "CASE-000001", "--agent", "bob", env=env)
    assert picked.code == 0 and "CASE-000001 assigned to bob" in picked.out
    twice = await routedesk("case", "assign", "CASE-000001", "--agent", "carol", env=env)
    assert twice.code == 1 and "already assigned to bob" in twice.err

    sent2 = json.loads(
        (await routedesk("send", str(EXAMPLES / "emails" / "01-password-reset.eml"), "--json", env=env)).out
    )
    await stack.queued(sent2["workflow_id"])
    boss = await routedesk("case", "assign", "CASE-000002", "--agent", "erin", env=env)
    assert boss.code == 0 and "CASE-000002 assigned to erin" in boss.out
    assert stack.case(2).assigned_agent_id == "erin"

    bad = await routedesk("agent", "presence", "bob", "Sleeping", env=env)
    assert bad.code == 1 and "presence must be one of Available, Busy, Away, Offline" in bad.err


async def test_contact_preferred_set_and_clear(stack: Stack) -> None:
    env = stack_env(stack)
    four = await routedesk("contact", "preferred", "set", "umbrella-li", "alice", "bob", "carol", "dave", env=env)
    assert four.code == 1 and "at most 3 preferred agents, not 4" in four.err
    unknown = await routedesk("contact", "preferred", "set", "umbrella-li", "zed", env=env)
    assert unknown.code == 1 and "no agent 'zed'" in unknown.err
    ok = await routedesk("contact", "preferred", "set", "umbrella-li", "erin", "alice", env=env)
    assert ok.code == 0
    with stack.store.db.read() as s:
        from routedesk.models import ContactRow

        assert s.get(ContactRow, "umbrella-li").preferred_agents == ["erin", "alice"]  # type: ignore[union-attr]
    cleared = await routedesk("contact", "preferred", "clear", "umbrella-li", env=env)
    assert cleared.code == 0 and "no preferred agents" in cleared.out


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "[alice, dave, erin, bob]",
            "contacts[1].preferred_agents: at most 3 preferred agents, not 4",
        ),
        ("[]", "contacts[1].preferred_agents: list 1 to 3 preferred agents, or leave the key out"),
    ],
)
async def test_config_rejects_a_fourth_or_an_empty_preferred_list(tmp_path: Path, value: str, message: str) -> None:
    bad = tmp_path / "bad.yaml"
    text = (EXAMPLES / "routing.yaml").read_text()
    bad.write_text(text.replace("preferred_agents: [alice, dave, erin]", f"preferred_agents: {value}"))
    res = await routedesk("config", "check", str(bad))
    assert res.code == 1 and message in res.err, res.err


@pytest.mark.parametrize(
    "args",
    [
        ["agent", "accept", "CASE-000001", "--agent", "alice"],
        ["agent", "decline", "CASE-000001", "--agent", "alice"],
        ["agent", "pick", "CASE-000001", "--agent", "alice"],
        ["agent", "presence", "alice", "Available"],
        ["case", "assign", "CASE-000001", "--agent", "alice"],
        ["case", "resolve", "CASE-000001"],
    ],
)
async def test_workflow_commands_say_in_one_line_when_temporal_is_unreachable(args: list[str], stack: Stack) -> None:
    env = {**stack_env(stack), "TEMPORAL_ADDRESS": "127.0.0.1:1"}
    sent = await stack.submit((EXAMPLES / "emails" / "06-general-question.eml").read_bytes())
    await stack.queued(sent.workflow_id)
    res = await routedesk(*args, env=env)
    assert res.code == 2 and res.err.strip().count("\n") == 0, res.err
    assert "cannot reach the Temporal server at 127.0.0.1:1" in res.err and "Traceback" not in res.err


@pytest.mark.parametrize(
    "args",
    [
        ["agent", "accept", "CASE-000001", "--agent", "alice"],
        ["agent", "presence", "alice", "Available"],
        ["agent", "offers", "alice"],
        ["contact", "preferred", "set", "globex-jane", "alice"],
        ["contact", "preferred", "clear", "globex-jane"],
        ["case", "resolve", "CASE-000001"],
    ],
)
async def test_store_commands_say_in_one_line_when_the_store_is_unreachable(
    args: list[str],
) -> None:
    res = await routedesk(
        *args,
        env={"DATABASE_URL": "sqlite:////nonexistent-dir/x.db", "TEMPORAL_ADDRESS": "127.0.0.1:1"},
    )
    assert res.code == 2 and res.err.strip().count("\n") == 0, res.err
    assert "cannot reach the case store at sqlite:////nonexistent-dir/x.db" in res.err
