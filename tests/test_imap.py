"""IMAP intake (starter/imap.py) against a real Dovecot: routed, marked, durable, visible."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlmodel import col, select
from temporalio.client import Client

import starter.imap as imap_mod
from routedesk.config import ConfigError
from routedesk.ids import message_id_of
from routedesk.models import CaseRow, EmailRow
from routedesk.store import Store
from starter.imap import ImapFetcher, xoauth2
from tests.cli import routedesk, stack_env
from tests.configs import assignment_config
from tests.conftest import MakeStack
from tests.imap_support import SUPPORT, Dovecot, fetching, imap_config, position_row, running_dovecot
from tests.intake_support import config_with, free_port
from tests.support import ROOT, Stack, eventually, make_email

PASSWORD_ENV = "RD_TEST_IMAP_PASSWORD"


class Killed(BaseException):
    """Stands for the process dying: nothing in the fetcher catches it."""


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Dovecot]:
    with running_dovecot() as dv:
        yield dv


@pytest.fixture
def user(dovecot: Dovecot, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh IMAP user whose password the fetcher reads from $RD_TEST_IMAP_PASSWORD."""
    name = dovecot.add_user("s3cret pass")  # a space: the password must be quoted by LOGIN
    monkeypatch.setenv(PASSWORD_ENV, "s3cret pass")
    return name


def email_rows(stack: Stack) -> list[EmailRow]:
    with stack.store.db.read() as s:
        return list(s.exec(select(EmailRow).order_by(col(EmailRow.id))).all())


def case_count(stack: Stack) -> int:
    with stack.store.db.read() as s:
        return len(s.exec(select(CaseRow.id)).all())


async def routed(stack: Stack, count: int, timeout: float = 15.0) -> list[EmailRow]:
    """Wait until ``count`` emails are stored and each has its case."""

    def probe() -> list[EmailRow] | None:
        rows = email_rows(stack)
        return rows if len(rows) == count and all(r.case_id for r in rows) else None

    return await eventually(probe, timeout=timeout, what=f"{count} emails routed into cases")  # type: ignore[no-any-return]


def failed_logins(dv: Dovecot, user: str) -> int:
    return sum(1 for line in dv.log_text().splitlines() if "auth failed" in line and f"user=<{user}>" in line)


async def in_thread(fn: Any, *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)


# --- routing and what happens on the server ---------------------------------------------


@pytest.mark.parametrize(
    "after, idle",
    [("mark_seen", True), ({"move_to": "Done"}, False), ("delete", True)],
    ids=["mark_seen-idle", "move_to-polling", "delete-idle"],
)
async def test_mail_is_routed_then_marked_moved_or_deleted(
    make_stack: MakeStack, dovecot: Dovecot, user: str, after: Any, idle: bool
) -> None:
    early = make_email(subject="Waiting before the fetcher started")
    dovecot.append(user, early)
    if isinstance(after, dict):
        dovecot.create(user, "Done")
    stack = await make_stack(imap_config(dovecot, user, after=after, idle=idle, poll_seconds=0.2))
    async with fetching(stack):
        await routed(stack, 1)
        late = make_email(subject="Arrived while fetching")
        await in_thread(dovecot.append, user, late)
        rows = await routed(stack, 2)
    assert [r.subject for r in rows] == ["Waiting before the fetcher started", "Arrived while fetching"]
    assert all(r.source == "imap" and r.envelope_to == [SUPPORT] for r in rows)
    assert case_count(stack) == 2
    inbox = dovecot.flags(user)
    if after == "mark_seen":
        assert inbox == {1: {"\\Seen"}, 2: {"\\Seen"}}
    else:
        assert inbox == {}
    if isinstance(after, dict):
        assert len(dovecot.flags(user, "Done")) == 2
    pos = position_row(stack)
    assert pos is not None and pos.last_uid == 2 and pos.fetched == 2 and pos.status == "stopped"
    assert pos.uidvalidity == dovecot.uidvalidity(user)


