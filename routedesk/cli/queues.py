"""``routedesk queue list|show``: what waits, for how long, and who could take it now."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.table import Table

from routedesk import views
from routedesk.cli.common import console, dump, friendly, print_json, read_view

if TYPE_CHECKING:
    from routedesk.auth import Actor
    from routedesk.store import Store

app = typer.Typer(no_args_is_help=True, help="Queues: waiting items, oldest wait, eligible agents.")


def _wait(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def _priorities(by: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in by.items()) or "-"


@app.command("list")
@friendly
def list_queues(as_json: bool = typer.Option(False, "--json")) -> None:
    """Every queue: waiting items by priority, oldest wait, eligible agents now, method."""

    def full(store: Store, who: Actor) -> list[views.QueueView]:
        from routedesk import operations as ops

        return ops.list_queues(store, who)

    rows = read_view(lambda r: [v for v, _ in views.queue_views(r, views.now())], full)
    if as_json:
        print_json(dump(rows))
        return
    table = Table()
    for c in ("queue", "method", "waiting", "offered", "by priority", "oldest wait", "eligible now"):
        table.add_column(c)
    for q in rows:
        table.add_row(
            q.id,
            q.assignment_method,
            str(q.waiting),
            str(q.offered),
            _priorities(q.by_priority),
            _wait(q.oldest_wait_seconds),
            ", ".join(q.eligible_now) or ("closed" if q.closed_until else "-"),
        )
    console.print(table)


@app.command("show")
@friendly
def show(queue: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """One queue and its waiting items, best first."""

    def full(store: Store, who: Actor) -> views.QueueDetail:
        from routedesk import operations as ops

        return ops.show_queue(store, who, queue)

    d = read_view(lambda r: views.show_queue(r, queue, views.now()), full)
    if as_json:
        print_json(dump(d))
        return
    q = d.queue
    console.print(f"[bold]{q.id}[/bold]  {q.name}")
    for k, v in [
        ("method", q.assignment_method),
        ("waiting", str(q.waiting)),
        ("offered", str(q.offered)),
        ("by priority", _priorities(q.by_priority)),
        ("oldest wait", _wait(q.oldest_wait_seconds)),
        ("eligible now", ", ".join(q.eligible_now) or "-"),
        ("closed until", f"{q.closed_until:%Y-%m-%d %H:%M} UTC" if q.closed_until else "- (open)"),
        ("members", ", ".join(q.members) or "-"),
    ]:
        console.print(f"  {k:<13} {v}", markup=False)
    if d.items:
        table = Table()
        for col in ("case", "status", "priority", "queued", "subject"):
            table.add_column(col)
        for item in d.items:
            table.add_row(
                item.number,
                item.status.value,
                item.priority,
                item.queued_at.strftime("%H:%M:%S") if item.queued_at else "-",
                item.subject[:60],
            )
        console.print(table)
