"""The console in a real browser: Debian's Chromium, headless, driven by Playwright.

Each test runs the console (routedesk/console) on a free port against the test's stack (real
Temporal, real store, real worker; mail arrives through the real SMTP intake). Playwright
never downloads a browser: it launches /usr/bin/chromium (scripts/chromium.sh installs it).
The run writes docs/console-agent.png, docs/console-supervisor.png and docs/console-case.png
(shown in the README).
"""

from __future__ import annotations

import asyncio
import os
import re
import smtplib
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect
from sqlalchemy import insert
from sqlmodel import select

from routedesk import auth
from routedesk.case_tokens import installation_secret, token_key
from routedesk.config import ConsoleSettings, Relay, load_config
from routedesk.console.app import ConsoleServer, start_console
from routedesk.models import AgentNoticeRow, AlertRow, CaseReplyRow, CaseRow, ConsolePasswordRow, utcnow
from routedesk.operations import Context
from routedesk.sessions import set_password
from starter.smtp import SmtpIntakeServer, start_smtp_intake
from tests import configs
from tests.cli import stack_env
from tests.conftest import MakeStack
from tests.imap_support import SUPPORT, fetching, imap_config, position_row, running_dovecot
from tests.intake_support import smtp_sink
from tests.support import EXAMPLES, ROOT, Stack, eventually, example_email, history_events, make_email

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "correct horse battery"
DOCS = ROOT / "docs"


@dataclass
class Console:
    stack: Stack
    server: ConsoleServer
    smtp: SmtpIntakeServer

    @property
    def url(self) -> str:
        return self.server.url

    def send_smtp(self, raw: bytes) -> float:
        """Send over SMTP; returns time.monotonic() of the server's 250 to DATA."""
        with smtplib.SMTP(self.smtp.host, self.smtp.port, timeout=30) as s:
            s.ehlo("test.example")
            s.mail("jane@globex.example")
            s.rcpt("support@acme.example")
            code, _ = s.data(raw)
            answered = time.monotonic()
            assert code == 250
        return answered


@pytest_asyncio.fixture
async def console(stack: Stack) -> AsyncIterator[Console]:
    """The console and the SMTP intake on free ports, with users dave-user and alice-user
    (agents dave and alice) and sam (supervisor), each with PASSWORD."""
    async with console_for(stack) as c:
        yield c


@asynccontextmanager
async def console_for(stack: Stack) -> AsyncIterator[Console]:
    for name, role, agent in (
        ("dave-user", "agent", "dave"),
        ("alice-user", "agent", "alice"),
        ("sam", "supervisor", None),
    ):
        auth.add_user(stack.store, name, role, agent)
        set_password(stack.store, name, PASSWORD)
    ctx = Context(store=stack.store, client=stack.client, task_queue=stack.task_queue, id_prefix=stack.id_prefix)
    server = await start_console(ctx, ConsoleSettings(), host="127.0.0.1", port=0, ui_url="http://127.0.0.1:8233")
    smtp = await start_smtp_intake(
        stack.client, stack.store, port=0, task_queue=stack.task_queue, id_prefix=stack.id_prefix
    )
    try:
        yield Console(stack, server, smtp)
    finally:
        await smtp.stop(1)
        await server.stop(1)


