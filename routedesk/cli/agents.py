"""``routedesk agent ...``: what agents do (answer offers, set presence, pick work) and the
agents view."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from routedesk import views
from routedesk.cli.common import actor, console, context, dump, friendly, open_store, print_json, read_view, run

if TYPE_CHECKING:
    from routedesk.auth import Actor
    from routedesk.store import Store

app = typer.Typer(no_args_is_help=True, help="Agents: answer offers, set presence, pick work, see who is free.")

AGENT = typer.Option(..., "--agent", "-a", help="Agent id")


def _hms(value: datetime | None) -> str:
    return value.strftime("%H:%M:%S") if value else "-"


@app.command("accept")
@friendly
def accept(case: str, agent: str = AGENT) -> None:
    """Accept the live offer of CASE (an Update: the answer is checked before it is recorded)."""
    from routedesk import operations as ops

    store = open_store()
    console.print(run(ops.accept(context(store), actor(store), case, agent)).message, markup=False)


@app.command("decline")
@friendly
def decline(case: str, agent: str = AGENT, reason: str | None = typer.Option(None, help="Why")) -> None:
    """Decline the live offer of CASE; it goes to the next agent."""
    from routedesk import operations as ops

    store = open_store()
    console.print(run(ops.decline(context(store), actor(store), case, agent, reason)).message, markup=False)


@app.command("pick")
@friendly
def pick(case: str, agent: str = AGENT) -> None:
    """Take CASE from one of the agent's queues."""
    from routedesk import operations as ops

    store = open_store()
    console.print(run(ops.pick(context(store), actor(store), case, agent)).message, markup=False)


@app.command("presence")
@friendly
def presence(agent: str, state: str = typer.Argument(..., help="Available, Busy, Away or Offline")) -> None:
    """Set the agent's presence; their queues' dispatchers wake to offer waiting work."""
    from routedesk import operations as ops

    store = open_store()
    res = run(ops.set_agent_presence(context(store), actor(store), agent, state))
    console.print(f"{agent} is now {res.presence} (queues: {', '.join(res.queues) or 'none'})", markup=False)


@app.command("offers")
@friendly
def offers(
    agent: str,
    all_offers: bool = typer.Option(False, "--all", help="Include closed offers"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """The agent's live offer (at most one) with the time left to answer, or every offer with --all."""

    def full(store: Store, who: Actor) -> list[views.OfferView]:
        from routedesk import operations as ops

        return ops.agent_offers(store, who, agent, include_closed=all_offers)

    rows = read_view(
        lambda r: views.agent_offers(r, agent, views.now(), views.stored_offer_timeouts(r), include_closed=all_offers),
        full,
    )
    if as_json:
        print_json(dump(rows))
        return
    if not rows:
        console.print(f"{agent} holds no live offer")
        return
    table = Table()
    for c in ("offer", "case", "kind", "status", "queue", "priority", "contact", "subject", "offered", "left"):
        table.add_column(c)
    for r in rows:
        table.add_row(
            str(r.offer_id),
            r.case,
            r.kind,
            r.status,
            r.queue_id or "-",
            r.priority,
            r.contact_id or "-",
            r.subject[:40],
            _hms(r.offered_at),
            f"{r.seconds_left:.0f}s" if r.seconds_left is not None else (r.reason or "-"),
        )
    console.print(table)


@app.command("list")
@friendly
def list_agents(as_json: bool = typer.Option(False, "--json")) -> None:
    """Agents: presence, work in progress / capacity, live offer, queues."""

    def full(store: Store, who: Actor) -> list[views.AgentView]:
        from routedesk import operations as ops

        return ops.list_agents(store, who)

    rows = read_view(lambda r: views.list_agents(r, views.now(), views.stored_offer_timeouts(r)), full)
    if as_json:
        print_json(dump(rows))
        return
    table = Table()
    for c in ("agent", "name", "presence", "load", "live offer", "since", "deadline", "queues"):
        table.add_column(c)
    for a in rows:
        o = a.live_offer
        table.add_row(
            a.id,
            a.name,
            a.presence,
            f"{a.active}/{a.capacity}",
            o.case if o else "-",
            _hms(o.offered_at) if o else "-",
            _hms(o.deadline) if o else "-",
            ", ".join(a.queues) or "-",
        )
    console.print(table)