@pytest.mark.serial  # a latency bound: run alone, not beside another test process
async def test_idle_routes_new_mail_within_two_seconds(make_stack: MakeStack, dovecot: Dovecot, user: str) -> None:
    stack = await make_stack(imap_config(dovecot, user, poll_seconds=600))  # only IDLE can be this quick
    async with fetching(stack):
        await eventually(lambda: (p := position_row(stack)) and p.status == "idle", what="the fetcher to IDLE")
        await in_thread(dovecot.append, user, make_email(subject="Quick"))
        sent = time.monotonic()
        await eventually(lambda: email_rows(stack), timeout=2.0, what="the email stored within 2 s")
        elapsed = time.monotonic() - sent
        await routed(stack, 1)
        await eventually(lambda: dovecot.flags(user) == {1: {"\\Seen"}}, timeout=5, what="the message marked \\Seen")
    assert elapsed < 2.0


# --- durability ---------------------------------------------------------------------------


async def test_fetcher_killed_between_store_and_mark_loses_nothing_and_duplicates_nothing(
    make_stack: MakeStack, dovecot: Dovecot, user: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = await make_stack(imap_config(dovecot, user))
    dovecot.append(user, make_email(subject="One"), make_email(subject="Two"))
    real_finish = imap_mod.finish
    crashed: list[ImapFetcher] = []

    def crash(*args: Any) -> None:  # the process dies after submitting, before marking
        crashed[0]._stop.set()
        raise Killed

    monkeypatch.setattr(imap_mod, "finish", crash)
    box = stack.config.mailbox(SUPPORT)
    assert box is not None
    first = ImapFetcher(stack.client, stack.store, box, task_queue=stack.task_queue, id_prefix=stack.id_prefix)
    crashed.append(first)
    first.start()
    assert first._task is not None
    with pytest.raises(Killed):
        await asyncio.wait_for(first._task, 15)
    await first.stop()
    # Stored and started, not marked: the server still has both unseen, the position is 0.
    assert len(email_rows(stack)) == 2
    flags = dovecot.flags(user)
    assert len(flags) == 2 and not any("\\Seen" in f for f in flags.values())
    pos = position_row(stack)
    assert pos is not None and pos.last_uid == 0
    await routed(stack, 2)

    monkeypatch.setattr(imap_mod, "finish", real_finish)
    async with fetching(stack):  # the restarted fetcher fetches both again: dedupe
        await eventually(lambda: (p := position_row(stack)) and p.last_uid == 2, what="the position to advance")
    assert len(email_rows(stack)) == 2 and case_count(stack) == 2
    assert all("\\Seen" in f for f in dovecot.flags(user).values())


async def test_mail_is_marked_once_its_workflow_started_even_with_no_worker_running(
    make_stack: MakeStack, dovecot: Dovecot, user: str
) -> None:
    # Nobody to offer to: each case is opened, routed and left waiting in its queue.
    quiet = assignment_config(agents=[], members=[])
    stack = await make_stack(imap_config(dovecot, user, base=quiet), start_worker=False)
    dovecot.append(user, make_email(subject="Worker down"))
    async with fetching(stack):
        await eventually(lambda: dovecot.flags(user) == {1: {"\\Seen"}}, what="the message marked \\Seen")
    [row] = email_rows(stack)
    assert row.case_id is None and row.workflow_id is not None
    desc = await stack.client.get_workflow_handle(row.workflow_id).describe()
    assert desc.task_queue == stack.task_queue  # started durably: the worker will run it
    await stack.start_worker()
    await routed(stack, 1)


async def test_uidvalidity_change_rescans_the_folder_without_duplicate_cases(
    make_stack: MakeStack, dovecot: Dovecot, user: str
) -> None:
    one, two = make_email(subject="One"), make_email(subject="Two")
    dovecot.create(user, "Support")
    dovecot.append(user, one, two, folder="Support")
    stack = await make_stack(imap_config(dovecot, user, folder="Support"))
    async with fetching(stack):
        await routed(stack, 2)
        await eventually(lambda: (p := position_row(stack, "Support")) and p.last_uid == 2, what="position 2")
    before = dovecot.uidvalidity(user, "Support")
    # The folder is recreated (restored from a backup, say) with the same two and a new one.
    dovecot.delete(user, "Support")
    dovecot.create(user, "Support")
    dovecot.append(user, one, two, make_email(subject="Three"), folder="Support")
    after = dovecot.uidvalidity(user, "Support")
    assert after != before
    async with fetching(stack):
        await routed(stack, 3)
        await eventually(
            lambda: all("\\Seen" in f for f in dovecot.flags(user, "Support").values()),
            what="all three marked \\Seen",
        )
    assert case_count(stack) == 3  # One and Two were not routed twice
    pos = position_row(stack, "Support")
    assert pos is not None
    assert (pos.uidvalidity, pos.previous_uidvalidity, pos.uidvalidity_changes) == (after, before, 1)
    assert pos.uidvalidity_changed_at is not None and pos.last_uid == 3
    res = await routedesk("mailbox", "list", "--json", env=stack_env(stack))
    assert res.code == 0, res.err
    [box] = [b for b in json.loads(res.out) if b["address"] == SUPPORT]
    assert box["imap"][0]["uidvalidity_changes"] == 1


async def test_backlog_of_500_after_downtime_is_fetched_oldest_first(
    make_stack: MakeStack, dovecot: Dovecot, user: str
) -> None:
    count = 500
    mails = [make_email(subject=f"backlog {i:03d}", sender=f"c{i}@customer.example") for i in range(count)]
    await in_thread(dovecot.append, user, *mails)
    # The whole service was down: the fetcher catches up first, routing follows at its own pace.
    # Nobody to offer to: each case is opened, routed and left waiting in its queue.
    quiet = assignment_config(agents=[], members=[])
    stack = await make_stack(imap_config(dovecot, user, base=quiet), start_worker=False)
    async with fetching(stack):
        await eventually(lambda: (p := position_row(stack)) and p.last_uid == count, timeout=30, what="500 fetched")
    rows = email_rows(stack)
    assert [r.message_id for r in rows] == [message_id_of(m) for m in mails]  # oldest first
    flags = dovecot.flags(user)
    assert len(flags) == count and all("\\Seen" in f for f in flags.values())

    async def started() -> bool:
        n = await stack.client.count_workflows(f'TaskQueue="{stack.task_queue}"')
        return n.count == count

    await eventually(started, what="500 workflows started")
    await stack.start_worker()
    await eventually(lambda: case_count(stack) == count, timeout=90, what="500 cases")


# --- logins, TLS, OAuth2 ------------------------------------------------------------------


async def test_login_failure_is_reported_and_retried_until_fixed(
    make_stack: MakeStack, dovecot: Dovecot, user: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "wrong")
    stack = await make_stack(imap_config(dovecot, user))
    dovecot.append(user, make_email(subject="Behind a bad password"))
    async with fetching(stack, backoff_initial=0.2, backoff_max=0.5):
        pos = await eventually(
            lambda: (p := position_row(stack)) and p.status == "login_failed" and p, what="login_failed"
        )
        assert "AUTHENTICATIONFAILED" in (pos.last_error or "")
        res = await routedesk("mailbox", "list", env=stack_env(stack))
        assert res.code == 0, res.err
        assert "login_failed" in res.out and "AUTHENTICATIONFAILED" in res.out
        await eventually(lambda: failed_logins(dovecot, user) >= 2, what="the login retried")
        monkeypatch.setenv(PASSWORD_ENV, "s3cret pass")  # the operator fixes the secret
        await routed(stack, 1)
        await eventually(lambda: (p := position_row(stack)) and p.status == "idle", what="status idle")
    assert email_rows(stack)[0].subject == "Behind a bad password"


@pytest.mark.parametrize(
    "tls, secret",
    [("implicit", "password_env"), ("starttls", "oauth2_token_file"), ("none", "oauth2_token_env")],
)
async def test_tls_and_xoauth2_logins(
    make_stack: MakeStack,
    dovecot: Dovecot,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tls: str,
    secret: str,
) -> None:
    # Dovecot 2.3 checks an XOAUTH2 bearer token as the user's password, so the passwd-file
    # user's password plays the access token: the SASL exchange itself is the real one.
    token = "ya29.test-token"
    name = dovecot.add_user(token)
    imap: dict[str, Any] = {"tls": tls, "ca_file": str(dovecot.cert)}
    if tls == "implicit":
        imap["port"] = dovecot.tls_port
    if secret == "oauth2_token_file":
        (tmp_path / "token").write_text(token + "\n")
        imap["oauth2_token_file"] = str(tmp_path / "token")
    else:
        monkeypatch.setenv("RD_TEST_IMAP_SECRET", token)
        imap[secret] = "RD_TEST_IMAP_SECRET"
    dovecot.append(name, make_email(subject=f"via {tls}"))
    stack = await make_stack(imap_config(dovecot, name, password_env=imap.pop("password_env", None), **imap))
    async with fetching(stack):
        await routed(stack, 1)
    method = "PLAIN" if secret == "password_env" else "XOAUTH2"
    assert f"user=<{name}>, method={method}" in dovecot.log_text()
    logins = [x for x in dovecot.log_text().splitlines() if f"Login: user=<{name}>" in x]
    assert any("TLS" in x for x in logins) == (tls != "none")  # the test's own session is plain


async def test_an_untrusted_certificate_is_reported(make_stack: MakeStack, dovecot: Dovecot, user: str) -> None:
    stack = await make_stack(imap_config(dovecot, user, tls="implicit", port=dovecot.tls_port))
    async with fetching(stack):
        pos = await eventually(lambda: (p := position_row(stack)) and p.status == "error" and p, what="error")
    assert "certificate not trusted" in (pos.last_error or "") and "ca_file" in (pos.last_error or "")
    assert email_rows(stack) == []


def test_xoauth2_initial_response() -> None:
    raw = xoauth2("support@acme.example", "tok")
    assert raw == b"user=support@acme.example\x01auth=Bearer tok\x01\x01"
    # What imaplib sends on the wire (the form Google and Microsoft document):
    assert base64.b64encode(raw) == b"dXNlcj1zdXBwb3J0QGFjbWUuZXhhbXBsZQFhdXRoPUJlYXJlciB0b2sBAQ=="


# --- configuration and the CLI --------------------------------------------------------------


def test_imap_config_is_validated() -> None:
    base = {"host": "imap.example", "username": "u"}
    with pytest.raises(ConfigError) as exc:
        config_with(support={"imap": base})
    assert "mailboxes[0].imap: name exactly one of password_env, oauth2_token_env or oauth2_token_file" in str(
        exc.value
    )
    with pytest.raises(ConfigError) as exc:
        config_with(support={"imap": {**base, "password_env": "P", "after": "archive"}})
    assert "mailboxes[0].imap.after: use mark_seen, delete or {move_to: FOLDER}" in str(exc.value)
    cfg = config_with(support={"imap": {**base, "oauth2_token_file": "/t", "after": {"move_to": "Done"}}})
    box = cfg.mailbox(SUPPORT)
    assert box is not None and box.imap is not None
    assert (box.imap.effective_port, box.imap.folder, box.imap.poll_seconds, box.imap.idle) == (993, "INBOX", 30, True)


async def test_routedesk_intake_imap_runs_until_sigterm(make_stack: MakeStack, dovecot: Dovecot, user: str) -> None:
    stack = await make_stack(imap_config(dovecot, user))
    env = {**os.environ, **stack_env(stack), PASSWORD_ENV: "s3cret pass", "COLUMNS": "200"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "routedesk.cli.app", "intake", "imap",
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        await in_thread(dovecot.append, user, make_email(subject="Through the CLI"))
        await routed(stack, 1, timeout=30)
        await eventually(lambda: dovecot.flags(user) == {1: {"\\Seen"}}, what="marked \\Seen")
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, out.decode()
    assert f"IMAP intake   {SUPPORT} <- imap://{user}@127.0.0.1:{dovecot.port}/INBOX" in out.decode()
    pos = position_row(stack)
    assert pos is not None and pos.status == "stopped"


async def test_routedesk_intake_imap_without_imap_mailboxes_says_so(stack: Stack) -> None:
    res = await routedesk("intake", "imap", env=stack_env(stack))
    assert res.code == 1
    assert res.err.strip() == (
        "routedesk: no mailbox has an imap section in the loaded config; add one and run routedesk config load FILE"
    )


async def test_make_run_fetches_every_mailbox_with_an_imap_section(
    client: Client, dovecot: Dovecot, user: str, tmp_path: Path
) -> None:
    data = yaml.safe_load((ROOT / "examples" / "routing.yaml").read_text())
    data.setdefault("intake", {}).update({"smtp": {"port": free_port()}, "http": {"port": free_port()}})
    data.setdefault("console", {})["port"] = free_port()  # not 8080: another `make run` may hold it
    [support] = [m for m in data["mailboxes"] if m["address"] == SUPPORT]
    support["imap"] = {"host": dovecot.host, "port": dovecot.port, "tls": "none", "username": user}
    support["imap"]["password_env"] = PASSWORD_ENV
    config = tmp_path / "routing.yaml"
    config.write_text(yaml.safe_dump(data))
    db_url = f"sqlite:///{tmp_path / 'routedesk.db'}"
    tag = uuid.uuid4().hex[:8]
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": client.service_client.config.target_host,
        "DATABASE_URL": db_url,
        "ROUTEDESK_TASK_QUEUE": f"run-{tag}",
        "ROUTEDESK_ID_PREFIX": f"run{tag}-",
        "ROUTEDESK_HTTP_TOKEN": "t",
    }
    dovecot.append(user, make_email(subject="Fetched by make run"))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "starter.run", "--config", str(config),
        cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    store = Store(db_url)
    try:

        def routed_case() -> bool:
            with contextlib.suppress(Exception), store.db.read() as s:
                return s.exec(select(CaseRow).where(col(CaseRow.queue_id).is_not(None))).first() is not None
            return False

        await eventually(routed_case, timeout=60, what="make run to route the fetched mail")
        await eventually(lambda: dovecot.flags(user) == {1: {"\\Seen"}}, what="marked \\Seen")
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        store.db.dispose()
    assert proc.returncode == 0, out.decode()
    assert f"IMAP intake   {SUPPORT} <- imap://{user}@127.0.0.1:{dovecot.port}/INBOX" in out.decode()


# --- configuration loaded while the service runs ---------------------------------------------


async def test_imap_mailboxes_added_changed_and_removed_by_config_load_take_effect_within_5s(
    stack: Stack, dovecot: Dovecot, user: str, tmp_path: Path
) -> None:
    """The service's IMAP part (as make run and `routedesk intake imap` run it) follows
    `routedesk config load`: no restart, each change in force within 5 s of the load."""
    env = stack_env(stack)
    data: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "routing.yaml").read_text())
    [support] = [m for m in data["mailboxes"] if m["address"] == SUPPORT]
    imap = {"host": dovecot.host, "port": dovecot.port, "tls": "none", "username": user, "password_env": PASSWORD_ENV}

    async def load(name: str) -> float:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        res = await routedesk("config", "load", str(path), env=env)
        assert res.code == 0, res.err
        return time.monotonic()

    def cases_from(subject: str) -> bool:
        return any(r.subject == subject and r.case_id for r in email_rows(stack))

    defs = stack.store.definitions(max_age=0)
    running = imap_mod.start_imap_intake(
        stack.client,
        stack.store,
        defs.mailboxes,
        stack.store.intake_settings(),
        watch=True,
        version=defs.version,
        task_queue=stack.task_queue,
        id_prefix=stack.id_prefix,
        backoff_initial=0.1,
    )
    try:
        assert running.fetchers == {}  # the example config fetches nothing
        # Added: the support mailbox gains an imap section; mail already waits in its folder.
        dovecot.append(user, make_email(subject="Waiting for the new fetcher"))
        support["imap"] = dict(imap)
        loaded = await load("added.yaml")
        await eventually(lambda: cases_from("Waiting for the new fetcher"), timeout=5, what="a case within 5 s")
        assert time.monotonic() - loaded < 5
        first = running.fetchers[SUPPORT]

        # Changed: another folder; the fetcher is restarted on it.
        dovecot.create(user, "Cases")
        dovecot.append(user, make_email(subject="In the new folder"), folder="Cases")
        support["imap"] = {**imap, "folder": "Cases"}
        loaded = await load("changed.yaml")
        await eventually(lambda: cases_from("In the new folder"), timeout=5, what="the new folder fetched within 5 s")
        assert time.monotonic() - loaded < 5
        assert running.fetchers[SUPPORT] is not first and running.fetchers[SUPPORT].imap.folder == "Cases"
        assert (p := position_row(stack)) is not None and p.status == "stopped"  # INBOX's fetcher ended

        # Removed: the fetcher stops; mail delivered afterwards stays on the server.
        del support["imap"]
        loaded = await load("removed.yaml")
        await eventually(lambda: SUPPORT not in running.fetchers, timeout=5, what="the fetcher stopped within 5 s")
        assert time.monotonic() - loaded < 5
        stopped = await eventually(
            lambda: (p := position_row(stack, "Cases")) and p.status == "stopped" and p, what="status stopped"
        )
        assert stopped.fetched == 1
    finally:
        await running.stop()
    assert case_count(stack) == 2
    assert dovecot.flags(user) == {1: {"\\Seen"}} and dovecot.flags(user, "Cases") == {1: {"\\Seen"}}


