"""The rule engine: classification rules set attributes, route-to-queue rules pick a queue.

Pure functions over a :class:`RuleContext`, so activities can run them and unit tests can
check them without Temporal. Matching is case-insensitive unless a condition says
``case_sensitive: true``, because email addresses and subjects are written every which way.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from routedesk.config import (
    AllOf,
    AnyOf,
    ClassificationRule,
    Condition,
    FieldCondition,
    NotOf,
    Op,
    QueueShare,
    RouteRule,
)


@dataclass
class RuleContext:
    """What rules can see: fields of the email and of the case."""

    subject: str = ""
    body: str = ""
    sender: str = ""
    sender_name: str = ""
    mailbox: str = ""
    to: list[str] = field(default_factory=list)
    cc: list[str] = field(default_factory=list)
    contact: str = ""
    priority: str = ""
    headers: dict[str, str] = field(default_factory=dict)  # lowercased names
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def sender_domain(self) -> str:
        return self.sender.rpartition("@")[2]

    def value(self, name: str) -> Any:
        if name.startswith("header."):
            return self.headers.get(name.removeprefix("header.").lower())
        if name.startswith("attr."):
            return self.attributes.get(name.removeprefix("attr."))
        if name == "priority":
            return self.attributes.get("priority", self.priority)
        return getattr(self, name)


@dataclass
class RuleHit:
    rule: str
    matched: bool
    detail: str


@lru_cache(maxsize=512)
def _regex(pattern: str, case_sensitive: bool) -> re.Pattern[str]:
    return re.compile(pattern, 0 if case_sensitive else re.IGNORECASE)


def _fold(v: Any, case_sensitive: bool) -> str:
    s = "" if v is None else str(v)
    return s if case_sensitive else s.casefold()


def _test_one(actual: Any, cond: FieldCondition) -> bool:
    cs = cond.case_sensitive
    if cond.op is Op.EXISTS:
        return actual not in (None, "", [])
    if cond.op is Op.MATCHES:
        return _regex(str(cond.value), cs).search("" if actual is None else str(actual)) is not None
    a = _fold(actual, cs)
    if cond.op is Op.IN:
        return a in {_fold(v, cs) for v in cond.value}
    v = _fold(cond.value, cs)
    match cond.op:
        case Op.EQUALS:
            return a == v
        case Op.NOT_EQUALS:
            return a != v
        case Op.CONTAINS:
            return v in a
        case Op.STARTS_WITH:
            return a.startswith(v)
        case Op.ENDS_WITH:
            return a.endswith(v)
    raise AssertionError(f"unhandled operator {cond.op}")


def _test_field(ctx: RuleContext, cond: FieldCondition) -> bool:
    actual = ctx.value(cond.field)
    if isinstance(actual, list):
        # A list field (to, cc, attr.skills) matches when any element does, except not_equals,
        # which must hold for all of them.
        if cond.op is Op.EXISTS:
            return len(actual) > 0
        if cond.op is Op.NOT_EQUALS:
            return all(_test_one(x, cond) for x in actual)
        return any(_test_one(x, cond) for x in actual)
    return _test_one(actual, cond)


def evaluate(cond: Condition | None, ctx: RuleContext) -> bool:
    if cond is None:
        return True
    if isinstance(cond, AllOf):
        return all(evaluate(c, ctx) for c in cond.all)
    if isinstance(cond, AnyOf):
        return any(evaluate(c, ctx) for c in cond.any)
    if isinstance(cond, NotOf):
        return not evaluate(cond.not_, ctx)
    return _test_field(ctx, cond)


def describe(cond: Condition | None) -> str:
    """A short human reading of a condition, for the routing trace."""
    if cond is None:
        return "always"
    if isinstance(cond, AllOf):
        return "(" + " and ".join(describe(c) for c in cond.all) + ")"
    if isinstance(cond, AnyOf):
        return "(" + " or ".join(describe(c) for c in cond.any) + ")"
    if isinstance(cond, NotOf):
        return f"not {describe(cond.not_)}"
    if cond.op is Op.EXISTS:
        return f"{cond.field} exists"
    return f"{cond.field} {cond.op.value} {cond.value!r}"


def classify(rules: list[ClassificationRule], ctx: RuleContext) -> tuple[dict[str, Any], list[RuleHit]]:
    """Apply every matching rule in order; later rules see (and may override) earlier ones."""
    hits: list[RuleHit] = []
    for rule in rules:
        matched = evaluate(rule.when, ctx)
        if matched:
            ctx.attributes.update(rule.set)
            detail = f"{describe(rule.when)} -> set " + ", ".join(f"{k}={v}" for k, v in rule.set.items())
        else:
            detail = f"{describe(rule.when)} did not match"
        hits.append(RuleHit(rule.name, matched, detail))
    return dict(ctx.attributes), hits


def share_point(seed: str) -> int:
    """A number 0-99 fixed by ``seed`` (sha256): the same email always lands on the same share."""
    return int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big") % 100


def pick_share(targets: list[QueueShare], seed: str) -> str:
    """The queue of a percentage allocation whose share covers ``seed``'s point."""
    point = share_point(seed)
    upto = 0
    for t in targets:
        upto += t.share
        if point < upto:
            return t.queue
    return targets[-1].queue  # shares add up to 100 (validated): not reached


def route(rules: list[RouteRule], fallback_queue: str, ctx: RuleContext, seed: str = "") -> tuple[str, list[RuleHit]]:
    """First matching route-to-queue rule wins; otherwise the fallback queue. A rule with
    percentage shares picks one of its queues by ``seed`` (the email's ID), so a retry or a
    replay picks the same queue."""
    hits: list[RuleHit] = []
    for rule in rules:
        if evaluate(rule.when, ctx):
            if rule.route_to:
                queue = pick_share(rule.route_to, f"{seed}:{rule.name}")
                split = " / ".join(f"{t.queue} {t.share}%" for t in rule.route_to)
                hits.append(RuleHit(rule.name, True, f"{describe(rule.when)} -> queue {queue} (shares {split})"))
                return queue, hits
            hits.append(RuleHit(rule.name, True, f"{describe(rule.when)} -> queue {rule.queue}"))
            return rule.queue, hits
        hits.append(RuleHit(rule.name, False, f"{describe(rule.when)} did not match"))
    hits.append(RuleHit("fallback", True, f"no route-to-queue rule matched -> {fallback_queue}"))
    return fallback_queue, hits