@pytest_asyncio.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Browser]:
    """Debian's Chromium, headless; Playwright gives it a fresh temporary profile."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: run scripts/chromium.sh (apt-get install chromium)", pytrace=False)
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


# A tab in the background (document.hidden) whose notifications are recorded as they are
# shown: headless Chromium has no notification centre to look at.
BACKGROUND_TAB = """
Object.defineProperty(document, 'hidden', {get: () => true});
window.__notified = [];
const RealNotification = window.Notification;
window.Notification = class extends RealNotification {
  constructor(title, options) { super(title, options); window.__notified.push({title, body: options.body}); }
};
"""


async def signed_in(
    browser: Browser, console: Console, user: str, init_script: str | None = None, **kw: Any
) -> tuple[BrowserContext, Page]:
    """A browser context of its own (own cookies) with ``user`` signed in."""
    context = await browser.new_context(base_url=console.url, **kw)
    if init_script is not None:
        await context.grant_permissions(["notifications"], origin=console.url)
        await context.add_init_script(init_script)
    page = await context.new_page()
    await page.goto("/login")
    await page.get_by_label("User name").fill(user)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(re.compile(r"/(agent|supervisor)"))
    return context, page


def writes_screenshots(request: pytest.FixtureRequest) -> bool:
    """One variant writes the committed screenshots (the SQLite one)."""
    return "sqlite" in request.node.name


async def unlabelled_controls(page: Page) -> list[str]:
    """Visible inputs, selects and buttons without a label, aria-label or text."""
    result: list[str] = await page.evaluate(
        """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea, button')]
            .filter(el => el.offsetParent !== null)
            .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                          && !(el.tagName === 'BUTTON' && el.textContent.trim()))
            .map(el => el.outerHTML.slice(0, 80))"""
    )
    return result


# --- sign-in ------------------------------------------------------------------------------


async def test_sign_in_and_a_refused_sign_in(console: Console, browser: Browser) -> None:
    context = await browser.new_context(base_url=console.url)
    page = await context.new_page()
    await page.goto("/agent/dave")
    await expect(page).to_have_url(re.compile(r"/login\?next="))  # not signed in: sent to sign in
    await page.get_by_label("User name").fill("dave-user")
    await page.get_by_label("Password").fill("not the password")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_have_text("wrong user name or password")
    assert "rd_session" not in {c["name"] for c in await context.cookies()}

    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(re.compile(r"/agent/dave$"))
    await expect(page.get_by_role("heading", level=1)).to_contain_text("Dave")
    cookie = next(c for c in await context.cookies() if c["name"] == "rd_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    # Only the cookie's hash is stored; the password is an argon2 hash.
    with console.stack.store.db.read() as s:
        row = s.get(ConsolePasswordRow, "dave-user")
        assert row is not None and row.password_hash.startswith("$argon2id$") and PASSWORD not in row.password_hash
        assert cookie["value"] not in str(s.exec(select(auth.UserRow)).all())

    await page.get_by_role("button", name="Sign out").click()
    await expect(page).to_have_url(re.compile(r"/login$"))
    await page.goto("/agent/dave")
    await expect(page).to_have_url(re.compile(r"/login\?next="))
    await context.close()


# --- offers pushed, accepted, seen on the board ---------------------------------------------


@pytest.mark.serial  # a latency bound: run alone, not beside another test process
async def test_an_offer_is_pushed_within_a_second_of_the_smtp_250_and_accepting_shows_on_the_board(
    console: Console, browser: Browser, request: pytest.FixtureRequest
) -> None:
    agent_ctx, agent = await signed_in(browser, console, "dave-user", viewport={"width": 1280, "height": 800})
    boss_ctx, boss = await signed_in(browser, console, "sam", viewport={"width": 1280, "height": 800})
    await expect(agent.locator("#no-offer")).to_be_visible()
    await expect(boss.locator("#queues-board")).to_be_visible()
    # Both pages have their event stream open before the mail arrives.
    await expect(agent.locator("body[data-live='1']")).to_have_count(1)
    await expect(boss.locator("body[data-live='1']")).to_have_count(1)
    await boss.evaluate("window.__notReloaded = true")

    # Jane (Globex) prefers dave: the case is offered to him.
    answered = await asyncio.to_thread(console.send_smtp, example_email("03-key-account-outage.eml"))
    offer = agent.locator("article.offer[data-offer='CASE-000001']")
    await offer.wait_for(state="visible", timeout=5000)
    shown = time.monotonic()
    assert shown - answered < 1.0, f"the offer appeared {shown - answered:.2f}s after the SMTP 250"
    # Subject, contact, priority, queue, first lines of the email and a countdown.
    await expect(offer.locator(".subject")).to_have_text(re.compile(r"\S"))
    await expect(offer).to_contain_text("globex-jane")
    await expect(offer.locator(".prio")).to_have_text("Urgent")
    await expect(offer).to_contain_text("vip")
    body = console.stack.emails()[0].body_text or ""
    await expect(offer.locator(".first-lines")).to_contain_text(body.strip().splitlines()[0].strip())
    await expect(offer.locator(".countdown")).to_have_text(re.compile(r"^(1m \d\ds|\d+s)$"))
    # The supervisor's agents board shows dave's live offer, without a reload.
    await expect(boss.locator("tr[data-agent='dave']")).to_contain_text("CASE-000001")
    assert await unlabelled_controls(agent) == []
    if writes_screenshots(request):
        await agent.screenshot(path=str(DOCS / "console-agent.png"), full_page=True)

    # Keyboard: Accept has the focus; "a" accepts.
    await expect(agent.locator("#accept")).to_be_focused()
    await agent.keyboard.press("a")
    await expect(agent.locator(".notice")).to_contain_text("CASE-000001 accepted")
    await expect(agent.locator("details.mycase")).to_contain_text("CASE-000001")

    # The board, open all along, shows the case assigned to dave.
    row = boss.locator("#recent-cases tr[data-case='CASE-000001']")
    await expect(row.locator(".status")).to_have_text("assigned")
    await expect(row).to_contain_text("dave")
    await expect(boss.locator("tr[data-agent='dave'] td.num")).to_have_text("1/3")
    assert await boss.evaluate("window.__notReloaded === true")
    assert await unlabelled_controls(boss) == []
    if writes_screenshots(request):
        await boss.screenshot(path=str(DOCS / "console-supervisor.png"), full_page=True)
    case = console.stack.cases()[0]
    assert (case.status, case.assigned_agent_id) == ("assigned", "dave")

    # A phone-sized viewport: nothing wider than the screen.
    await agent.set_viewport_size({"width": 390, "height": 844})
    await agent.reload()
    assert await agent.evaluate("document.documentElement.scrollWidth") <= 390
    await boss.set_viewport_size({"width": 390, "height": 844})
    await boss.reload()
    assert await boss.evaluate("document.documentElement.scrollWidth") <= 390
    await agent_ctx.close()
    await boss_ctx.close()


async def test_decline_with_a_reason_goes_to_the_next_preferred_agent(console: Console, browser: Browser) -> None:
    dave_ctx, dave = await signed_in(browser, console, "dave-user")
    # Alice's tab is in the background: the offer also raises a browser notification.
    alice_ctx, alice = await signed_in(browser, console, "alice-user", init_script=BACKGROUND_TAB)
    await expect(alice.locator("body[data-live='1']")).to_have_count(1)
    await asyncio.to_thread(console.send_smtp, example_email("03-key-account-outage.eml"))
    await dave.locator("article.offer[data-offer='CASE-000001']").wait_for(timeout=10000)

    # Keyboard: "d" goes to the reason, Enter declines.
    await dave.keyboard.press("d")
    await expect(dave.get_by_label("Reason for declining")).to_be_focused()
    await dave.keyboard.type("on a call with another key account")
    await dave.keyboard.press("Enter")
    await expect(dave.locator(".notice")).to_contain_text("CASE-000001 declined")
    await expect(dave.locator("#no-offer")).to_be_visible()

    # Alice, next preferred agent of Jane, gets it pushed to her open page.
    await alice.locator("article.offer[data-offer='CASE-000001']").wait_for(timeout=10000)
    notified = await alice.evaluate("window.__notified")
    assert [n["title"] for n in notified] == ["New Urgent offer CASE-000001"] and "globex-jane" in notified[0]["body"]
    offers = [(o.agent_id, o.status, o.reason) for o in console.stack.offers()]
    assert offers[0][:2] == ("dave", "declined") and offers[0][2] and "another key account" in offers[0][2]
    assert offers[1][:2] == ("alice", "live")
    await alice.get_by_role("button", name=re.compile("^Accept")).click()
    await expect(alice.locator(".notice")).to_contain_text("accepted")

    # The case page explains it: the trace timeline names the decline, its reason, the next offer.
    boss_ctx, boss = await signed_in(browser, console, "sam")
    await boss.goto("/cases/CASE-000001")
    timeline = boss.locator("#trace-round-1")
    await expect(timeline.locator("li", has_text="dave").filter(has_text="declined")).to_contain_text(
        "on a call with another key account"
    )
    await expect(timeline).to_contain_text("offered preferred agent #2")
    await expect(timeline).to_contain_text("decline for dave: on a call with another key account by dave-user (agent)")
    await expect(timeline).to_contain_text("accept for alice by alice-user (agent)")
    await expect(boss.locator("#case-agent")).to_have_text("alice")
    link = boss.get_by_role("link", name=re.compile(console.stack.id_prefix))
    assert "/namespaces/default/workflows/" in (await link.first.get_attribute("href") or "")
    for ctx in (dave_ctx, alice_ctx, boss_ctx):
        await ctx.close()


# --- refusals (no browser needed: the HTTP answers are what matters) -------------------------


@asynccontextmanager
async def http_session(
    console: Console, user: str, password: str = PASSWORD
) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """An HTTP client signed in as ``user`` and the session's CSRF token (from the page)."""
    async with httpx.AsyncClient(base_url=console.url, timeout=30) as http:
        yield await _sign_in(http, user, password)


