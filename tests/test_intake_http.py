"""HTTP intake (POST /v1/emails) against a real uvicorn server, worker and dev server."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from starter.http import HttpIntakeServer, start_http_intake
from tests.intake_support import case_for, settled
from tests.store_faults import store_locked
from tests.support import Stack, eventually, make_email

TOKEN = "test-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
RFC822 = {"Content-Type": "message/rfc822"}


@asynccontextmanager
async def http_intake(stack: Stack, **kw: Any) -> AsyncIterator[httpx.AsyncClient]:
    server: HttpIntakeServer = await start_http_intake(
        stack.client,
        stack.store,
        token=TOKEN,
        port=0,
        task_queue=stack.task_queue,
        id_prefix=stack.id_prefix,
        **kw,
    )
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            yield http
    finally:
        await server.stop()


async def test_post_returns_202_with_the_workflow_and_makes_a_case(stack: Stack) -> None:
    raw = make_email(subject="Webhook says hi", message_id="http-1@customer.example")
    async with http_intake(stack) as http:
        res = await http.post("/v1/emails", content=raw, headers={**AUTH, **RFC822})
        assert res.status_code == 202, res.text
        body = res.json()
        assert body["workflow_id"].startswith(f"{stack.id_prefix}email-") and body["duplicate"] is False
        # 202 comes after the bytes are stored and the workflow started.
        email = stack.store.email(body["email_id"])
        assert email is not None and (email.source, email.raw) == ("http", raw)
        await stack.handle(body["workflow_id"]).describe()
        case = await case_for(stack, body["email_id"])
        assert case.subject == "Webhook says hi"

        async def numbered() -> Any:
            state = (await http.get(res.headers["Location"], headers=AUTH)).json()
            return state if state.get("case_number") else None

        state = await eventually(numbered, what="the status endpoint to show the case")
        assert (state["status"], state["case_number"]) == ("accepted", case.number)

        again = await http.post("/v1/emails", content=raw, headers={**AUTH, **RFC822})
        assert again.status_code == 202
        assert again.json() == {**body, "duplicate": True}
    assert len(stack.emails()) == 1 and len(stack.cases()) == 1


async def test_missing_or_wrong_token_is_401(stack: Stack) -> None:
    async with http_intake(stack) as http:
        missing = await http.post("/v1/emails", content=make_email(), headers=RFC822)
        wrong = await http.post("/v1/emails", content=make_email(), headers={**RFC822, "Authorization": "Bearer nope"})
        status = await http.get("/v1/emails/1")
    for res in (missing, wrong, status):
        assert res.status_code == 401
        assert res.headers["www-authenticate"] == "Bearer"
    assert stack.emails() == []


async def test_too_large_is_413(stack: Stack) -> None:
    async with http_intake(stack, max_message_bytes=4096) as http:
        big = await http.post("/v1/emails", content=make_email(body="y" * 5000), headers={**AUTH, **RFC822})

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
            for _ in range(5):
                yield b"z" * 1000

        streamed = await http.post("/v1/emails", content=chunks(), headers={**AUTH, **RFC822})
        small = await http.post("/v1/emails", content=make_email(), headers={**AUTH, **RFC822})
    assert big.status_code == 413 and "4096" in big.json()["detail"]
    assert streamed.status_code == 413
    assert small.status_code == 202
    assert len(stack.emails()) == 1


async def test_wrong_content_type_is_415_and_empty_body_400(stack: Stack) -> None:
    async with http_intake(stack) as http:
        text = await http.post("/v1/emails", content=make_email(), headers={**AUTH, "Content-Type": "text/plain"})
        empty = await http.post("/v1/emails", content=b"", headers={**AUTH, **RFC822})
    assert text.status_code == 415 and "message/rfc822" in text.json()["detail"]
    assert empty.status_code == 400
    assert stack.emails() == []


async def test_envelope_recipients_route_bcc_mail(stack: Stack) -> None:
    raw = make_email(to="colleague@customer.example", subject="Bcc'd to billing")
    async with http_intake(stack) as http:
        res = await http.post(
            "/v1/emails",
            content=raw,
            headers=[
                *AUTH.items(),
                *RFC822.items(),
                ("X-Envelope-To", "Acme Billing <BILLING@acme.example>, x@y.example"),
            ],
        )
    assert res.status_code == 202
    email = await settled(stack, res.json()["email_id"])
    assert email.envelope_to == ["billing@acme.example", "x@y.example"]
    assert (await case_for(stack, email.id or 0)).mailbox_address == "billing@acme.example"


async def test_openapi_document_describes_the_endpoint(stack: Stack) -> None:
    async with http_intake(stack) as http:
        doc = (await http.get("/openapi.json")).json()
    op = doc["paths"]["/v1/emails"]["post"]
    assert "message/rfc822" in op["requestBody"]["content"]
    assert {"202", "401", "413", "415"} <= set(op["responses"])
    assert any(p["name"] == "X-Envelope-To" for p in op["parameters"])
    assert any("HTTPBearer" in scheme for scheme in doc["components"]["securitySchemes"])


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/v1/emails/99999999999999999999999", 404),  # beyond any SQL integer
        (f"/v1/emails/{2**63}", 404),
        ("/v1/emails/-1", 404),
        ("/v1/emails/0", 404),
        ("/v1/emails/12345", 404),
        ("/v1/emails/abc", 422),
    ],
)
async def test_status_of_an_id_that_names_no_email_is_404_never_500(stack: Stack, path: str, status: int) -> None:
    async with http_intake(stack) as http:
        res = await http.get(path, headers=AUTH)
    assert res.status_code == status, res.text
    assert "Traceback" not in res.text


async def test_store_locked_answers_503_with_retry_after_within_the_bound(stack: Stack) -> None:
    raw = make_email(message_id="http-locked@customer.example")
    async with http_intake(stack, submit_timeout=1) as http:
        with store_locked(stack.store):
            began = time.monotonic()
            res = await http.post("/v1/emails", content=raw, headers={**AUTH, **RFC822})
            waited = time.monotonic() - began
        assert res.status_code == 503 and res.headers["retry-after"], res.text
        assert waited < 5, waited
        again = await http.post("/v1/emails", content=raw, headers={**AUTH, **RFC822})
    assert again.status_code == 202, again.text
    await case_for(stack, again.json()["email_id"])
    assert len(stack.emails()) == 1 and len(stack.cases()) == 1


async def test_refusals_log_one_info_line_without_traceback(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with http_intake(stack, max_message_bytes=4096) as http:
        unauthorized = await http.post("/v1/emails", content=make_email(), headers=RFC822)
        too_big = await http.post("/v1/emails", content=make_email(body="y" * 5000), headers={**AUTH, **RFC822})
        missing = await http.get("/v1/emails/99999999999999999999999", headers=AUTH)
    assert [unauthorized.status_code, too_big.status_code, missing.status_code] == [401, 413, 404]
    lines = [r for r in caplog.records if r.name.startswith(("routedesk", "uvicorn", "fastapi"))]
    assert not [r for r in lines if r.exc_info or r.levelno >= logging.WARNING], [r.getMessage() for r in lines]
    answered = [r.getMessage() for r in lines if " answered " in r.getMessage()]
    assert [m.rsplit(" ", 1)[1] for m in answered] == ["401", "413", "404"], answered
