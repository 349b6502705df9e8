"""The HTTP API, ``/api/v1/...``: the operations layer (routedesk/operations.py) over JSON.

Served by the HTTP intake's server (starter/http.py); OpenAPI at ``/api/docs``. Every request
carries a user's bearer token (``routedesk token create NAME``); the user's role decides what
they may do (routedesk/auth.py), and every action lands in the case trace with their name.
Errors are ``{"error": "one line a person can act on"}``: 401 no or wrong token, 403 not
allowed for this role, 404 no such thing, 409 refused by the case's workflow, 422 wrong input.

``GET /api/v1/agents/{id}/events`` is a server-sent events stream of the agent's offers: the
stream polls the store's live offer every 200 ms (one indexed read) and sends ``event: offer``
when a new one appears (``offer_closed`` when it ends), so an agent's tool needs no polling.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from routedesk import auth, web
from routedesk import operations as ops
from routedesk.auth import Actor

PREFIX = "/api/v1"
EVENT_POLL_SECONDS = 0.2
HEARTBEAT_SECONDS = 15.0

T = TypeVar("T")


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers


CONFIG_BODY_LIMIT = 1024 * 1024


class ErrorBody(BaseModel):
    error: str


class AnswerBody(BaseModel):
    case: str = Field(description="Case number, e.g. CASE-000001")
    reason: str | None = None


class CaseBody(BaseModel):
    case: str


class AgentBody(BaseModel):
    agent_id: str


class WaitingBody(BaseModel):
    on: bool


class PresenceBody(BaseModel):
    presence: str = Field(description="Available, Busy, Away or Offline")


class PreferredBody(BaseModel):
    agents: list[str] = Field(description="1 to 3 agent ids, in offer order")


class ReprocessBody(BaseModel):
    envelope_to: list[str] = Field(default_factory=list)


ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorBody, "description": d}
    for s, d in {
        401: "missing or wrong bearer token",
        403: "the token's role may not do this",
        404: "no such case, agent, queue, email or mailbox",
        409: "refused by the case's workflow or the store",
        422: "wrong input (e.g. an unknown filter value)",
    }.items()
}


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        where = ".".join(str(x) for x in err.get("loc", ()) if x not in ("body", "query", "path"))
        parts.append(f"{where or 'body'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    """JSON ``{"error": ...}`` under /api/; the intake's routes keep FastAPI's ``detail``."""
    from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, str(exc), exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Any:
        if request.url.path.startswith("/api/"):
            return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))
        return await http_exception_handler(request, exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Any:
        if request.url.path.startswith("/api/"):
            return _error(422, _validation_message(exc))
        return await request_validation_exception_handler(request, exc)


def _translate(exc: Exception) -> ApiError | None:
    if isinstance(exc, auth.Forbidden):
        return ApiError(403, str(exc))
    if isinstance(exc, auth.Unauthenticated):
        return ApiError(401, str(exc), {"WWW-Authenticate": "Bearer"})
    if isinstance(exc, ops.OperationError):
        return ApiError(exc.status, str(exc))
    if isinstance(exc, TimeoutError):
        return ApiError(504, str(exc) or "timed out; retry")
    return None


async def _call(fn: Callable[..., T], *args: Any, **kw: Any) -> T:
    """A blocking operation (store reads) off the event loop, its refusals as ApiError."""
    return await web.off_loop(_translate, fn, *args, **kw)


async def _act(coro: Any) -> Any:
    return await web.translated(_translate, coro)


def api_router(ctx: ops.Context, stopping: Callable[[], bool]) -> APIRouter:
    store = ctx.store
    bearer = HTTPBearer(auto_error=False)

    async def current_actor(creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Actor:  # noqa: B008
        return await _call(auth.authenticate, store, creds.credentials if creds is not None else "")

    who = Depends(current_actor)
    r = APIRouter(prefix=PREFIX, responses=ERRORS)

    @r.get("/me", summary="The token's user and role")
    async def me(actor: Actor = who) -> Actor:
        return actor

    # --- cases ------------------------------------------------------------------------

    @r.get("/cases", summary="Cases, newest first", tags=["cases"])
    async def cases(
        agent: str | None = None,
        queue: str | None = None,
        status: str | None = None,
        limit: int = 200,
        actor: Actor = who,
    ) -> list[ops.CaseSummary]:
        if not 1 <= limit <= 1000:
            raise ApiError(422, "limit: must be between 1 and 1000")
        flt = ops.CaseFilter(agent=agent, queue=queue, status=status, limit=limit)
        return await _call(ops.list_cases, store, actor, flt)

    @r.get("/cases/{case}", summary="A case, its emails, offers and trace", tags=["cases"])
    async def case(case: str, actor: Actor = who) -> ops.CaseDetail:
        return await _call(ops.show_case, store, actor, case)

    @r.get("/cases/{case}/emails", summary="The case's emails with their text", tags=["cases"])
    async def case_emails(case: str, actor: Actor = who) -> list[ops.EmailText]:
        return await _call(ops.case_emails, store, actor, case)

    @r.post("/cases/{case}/assign", summary="Supervisor: assign the case to an agent", tags=["cases"])
    async def assign(case: str, body: AgentBody, actor: Actor = who) -> ops.ActionResult:
        return await _act(ops.assign(ctx, actor, case, body.agent_id))  # type: ignore[no-any-return]

    @r.post("/cases/{case}/resolve", summary="Close the case", tags=["cases"])
    async def resolve(case: str, actor: Actor = who) -> ops.ActionResult:
        return await _act(ops.resolve(ctx, actor, case))  # type: ignore[no-any-return]

    @r.post("/cases/{case}/waiting", summary="Waiting on the customer: SLA timers pause", tags=["cases"])
    async def waiting(case: str, body: WaitingBody, actor: Actor = who) -> ops.WaitingResult:
        return await _act(ops.set_waiting_on_customer(ctx, actor, case, body.on))  # type: ignore[no-any-return]

    # --- agents -----------------------------------------------------------------------

    @r.get("/agents", summary="Agents: presence, load, live offer, queues", tags=["agents"])
    async def agents(actor: Actor = who) -> list[ops.AgentView]:
        return await _call(ops.list_agents, store, actor)

    @r.get("/agents/{agent_id}/offers", summary="The agent's live offer (all with ?all=true)", tags=["agents"])
    async def offers(agent_id: str, all: bool = False, actor: Actor = who) -> list[ops.OfferView]:  # noqa: A002
        return await _call(ops.agent_offers, store, actor, agent_id, include_closed=all)

    @r.get(
        "/agents/{agent_id}/events",
        summary="Server-sent events: `offer` when the agent gets an offer, `offer_closed` when it ends",
        tags=["agents"],
        response_class=StreamingResponse,
    )
    async def events(agent_id: str, request: Request, actor: Actor = who) -> StreamingResponse:
        first = await _call(ops.agent_offers, store, actor, agent_id)  # 403/404 before streaming

        async def stream() -> AsyncIterator[str]:
            current: int | None = None
            live = first
            idle = 0.0
            yield ": offers of agent " + agent_id + "\n\n"
            while not stopping():
                offer = live[0] if live else None
                if offer is not None and offer.offer_id != current:
                    current = offer.offer_id
                    yield f"event: offer\nid: {offer.offer_id}\ndata: {offer.model_dump_json()}\n\n"
                    idle = 0.0
                elif offer is None and current is not None:
                    yield f"event: offer_closed\ndata: {json.dumps({'offer_id': current})}\n\n"
                    current = None
                    idle = 0.0
                elif idle >= HEARTBEAT_SECONDS:
                    yield ": keep-alive\n\n"
                    idle = 0.0
                if await request.is_disconnected():
                    return
                await asyncio.sleep(EVENT_POLL_SECONDS)  # bounded: the poll interval
                idle += EVENT_POLL_SECONDS
                live = await asyncio.to_thread(ops.agent_offers, store, actor, agent_id)

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )

    @r.put("/agents/{agent_id}/presence", summary="Set presence", tags=["agents"])
    async def presence(agent_id: str, body: PresenceBody, actor: Actor = who) -> ops.PresenceResult:
        return await _act(ops.set_agent_presence(ctx, actor, agent_id, body.presence))  # type: ignore[no-any-return]

    @r.post("/agents/{agent_id}/accept", summary="Accept the agent's live offer of a case", tags=["agents"])
    async def accept(agent_id: str, body: CaseBody, actor: Actor = who) -> ops.ActionResult:
        return await _act(ops.accept(ctx, actor, body.case, agent_id))  # type: ignore[no-any-return]

    @r.post("/agents/{agent_id}/decline", summary="Decline the agent's live offer of a case", tags=["agents"])
    async def decline(agent_id: str, body: AnswerBody, actor: Actor = who) -> ops.ActionResult:
        return await _act(ops.decline(ctx, actor, body.case, agent_id, body.reason))  # type: ignore[no-any-return]

    @r.post("/agents/{agent_id}/pick", summary="Take a case from one of the agent's queues", tags=["agents"])
    async def pick(agent_id: str, body: CaseBody, actor: Actor = who) -> ops.ActionResult:
        return await _act(ops.pick(ctx, actor, body.case, agent_id))  # type: ignore[no-any-return]

    # --- queues -------------------------------------------------------------------------

    @r.get("/queues", summary="Queues: waiting items, oldest wait, eligible agents", tags=["queues"])
    async def queues(actor: Actor = who) -> list[ops.QueueView]:
        return await _call(ops.list_queues, store, actor)

    @r.get("/queues/{queue_id}", summary="A queue and its waiting items, best first", tags=["queues"])
    async def queue(queue_id: str, actor: Actor = who) -> ops.QueueDetail:
        return await _call(ops.show_queue, store, actor, queue_id)

    # --- emails, contacts, mailboxes ------------------------------------------------------

    @r.get("/emails", summary="Recent emails and intake's decisions", tags=["emails"])
    async def emails(status: str | None = None, limit: int = 50, actor: Actor = who) -> list[ops.EmailSummary]:
        return await _call(ops.list_emails, store, actor, status=status, limit=limit)

    @r.get("/emails/held", summary="Held emails and why", tags=["emails"])
    async def held(actor: Actor = who) -> list[ops.HeldEmail]:
        return await _call(ops.held_emails, store, actor)

    @r.get("/emails/{email_id}", summary="One email: decision, text, notifications, trace", tags=["emails"])
    async def email(email_id: int, actor: Actor = who) -> ops.EmailDetail:
        return await _call(ops.show_email, store, actor, email_id)

    @r.post("/emails/release", summary="Supervisor: release held emails", tags=["emails"])
    async def release(body: ops.ReleaseRequest, actor: Actor = who) -> ops.ReleaseResult:
        return await _act(ops.release_emails(ctx, actor, body))  # type: ignore[no-any-return]

    @r.post("/emails/{email_id}/reprocess", summary="Supervisor: evaluate an email again", tags=["emails"])
    async def reprocess(email_id: int, body: ReprocessBody, actor: Actor = who) -> ops.ReprocessResult:
        return await _act(ops.reprocess(ctx, actor, email_id, envelope_to=body.envelope_to))  # type: ignore[no-any-return]

    @r.put("/contacts/{contact_id}/preferred", summary="Set preferred agents", tags=["contacts"])
    async def preferred_set(contact_id: str, body: PreferredBody, actor: Actor = who) -> ops.PreferredResult:
        return await _call(ops.set_preferred, store, actor, contact_id, body.agents)

    @r.delete("/contacts/{contact_id}/preferred", summary="Clear preferred agents", tags=["contacts"])
    async def preferred_clear(contact_id: str, actor: Actor = who) -> ops.PreferredResult:
        return await _call(ops.clear_preferred, store, actor, contact_id)

    @r.get("/mailboxes", summary="Routing addresses", tags=["mailboxes"])
    async def mailboxes(actor: Actor = who) -> list[ops.MailboxView]:
        return await _call(ops.list_mailboxes, store, actor)

    @r.post("/mailboxes/{address}/verify", summary="Admin: verify a mailbox, release its held mail", tags=["mailboxes"])
    async def verify(address: str, actor: Actor = who) -> ops.VerifyResult:
        return await _act(ops.verify_mailbox(ctx, actor, address))  # type: ignore[no-any-return]

    # --- replies from the case ------------------------------------------------------------

    @r.post(
        "/cases/{case}/replies",
        summary="Reply to the case's customer (its assigned agent, or a supervisor); delivered in the background",
        tags=["cases"],
        status_code=202,
    )
    async def reply(case: str, body: ops.ReplyRequest, actor: Actor = who) -> ops.ReplyResult:
        return await _act(ops.reply_to_case(ctx, actor, case, body))  # type: ignore[no-any-return]

    @r.get("/cases/{case}/replies", summary="The case's replies and their delivery", tags=["cases"])
    async def replies(case: str, actor: Actor = who) -> list[ops.CaseReplyView]:
        return await _call(ops.case_replies, store, actor, case)

    # --- configuration (the YAML of `routedesk config load`, in the request body) -----------

    yaml_body = {
        "requestBody": {
            "required": True,
            "content": {"application/yaml": {"schema": {"type": "string"}}},
            "description": "The routing configuration, as YAML (or JSON)",
        }
    }

    async def config_text(request: Request) -> str:
        raw = await request.body()
        if len(raw) > CONFIG_BODY_LIMIT:
            raise ApiError(413, f"a configuration is at most {CONFIG_BODY_LIMIT // 1024} KB")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(422, "the configuration must be UTF-8 text") from None

    @r.post("/config", summary="Admin: load a configuration as a new version", tags=["config"], openapi_extra=yaml_body)
    async def config_load(request: Request, actor: Actor = who) -> ops.ConfigLoaded:
        return await _act(ops.load_config_text(ctx, actor, await config_text(request)))  # type: ignore[no-any-return]

    @r.post(
        "/config/diff", summary="What loading a configuration would change", tags=["config"], openapi_extra=yaml_body
    )
    async def config_diff(request: Request, actor: Actor = who) -> dict[str, Any]:
        return await _call(ops.preview_config_text, store, actor, await config_text(request))

    @r.post(
        "/config/whatif",
        summary="A configuration's rules run over the emails of a period: what would route differently",
        tags=["config"],
        openapi_extra=yaml_body,
    )
    async def config_whatif(request: Request, since: str = "7d", actor: Actor = who) -> dict[str, Any]:
        return await _call(ops.whatif_config_text, store, actor, await config_text(request), since)

    @r.get("/config/versions", summary="Loaded configuration versions, oldest first", tags=["config"])
    async def config_versions(actor: Actor = who) -> list[dict[str, Any]]:
        return await _call(ops.config_versions, store, actor)

    @r.get("/alerts", summary="Supervisor: alerts, newest first", tags=["alerts"])
    async def alerts(actor: Actor = who) -> list[ops.AlertView]:
        return await _call(ops.list_alerts, store, actor)

    # --- users and tokens (admin; routedesk user add|list, routedesk token create) -----------

    @r.get("/users", summary="Admin: users, their roles and token counts", tags=["users"])
    async def users(actor: Actor = who) -> list[ops.UserView]:
        return await _call(ops.list_users, store, actor)

    @r.post("/users", summary="Admin: add a user with a role", tags=["users"], status_code=201)
    async def user_add(body: ops.NewUser, actor: Actor = who) -> ops.UserView:
        return await _call(ops.add_user, store, actor, body)

    @r.post(
        "/users/{name}/tokens",
        summary="Admin: a new bearer token for the user, shown in this answer only (stored hashed)",
        tags=["users"],
        status_code=201,
    )
    async def token_create(name: str, actor: Actor = who) -> ops.NewToken:
        return await _call(ops.create_token, store, actor, name)

    return r
