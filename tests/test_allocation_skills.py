"""Percentage allocation across queues and skills with proficiency (issue 18).

Dynamics 365 unified routing: a route-to-queue rule may split work across up to five queues
by percentage; skill-based routing matches agents "exactly" (level at least the required one)
or by "closest match" (nearest levels first).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from routedesk.config import ConfigError, RouteRule, RoutingConfig, parse_config
from routedesk.rules import RuleContext, pick_share, route
from tests.configs import agent, assignment_config
from tests.support import Stack, make_email


def split_rule(**shares: int) -> RouteRule:
    return RouteRule.model_validate(
        {"name": "split", "route_to": [{"queue": q, "share": n} for q, n in shares.items()]}
    )


@pytest.mark.parametrize(
    "shares",
    [{"a": 70, "b": 30}, {"a": 50, "b": 25, "c": 15, "d": 5, "e": 5}, {"a": 34, "b": 33, "c": 33}],
)
def test_a_thousand_decisions_follow_the_shares(shares: dict[str, int]) -> None:
    rule = split_rule(**shares)
    picks = Counter(route([rule], "fb", RuleContext(), seed=f"email:{i}")[0] for i in range(1000))
    for queue, share in shares.items():
        assert abs(picks[queue] / 10 - share) <= 3, (queue, picks[queue], share)
    # the same email always lands on the same queue
    assert all(
        route([rule], "fb", RuleContext(), seed=f"email:{i}")[0] == pick_share(rule.route_to, f"email:{i}:split")
        for i in range(100)
    )


@pytest.mark.parametrize(
    ("route_to", "message"),
    [
        ([{"queue": "a", "share": 70}, {"queue": "b", "share": 20}], "add up to 100, not 90"),
        ([{"queue": x, "share": 10} for x in "abcdef"] + [{"queue": "g", "share": 40}], "at most 5 queues"),
        ([{"queue": "a", "share": 50}, {"queue": "a", "share": 50}], "a queue twice"),
        ([{"queue": "a", "share": 0}, {"queue": "b", "share": 100}], "greater than or equal to 1"),
    ],
)
def test_share_validation(route_to: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RouteRule.model_validate({"name": "r", "route_to": route_to})
    with pytest.raises(ValueError, match="either queue or route_to"):
        RouteRule.model_validate({"name": "r", "queue": "a", "route_to": [{"queue": "a", "share": 100}]})


def split_config() -> RoutingConfig:
    data = assignment_config(
        agents=[agent("a1", presence="Offline")],
        members=["a1"],
        extra_queues=[{"id": "q2", "name": "Q2", "members": ["a1"]}],
    ).model_dump(mode="json", by_alias=True)
    data["workstreams"][0]["route_to_queue_rules"] = [
        {"name": "split", "route_to": [{"queue": "q", "share": 50}, {"queue": "q2", "share": 50}]}
    ]
    return parse_config(data)


def test_config_checks_share_queues() -> None:
    data = split_config().model_dump(mode="json", by_alias=True)
    data["workstreams"][0]["route_to_queue_rules"][0]["route_to"][1]["queue"] = "nope"
    with pytest.raises(ConfigError, match=r"route_to_queue_rules\[0\]\.route_to\[1\]\.queue: unknown queue 'nope'"):
        parse_config(data)


async def test_real_workflows_land_on_the_queue_their_email_id_picks(make_stack: Any) -> None:
    cfg = split_config()
    stack: Stack = await make_stack(cfg)
    targets = cfg.workstreams[0].route_to_queue_rules[0].route_to
    landed = []
    for n in range(6):
        wf = (await stack.submit(make_email(subject=f"split {n}"))).workflow_id
        status = await stack.wait_stage(wf, "waiting_for_agent")
        case = stack.case(status.case_id or 0)
        expected = pick_share(targets, f"email:{case.source_email_id}:split")
        assert (status.queue, case.queue_id) == (expected, expected)
        [hit] = [t for t in stack.trace(case_id=case.id) if t.stage == "queue_routing" and t.outcome == "matched"]
        assert hit.reason == f"always -> queue {expected} (shares q 50% / q2 50%) (config v1)"
        landed.append(expected)
    assert landed == [
        pick_share(targets, f"email:{c.source_email_id}:split") for c in sorted(stack.cases(), key=lambda c: c.id or 0)
    ]


# --- skills with proficiency ---------------------------------------------------------------------


def skills_config(match: str | None) -> RoutingConfig:
    data = assignment_config(
        agents=[
            agent("low") | {"skills": {"technical": 1}},
            agent("mid") | {"skills": {"technical": 2}},
            agent("high", capacity=5) | {"skills": {"technical": 4, "german": 2}},
            agent("listed", capacity=9, skills=["technical"]),  # today's form: level 1
        ],
        members=["low", "mid", "high", "listed"],
    ).model_dump(mode="json", by_alias=True)
    ws = data["workstreams"][0]
    ws["classification_rules"].append(
        {
            "name": "tech2",
            "when": {"field": "subject", "op": "contains", "value": "[tech2]"},
            "set": {"skills": {"technical": 2}},
        }
    )
    if match is None:
        ws.pop("skill_match")
    else:
        ws["skill_match"] = match
    return parse_config(data)


def skipped(stack: Stack, case_id: int) -> dict[str, str]:
    out = {}
    for t in stack.trace(case_id=case_id):
        if t.outcome == "offered":
            for part in t.reason.split("; skipped ", 1)[-1].split("; "):
                agent_id, _, why = part.partition(" ")
                out[agent_id] = why
    return out


async def test_exact_skill_match_needs_the_level(make_stack: Any) -> None:
    stack: Stack = await make_stack(skills_config(None))  # exact is the default
    wf = (await stack.submit(make_email(subject="API down [tech2]"))).workflow_id
    status = await stack.wait_offer(wf, "high")  # highest capacity among mid and high
    why = skipped(stack, status.case_id or 0)
    assert why["low"] == "skill level too low (technical 1<2)"
    assert why["listed"] == "skill level too low (technical 1<2)"
    # an email needing no skill goes to anybody: the listed agent has the most capacity
    plain = (await stack.submit(make_email(subject="hello"))).workflow_id
    await stack.wait_offer(plain, "listed")


async def test_closest_skill_match_prefers_the_nearest_level(make_stack: Any) -> None:
    stack: Stack = await make_stack(skills_config("closest"))
    wf = (await stack.submit(make_email(subject="API down [tech2]"))).workflow_id
    status = await stack.wait_offer(wf, "mid")  # distance 0, though high has more capacity
    why = skipped(stack, status.case_id or 0)
    assert why["high"] == "is a farther skill match (distance 2 > 0)"
    assert why["low"] == "is a farther skill match (distance 1 > 0)"
    # mid declines: the nearest left are low and listed (distance 1), then high (2)
    assert await stack.respond(wf, "mid", "decline") == "declined"
    await stack.wait_offer(wf, "listed")  # listed and low tie; highest capacity picks listed


def test_skill_config_validation() -> None:
    data = skills_config("closest").model_dump(mode="json", by_alias=True)
    data["agents"][0]["skills"] = {"technical": 11}
    with pytest.raises(ConfigError, match="level"):
        parse_config(data)
    data = skills_config("closest").model_dump(mode="json", by_alias=True)
    data["workstreams"][0]["skill_match"] = "nearest"
    with pytest.raises(ConfigError, match="skill_match"):
        parse_config(data)