async def _sign_in(http: httpx.AsyncClient, user: str, password: str) -> tuple[httpx.AsyncClient, str]:
    page = (await http.get("/login")).text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token
    res = await http.post("/login", data={"username": user, "password": password, "csrf_token": token.group(1)})
    assert res.status_code == 303, res.text
    home = await http.get("/", follow_redirects=True)
    csrf = re.search(r'<meta name="csrf-token" content="([^"]+)"', home.text)
    assert csrf and csrf.group(1)
    return http, csrf.group(1)


async def test_a_post_without_the_csrf_token_is_refused_with_403(console: Console) -> None:
    async with http_session(console, "dave-user") as (http, csrf):
        for data in ({"presence": "Away"}, {"presence": "Away", "csrf_token": "forged"}):
            res = await http.post("/agent/dave/presence", data=data)
            assert res.status_code == 403 and "CSRF" in res.text
            assert console.stack.agent("dave").presence == "Available"
        res = await http.post("/agent/dave/presence", data={"presence": "Away", "csrf_token": csrf})
        assert res.status_code == 303 and console.stack.agent("dave").presence == "Away"
        # htmx's way: the header.
        res = await http.post("/agent/dave/presence", data={"presence": "Busy"}, headers={"X-CSRF-Token": csrf})
        assert res.status_code == 303 and console.stack.agent("dave").presence == "Busy"
        # The sign-in form too: without its token, no session.
        async with httpx.AsyncClient(base_url=console.url) as fresh:
            res = await fresh.post("/login", data={"username": "dave-user", "password": PASSWORD})
            assert res.status_code == 403 and "rd_session" not in res.cookies


