"""What a routing config changes, compared with another: pure functions over validated configs.

Used by ``routedesk config diff`` (before a load), ``config history`` (each version against
the one before) and the load itself (its content hash, and which runtime edits the new file
contradicts).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from routedesk.config import RoutingConfig

# Sections that are lists of objects with an id, and the key that identifies one.
KEYED_SECTIONS = (
    ("mailboxes", "address"),
    ("workstreams", "id"),
    ("queues", "id"),
    ("agents", "id"),
    ("contacts", "id"),
    ("calendars", "id"),
    ("sla_policies", "id"),
)
SETTING_SECTIONS = ("routing", "intake", "supervisors", "console")
RULE_LISTS = ("classification_rules", "route_to_queue_rules")


def config_json(cfg: RoutingConfig) -> dict[str, Any]:
    """The validated config as plain JSON, defaults filled in: two files that mean the same
    (comments, key order, defaults written out or not) give the same data."""
    data: dict[str, Any] = cfg.model_dump(mode="json", by_alias=True)
    return data


def content_hash(data: dict[str, Any]) -> str:
    """sha256 of the canonical JSON (sorted keys, no spaces) of :func:`config_json`."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Change:
    section: str  # mailboxes, workstreams, queues, agents, contacts, routing, intake
    key: str  # the object's id ("" for a settings section)
    action: str  # added | removed | changed
    keys: list[str] = field(default_factory=list)  # changed: the keys whose value changed

    def line(self) -> str:
        mark = {"added": "+", "removed": "-", "changed": "~"}[self.action]
        what = f"{self.section} {mark} {self.key}".rstrip() if self.key else f"{self.section} {mark}"
        return f"{what}: {', '.join(self.keys)}" if self.keys else what

    def as_dict(self) -> dict[str, Any]:
        return {"section": self.section, "key": self.key, "action": self.action, "keys": self.keys}


def _rule_changes(old: list[dict[str, Any]], new: list[dict[str, Any]], name: str) -> list[str]:
    """``route_to_queue_rules: + a, - b, ~ c, order`` style entries for one rule list."""
    if old == new:
        return []
    before = {r["name"]: r for r in old}
    after = {r["name"]: r for r in new}
    parts = [f"+ {n}" for n in after if n not in before]
    parts += [f"- {n}" for n in before if n not in after]
    parts += [f"~ {n}" for n in after if n in before and before[n] != after[n]]
    common_before = [n for n in before if n in after]
    common_after = [n for n in after if n in before]
    if common_before != common_after:
        parts.append("order")
    return [f"{name}[{p}]" for p in parts] or [name]


def _changed_keys(old: dict[str, Any], new: dict[str, Any], section: str) -> list[str]:
    keys: list[str] = []
    for k in sorted(set(old) | set(new)):
        if old.get(k) == new.get(k):
            continue
        if section == "workstreams" and k in RULE_LISTS:
            keys += _rule_changes(old.get(k) or [], new.get(k) or [], k)
        elif isinstance(old.get(k), dict) and isinstance(new.get(k), dict):
            keys += [f"{k}.{sub}" for sub in _changed_keys(old[k], new[k], "")]
        else:
            keys.append(k)
    return keys


def diff(old: dict[str, Any] | None, new: dict[str, Any]) -> list[Change]:
    """Changes from ``old`` (None: nothing loaded yet) to ``new``, both :func:`config_json` data,
    in file order: added, changed, removed objects per section, then the settings sections."""
    changes: list[Change] = []
    old = old or {}
    for section, id_key in KEYED_SECTIONS:
        before = {o[id_key]: o for o in old.get(section, [])}
        after = {o[id_key]: o for o in new.get(section, [])}
        for key, obj in after.items():
            if key not in before:
                changes.append(Change(section, key, "added"))
            elif before[key] != obj:
                changes.append(Change(section, key, "changed", _changed_keys(before[key], obj, section)))
        changes += [Change(section, key, "removed") for key in before if key not in after]
    for section in SETTING_SECTIONS:
        if old and old.get(section) != new.get(section):
            changes.append(Change(section, "", "changed", _changed_keys(old.get(section) or {}, new[section], "")))
    return changes


