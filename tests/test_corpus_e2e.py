"""Every corpus message through SMTP intake and the workflow to its expected outcome.

``tests/corpus/index.yaml`` says what each message is (``kind``) and what it contains; here
each must end as a case with that content, a reply on the case, a recorded ``ignored``
reason, or a recorded rejection. Never a crash, never a lost message.
"""

from __future__ import annotations

import asyncio
import smtplib
from pathlib import Path
from typing import Any

import yaml

from routedesk.intake_policy import base_address
from starter.smtp import start_smtp_intake
from tests.intake_support import case_for, in_client_thread, settled
from tests.support import Stack

CORPUS = Path(__file__).parent / "corpus"
INDEX: list[dict[str, Any]] = yaml.safe_load((CORPUS / "index.yaml").read_text(encoding="utf-8"))
CONFIG_ORDER = ["support@acme.example", "billing@acme.example", "sales@acme.example"]

EXPECTED_STATUS = {
    "normal": "accepted",
    "broken": "accepted",  # unparseable parts, but a usable sender and a routing address
    "reply": "accepted",  # unless it names a case we have (see below)
    "auto_reply": "ignored",
    "bulk": "ignored",
    "bounce": "ignored",
    "no_from": "rejected",
    "no_routing": "rejected",
}


def expected_status(entry: dict[str, Any]) -> str:
    if entry["file"] == "15_reply_case_token.eml":
        return "threaded"  # [CASE-000001] names the case the first message opens
    return EXPECTED_STATUS[entry["kind"]]


def expected_mailbox(entry: dict[str, Any]) -> str | None:
    bases = {base_address(a) for a in entry["routing"]}
    return next((m for m in CONFIG_ORDER if m in bases), None)


async def test_corpus_messages_end_in_their_expected_outcome(stack: Stack) -> None:
    assert len(INDEX) >= 30
    server = await start_smtp_intake(
        stack.client, stack.store, port=0, task_queue=stack.task_queue, id_prefix=stack.id_prefix
    )

    def deliver(entry: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        raw = on_the_wire(entry)
        with smtplib.SMTP(server.host, server.port, timeout=10, local_hostname="mx.test") as smtp:
            if not entry["routing"]:
                # Nothing to forward to us: the SMTP server refuses it outright.
                smtp.ehlo()
                smtp.mail(entry["from"])
                return smtp.rcpt("lunch@acme.example")[0], {}
            refused = smtp.sendmail(entry["from"] or "relay@relay.example", entry["routing"], raw)
            return 250, refused

    try:
        first, rest = INDEX[0], INDEX[1:]
        assert first["file"] == "01_plain_ascii.eml"
        assert await in_client_thread(deliver, first) == (250, {})
        await case_for(stack, stack.emails()[0].id or 0)  # becomes CASE-000001
        results = await asyncio.gather(*(in_client_thread(deliver, e) for e in rest))
    finally:
        await server.stop()

    for entry, (code, refused) in zip(rest, results, strict=True):
        if entry["routing"]:
            assert (code, refused) == (250, {}), entry["file"]
        else:
            assert code == 550, entry["file"]
    # The message SMTP refused still gets a recorded rejection when submitted directly.
    no_routing = next(e for e in INDEX if not e["routing"])
    await stack.submit((CORPUS / no_routing["file"]).read_bytes())

    stored = [await settled(stack, email.id or 0) for email in stack.emails()]
    assert len(stored) == len(INDEX)
    rows = {e["file"]: _row_for(e, stored) for e in INDEX}
    for entry in INDEX:
        row = rows[entry["file"]]
        want = expected_status(entry)
        assert row.status == want, f"{entry['file']}: {row.status} ({row.reason}), expected {want}"
        if want == "accepted":
            case = await case_for(stack, row.id)
            assert case.mailbox_address == expected_mailbox(entry), entry["file"]
            assert entry["subject_contains"] in case.subject, entry["file"]
            assert entry["text_contains"] in case.description, entry["file"]
            assert len(row.attachments) == entry["attachments"], entry["file"]
            assert all({"filename", "content_type", "size", "sha256"} <= set(a) for a in row.attachments)
        elif want == "threaded":
            assert row.case_id == 1, entry["file"]
        else:
            assert row.reason, f"{entry['file']}: no recorded reason"
            assert row.case_id is None
    cases = stack.cases()
    assert len(cases) == sum(expected_status(e) == "accepted" for e in INDEX)
    assert len({c.source_email_id for c in cases}) == len(cases)


def on_the_wire(entry: dict[str, Any]) -> bytes:
    """The file as a forwarding mail server sends it: CRLF line ends, CRLF at the end."""
    raw = (CORPUS / entry["file"]).read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return raw if raw.endswith(b"\r\n") else raw + b"\r\n"


def _row_for(entry: dict[str, Any], rows: list[Any]) -> Any:
    """The stored email for a corpus file: its bytes, after any Return-Path we prepended."""
    raw, file_bytes = on_the_wire(entry), (CORPUS / entry["file"]).read_bytes()
    [row] = [r for r in rows if r.raw in (raw, file_bytes) or r.raw.endswith(b"\r\n" + raw)]
    return row