async def test_an_agent_cannot_open_or_answer_another_agents_offer(console: Console) -> None:
    sub = await console.stack.submit(example_email("03-key-account-outage.eml"))
    await console.stack.wait_offer(sub.workflow_id, "dave")
    handle = console.stack.handle(sub.workflow_id)
    before = len(await history_events(handle))
    async with http_session(console, "alice-user") as (http, csrf):
        assert (await http.get("/agent/dave")).status_code == 403
        assert (await http.get("/agent/dave/offer")).status_code == 403
        assert (await http.get("/events", params={"agent": "dave"})).status_code == 403
        for action in ("accept", "decline"):
            res = await http.post(f"/agent/dave/{action}", data={"case": "CASE-000001", "csrf_token": csrf})
            assert res.status_code == 403 and "acts only for agent alice" in res.text
        assert (await http.get("/cases/CASE-000001")).status_code == 403  # not her case
        assert (await http.get("/supervisor")).status_code == 403
    assert len(await history_events(handle)) == before
    assert [(o.agent_id, o.status) for o in console.stack.offers()] == [("dave", "live")]


async def test_the_agent_page_shows_the_cases_taken_from_the_agent(console: Console) -> None:
    """The notice reassign_if_idle (or an SLA action) writes when it takes a case from its
    agent (tests/test_sla.py makes one for real): the agent's page lists it, no other's."""
    with console.stack.store.db.write() as s:
        s.add(
            AgentNoticeRow(
                agent_id="dave",
                case_id=1,
                case_number="CASE-000042",
                kind="reassigned_idle",
                message="CASE-000042 went back to the queue: dave did nothing on it for 300s",
                idempotency_key="CASE-000042:idle-1",
            )
        )
    async with http_session(console, "dave-user") as (http, _):
        page = (await http.get("/agent/dave")).text
        assert re.search(r'data-notice="CASE-000042">.*?dave did nothing on it for 300s', page)
    async with http_session(console, "alice-user") as (http, _):
        page = (await http.get("/agent/alice")).text
        assert "CASE-000042" not in page and "Taken from me" not in page


async def test_the_links_in_offer_notifications_and_alerts_open_console_pages(console: Console) -> None:
    """A notification's Accept/Decline link (``/agent/offers/N/accept``, see
    tests/test_decline_rules.py) opens the agent's page on the live offer, answering nothing
    by itself; an alert's link (``/cases/CASE-...``) opens the case."""
    sub = await console.stack.submit(example_email("03-key-account-outage.eml"))
    await console.stack.wait_offer(sub.workflow_id, "dave")
    [offer] = console.stack.offers()
    async with httpx.AsyncClient(base_url=console.url) as anonymous:  # signed out: sign-in first, then back
        res = await anonymous.get(f"/agent/offers/{offer.id}/accept")
        assert res.status_code == 303 and res.headers["location"] == f"/login?next=/agent/offers/{offer.id}/accept"
    async with http_session(console, "alice-user") as (http, _):
        assert (await http.get(f"/agent/offers/{offer.id}/accept")).status_code == 403  # not her offer
    async with http_session(console, "dave-user") as (http, csrf):
        for decision in ("accept", "decline"):
            res = await http.get(f"/agent/offers/{offer.id}/{decision}", follow_redirects=True)
            assert res.status_code == 200 and res.url.path == "/agent/dave"
            assert f"CASE-000001 is offered to you: {decision} it below" in res.text
            assert 'id="accept"' in res.text and 'id="decline"' in res.text  # the offer, with its buttons
        assert [(o.agent_id, o.status) for o in console.stack.offers()] == [("dave", "live")]  # a GET answers nothing
        assert (await http.get(f"/agent/offers/{offer.id}/maybe")).status_code == 404
        assert (await http.get("/agent/offers/999999/accept")).status_code == 404
        await http.post("/agent/dave/accept", data={"case": "CASE-000001", "csrf_token": csrf})
        res = await http.get(f"/agent/offers/{offer.id}/accept", follow_redirects=True)
        assert "the offer of CASE-000001 is no longer open (accepted)" in res.text
    async with http_session(console, "sam") as (http, _):
        res = await http.get("/cases/CASE-000001")
        assert res.status_code == 200 and "CASE-000001" in res.text


async def test_sign_in_locks_out_after_five_wrong_passwords(console: Console) -> None:
    for _ in range(5):
        async with httpx.AsyncClient(base_url=console.url) as http:
            token = re.search(r'name="csrf_token" value="([^"]+)"', (await http.get("/login")).text)
            assert token
            res = await http.post("/login", data={"username": "sam", "password": "guess", "csrf_token": token.group(1)})
            assert res.status_code == 401 and "wrong user name or password" in res.text
    async with httpx.AsyncClient(base_url=console.url) as http:
        token = re.search(r'name="csrf_token" value="([^"]+)"', (await http.get("/login")).text)
        assert token
        res = await http.post("/login", data={"username": "sam", "password": PASSWORD, "csrf_token": token.group(1)})
        assert res.status_code == 401 and "locked out for 15 more minute" in res.text
        assert "rd_session" not in res.cookies
    with console.stack.store.db.read() as s:
        row = s.get(ConsolePasswordRow, "sam")
        assert row is not None and row.locked_until is not None
        locked = row.locked_until if row.locked_until.tzinfo else row.locked_until.replace(tzinfo=utcnow().tzinfo)
        assert timedelta(minutes=14) < locked - utcnow() <= timedelta(minutes=15)
    # `routedesk user passwd` sets a new password and lifts the lock-out.
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "routedesk.cli.app", "user", "passwd", "sam", "--password-stdin"],
        input="a brand new secret\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **stack_env(console.stack)},
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    async with http_session(console, "sam", "a brand new secret") as (_, csrf):
        assert csrf


