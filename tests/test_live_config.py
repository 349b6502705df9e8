"""Configuration that takes effect without a restart: numbered versions, live reload in a
running worker, diff and history, runtime edits kept across loads, what-if on stored mail."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlmodel import col, update

from routedesk import config_diff
from routedesk.config import load_config, parse_config
from routedesk.models import ContactRow, EmailRow, QueueRow, RuntimeEditRow, utcnow
from routedesk.store import Store
from starter.run import load_step
from tests.cli import routedesk, stack_env
from tests.conftest import MakeStack, NewStoreUrl
from tests.intake_support import case_for
from tests.support import EXAMPLES, Stack, make_email


def example_data() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((EXAMPLES / "routing.yaml").read_text())
    return data


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def route_trace(stack: Stack, case_id: int) -> list[tuple[str, str]]:
    """(rule, reason) of the matched queue_routing entries of the case."""
    return [
        (t.subject, t.reason)
        for t in stack.trace(case_id=case_id)
        if t.stage == "queue_routing" and t.outcome == "matched"
    ]


async def test_a_new_mailbox_loaded_while_the_worker_runs_gets_a_case_within_5s(stack: Stack, tmp_path: Path) -> None:
    env = stack_env(stack)
    # The running worker has used (and cached) the definitions of version 1.
    first = await stack.submit(make_email(subject="Before the load"))
    case1 = await case_for(stack, first.email_id)
    assert route_trace(stack, case1.id or 0) == [("fallback", "no route-to-queue rule matched -> general (config v1)")]

    data = example_data()
    data["mailboxes"].append({"address": "partners@acme.example", "name": "Partners", "workstream": "support-email"})
    path = write_config(tmp_path / "with-partners.yaml", data)

    diff = await routedesk("config", "diff", str(path), env=env)
    assert diff.code == 0, diff.err
    assert "mailboxes + partners@acme.example" in diff.out

    loaded = await routedesk("config", "load", str(path), "--by", "ops-test", env=env)
    assert loaded.code == 0, loaded.err
    loaded_at = time.monotonic()
    assert "loaded as config version 2 (+1 mailboxes)" in loaded.out

    sub = await stack.submit(make_email(to="partners@acme.example", subject="Partnership question"))
    case = await case_for(stack, sub.email_id, timeout=max(0.1, 5 - (time.monotonic() - loaded_at)))
    assert time.monotonic() - loaded_at < 5
    assert case.mailbox_address == "partners@acme.example"
    # The trace names the version that routed it.
    assert route_trace(stack, case.id or 0) == [("fallback", "no route-to-queue rule matched -> general (config v2)")]

    again = await routedesk("config", "load", str(path), env=env)
    assert again.code == 0, again.err
    assert "unchanged (config version 2 has the same content); nothing loaded" in again.out

    history = await routedesk("config", "history", "--json", env=env)
    assert history.code == 0, history.err
    versions = json.loads(history.out)
    assert [(v["number"], v["summary"]) for v in versions] == [(1, "first version"), (2, "+1 mailboxes")]
    assert versions[1]["loaded_by"] == "ops-test" and versions[1]["source"] == str(path.resolve())


async def test_a_changed_rule_routes_the_next_email_by_the_new_rule(stack: Stack, tmp_path: Path) -> None:
    env = stack_env(stack)
    before = await stack.submit(make_email(subject="Invoice 1001 is wrong"))
    case_before = await case_for(stack, before.email_id)
    assert case_before.queue_id == "billing"

    data = example_data()
    [rule] = [r for r in data["workstreams"][0]["route_to_queue_rules"] if r["name"] == "invoices-land-in-billing"]
    rule["queue"] = "sales"
    path = write_config(tmp_path / "invoices-to-sales.yaml", data)
    diff = await routedesk("config", "diff", str(path), env=env)
    assert diff.code == 0, diff.err
    assert "workstreams ~ support-email: route_to_queue_rules[~ invoices-land-in-billing]" in diff.out

    loaded = await routedesk("config", "load", str(path), env=env)
    assert loaded.code == 0, loaded.err
    assert "config version 2" in loaded.out

    after = await stack.submit(make_email(subject="Invoice 1002 is wrong"))
    case_after = await case_for(stack, after.email_id, timeout=5)
    assert case_after.queue_id == "sales"
    assert route_trace(stack, case_after.id or 0) == [
        (
            "invoices-land-in-billing",
            "subject matches '\\\\b(invoice|refund|charge[ds]?|payment)\\\\b' -> queue sales (config v2)",
        )
    ]
    assert route_trace(stack, case_before.id or 0)[0][1].endswith("-> queue billing (config v1)")


@pytest.fixture
def store(new_store_url: NewStoreUrl) -> Iterator[Store]:
    st = Store(new_store_url("runtime")).init()
    yield st
    st.db.dispose()


def preferred(store: Store, contact: str) -> list[str]:
    with store.db.read() as s:
        row = s.get(ContactRow, contact)
        assert row is not None
        return list(row.preferred_agents)


async def test_make_run_keeps_a_cli_preferred_agent_change_and_lists_the_file_overriding_it(
    store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {"DATABASE_URL": store.db.url}
    path = write_config(tmp_path / "routing.yaml", example_data())
    load_step(store, load_config(path), path)  # the first `make run`
    assert preferred(store, "globex-jane") == ["dave", "alice"]

    res = await routedesk("contact", "preferred", "set", "globex-jane", "erin", env=env)
    assert res.code == 0, res.err

    capsys.readouterr()
    result = load_step(store, load_config(path), path)  # `make run` again, same file
    assert not result.changed and "unchanged" in capsys.readouterr().out
    assert preferred(store, "globex-jane") == ["erin"]

    # A file changed elsewhere: the edit survives, and the load says so.
    data = example_data()
    data["queues"][0]["name"] = "General"
    write_config(path, data)
    result = load_step(store, load_config(path), path)
    out = capsys.readouterr().out
    assert result.changed and result.version == 2
    assert preferred(store, "globex-jane") == ["erin"]
    assert "kept runtime edit: contact globex-jane: preferred agents [erin] set at runtime by" in out

    # A file that changes those very preferred agents: the file wins, and the conflict is listed.
    data["contacts"][0]["preferred_agents"] = ["alice"]
    write_config(path, data)
    result = load_step(store, load_config(path), path)
    out = capsys.readouterr().out
    assert preferred(store, "globex-jane") == ["alice"]
    assert [c.split(" set at runtime by ")[0] for c in result.conflicts] == [
        "contact globex-jane: preferred agents [erin]"
    ]
    assert "overridden by the file: contact globex-jane: preferred agents [erin]" in out
    assert "the file now says [alice]: the file wins" in out
    with store.db.read() as s:
        assert s.get(RuntimeEditRow, (config_diff.PREFERRED, "globex-jane")) is None

    # An administrator loads another file meanwhile: restarting with the unchanged file keeps it.
    other = example_data()
    other["queues"][0]["name"] = "Loaded by the admin"
    other_path = write_config(tmp_path / "admin.yaml", other)
    res = await routedesk("config", "load", str(other_path), env=env)
    assert res.code == 0, res.err
    capsys.readouterr()
    result = load_step(store, load_config(path), path)
    out = capsys.readouterr().out
    assert not result.changed and result.version == 4
    assert "unchanged since it was loaded as config version 3; config version 4 (loaded by" in out
    assert store.definitions(max_age=0).version == 4
    with store.db.read() as s:
        assert s.get(QueueRow, "general").name == "Loaded by the admin"  # type: ignore[union-attr]
    # Once the file changes, it is loaded again.
    data["queues"][0]["name"] = "General again"
    write_config(path, data)
    result = load_step(store, load_config(path), path)
    assert result.changed and result.version == 5


async def test_config_whatif_counts_the_stored_mail_a_rule_change_moves(make_stack: MakeStack, tmp_path: Path) -> None:
    stack = await make_stack()
    subjects = ["Invoice 1", "Invoice 2", "Invoice 3", "Question A", "Question B", "Question C"]
    subs = [await stack.submit(make_email(subject=s)) for s in subjects]
    cases = [await case_for(stack, sub.email_id) for sub in subs]
    assert [c.queue_id for c in cases] == ["billing"] * 3 + ["general"] * 3
    # One invoice arrived ten days ago: outside --since 7d.
    with stack.store.db.write() as s:
        s.exec(  # type: ignore[call-overload]
            update(EmailRow)
            .where(col(EmailRow.id) == subs[2].email_id)
            .values(received_at=utcnow() - timedelta(days=10))
        )

    data = example_data()
    ws = data["workstreams"][0]
    [rule] = [r for r in ws["route_to_queue_rules"] if r["name"] == "invoices-land-in-billing"]
    rule["queue"] = "sales"
    ws["classification_rules"].append(
        {
            "name": "question-a-is-low",
            "when": {"field": "subject", "op": "equals", "value": "question a"},
            "set": {"priority": "Low"},
        }
    )
    changed = write_config(tmp_path / "whatif.yaml", data)
    same = write_config(tmp_path / "same.yaml", example_data())
    env = stack_env(stack)

    res = await routedesk("config", "whatif", str(changed), "--since", "7d", "--json", env=env)
    assert res.code == 0, res.err
    report = json.loads(res.out)
    assert (report["emails"], report["changed"], report["queue_changed"], report["priority_changed"]) == (5, 3, 2, 1)
    examples = {e["case_number"]: e for e in report["examples"]}
    assert set(examples) == {cases[0].number, cases[1].number, cases[3].number}
    assert (examples[cases[0].number]["old_queue"], examples[cases[0].number]["new_queue"]) == ("billing", "sales")
    assert examples[cases[0].number]["rule"] == "invoices-land-in-billing"
    low = examples[cases[3].number]
    assert (low["old_priority"], low["new_priority"], low["priority_rule"]) == ("Medium", "Low", "question-a-is-low")

    wide = await routedesk("config", "whatif", str(changed), "--since", "2w", env=env)
    assert wide.code == 0, wide.err
    assert "6 case(s) opened since" in wide.out and "4 would differ (3 in queue, 1 in priority)" in wide.out

    unchanged = await routedesk("config", "whatif", str(same), "--json", env=env)
    assert json.loads(unchanged.out)["changed"] == 0

    bad = await routedesk("config", "whatif", str(same), "--since", "soon", env=env)
    assert bad.code == 1 and "--since takes a period like 30m, 12h, 7d or 2w" in bad.err


def test_diff_names_changed_keys_and_rules() -> None:
    old = config_diff.config_json(load_config(EXAMPLES / "routing.yaml"))
    data = example_data()
    data["agents"] = [a for a in data["agents"] if a["id"] != "frank"]
    for q in data["queues"]:
        q["members"] = [m for m in q["members"] if m != "frank"]
    data["agents"][0]["capacity"] = 5
    data["workstreams"][1]["classification_rules"].pop()
    data["intake"]["rate_limit"]["max_messages"] = 50
    new = config_diff.config_json(parse_config(data))
    assert [c.line() for c in config_diff.diff(old, new)] == [
        "workstreams ~ billing-email: classification_rules[- german]",
        "queues ~ billing: members",
        "queues ~ sales: members",
        "agents ~ alice: capacity",
        "agents - frank",
        "intake ~: rate_limit.max_messages",
    ]
    assert config_diff.content_hash(old) != config_diff.content_hash(new)
    # Comments, key order and defaults written out do not change the hash.
    assert config_diff.content_hash(old) == config_diff.content_hash(
        config_diff.config_json(parse_config(example_data()))
    )


async def test_config_commands_check_the_role_of_routedesk_token(store: Store, tmp_path: Path) -> None:
    """With ROUTEDESK_TOKEN the CLI acts as the token's user: only an admin loads a config,
    and the version names them; an agent may not even look at the history."""
    from routedesk import auth

    store.load_config(load_config(EXAMPLES / "routing.yaml"), source="examples/routing.yaml")
    auth.add_user(store, "ag", "agent", "alice")
    auth.add_user(store, "boss", "admin", None)
    data = example_data()
    data["queues"][0]["name"] = "Renamed"
    path = write_config(tmp_path / "routing.yaml", data)
    agent_env = {"DATABASE_URL": store.db.url, "ROUTEDESK_TOKEN": auth.create_token(store, "ag")}
    for args in (["load", str(path)], ["history"], ["diff", str(path)], ["whatif", str(path)]):
        res = await routedesk("config", *args, env=agent_env)
        assert res.code == 1, (args, res.out, res.err)
        assert "ag (agent) may not" in res.err and "role or above" in res.err
    assert store.definitions(max_age=0).version == 1

    admin_env = {"DATABASE_URL": store.db.url, "ROUTEDESK_TOKEN": auth.create_token(store, "boss")}
    res = await routedesk("config", "load", str(path), env=admin_env)
    assert res.code == 0, res.err
    history = json.loads((await routedesk("config", "history", "--json", env=admin_env)).out)
    assert [(v["number"], v["loaded_by"]) for v in history][-1] == (2, "boss (admin)")
