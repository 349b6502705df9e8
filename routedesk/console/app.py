"""The console: agents and supervisors in the browser, over the operations layer.

Server-rendered HTML (Jinja2 templates) with htmx and one small script, every asset served
from ``static/`` (no CDN, no build step). Route handlers are thin: they turn a form into one
call of routedesk/operations.py with the signed-in user's :class:`Actor`, and its refusals
into pages (403 not allowed, 404 no such thing, 409 refused by the case's workflow).

Sign-in: ``/login`` checks the password's argon2 hash (routedesk/sessions.py); the
session cookie is HttpOnly and SameSite=Lax, and the store keeps only its hash. Every POST
carries the session's CSRF token (a form field, or the ``X-CSRF-Token`` header htmx sends);
without it, or with a wrong one, the answer is 403 and nothing is done. The sign-in form
itself carries a double-submit token (cookie and field must match).

Push: ``/events`` is one server-sent events stream per page. Like the API's
``/api/v1/agents/{id}/events`` (same poll interval) it reads the agent's live offer every
200 ms and sends ``offer`` / ``offer_closed``; for every page it also reads the store's change
marker (operations.change_marker) and sends ``board`` when it moved, on which the boards
(and the case page's SLA and thread) reload their fragment (htmx). A page's stream starts from
the marker read before the page's data (``?since=``), so nothing that changes in between is
missed. No page polls.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from fastapi import Depends, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from routedesk import auth, sessions, views, web
from routedesk import operations as ops
from routedesk import settings as app_settings
from routedesk.auth import Actor, Role
from routedesk.config import ConsoleSettings, Presence
from routedesk.contracts import CASE_STATUSES
from routedesk.sessions import Session

HERE = Path(__file__).resolve().parent
SESSION_COOKIE = "rd_session"
LOGIN_CSRF_COOKIE = "rd_login_csrf"
# The same interval as the API's offer stream (starter/api.py EVENT_POLL_SECONDS).
EVENT_POLL_SECONDS = 0.2
HEARTBEAT_SECONDS = 15.0
# The change marker is read every this many polls: boards need not be as quick as offers.
BOARD_EVERY = 3
# The session is checked again every this many polls (3 s).
SESSION_EVERY = 15
FIRST_LINES = 6
PAGE_SIZE = 50
PICK_PAGE = 10  # waiting items per queue on the agent's page
RECENT = 15  # latest cases on the boards page
ALERTS = 20  # newest supervisor alerts on the boards page

T = TypeVar("T")


class SignInNeeded(Exception):
    """No valid session: a page redirects to /login, a fragment or action answers 401."""


class PageError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _page_error(exc: Exception) -> PageError | None:
    if isinstance(exc, auth.Forbidden):
        return PageError(403, str(exc))
    if isinstance(exc, ops.OperationError):
        return PageError(exc.status, str(exc))
    if isinstance(exc, TimeoutError):
        return PageError(504, str(exc) or "timed out; try again")
    return None


async def call(fn: Callable[..., T], *args: Any, **kw: Any) -> T:
    """A blocking operation (store reads) off the event loop; refusals become PageError."""
    return await web.off_loop(_page_error, fn, *args, **kw)


async def act(coro: Any) -> Any:
    return await web.translated(_page_error, coro)


def _age(value: datetime | None) -> str:
    """``3m 12s`` since ``value``."""
    if value is None:
        return "-"
    now = datetime.now(UTC)
    seconds = int((now - (value if value.tzinfo else value.replace(tzinfo=UTC))).total_seconds())
    seconds = max(0, seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60}s"
    if seconds < 86400:
        return f"{seconds // 3600}h {seconds % 3600 // 60}m"
    return f"{seconds // 86400}d {seconds % 86400 // 3600}h"


def _iso(value: datetime | None) -> str:
    if value is None:
        return ""
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


def _when(value: datetime | str | None) -> str:
    """A due or met time (a datetime or the ISO text routedesk.views.due_summary gives) as
    ``2026-12-02 05:10 UTC (in 45m 0s)`` or ``(... ago)``."""
    if value is None or value == "":
        return "-"
    try:
        at = datetime.fromisoformat(value) if isinstance(value, str) else value
    except ValueError:  # not a time: shown as stored
        return str(value)
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    now = datetime.now(UTC)
    # _age counts from a past time: a future one is mirrored around now.
    rel = f"in {_age(now - (at - now))}" if at > now else f"{_age(at)} ago"
    return f"{at.astimezone(UTC):%Y-%m-%d %H:%M} UTC ({rel})"


def _thread(detail: ops.CaseDetail) -> list[tuple[str, Any]]:
    """The case's thread: the customer's emails and the replies from the case, oldest first."""

    def at(value: datetime) -> datetime:
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    items: list[tuple[datetime, str, Any]] = [(at(e.received_at), "email", e) for e in detail.emails]
    items += [(at(r.created_at), "reply", r) for r in detail.replies]
    items.sort(key=lambda item: item[0])
    return [(kind, item) for _, kind, item in items]


def _digest(marker: str) -> str:
    """A change marker short enough for a URL (it lists every agent's presence and load)."""
    return hashlib.sha256(marker.encode()).hexdigest()[:20]


def _first_lines(text: str, n: int = FIRST_LINES) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return "\n".join(lines[:n])


def temporal_ui_url(cfg: ConsoleSettings) -> str:
    """Where the case page's workflow links point: the setting, the file, else the dev UI."""
    s = app_settings.get_settings()
    return (s.console_temporal_ui_url or cfg.temporal_ui_url or f"http://127.0.0.1:{s.ui_port}").rstrip("/")


def create_app(ctx: ops.Context, cfg: ConsoleSettings, *, ui_url: str | None = None) -> FastAPI:
    store = ctx.store
    ui = (ui_url or temporal_ui_url(cfg)).rstrip("/")
    namespace = app_settings.get_settings().temporal_namespace or "default"
    app = FastAPI(title="routedesk console", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.stopping = False
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals.update(age=_age, iso=_iso, when=_when, presences=[p.value for p in Presence], Role=Role)
    templates.env.globals["thread"] = _thread
    templates.env.filters["first_lines"] = _first_lines
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    def workflow_url(workflow_id: str) -> str:
        return f"{ui}/namespaces/{quote(namespace, safe='')}/workflows/{quote(workflow_id, safe='')}"

    templates.env.globals["workflow_url"] = workflow_url

    def render(request: Request, name: str, code: int = 200, **context: Any) -> HTMLResponse:
        sess: Session | None = getattr(request.state, "session", None)
        context.setdefault("me", sess.actor if sess else None)
        context.setdefault("csrf", sess.csrf_token if sess else "")
        return templates.TemplateResponse(request, name, context, status_code=code)

    # --- errors as pages ----------------------------------------------------------------

    @app.exception_handler(SignInNeeded)
    async def sign_in_needed(request: Request, _: SignInNeeded) -> Response:
        if request.method == "GET" and "HX-Request" not in request.headers:
            return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)
        return HTMLResponse("sign in first: /login", status_code=401)

    @app.exception_handler(PageError)
    async def page_error(request: Request, exc: PageError) -> Response:
        return render(request, "error.html", exc.status, status=exc.status, message=str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return render(request, "error.html", exc.status_code, status=exc.status_code, message=str(exc.detail))

    # --- who is asking ------------------------------------------------------------------

    async def signed_in(request: Request) -> Session:
        sess = await asyncio.to_thread(sessions.session_for, store, request.cookies.get(SESSION_COOKIE, ""))
        if sess is None:
            raise SignInNeeded()
        request.state.session = sess
        return sess

    async def csrf_checked(request: Request, sess: Session = Depends(signed_in)) -> Session:  # noqa: B008
        """Every state-changing request proves it comes from our page: 403 otherwise."""
        given = request.headers.get("X-CSRF-Token", "")
        if not given:
            form = await request.form()
            value = form.get("csrf_token", "")
            given = value if isinstance(value, str) else ""
        if not given or not hmac.compare_digest(given.encode(), sess.csrf_token.encode()):
            raise PageError(403, "missing or wrong CSRF token: reload the page and try again")
        return sess

    def supervisor(sess: Session) -> Actor:
        if not sess.actor.at_least(Role.SUPERVISOR):
            raise PageError(403, f"{sess.actor.describe()} may not open the supervisor pages")
        return sess.actor

    async def live_url(url: str) -> str:
        """The page's event stream, told the change marker read before the page's data: a
        change after that read (a reply sent a moment after the redirect) reloads the page's
        fragments even when it lands before the stream starts."""
        since = _digest(await asyncio.to_thread(ops.change_marker, store))
        return f"{url}{'&' if '?' in url else '?'}since={since}"

    reader = Depends(signed_in)
    writer = Depends(csrf_checked)

    def back(request: Request, default: str, message: str | None = None) -> RedirectResponse:
        """After an action: back to the page it came from (same site only), with a notice."""
        target = default
        ref = request.headers.get("referer", "")
        base = str(request.base_url)
        if ref.startswith(base):
            target = "/" + ref[len(base) :].split("#", 1)[0]
        if message:
            target = target.split("?", 1)[0] + "?notice=" + quote(message)
        return RedirectResponse(target, status_code=303)

    # --- sign-in ------------------------------------------------------------------------

    @app.get("/login", response_class=HTMLResponse)
    async def login_page(request: Request, next: str = "/") -> Response:  # noqa: A002
        token = secrets.token_urlsafe(24)
        resp = render(request, "login.html", login_csrf=token, next=next if next.startswith("/") else "/")
        resp.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", path="/login")
        return resp

    @app.post("/login", response_class=HTMLResponse)
    async def login(
        request: Request,
        username: str = Form(""),
        password: str = Form(""),
        csrf_token: str = Form(""),
        next: str = Form("/"),  # noqa: A002
    ) -> Response:
        cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
        if not csrf_token or not cookie or not hmac.compare_digest(csrf_token.encode(), cookie.encode()):
            raise PageError(403, "missing or wrong CSRF token: reload the sign-in page and try again")
        try:
            value, _ = await asyncio.to_thread(sessions.sign_in, store, username.strip(), password, cfg)
        except sessions.SignInRefused as exc:
            token = secrets.token_urlsafe(24)
            resp = render(
                request, "login.html", 401, login_csrf=token, next=next, error=str(exc), username=username.strip()
            )
            resp.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", path="/login")
            return resp
        # Only a path of this site: "//host" and "/\\host" would leave it.
        local = next.startswith("/") and not next.startswith(("//", "/\\"))
        done = RedirectResponse(next if local else "/", status_code=303)
        done.set_cookie(
            SESSION_COOKIE,
            value,
            httponly=True,
            samesite="lax",
            path="/",
            max_age=int(cfg.session_hours * 3600),
            secure=request.url.scheme == "https",
        )
        done.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
        return done

    @app.post("/logout")
    async def logout(sess: Session = writer) -> Response:
        await asyncio.to_thread(sessions.sign_out, store, sess)
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(SESSION_COOKIE, path="/")
        return resp

    @app.get("/")
    async def home(sess: Session = reader) -> Response:
        if sess.actor.role is Role.AGENT and sess.actor.agent_id:
            return RedirectResponse(f"/agent/{quote(sess.actor.agent_id)}", status_code=303)
        return RedirectResponse("/supervisor", status_code=303)

    # --- agent view ---------------------------------------------------------------------

    async def offer_context(actor: Actor, agent_id: str) -> dict[str, Any]:
        offers = await call(ops.agent_offers, store, actor, agent_id)
        offer = offers[0] if offers else None
        first = ""
        if offer is not None:
            emails = await call(ops.case_emails, store, actor, offer.case)
            first = emails[0].text if emails else ""
        return {"agent_id": agent_id, "offer": offer, "first_text": first}

    @app.get("/agent/{agent_id}", response_class=HTMLResponse)
    async def agent_page(
        request: Request,
        agent_id: str,
        notice: str | None = None,
        pick_queue: str | None = None,
        pick_page: int = 1,
        sess: Session = reader,
    ) -> Response:
        actor = sess.actor
        events_url = await live_url(f"/events?agent={quote(agent_id)}")  # before reading what it shows
        offer = await offer_context(actor, agent_id)  # 403 for another agent's page
        agents = await call(ops.list_agents, store, actor)
        me = next((a for a in agents if a.id == agent_id), None)
        if me is None:
            raise PageError(404, f"no agent {agent_id!r}")
        mine = await call(ops.list_cases, store, actor, ops.CaseFilter(agent=agent_id, status="assigned", limit=50))
        threads = {c.number: await call(ops.case_emails, store, actor, c.number) for c in mine}
        # Ten waiting items per queue, best first; ``pick_queue``/``pick_page`` page through one.
        pickable = {
            q: await call(ops.queue_page, store, actor, q, max(1, pick_page) if q == pick_queue else 1, PICK_PAGE)
            for q in me.queues
        }
        notices = await call(ops.agent_notices, store, actor, agent_id)
        return render(
            request,
            "agent.html",
            agent=me,
            notices=notices,
            mine=mine,
            threads=threads,
            pickable=pickable,
            notice=notice,
            events_url=events_url,
            **offer,
        )

    @app.get("/agent/offers/{offer_id}/{decision}")
    async def offer_link(offer_id: int, decision: str, sess: Session = reader) -> Response:
        """The Accept and Decline links of an offer notification (webhook, Slack, email).

        A link must not answer by itself (a GET changes nothing; mail scanners follow links):
        it opens the agent's page, which shows the live offer with its Accept and Decline
        buttons, or says the offer is no longer open. Signed out, sign-in comes first."""
        if decision not in ("accept", "decline"):
            raise PageError(404, f"no such answer {decision!r}: the links are .../accept and .../decline")
        offer = await call(ops.find_offer, store, sess.actor, offer_id)  # 403 for another agent's
        if offer.status == "live":
            notice = f"{offer.case} is offered to you: {decision} it below"
        else:
            notice = f"the offer of {offer.case} is no longer open ({offer.status.replace('_', ' ')})"
        return RedirectResponse(f"/agent/{quote(offer.agent_id)}?notice={quote(notice)}", status_code=303)

    @app.get("/agent/{agent_id}/offer", response_class=HTMLResponse)
    async def agent_offer(request: Request, agent_id: str, sess: Session = reader) -> Response:
        return render(request, "_offer.html", **await offer_context(sess.actor, agent_id))

    @app.post("/agent/{agent_id}/presence")
    async def presence(request: Request, agent_id: str, presence: str = Form(...), sess: Session = writer) -> Response:
        res = await act(ops.set_agent_presence(ctx, sess.actor, agent_id, presence))
        return back(request, f"/agent/{quote(agent_id)}", f"presence: {res.presence}")

    @app.post("/agent/{agent_id}/accept")
    async def accept(request: Request, agent_id: str, case: str = Form(...), sess: Session = writer) -> Response:
        await act(ops.accept(ctx, sess.actor, case, agent_id))
        return back(request, f"/agent/{quote(agent_id)}", f"{case} accepted: it is yours")

    @app.post("/agent/{agent_id}/decline")
    async def decline(
        request: Request, agent_id: str, case: str = Form(...), reason: str = Form(""), sess: Session = writer
    ) -> Response:
        await act(ops.decline(ctx, sess.actor, case, agent_id, reason.strip() or None))
        return back(request, f"/agent/{quote(agent_id)}", f"{case} declined")

    @app.post("/agent/{agent_id}/pick")
    async def pick(request: Request, agent_id: str, case: str = Form(...), sess: Session = writer) -> Response:
        await act(ops.pick(ctx, sess.actor, case, agent_id))
        return back(request, f"/agent/{quote(agent_id)}", f"{case} picked: it is yours")

    # --- cases --------------------------------------------------------------------------

    @app.post("/cases/{number}/resolve")
    async def resolve(request: Request, number: str, sess: Session = writer) -> Response:
        await act(ops.resolve(ctx, sess.actor, number))
        return back(request, f"/cases/{quote(number)}", f"{number} resolved")

    @app.post("/cases/{number}/assign")
    async def assign(request: Request, number: str, agent_id: str = Form(...), sess: Session = writer) -> Response:
        supervisor(sess)
        await act(ops.assign(ctx, sess.actor, number, agent_id))
        return back(request, f"/cases/{quote(number)}", f"{number} assigned to {agent_id}")

    @app.get("/cases", response_class=HTMLResponse)
    async def cases(
        request: Request,
        number: str = "",
        sender: str = "",
        subject: str = "",
        queue: str = "",
        agent: str = "",
        status: str = "",
        page: int = 1,
        sess: Session = reader,
    ) -> Response:
        actor = supervisor(sess)
        query = ops.CaseQuery(
            number=number or None,
            sender=sender or None,
            subject=subject or None,
            queue=queue or None,
            agent=agent or None,
            status=status or None,
            page=max(1, page),
            per_page=PAGE_SIZE,
        )
        found = await call(ops.search_cases, store, actor, query)
        queues = await call(ops.list_queues, store, actor)
        agents = await call(ops.list_agents, store, actor)
        params = {k: v for k, v in query.model_dump().items() if v and k not in ("page", "per_page")}
        return render(
            request,
            "cases.html",
            found=found,
            sla=await sla_marks(actor, found.items),
            query=query,
            params=params,
            queues=queues,
            agents=agents,
            statuses=[s.value for s in CASE_STATUSES],
        )

    @app.get("/cases/{number}", response_class=HTMLResponse)
    async def case_page(request: Request, number: str, notice: str | None = None, sess: Session = reader) -> Response:
        actor = sess.actor
        events_url = await live_url("/events")  # before reading what it shows
        detail = await call(ops.show_case, store, actor, number)
        if actor.role is Role.AGENT and detail.case.assigned_agent_id != actor.agent_id:
            raise PageError(403, f"{actor.describe()} may open only their own cases")
        workflows = await call(ops.case_workflows, store, actor, number)
        agents = await call(ops.list_agents, store, actor) if actor.at_least(Role.SUPERVISOR) else []
        rounds: dict[int, list[views.TraceView]] = {}
        for t in detail.trace:
            rounds.setdefault(t.round, []).append(t)
        return render(
            request,
            "case.html",
            d=detail,
            workflows=workflows,
            agents=agents,
            rounds=rounds,
            notice=notice,
            may_change=may_change(actor, detail.case),
            events_url=events_url,
        )

    def may_change(actor: Actor, case: ops.CaseSummary) -> bool:
        """Reply and waiting-on-customer controls: the case's own agent, or a supervisor."""
        own = actor.agent_id is not None and actor.agent_id == case.assigned_agent_id
        return actor.at_least(Role.SUPERVISOR) or own

    @app.get("/cases/{number}/live", response_class=HTMLResponse)
    async def case_live(request: Request, number: str, sess: Session = reader) -> Response:
        """The case's SLA and replies, reloaded on board changes: a reply turns `sent` live."""
        actor = sess.actor
        detail = await call(ops.show_case, store, actor, number)
        if actor.role is Role.AGENT and detail.case.assigned_agent_id != actor.agent_id:
            raise PageError(403, f"{actor.describe()} may open only their own cases")
        return render(request, "_caselive.html", d=detail)

    @app.post("/cases/{number}/reply")
    async def reply(
        request: Request, number: str, body: str = Form(""), author: str = Form("self"), sess: Session = writer
    ) -> Response:
        actor = sess.actor
        if not body.strip():
            raise PageError(422, "the reply is empty: write the text to send")
        if actor.at_least(Role.SUPERVISOR):
            # A supervisor writes in their own name unless they choose the case's agent.
            agent_id = author.removeprefix("agent:") if author.startswith("agent:") else None
            req = ops.ReplyRequest(body=body, agent_id=agent_id, as_supervisor=agent_id is None)
        else:
            req = ops.ReplyRequest(body=body, agent_id=actor.agent_id)
        res = await act(ops.reply_to_case(ctx, actor, number, req))
        return back(request, f"/cases/{quote(number)}", f"reply to {res.to} {res.status}")

    @app.post("/cases/{number}/waiting")
    async def waiting(request: Request, number: str, on: str = Form(...), sess: Session = writer) -> Response:
        res = await act(ops.set_waiting_on_customer(ctx, sess.actor, number, on == "1"))
        return back(request, f"/cases/{quote(number)}", res.message)

    # --- supervisor boards --------------------------------------------------------------

    @app.get("/supervisor", response_class=HTMLResponse)
    async def supervisor_page(request: Request, notice: str | None = None, sess: Session = reader) -> Response:
        actor = supervisor(sess)
        events_url = await live_url("/events")  # before reading what it shows
        queues = await call(ops.list_queues, store, actor)
        agents = await call(ops.list_agents, store, actor)
        recent = await call(ops.search_cases, store, actor, ops.CaseQuery(per_page=RECENT))
        alerts = await call(ops.list_alerts, store, actor, limit=ALERTS)
        return render(
            request,
            "supervisor.html",
            queues=queues,
            agents=agents,
            recent=recent.items,
            sla=await sla_marks(actor, recent.items),
            alerts=alerts,
            notice=notice,
            events_url=events_url,
        )

    async def sla_marks(actor: Actor, items: list[ops.CaseSummary]) -> dict[str, ops.SlaMark]:
        return await call(ops.case_sla_marks, store, actor, [c.number for c in items])

    @app.get("/supervisor/recent", response_class=HTMLResponse)
    async def recent_board(request: Request, sess: Session = reader) -> Response:
        actor = supervisor(sess)
        recent = await call(ops.search_cases, store, actor, ops.CaseQuery(per_page=RECENT))
        return render(request, "_recent.html", recent=recent.items, sla=await sla_marks(actor, recent.items))

    @app.get("/supervisor/alerts", response_class=HTMLResponse)
    async def alerts_board(request: Request, sess: Session = reader) -> Response:
        alerts = await call(ops.list_alerts, store, supervisor(sess), limit=ALERTS)
        return render(request, "_alerts.html", alerts=alerts)

    @app.get("/supervisor/queues", response_class=HTMLResponse)
    async def queues_board(request: Request, sess: Session = reader) -> Response:
        queues = await call(ops.list_queues, store, supervisor(sess))
        return render(request, "_queues.html", queues=queues)

    @app.get("/supervisor/agents", response_class=HTMLResponse)
    async def agents_board(request: Request, sess: Session = reader) -> Response:
        agents = await call(ops.list_agents, store, supervisor(sess))
        return render(request, "_agents.html", agents=agents)

    @app.get("/queues/{queue_id}", response_class=HTMLResponse)
    async def queue_items(request: Request, queue_id: str, page: int = 1, sess: Session = reader) -> Response:
        actor = supervisor(sess)
        found = await call(ops.queue_page, store, actor, queue_id, max(1, page), PAGE_SIZE)
        agents = await call(ops.list_agents, store, actor)
        return render(
            request,
            "queue.html",
            queue_id=queue_id,
            found=found,
            agents=agents,
            params={},
            sla=await sla_marks(actor, found.items),
        )

    # --- mail: held and rejected, mailboxes ---------------------------------------------

    @app.get("/mail", response_class=HTMLResponse)
    async def mail(request: Request, notice: str | None = None, sess: Session = reader) -> Response:
        actor = supervisor(sess)
        held = await call(ops.held_emails, store, actor)
        rejected = await call(ops.list_emails, store, actor, status="rejected", limit=100)
        ignored = await call(ops.list_emails, store, actor, status="ignored", limit=100)
        return render(request, "mail.html", held=held, rejected=rejected + ignored, notice=notice)

    @app.post("/mail/release")
    async def release(request: Request, email_id: int = Form(...), sess: Session = writer) -> Response:
        res = await act(ops.release_emails(ctx, sess.actor, ops.ReleaseRequest(email_ids=[email_id])))
        return back(request, "/mail", f"released email {', '.join(map(str, res.released))}")

    @app.post("/mail/{email_id}/reprocess")
    async def reprocess(
        request: Request, email_id: int, envelope_to: str = Form(""), sess: Session = writer
    ) -> Response:
        to = [a.strip() for a in envelope_to.split(",") if a.strip()]
        res = await act(ops.reprocess(ctx, sess.actor, email_id, envelope_to=to))
        return back(request, "/mail", f"email {email_id} evaluated again in workflow {res.workflow_id}")

    @app.get("/mailboxes", response_class=HTMLResponse)
    async def mailboxes(request: Request, sess: Session = reader) -> Response:
        boxes = await call(ops.list_mailboxes, store, supervisor(sess))
        return render(request, "mailboxes.html", boxes=boxes)

    # --- push ---------------------------------------------------------------------------

    @app.get("/events")
    async def events(
        request: Request, agent: str | None = None, since: str | None = None, sess: Session = reader
    ) -> StreamingResponse:
        actor = sess.actor
        first = await call(ops.agent_offers, store, actor, agent) if agent else []  # 403 before streaming

        async def stream() -> AsyncIterator[str]:
            current: int | None = None
            live = first
            marker = since or _digest(await asyncio.to_thread(ops.change_marker, store))
            idle = 0.0
            tick = 0
            yield ": routedesk console events\nretry: 1000\n\n"
            while not app.state.stopping:
                offer = live[0] if live else None
                if offer is not None and offer.offer_id != current:
                    current = offer.offer_id
                    yield f"event: offer\nid: {offer.offer_id}\ndata: {offer.model_dump_json()}\n\n"
                    idle = 0.0
                elif offer is None and current is not None:
                    yield f"event: offer_closed\ndata: {json.dumps({'offer_id': current})}\n\n"
                    current = None
                    idle = 0.0
                if tick % BOARD_EVERY == 0:
                    now = _digest(await asyncio.to_thread(ops.change_marker, store))
                    if now != marker:
                        marker = now
                        yield "event: board\ndata: {}\n\n"
                        idle = 0.0
                if tick % SESSION_EVERY == 0 and tick:
                    # Signed out (or expired) elsewhere: the stream ends with the session.
                    cookie = request.cookies.get(SESSION_COOKIE, "")
                    if await asyncio.to_thread(sessions.session_for, store, cookie) is None:
                        yield "event: signed_out\ndata: {}\n\n"
                        return
                if idle >= HEARTBEAT_SECONDS:
                    yield ": keep-alive\n\n"
                    idle = 0.0
                if await request.is_disconnected():
                    return
                await asyncio.sleep(EVENT_POLL_SECONDS)  # bounded: the poll interval
                idle += EVENT_POLL_SECONDS
                tick += 1
                if agent:
                    live = await asyncio.to_thread(ops.agent_offers, store, actor, agent)

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )

    return app


class ConsoleServer(web.ServedApp):
    async def stop(self, grace: float = 3.0) -> None:
        await super().stop(grace)


async def start_console(
    ctx: ops.Context,
    cfg: ConsoleSettings,
    *,
    host: str | None = None,
    port: int | None = None,
    ui_url: str | None = None,
) -> ConsoleServer:
    """Serve the console on the running loop (bound before this returns); OSError when the
    port is taken. ROUTEDESK_CONSOLE_HOST / _PORT override the config's console section."""
    s = app_settings.get_settings()
    host = host if host is not None else (s.console_host or cfg.host)
    port = port if port is not None else (s.console_port if s.console_port is not None else cfg.port)
    app = create_app(ctx, cfg, ui_url=ui_url)
    return ConsoleServer(*web.serve(app, host, port))