def summary(changes: list[Change]) -> str:
    """One line: ``+1 mailboxes, ~1 workstreams, -1 agents`` (``no change`` when empty)."""
    if not changes:
        return "no change"
    counts: dict[tuple[str, str], int] = {}
    for c in changes:
        counts[(c.action, c.section)] = counts.get((c.action, c.section), 0) + 1
    mark = {"added": "+", "removed": "-", "changed": "~"}
    return ", ".join(f"{mark[a]}{n} {s}" for (a, s), n in counts.items())


# --- runtime edits against a new file --------------------------------------------------------

PREFERRED = "contact.preferred_agents"
PRESENCE = "agent.presence"


@dataclass(frozen=True)
class Edit:
    """A runtime edit as stored (``runtime_edit``)."""

    kind: str
    key: str
    value: Any
    set_by: str
    set_at: str


@dataclass
class Reconciled:
    """What a load does with the runtime edits: values kept over the file's, and conflicts
    (the file wins, the edit is dropped) to list to whoever loads."""

    keep: dict[tuple[str, str], Any] = field(default_factory=dict)  # (kind, key) -> runtime value
    drop: list[tuple[str, str]] = field(default_factory=list)  # edits the store forgets
    kept: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)


def _names(agents: list[str]) -> str:
    return "[" + ", ".join(agents) + "]" if agents else "none"


def reconcile(previous: dict[str, Any] | None, new: dict[str, Any], edits: list[Edit]) -> Reconciled:
    """Decide, per runtime edit, whether the new file contradicts it.

    Precedence: a runtime edit survives a load unless the file changed that very value since
    the version in force (the file's value differs from the previous version's, and from the
    runtime value): then the file wins, and the edit is listed as overridden. An edit the file
    now agrees with is absorbed. A contact removed from the file, or a preferred agent that
    no longer exists, drops the edit (listed). Presence is the agents' own: the file's
    ``presence`` is only the initial presence of a new agent, so it never contradicts one.
    """
    out = Reconciled()
    old_contacts = {c["id"]: c for c in (previous or {}).get("contacts", [])}
    new_contacts = {c["id"]: c for c in new.get("contacts", [])}
    agents = {a["id"] for a in new.get("agents", [])}
    for e in edits:
        ident = (e.kind, e.key)
        if e.kind == PRESENCE:
            if e.key not in agents:
                out.drop.append(ident)
            continue
        if e.kind != PREFERRED:
            continue
        runtime: list[str] = list(e.value or [])
        who = f"set at runtime by {e.set_by} ({e.set_at})"
        contact = new_contacts.get(e.key)
        if contact is None:
            out.drop.append(ident)
            out.conflicts.append(
                f"contact {e.key}: preferred agents {_names(runtime)} {who}; the file no longer has this "
                "contact: it is removed"
            )
            continue
        in_file: list[str] = list(contact.get("preferred_agents") or [])
        before = old_contacts.get(e.key)
        in_previous = list(before.get("preferred_agents") or []) if before is not None else None
        missing = [a for a in runtime if a not in agents]
        if in_file == runtime:
            out.drop.append(ident)  # the file now says the same: nothing left to remember
        elif missing:
            out.drop.append(ident)
            out.conflicts.append(
                f"contact {e.key}: preferred agents {_names(runtime)} {who}; the file removes agent "
                f"{', '.join(missing)} and says {_names(in_file)}: the file wins"
            )
        elif in_file != in_previous:
            out.drop.append(ident)
            out.conflicts.append(
                f"contact {e.key}: preferred agents {_names(runtime)} {who}; the file now says "
                f"{_names(in_file)}: the file wins"
            )
        else:
            out.keep[ident] = runtime
            out.kept.append(
                f"contact {e.key}: preferred agents {_names(runtime)} {who} kept "
                f"(the file still says {_names(in_file)})"
            )
    return out