# --- 10,000 waiting items: pages stay small -------------------------------------------------


async def test_pages_stay_small_with_ten_thousand_waiting_items(console: Console) -> None:
    store = console.stack.store
    now = utcnow()
    n = 10_000
    base = 1_000_000
    with store.db.write() as s:
        s.execute(
            insert(CaseRow),
            [
                {
                    "id": base + i,
                    "number": f"CASE-{base + i:06d}",
                    "source_email_id": base + i,
                    "status": "queued",
                    "subject": f"Backlog item {i}",
                    "priority": ("Low", "Medium", "High")[i % 3],
                    "priority_rank": (1, 2, 3)[i % 3],  # Priority.rank: Low 1, Medium 2, High 3
                    "mailbox_address": "support@acme.example",
                    "workstream_id": "support-email",
                    "queue_id": "general",
                    "attributes": {},
                    "excluded_agents": [],
                    "created_at": now - timedelta(seconds=n - i),
                    "queued_at": now - timedelta(seconds=n - i),
                }
                for i in range(n)
            ],
        )
    async with http_session(console, "sam") as (http, _):
        board = await http.get("/supervisor")
        assert board.status_code == 200 and len(board.content) < 300_000
        assert re.search(r'data-queue="general">.*?<td class="num">10000</td>', board.text, re.S)
        pages = {}
        for url in ("/queues/general", "/queues/general?page=2", "/cases", "/cases?page=2&queue=general"):
            res = await http.get(url)
            assert res.status_code == 200 and len(res.content) < 300_000, (url, len(res.content))
            pages[url] = re.findall(r'data-case="(CASE-\d+)"', res.text)
            assert len(pages[url]) == 50, url
        assert "page 2 of 200" in (await http.get("/queues/general?page=2")).text
        assert set(pages["/queues/general"]).isdisjoint(pages["/queues/general?page=2"])
        assert set(pages["/cases"]).isdisjoint(pages["/cases?page=2&queue=general"])
        # Best first: the High ones (every third item, oldest first) lead the queue.
        assert pages["/queues/general"][:2] == [f"CASE-{base + 2:06d}", f"CASE-{base + 5:06d}"]
    # An agent of the queue pages through what they may pick, ten at a time.
    async with http_session(console, "alice-user") as (http, _):

        def picks(page: str) -> list[str]:
            return re.findall(r'aria-label="Pick (CASE-\d+)"', page)

        first = await http.get("/agent/alice")
        assert first.status_code == 200 and len(first.content) < 300_000
        assert "page 1 of 1000" in first.text and "pick_queue=general&amp;pick_page=2" in first.text
        second = await http.get("/agent/alice", params={"pick_queue": "general", "pick_page": 2})
        assert "page 2 of 1000" in second.text
        assert len(picks(first.text)) == len(picks(second.text)) == 10
        assert set(picks(first.text)).isdisjoint(picks(second.text))


# --- supervisor actions: search, assign, resolve, release, reprocess, mailboxes ---------------


async def test_a_supervisor_searches_assigns_resolves_releases_and_reprocesses(make_stack: MakeStack) -> None:
    cfg = load_config(EXAMPLES / "routing.yaml")
    boxes = [
        m.model_copy(update={"verified": False}) if m.address == "sales@acme.example" else m for m in cfg.mailboxes
    ]
    stack = await make_stack(cfg.model_copy(update={"mailboxes": boxes}))
    for agent in ("alice", "bob", "carol"):
        await stack.set_presence(agent, "Offline")
    waiting = await stack.submit(make_email(subject="Question about opening hours", sender="pat@customer.example"))
    await stack.wait_stage(waiting.workflow_id, "waiting_for_agent")
    number = (await stack.status(waiting.workflow_id)).case_number
    held = await stack.submit(make_email(subject="Quote please", to="sales@acme.example"))
    rejected = await stack.submit(make_email(subject="Lost mail", to="nobody@elsewhere.example"))

    def email_status(email_id: int) -> str:
        return next(e.status for e in stack.emails() if e.id == email_id)

    await eventually(lambda: email_status(held.email_id) == "held", what="the held email")
    await eventually(lambda: email_status(rejected.email_id) == "rejected", what="the rejected email")

    async with console_for(stack) as console, http_session(console, "sam") as (http, csrf):
        for params in ({"subject": "opening"}, {"sender": "pat@customer"}, {"number": number}, {"queue": "general"}):
            found = re.findall(r'data-case="(CASE-\d+)"', (await http.get("/cases", params=params)).text)
            assert found == [number], params
        assert (
            re.findall(r'data-case="(CASE-\d+)"', (await http.get("/cases", params={"subject": "nothing"})).text) == []
        )

        res = await http.post(f"/cases/{number}/assign", data={"agent_id": "erin", "csrf_token": csrf})
        assert res.status_code == 303, res.text
        assert [(c.number, c.assigned_agent_id) for c in stack.cases() if c.number == number] == [(number, "erin")]
        page = (await http.get(f"/cases/{number}")).text
        assert "assigned to erin by sam (supervisor)" in page and f"/workflows/{waiting.workflow_id}" in page
        res = await http.post(f"/cases/{number}/resolve", data={"csrf_token": csrf})
        assert res.status_code == 303 and next(c.status for c in stack.cases() if c.number == number) == "resolved"

        mail = (await http.get("/mail")).text
        assert f'name="email_id" value="{held.email_id}"' in mail and f"/mail/{rejected.email_id}/reprocess" in mail
        res = await http.post("/mail/release", data={"email_id": str(held.email_id), "csrf_token": csrf})
        assert res.status_code == 303
        await eventually(lambda: email_status(held.email_id) == "accepted", what="the released email's case")
        res = await http.post(
            f"/mail/{rejected.email_id}/reprocess",
            data={"envelope_to": "support@acme.example", "csrf_token": csrf},
        )
        assert res.status_code == 303
        await eventually(lambda: email_status(rejected.email_id) == "accepted", what="the reprocessed email's case")

        boxes_page = (await http.get("/mailboxes")).text
        row = re.search(r"sales@acme\.example.*?</tr>", boxes_page, re.S)
        assert row and "<td>no</td>" in row.group(0)


