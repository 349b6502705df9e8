"""HTTP intake for webhook integrations: ``POST /v1/emails`` with a raw RFC 5322 message.

- ``Content-Type: message/rfc822``, the message bytes as the body (else 415);
- ``X-Envelope-To``: envelope recipients, comma-separated and/or repeated (how Bcc is seen);
- ``Authorization: Bearer <token>`` (else 401); larger than ``intake.max_message_bytes``: 413;
- ``202 {"workflow_id", "email_id", "duplicate"}`` only after the bytes are stored and the
  workflow started, like SMTP's 250; ``503`` with ``Retry-After`` when the store or Temporal
  is down or does not answer within ``intake.submit_timeout_seconds`` (retry).
- ``GET /v1/emails/{id}``: 404 for any id that names no email (huge or negative included).
- Every answer of 400 or more is one INFO line (method, path, status), no traceback.

The same server serves the HTTP API, ``/api/v1/...`` (starter/api.py), with per-user tokens.
The OpenAPI document of both is served at ``/openapi.json`` and browsable at ``/api/docs``;
``/healthz``, ``/readyz`` and ``/metrics`` are routedesk/health.py's.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import MutableMapping
from email.utils import getaddresses
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from temporalio.client import Client

from routedesk import web
from routedesk.health import Probe, add_health_routes
from routedesk.operations import Context
from routedesk.store import Store
from starter.api import api_router, install_error_handlers
from starter.bounded import BoundedSubmitter, log_submit_failure

log = logging.getLogger("routedesk.http")

RFC822 = "message/rfc822"
MAX_ROW_ID = 2**63 - 1  # SQL's BIGINT: a larger id cannot name a row, and SQLite cannot bind it
RETRY_AFTER = {"Retry-After": "5"}


class Accepted(BaseModel):
    workflow_id: str
    email_id: int
    duplicate: bool  # the same Message-ID (or bytes) was submitted before: same workflow


class EmailState(BaseModel):
    workflow_id: str
    email_id: int
    status: str  # received, accepted, threaded, rejected, ignored, held
    reason: str | None = None
    case_number: str | None = None


class Problem(BaseModel):
    detail: str


def envelope_recipients(values: list[str]) -> list[str]:
    return [addr.strip().lower() for _, addr in getaddresses(values) if "@" in addr]


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]


class LogRefusals:
    """ASGI middleware: each answer of 400 or more is one INFO line, whoever raised it."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def logged(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] >= 400:
                client = scope.get("client") or ("?",)
                log.info("http: %s %s %s answered %s", client[0], scope["method"], scope["path"], message["status"])
            await send(message)

        await self.app(scope, receive, logged)


