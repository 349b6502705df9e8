"""``routedesk config check|load|diff|history|whatif``."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from routedesk.cli.common import TOKEN_ENV, UserError, actor, console, context, friendly, open_store, print_json, run
from routedesk.config import load_config
from routedesk.store import Store, StoreRefusal

app = typer.Typer(no_args_is_help=True, help="Validate, load, compare and try out the routing configuration.")


@app.command("check")
@friendly
def check(file: Path) -> None:
    """Validate FILE; a bad file prints one line per problem, naming the key."""
    cfg = load_config(file)
    console.print(
        f"{file}: ok ({len(cfg.mailboxes)} mailboxes, {len(cfg.workstreams)} workstreams, "
        f"{len(cfg.queues)} queues, {len(cfg.agents)} agents, {len(cfg.contacts)} contacts)"
    )


@app.command("load")
@friendly
def load(
    file: Path,
    by: str | None = typer.Option(None, "--by", help="who loads it (default: your OS user)"),
) -> None:
    """Validate FILE and load it as a new config version; running workers and intake take it
    up within seconds. Runtime edits the file does not contradict are kept; the ones it
    overrides are listed."""
    from routedesk import operations

    cfg = load_config(file)  # a bad file is refused before the store is touched
    store = Store().init()  # creates the tables on first use
    who = actor(store)
    # With ROUTEDESK_TOKEN, the version names the token's user; else --by or the OS user.
    by = by or (who.describe() if os.environ.get(TOKEN_ENV, "").strip() else None)
    result = operations.load_config_file(store, who, file, by=by, cfg=cfg)
    for line in result.report(str(file)):
        console.print(line, markup=False)
    if result.wake_queues:
        queues = ", ".join(result.wake_queues)
        try:
            run(operations.wake_after_load(context(store), result))
            console.print(f"woke queue(s) {queues}: their waiting items are offered to the new members", markup=False)
        except Exception as exc:  # Temporal unreachable: the dispatchers' sweep offers them
            console.print(
                f"queue(s) {queues}: new members get waiting items at the next sweep "
                f"(Temporal not reachable: {' '.join(str(exc).split()) or type(exc).__name__})",
                markup=False,
            )
    console.print(f"case store {store.db.address}", markup=False)


@app.command("diff")
@friendly
def diff(file: Path, as_json: bool = typer.Option(False, "--json")) -> None:
    """What loading FILE would change (mailboxes, workstreams and their rules, queues, agents,
    contacts, settings) and which runtime edits it would override; nothing is loaded."""
    from routedesk import operations

    store = open_store()
    preview = operations.preview_config_file(store, actor(store), file)
    if as_json:
        print_json(preview.as_dict())
        return
    current = f"config version {preview.current_version}" if preview.current_version else "no config loaded yet"
    if preview.unchanged:
        console.print(f"{file}: same content as {current}; loading it changes nothing", markup=False)
        return
    console.print(f"{file} against {current}:", markup=False)
    for change in preview.changes:
        console.print(f"  {change.line()}", markup=False)
    if not preview.changes:
        console.print("  no definition changes", markup=False)
    for k in preview.kept:
        console.print(f"  runtime edit kept: {k}", markup=False)
    for c in preview.conflicts:
        console.print(f"  runtime edit overridden: {c}", markup=False)


@app.command("history")
@friendly
def history(as_json: bool = typer.Option(False, "--json")) -> None:
    """Loaded config versions: number, when, by whom, from which file, content hash, changes."""
    from routedesk import operations

    store = open_store()
    versions = operations.config_history(store, actor(store))
    if as_json:
        print_json([v.as_dict() for v in versions])
        return
    if not versions:
        console.print("no config version stored yet (routedesk config load FILE, or make run)")
        return
    for v in versions:
        when = v.loaded_at.strftime("%Y-%m-%d %H:%M:%S")
        console.print(
            f"v{v.number}  {when}  {v.loaded_by}  {v.content_hash[:12]}  {v.source or '-'}  {v.summary}",
            markup=False,
        )


@app.command("whatif")
@friendly
def whatif(
    file: Path,
    since: str = typer.Option("7d", "--since", help="period of stored mail: 30m, 12h, 7d, 2w"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Run FILE's classification and route-to-queue rules over the mail stored in the period
    and count the cases that would land in another queue or with another priority. Reads
    only: no workflow, nothing written."""
    from routedesk import operations

    try:
        period = operations.parse_since(since)
        store = open_store()
        result = operations.config_whatif(store, actor(store), file, period)
    except StoreRefusal as exc:
        raise UserError(str(exc)) from None
    if as_json:
        print_json(result.as_dict())
        return
    console.print(
        f"{result.emails} case(s) opened since {result.since:%Y-%m-%d %H:%M} UTC; with {file}: "
        f"{result.changed} would differ ({result.queue_changed} in queue, {result.priority_changed} in priority)",
        markup=False,
    )
    if result.unrouted:
        console.print(f"{result.unrouted} would be rejected: their routing address is not in {file}", markup=False)
    for e in result.examples:
        console.print(
            f"  {e.case_number}: {e.old_queue or '-'}/{e.old_priority} -> {e.new_queue}/{e.new_priority} "
            f"(queue rule {e.rule}; priority {e.priority_rule})",
            markup=False,
        )