# --- replies from the case, SLA, waiting on the customer (issues 18, 19) ----------------------


def case_row(stack: Stack, number: str) -> CaseRow:
    return next(c for c in stack.cases() if c.number == number)


async def test_the_agent_replies_from_the_case_page_and_sees_it_sent_with_the_sla_shown(
    make_stack: MakeStack, browser: Browser, request: pytest.FixtureRequest
) -> None:
    cfg = load_config(EXAMPLES / "routing.yaml")
    with smtp_sink() as sink:
        relayed = cfg.intake.model_copy(update={"relay": Relay(**sink.relay())})
        stack = await make_stack(cfg.model_copy(update={"intake": relayed}))
        async with console_for(stack) as console:
            # Jane (Globex, a key account: SLA policy key-accounts) is offered to dave; he accepts.
            sub = await stack.submit(example_email("03-key-account-outage.eml"))
            await stack.wait_offer(sub.workflow_id, "dave")
            assert await stack.respond(sub.workflow_id, "dave", "accept") == "assigned"
            number = case_row(stack, "CASE-000001").number or ""
            context, page = await signed_in(browser, console, "dave-user", viewport={"width": 1280, "height": 800})
            await page.goto(f"/cases/{number}")
            await expect(page.locator("body[data-live='1']")).to_have_count(1)

            # SLA: the policy, first response met (accepted), resolution due in under 8h.
            await expect(page.locator("#sla-policy")).to_have_text("key-accounts")
            await expect(page.locator("#sla-first-response")).to_contain_text("met ")
            await expect(page.locator("#sla-resolution")).to_contain_text(re.compile(r"UTC \(in [0-7]h \d+m\)"))
            await expect(page.locator("#sla-breaches")).to_have_text("none")

            # Waiting on the customer: on, shown, and off again.
            await page.get_by_role("button", name="Waiting on customer: off").click()
            await expect(page.locator(".notice")).to_have_text(f"{number} waits on the customer")
            await expect(page.locator("#sla-paused")).to_contain_text("waiting on the customer since")
            assert case_row(stack, number).waiting_since is not None
            await page.get_by_role("button", name="Waiting on customer: on").click()
            await expect(page.locator(".notice")).to_have_text(f"{number} no longer waits on the customer")
            assert case_row(stack, number).waiting_since is None

            # The reply: queued at once, through the relay, then shown sent without a reload.
            await page.evaluate("window.__notReloaded = true")
            await page.get_by_label("Reply", exact=True).fill("We are looking into the outage now.")
            await page.get_by_role("button", name="Send").click()
            await expect(page.locator(".notice")).to_contain_text("reply to jane@globex.example")
            await page.evaluate("window.__notReloaded = true")
            delivered = await eventually(lambda: sink.received(), what="the reply at the relay")
            msg = delivered[0].message
            with stack.store.db.read() as s:
                secret = installation_secret(s)
            assert secret is not None
            assert msg["Subject"].endswith(f"[{number}:{token_key(secret, number)}]")
            assert msg.get_content().strip() == "We are looking into the outage now."
            reply = page.locator("#thread li[data-reply]")
            await expect(reply.locator(".reply-status")).to_have_text("sent", timeout=10000)
            await expect(reply).to_contain_text("reply by dave to jane@globex.example")
            # In the thread after Jane's email.
            await expect(page.locator("#thread > li")).to_have_count(2)
            assert await page.locator("#thread > li").last.get_attribute("data-reply") is not None
            assert await page.evaluate("window.__notReloaded === true")
            assert await unlabelled_controls(page) == []
            if writes_screenshots(request):
                await page.screenshot(path=str(DOCS / "console-case.png"), full_page=True)
            await context.close()

            # A supervisor: in their own name by default, or in the case's agent's name if chosen.
            async with http_session(console, "sam") as (http, csrf):
                for author in ("self", "agent:dave"):
                    data = {"body": f"From sam as {author}", "author": author, "csrf_token": csrf}
                    res = await http.post(f"/cases/{number}/reply", data=data)
                    assert res.status_code == 303, res.text
            with stack.store.db.read() as s:
                rows = s.exec(select(CaseReplyRow).order_by(CaseReplyRow.id)).all()  # type: ignore[arg-type]
            assert [(r.agent_id, r.by_supervisor, r.written_by) for r in rows[1:]] == [
                ("sam", True, "sam (supervisor)"),
                ("dave", False, "sam (supervisor)"),
            ]