def create_app(
    client: Client,
    store: Store,
    *,
    token: str,
    max_message_bytes: int = 25 * 1024 * 1024,
    submit_timeout: float = 10,
    task_queue: str | None = None,
    id_prefix: str | None = None,
    probe: Probe | None = None,
) -> FastAPI:
    if not token:
        raise ValueError("the HTTP intake needs a bearer token")
    submitter = BoundedSubmitter(client, store, timeout=submit_timeout, task_queue=task_queue, id_prefix=id_prefix)
    app = FastAPI(
        title="routedesk",
        version="1",
        description="Submit raw emails for routing (`/v1/emails`, the intake token): every channel "
        "starts the same durable workflow and is idempotent on the Message-ID. Operate routing "
        "(`/api/v1/...`, a user's token from `routedesk token create NAME`).",
        docs_url="/api/docs",
        redoc_url=None,
    )
    app.add_middleware(LogRefusals)
    app.state.stopping = False
    ctx = Context(store=store, client=client, task_queue=task_queue, id_prefix=id_prefix)
    install_error_handlers(app)
    app.include_router(api_router(ctx, lambda: bool(app.state.stopping)))
    bearer = HTTPBearer(auto_error=False)

    # A plain default, not Annotated: with postponed annotations FastAPI cannot see `bearer`.
    def authorize(creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:  # noqa: B008
        given = creds.credentials if creds is not None else ""
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    errors: dict[int | str, dict[str, Any]] = {
        401: {"model": Problem, "description": "missing or wrong bearer token"},
        503: {"model": Problem, "description": "the case store or Temporal is unavailable; retry"},
    }

    @app.post(
        "/v1/emails",
        status_code=202,
        response_model=Accepted,
        dependencies=[Depends(authorize)],
        summary="Submit a raw email for routing",
        responses={
            **errors,
            400: {"model": Problem, "description": "empty body"},
            413: {"model": Problem, "description": "larger than intake.max_message_bytes"},
            415: {"model": Problem, "description": "Content-Type is not message/rfc822"},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {RFC822: {"schema": {"type": "string", "format": "binary"}}},
            },
            "parameters": [
                {
                    "name": "X-Envelope-To",
                    "in": "header",
                    "required": False,
                    "description": "Envelope recipients (comma-separated, repeatable); "
                    "Bcc recipients are only visible here",
                    "schema": {"type": "string"},
                }
            ],
        },
    )
    async def post_email(request: Request) -> JSONResponse:
        ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if ctype != RFC822:
            raise HTTPException(415, f"Content-Type must be {RFC822}, not {ctype or 'missing'}")
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_message_bytes:
            raise HTTPException(413, f"message larger than {max_message_bytes} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_message_bytes:
                raise HTTPException(413, f"message larger than {max_message_bytes} bytes")
        if not body:
            raise HTTPException(400, "empty body: send the raw message")
        envelope = envelope_recipients(request.headers.getlist("x-envelope-to"))
        try:
            sub = await submitter.submit(bytes(body), source="http", envelope_to=envelope)
        except Exception as exc:
            log_submit_failure(log, "http", exc)
            raise HTTPException(
                503,
                "could not store the message or start its workflow; retry",
                headers=RETRY_AFTER,
            ) from None
        accepted = Accepted(workflow_id=sub.workflow_id, email_id=sub.email_id, duplicate=not sub.new_email)
        return JSONResponse(
            accepted.model_dump(),
            status_code=202,
            headers={"Location": f"/v1/emails/{sub.email_id}"},
        )

    @app.get(
        "/v1/emails/{email_id}",
        response_model=EmailState,
        dependencies=[Depends(authorize)],
        summary="Where a submitted email stands",
        responses={**errors, 404: {"model": Problem, "description": "no such email"}},
    )
    async def get_email(email_id: int) -> EmailState:
        if not 1 <= email_id <= MAX_ROW_ID:
            raise HTTPException(404, f"no email {email_id}")

        def read() -> EmailState | None:
            found = store.email_with_case_number(email_id)
            if found is None:
                return None
            email, case_number = found
            return EmailState(
                workflow_id=email.workflow_id or "",
                email_id=email_id,
                status=email.status,
                reason=email.reason,
                case_number=case_number,
            )

        try:
            state = await asyncio.wait_for(asyncio.to_thread(read), submit_timeout)
        except Exception as exc:
            log_submit_failure(log, "http", exc)
            raise HTTPException(503, "the case store is unavailable; retry", headers=RETRY_AFTER) from None
        if state is None:
            raise HTTPException(404, f"no email {email_id}")
        return state

    add_health_routes(app, probe)  # /healthz; /readyz and /metrics with a probe
    return app


class HttpIntakeServer(web.ServedApp):
    """The HTTP intake and the API (``stop(grace)``: requests in flight get ``grace`` seconds)."""


async def start_http_intake(
    client: Client,
    store: Store,
    *,
    token: str,
    host: str = "127.0.0.1",
    port: int = 8088,
    max_message_bytes: int = 25 * 1024 * 1024,
    submit_timeout: float = 10,
    task_queue: str | None = None,
    id_prefix: str | None = None,
    probe: Probe | None = None,
) -> HttpIntakeServer:
    """Serve the intake API on the running loop; raises OSError when the port is taken.

    The socket is bound and listening before this returns, so clients may connect at once.
    """
    app = create_app(
        client,
        store,
        token=token,
        max_message_bytes=max_message_bytes,
        submit_timeout=submit_timeout,
        task_queue=task_queue,
        id_prefix=id_prefix,
        probe=probe,
    )
    return HttpIntakeServer(*web.serve(app, host, port))
