"""Pure rule engine and config validation (no Temporal needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from routedesk.config import ConfigError, RouteRule, parse_config
from routedesk.rules import RuleContext, classify, evaluate, route
from tests.cli import routedesk
from tests.configs import agent, assignment_config
from tests.support import EXAMPLES


def cond(data: dict[str, Any]) -> Any:
    return RouteRule.model_validate({"name": "r", "queue": "q", "when": data}).when


CTX = RuleContext(
    subject="URGENT: Invoice 42 is wrong",
    body="Please see the attached stack trace",
    sender="jane@globex.example",
    mailbox="support@acme.example",
    to=["support@acme.example", "other@x.example"],
    headers={"importance": "high", "x-customer-tier": "Gold"},
    attributes={"tier": "key_account", "skills": ["german"]},
)


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ({"field": "subject", "op": "contains", "value": "invoice"}, True),  # case-insensitive
        ({"field": "subject", "op": "contains", "value": "invoice", "case_sensitive": True}, False),
        ({"field": "subject", "op": "starts_with", "value": "urgent"}, True),
        ({"field": "subject", "op": "ends_with", "value": "WRONG"}, True),
        ({"field": "subject", "op": "matches", "value": r"invoice \d+"}, True),
        ({"field": "sender", "op": "equals", "value": "JANE@globex.example"}, True),
        ({"field": "sender_domain", "op": "in", "value": ["initech.example", "globex.example"]}, True),
        ({"field": "sender_domain", "op": "not_equals", "value": "globex.example"}, False),
        ({"field": "mailbox", "op": "equals", "value": "support@acme.example"}, True),
        ({"field": "to", "op": "equals", "value": "other@x.example"}, True),  # any element
        ({"field": "header.Importance", "op": "equals", "value": "HIGH"}, True),
        ({"field": "header.X-Missing", "op": "exists"}, False),
        ({"field": "attr.tier", "op": "equals", "value": "key_account"}, True),
        ({"field": "attr.skills", "op": "contains", "value": "germ"}, True),
        ({"field": "body", "op": "contains", "value": "stack trace"}, True),
        (
            {
                "all": [
                    {"field": "subject", "op": "contains", "value": "urgent"},
                    {"not": {"field": "body", "op": "exists"}},
                ]
            },
            False,
        ),
        ({"any": [{"field": "subject", "op": "contains", "value": "nope"}, {"field": "cc", "op": "exists"}]}, False),
        ({"not": {"field": "subject", "op": "contains", "value": "nope"}}, True),
    ],
)
def test_operators_and_combinations(condition: dict[str, Any], expected: bool) -> None:
    assert evaluate(cond(condition), CTX) is expected


def test_classification_applies_every_match_in_order_and_later_rules_see_earlier_ones() -> None:
    cfg = assignment_config(agents=[agent("a")], members=["a"])
    ws = cfg.workstreams[0]
    ctx = RuleContext(subject="[high] [skill:german] help")
    attrs, hits = classify(ws.classification_rules, ctx)
    assert attrs == {"priority": "High", "skills": ["german"]}
    assert [(h.rule, h.matched) for h in hits] == [("high", True), ("low", False), ("german", True)]


def test_route_first_match_wins_else_fallback() -> None:
    rules = [
        RouteRule(name="a", queue="qa", when=cond({"field": "subject", "op": "contains", "value": "x"})),
        RouteRule(name="b", queue="qb", when=cond({"field": "subject", "op": "contains", "value": "x"})),
    ]
    assert route(rules, "fb", RuleContext(subject="x"))[0] == "qa"
    queue, hits = route(rules, "fb", RuleContext(subject="y"))
    assert queue == "fb" and hits[-1].rule == "fallback"


BASE: dict[str, Any] = {
    "mailboxes": [{"address": "support@acme.example", "name": "S", "workstream": "w"}],
    "workstreams": [{"id": "w", "name": "W", "fallback_queue": "q"}],
    "queues": [{"id": "q", "name": "Q", "members": ["a"]}],
    "agents": [{"id": "a", "name": "A"}],
}


@pytest.mark.parametrize(
    ("patch", "key", "message"),
    [
        (
            {"queues": [{"id": "q", "name": "Q", "assignment_method": "fastest"}]},
            "queues[0].assignment_method",
            "Input should be",
        ),
        ({"queues": [{"id": "q", "name": "Q", "members": ["zed"]}]}, "queues[0].members[0]", "unknown agent 'zed'"),
        (
            {"workstreams": [{"id": "w", "name": "W", "fallback_queue": "nope"}]},
            "workstreams[0].fallback_queue",
            "unknown queue 'nope'",
        ),
        (
            {"mailboxes": [{"address": "not-an-address", "name": "S", "workstream": "w"}]},
            "mailboxes[0].address",
            "is not an email address",
        ),
        (
            {"mailboxes": [{"address": "s@a.example", "name": "S", "workstream": "w", "colour": "red"}]},
            "mailboxes[0].colour",
            "unknown key",
        ),
        (
            {
                "workstreams": [
                    {
                        "id": "w",
                        "name": "W",
                        "fallback_queue": "q",
                        "route_to_queue_rules": [
                            {
                                "name": "r",
                                "queue": "q",
                                "when": {"any": [{"field": "subject", "op": "resembles", "value": "x"}]},
                            }
                        ],
                    }
                ]
            },
            "workstreams[0].route_to_queue_rules[0].when.any[0].op",
            "Input should be",
        ),
        (
            {
                "workstreams": [
                    {
                        "id": "w",
                        "name": "W",
                        "fallback_queue": "q",
                        "classification_rules": [
                            {
                                "name": "c",
                                "when": {"field": "subject", "op": "matches", "value": "(unclosed"},
                                "set": {"x": 1},
                            }
                        ],
                    }
                ]
            },
            "workstreams[0].classification_rules[0].when",
            "invalid regular expression",
        ),
        (
            {
                "workstreams": [
                    {
                        "id": "w",
                        "name": "W",
                        "fallback_queue": "q",
                        "classification_rules": [{"name": "c", "set": {"priority": "Critical"}}],
                    }
                ]
            },
            "workstreams[0].classification_rules[0].set",
            "priority must be one of",
        ),
        (
            {"contacts": [{"id": "c", "name": "C", "emails": ["c@x.example"], "preferred_agents": ["a", "a"]}]},
            "contacts[0].preferred_agents",
            "listed twice",
        ),
    ],
)
def test_config_errors_name_the_key(patch: dict[str, Any], key: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({**BASE, **patch})
    assert any(k == key and message in m for k, m in info.value.problems), info.value.problems


ISSUE_18_SHAPE = """
calendars:
  - id: office
    timezone: Europe/Berlin
    hours: {mon: ["09:00-17:00"], tue: ["09:00-12:00", "13:00-17:00"], wed: ["09:00-17:00"]}
    holidays: ["2026-12-25", {date: "2026-12-24", hours: ["09:00-12:00"]}]