async def test_reply_refusals_show_the_operations_message(console: Console) -> None:
    """Another agent: 403 with the operation's line; no relay configured: 409; nothing recorded."""
    sub = await console.stack.submit(example_email("03-key-account-outage.eml"))
    await console.stack.wait_offer(sub.workflow_id, "dave")
    assert await console.stack.respond(sub.workflow_id, "dave", "accept") == "assigned"
    async with http_session(console, "alice-user") as (http, csrf):
        res = await http.post("/cases/CASE-000001/reply", data={"body": "Hi", "csrf_token": csrf})
        assert res.status_code == 403 and "alice-user (agent) may not reply" in res.text
        res = await http.post("/cases/CASE-000001/waiting", data={"on": "1", "csrf_token": csrf})
        assert res.status_code == 403 and "only its assigned agent or a supervisor" in res.text
    async with http_session(console, "sam") as (http, csrf):
        page = (await http.get("/cases/CASE-000001")).text
        assert 'id="reply-author"' in page and 'value="agent:dave"' in page
        res = await http.post("/cases/CASE-000001/reply", data={"body": "Hi", "csrf_token": ""})
        assert res.status_code == 403 and "CSRF" in res.text
        res = await http.post("/cases/CASE-000001/reply", data={"body": "Hi", "csrf_token": csrf})
        assert res.status_code == 409 and "relay" in res.text and "Traceback" not in res.text
    with console.stack.store.db.read() as s:
        assert s.exec(select(CaseReplyRow)).all() == []
    assert case_row(console.stack, "CASE-000001").waiting_since is None


async def test_case_lists_show_sla_due_breach_and_no_eligible_agent(console: Console) -> None:
    stack = console.stack
    sub = await stack.submit(example_email("03-key-account-outage.eml"))
    await stack.wait_offer(sub.workflow_id, "dave")
    # A breach and a no-eligible-agent mark as the SLA timers and the dispatcher write them.
    with stack.store.db.write() as s:
        row = s.exec(select(CaseRow).where(CaseRow.number == "CASE-000001")).one()
        due = row.sla_due_at
        row.sla_breaches = [
            {
                "round": 1,
                "target": "first_response",
                "kind": "violation",
                "at": utcnow().isoformat(),
                "due": utcnow().isoformat(),
            }
        ]
        row.no_eligible_agent_at = utcnow()
        s.add(row)
    assert due is not None
    async with http_session(console, "sam") as (http, _):
        for url in ("/cases", "/supervisor", "/queues/vip"):
            text = (await http.get(url)).text
            cells = re.search(r'data-case="CASE-000001".*?</tr>', text, re.S)
            assert cells, url
            due_cell = re.search(r'<td class="sla-due">(.*?)</td>', cells.group(0), re.S)
            assert due_cell and f"{due:%Y-%m-%d %H:%M} UTC (in " in due_cell.group(1), url
            assert "breached" in cells.group(0) and "no eligible agent" in cells.group(0), url
        page = (await http.get("/cases/CASE-000001")).text
        assert "first response violated" in page and "no eligible agent" in page


# --- supervisor alerts, live (issue 17) -------------------------------------------------------


async def test_a_new_alert_appears_on_the_open_board_without_a_reload(console: Console, browser: Browser) -> None:
    context, boss = await signed_in(browser, console, "sam")
    await expect(boss.locator("#alerts-board")).to_contain_text("No alerts.")
    await expect(boss.locator("body[data-live='1']")).to_have_count(1)
    await boss.evaluate("window.__notReloaded = true")
    with console.stack.store.db.write() as s:
        for i, kind in ((1, "waiting_too_long"), (2, "no_eligible_agent")):
            s.add(
                AlertRow(
                    case_id=i,
                    case_number=f"CASE-00000{i}",
                    kind=kind,
                    detail=f"detail {i}",
                    queue_id="general",
                    created_at=utcnow() + timedelta(seconds=i),
                )
            )
    rows = boss.locator("#alerts-board tr[data-alert]")
    await expect(rows).to_have_count(2)
    await expect(rows.first).to_contain_text("CASE-000002")  # newest first
    await expect(rows.first).to_contain_text("no eligible agent")
    await expect(rows.first).to_contain_text("detail 2")
    assert await rows.first.get_by_role("link").get_attribute("href") == "/cases/CASE-000002"
    assert await boss.evaluate("window.__notReloaded === true")
    await context.close()


# --- IMAP status on /mailboxes (issue 19) ------------------------------------------------------


