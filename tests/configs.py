"""Small routing configs built in code for assignment scenarios."""

from __future__ import annotations

from typing import Any

from routedesk.config import RoutingConfig, parse_config


def assignment_config(
    *,
    agents: list[dict[str, Any]],
    members: list[str],
    contacts: list[dict[str, Any]] = (),  # type: ignore[assignment]
    preferred: bool = True,
    fallback: str = "next_best_agent",
    offer_timeout: float = 1.5,
    allowed: tuple[str, ...] = ("Available",),
    method: str = "highest_capacity",
    sweep: float = 60,
    extra_queues: list[dict[str, Any]] = (),  # type: ignore[assignment]
) -> RoutingConfig:
    """One mailbox (support@acme.example) whose workstream sends everything to queue `q`.

    Subjects tagged ``[high]``/``[low]`` get that priority; ``[skill:x]`` requires skill x.
    """
    return parse_config(
        {
            "mailboxes": [{"address": "support@acme.example", "name": "Support", "workstream": "ws"}],
            "workstreams": [
                {
                    "id": "ws",
                    "name": "WS",
                    "classification_rules": [
                        {
                            "name": "high",
                            "when": {"field": "subject", "op": "contains", "value": "[high]"},
                            "set": {"priority": "High"},
                        },
                        {
                            "name": "low",
                            "when": {"field": "subject", "op": "contains", "value": "[low]"},
                            "set": {"priority": "Low"},
                        },
                        {
                            "name": "german",
                            "when": {
                                "field": "subject",
                                "op": "contains",
                                "value": "[skill:german]",
                            },
                            "set": {"skills": ["german"]},
                        },
                    ],
                    "fallback_queue": "q",
                    "allowed_presences": list(allowed),
                    "offer_timeout_seconds": offer_timeout,
                    "preferred_agents": {"enabled": preferred, "fallback": fallback},
                }
            ],
            "queues": [
                {"id": "q", "name": "Q", "members": members, "assignment_method": method},
                *extra_queues,
            ],
            "agents": agents,
            "contacts": list(contacts),
            "routing": {"sweep_interval_seconds": sweep},
        }
    )


def agent(
    agent_id: str, capacity: int = 2, presence: str = "Available", skills: list[str] | None = None
) -> dict[str, Any]:
    return {
        "id": agent_id,
        "name": agent_id.title(),
        "capacity": capacity,
        "presence": presence,
        "skills": skills or [],
    }