queues:
  - id: sales
    operating_hours: office
    overflow:
      - when: {out_of_operating_hours: true}
        action: {transfer_to_queue: general}
      - when: {waiting_longer_than: 10m}
        action: {transfer_to_queue: general}
sla_policies:
  - id: key-accounts
    when: {field: attr.tier, op: equals, value: key_account}
    calendar: office
    first_response: 1h
    resolution: 8h
    warning_at: 0.8
    on_warning: [{notify: supervisors}]
    on_violation: [{raise_priority: Urgent}, {transfer_to_queue: vip}]
workstreams:
  - id: support-email
    reassign_if_idle: 4h
    skill_match: exact
"""


def test_the_time_aware_configuration_shape_integrations_rely_on_is_accepted_as_written() -> None:
    """The configuration shape of the time-aware routing issue, keys exactly as documented."""
    data = yaml.safe_load((EXAMPLES / "routing.yaml").read_text())
    shape = yaml.safe_load(ISSUE_18_SHAPE)
    data["calendars"], data["sla_policies"] = shape["calendars"], shape["sla_policies"]
    [sales] = [q for q in data["queues"] if q["id"] == "sales"]
    sales.pop("offer_when_closed", None)
    sales.update(shape["queues"][0])
    [ws] = [w for w in data["workstreams"] if w["id"] == "support-email"]
    ws.update(shape["workstreams"][0])
    cfg = parse_config(data)
    [policy] = cfg.sla_policies
    assert (policy.calendar, policy.first_response, policy.resolution, policy.warning_at) == ("office", "1h", "8h", 0.8)
    assert [a.describe() for a in policy.on_violation] == ["raise_priority: Urgent", "transfer_to_queue: vip"]
    [queue] = [q for q in cfg.queues if q.id == "sales"]
    assert queue.operating_hours == "office"
    assert [(r.when.out_of_operating_hours, r.when.waiting_longer_than) for r in queue.overflow] == [
        (True, None),
        (None, "10m"),
    ]
    assert (cfg.workstream("support-email").reassign_if_idle, cfg.workstream("support-email").skill_match) == (
        "4h",
        "exact",
    )


@pytest.mark.parametrize("value", [1, 2, 3, 4, 5])
def test_max_declines_per_item_takes_1_to_5(value: int) -> None:
    ws = {**BASE["workstreams"][0], "max_declines_per_item": value}
    assert parse_config({**BASE, "workstreams": [ws]}).workstreams[0].max_declines_per_item == value


@pytest.mark.parametrize(("value", "bound"), [(0, "greater than or equal to 1"), (6, "less than or equal to 5")])
async def test_max_declines_per_item_outside_1_to_5_is_one_line_naming_the_key(
    value: int, bound: str, tmp_path: Path
) -> None:
    ws = {**BASE["workstreams"][0], "max_declines_per_item": value}
    with pytest.raises(ConfigError) as info:
        parse_config({**BASE, "workstreams": [ws]})
    assert [k for k, _ in info.value.problems] == ["workstreams[0].max_declines_per_item"]
    [line] = str(info.value).splitlines()
    assert line.startswith("workstreams[0].max_declines_per_item: ") and bound in line, line

    # What an operator sees: `routedesk config check` names the key in one line, exit 1.
    data = yaml.safe_load((EXAMPLES / "routing.yaml").read_text())
    data["workstreams"][0]["max_declines_per_item"] = value
    bad = tmp_path / "routing.yaml"
    bad.write_text(yaml.safe_dump(data))
    res = await routedesk("config", "check", str(bad))
    assert res.code == 1 and "Traceback" not in res.err
    [cli_line] = res.err.strip().splitlines()
    assert "workstreams[0].max_declines_per_item" in cli_line and bound in cli_line, cli_line