async def test_a_mailbox_whose_imap_login_fails_shows_it_on_the_mailboxes_page(
    make_stack: MakeStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running_dovecot() as dovecot:
        user = dovecot.add_user("s3cret pass")
        monkeypatch.setenv("RD_TEST_IMAP_PASSWORD", "wrong")
        stack = await make_stack(imap_config(dovecot, user))
        async with (
            fetching(stack, backoff_initial=0.2, backoff_max=0.5),
            console_for(stack) as console,
            http_session(console, "sam") as (http, _),
        ):
            await eventually(lambda: (p := position_row(stack)) and p.status == "login_failed", what="login_failed")
            page = (await http.get("/mailboxes")).text
            row = re.search(re.escape(SUPPORT) + r".*?</tr>", page, re.S)
            assert row, page
            assert 'class="imap-login_failed">login failed</span>' in row.group(0)
            assert "AUTHENTICATIONFAILED" in row.group(0)


async def test_a_uidvalidity_change_shows_on_the_mailboxes_page(make_stack: MakeStack) -> None:
    """tests/test_imap.py changes a real folder's UIDVALIDITY; here, what the page says of it
    (the position as the fetcher records it; no server needed to render it)."""
    from routedesk import imap_positions
    from routedesk.config import ImapSettings

    cfg = load_config(EXAMPLES / "routing.yaml")
    box = cfg.mailbox(SUPPORT)
    assert box is not None
    box.imap = ImapSettings.model_validate({"host": "imap.invalid", "username": "support", "password_env": "X"})
    stack = await make_stack(cfg)
    imap_positions.open_position(stack.store, SUPPORT, "INBOX", 1111)
    imap_positions.open_position(stack.store, SUPPORT, "INBOX", 2222)  # the server renumbered the folder
    async with console_for(stack) as console, http_session(console, "sam") as (http, _):
        page = (await http.get("/mailboxes")).text
    row = re.search(re.escape(SUPPORT) + r".*?</tr>", page, re.S)
    assert row, page
    assert "UIDVALIDITY changed 1× (last " in row.group(0)
    assert "from 1111 to 2222): folder read again, duplicates skipped" in row.group(0)


# --- case search by agent and by status (issue 17) --------------------------------------------


async def test_case_search_by_agent_and_by_status_lists_only_those_cases(make_stack: MakeStack) -> None:
    """Five cases: assigned to dave, assigned to alice, offered to alice (live), waiting for an
    agent, and left unassigned (the contact's preferred agent is offline, leave_unassigned)."""
    cfg = configs.assignment_config(
        agents=[
            configs.agent("dave", capacity=1),
            configs.agent("alice", presence="Offline"),
            configs.agent("pref", presence="Offline"),
        ],
        members=["dave", "alice", "pref"],
        contacts=[{"id": "vip", "name": "VIP", "emails": ["vip@customer.example"], "preferred_agents": ["pref"]}],
        fallback="leave_unassigned",
        offer_timeout=60,
    )
    stack = await make_stack(cfg)

    async def submitted(subject: str, sender: str = "pat@customer.example") -> str:
        return (await stack.submit(make_email(subject=subject, sender=sender))).workflow_id

    daves = await submitted("for dave")
    await stack.wait_offer(daves, "dave")
    assert await stack.respond(daves, "dave", "accept") == "assigned"  # dave is full now
    await stack.set_presence("alice", "Available")
    alices = await submitted("for alice")
    await stack.wait_offer(alices, "alice")
    assert await stack.respond(alices, "alice", "accept") == "assigned"
    offered = await submitted("offered to alice")
    await stack.wait_offer(offered, "alice")
    waiting = await submitted("nobody free")  # dave is full, alice holds a live offer
    await stack.wait_stage(waiting, "waiting_for_agent")
    left = await submitted("for the offline preferred agent", sender="vip@customer.example")
    await stack.wait_stage(left, "unassigned")
    number = {wf: (await stack.status(wf)).case_number for wf in (daves, alices, offered, waiting, left)}

    async with console_for(stack) as console, http_session(console, "sam") as (http, _):

        async def listed(**params: str) -> list[str]:
            res = await http.get("/cases", params=params)
            assert res.status_code == 200, (params, res.text)
            return re.findall(r'<tr data-case="(CASE-\d+)">', res.text)

        assert await listed() == [number[left], number[waiting], number[offered], number[alices], number[daves]]
        assert await listed(agent="dave") == [number[daves]]
        assert await listed(agent="alice") == [number[alices]]
        assert await listed(agent="pref") == []
        assert await listed(status="assigned") == [number[alices], number[daves]]
        assert await listed(status="offered") == [number[offered]]
        assert await listed(status="unassigned") == [number[left]]
        assert await listed(status="waiting_for_agent") == [number[waiting]]
        assert await listed(agent="alice", status="assigned") == [number[alices]]

        res = await http.get("/cases", params={"status": "lost"})
        assert res.status_code == 422, res.status_code
        assert "unknown case status &#39;lost&#39;; valid: received, offered, waiting_for_agent, unassigned, " in (
            res.text
        ), res.text
        assert "Traceback" not in res.text and 'data-case="' not in res.text