async def test_a_refused_login_shows_in_the_api_mailbox_entry_and_on_readyz(
    make_stack: MakeStack, dovecot: Dovecot, user: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One typed IMAP status (routedesk.operations.imap_statuses) behind GET /api/v1/mailboxes,
    /readyz and `routedesk mailbox list`: a wrong password shows in the server's words."""
    import httpx

    from routedesk import auth
    from routedesk.health import Probe
    from starter.http import start_http_intake

    monkeypatch.setenv(PASSWORD_ENV, "wrong")
    stack = await make_stack(imap_config(dovecot, user))
    auth.add_user(stack.store, "ops-admin", "admin", None)
    headers = {"Authorization": f"Bearer {auth.create_token(stack.store, 'ops-admin')}"}
    server = await start_http_intake(
        stack.client, stack.store, token="intake-token", port=0, probe=Probe(stack.store, stack.client)
    )
    try:
        async with (
            fetching(stack, backoff_initial=0.2, backoff_max=0.5),
            httpx.AsyncClient(base_url=server.url) as http,
        ):
            await eventually(lambda: (p := position_row(stack)) and p.status == "login_failed", what="login_failed")
            res = await http.get("/api/v1/mailboxes", headers=headers)
            assert res.status_code == 200, res.text
            [support] = [m for m in res.json() if m["address"] == SUPPORT]
            [state] = support["imap"]
            assert (state["folder"], state["status"], state["fetched"]) == ("INBOX", "login_failed", 0)
            assert "AUTHENTICATIONFAILED" in state["last_error"] and state["last_error_at"]
            assert all(m["imap"] is None for m in res.json() if m["address"] != SUPPORT)
            ready = await http.get("/readyz")
            assert ready.status_code == 503
            assert f"IMAP {SUPPORT} (INBOX): login_failed:" in ready.text and "AUTHENTICATIONFAILED" in ready.text
    finally:
        await server.stop()
