"""The intake rules as pure functions: no server, every rule and its edge cases."""

from __future__ import annotations

import pytest

from routedesk.config import ConfigError, Mailbox, parse_config
from routedesk.intake_policy import (
    RateLimitRule,
    ack_suppression_reason,
    case_numbers_in,
    match_mailbox,
    noise_reason,
    rate_limit_reason,
    sender_allowed,
    stored_return_path,
)
from tests.intake_support import _EXAMPLE, config_with


def boxes(**support: object) -> dict[str, Mailbox]:
    return {m.address: m for m in config_with(support=dict(support)).mailboxes}


# --- routing addresses -----------------------------------------------------------------------


def test_mailbox_matches_to_cc_and_envelope_in_config_order() -> None:
    b = boxes()
    assert match_mailbox(b, ["billing@acme.example", "support@acme.example"], [], []).address == "support@acme.example"  # type: ignore[union-attr]
    assert match_mailbox(b, [], ["SALES@ACME.EXAMPLE"], []).address == "sales@acme.example"  # type: ignore[union-attr]
    # Bcc: only the envelope names the routing address.
    assert match_mailbox(b, ["someone@else.example"], [], ["billing@acme.example"]).address == "billing@acme.example"  # type: ignore[union-attr]
    assert match_mailbox(b, ["someone@else.example"], [], []) is None


def test_plus_addressing_only_where_the_mailbox_allows_it() -> None:
    assert match_mailbox(boxes(), ["support+billing@acme.example"], [], []).address == "support@acme.example"  # type: ignore[union-attr]
    assert match_mailbox(boxes(allow_plus_addressing=False), ["support+billing@acme.example"], [], []) is None


# --- loop and noise rules --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "sender", "ctype", "expected"),
    [
        (
            {"auto-submitted": "auto-replied"},
            "jane@globex.example",
            "text/plain",
            "Auto-Submitted: auto-replied",
        ),
        (
            {"auto-submitted": "auto-generated; type=vacation"},
            "jane@globex.example",
            "text/plain",
            "Auto-Submitted",
        ),
        ({"x-autoreply": "yes"}, "jane@globex.example", "text/plain", "X-Autoreply"),
        ({"x-autorespond": "on vacation"}, "jane@globex.example", "text/plain", "X-Autorespond"),
        ({"precedence": "bulk"}, "news@vendor.example", "text/plain", "Precedence: bulk"),
        ({"precedence": "junk"}, "news@vendor.example", "text/plain", "Precedence: junk"),
        (
            {"precedence": "auto_reply"},
            "jane@globex.example",
            "text/plain",
            "Precedence: auto_reply",
        ),
        ({"precedence": "List"}, "list@vendor.example", "text/plain", "Precedence: List"),
        ({"return-path": "<>"}, "notify@globex.example", "text/plain", "null sender"),
        ({"return-path": "< >"}, "notify@globex.example", "text/plain", "null sender"),
        ({}, "MAILER-DAEMON@mx.globex.example".lower(), "text/plain", "bounce or postmaster"),
        ({}, "postmaster@globex.example", "text/plain", "bounce or postmaster"),
        (
            {"content-type": 'multipart/report; report-type="delivery-status"; boundary=x'},
            "mailer@mx.example",
            "multipart/report",
            "delivery status notification (bounce)",
        ),
        (
            {"content-type": "multipart/report; report-type=disposition-notification"},
            "jane@globex.example",
            "multipart/report",
            "read receipt",
        ),
        ({}, "support@acme.example", "text/plain", "our own routing address"),
        ({}, "support+x@acme.example", "text/plain", "our own routing address"),
    ],
)
def test_each_loop_rule_names_itself(headers: dict[str, str], sender: str, ctype: str, expected: str) -> None:
    reason = noise_reason(headers, sender, ctype, boxes(), return_path=stored_return_path(headers))
    assert reason is not None and expected in reason


@pytest.mark.parametrize(
    "headers",
    [
        {"auto-submitted": "no"},
        {"auto-submitted": "No; comment"},
        {"precedence": "first-class"},
        {"return-path": "<jane@globex.example>"},
        {},
    ],
)
def test_human_mail_is_not_noise(headers: dict[str, str]) -> None:
    return_path = stored_return_path(headers)
    assert noise_reason(headers, "jane@globex.example", "text/plain", boxes(), return_path=return_path) is None


# --- senders, rate limit, tokens --------------------------------------------------------------


def test_accept_from_addresses_and_exact_domains() -> None:
    allow = ["boss@partner.example", "@globex.example"]
    assert sender_allowed(allow, "jane@globex.example")
    assert sender_allowed(allow, "BOSS@partner.example")
    assert not sender_allowed(allow, "intern@partner.example")
    assert not sender_allowed(allow, "jane@eu.globex.example")  # subdomains are not implied
    assert sender_allowed([], "anyone@anywhere.example")


def test_rate_limit_holds_from_the_limit_on() -> None:
    rule = RateLimitRule(max_messages=20, window_seconds=600)
    assert rate_limit_reason("a@b.example", 19, rule) is None
    reason = rate_limit_reason("a@b.example", 20, rule)
    assert reason is not None and "20 messages in 10 minutes" in reason and "limit 20" in reason


def test_case_tokens_are_found_and_normalised() -> None:
    assert case_numbers_in("Re: [CASE-000123] printer") == ["CASE-000123"]
    assert case_numbers_in("RE: AW: [ case-42 ] and [CASE-000042]") == ["CASE-000042"]
    assert case_numbers_in("CASE-000123 without brackets") == []
    assert case_numbers_in(None) == []


def test_acknowledgements_are_never_sent_to_automated_or_unauthorized_senders() -> None:
    b = boxes(accept_from=["@globex.example"])
    box = b["support@acme.example"]

    def why(status: str = "accepted", sender: str | None = "jane@globex.example", **headers: str) -> str | None:
        return ack_suppression_reason(
            status=status,
            sender=sender,
            headers=headers,
            content_type="text/plain",
            box=box,
            mailboxes=b,
        )

    assert why() is None
    assert "Auto-Submitted" in (why(**{"auto-submitted": "auto-replied"}) or "")
    assert "bounce" in (why(sender="mailer-daemon@globex.example") or "")
    assert "not in accept_from" in (why(sender="eve@evil.example") or "")
    assert "ignored" in (why(status="ignored") or "")
    assert why(sender=None) == "no sender address"


# --- config ----------------------------------------------------------------------------------


def test_intake_settings_have_the_documented_defaults() -> None:
    cfg = config_with()
    assert cfg.intake.max_message_bytes == 25 * 1024 * 1024
    assert (cfg.intake.smtp.host, cfg.intake.smtp.port) == ("127.0.0.1", 2525)
    assert (cfg.intake.rate_limit.max_messages, cfg.intake.rate_limit.window_seconds) == (20, 600)
    assert cfg.intake.relay is None


def test_acknowledgement_template_with_unknown_placeholder_names_the_key() -> None:
    import copy

    data = copy.deepcopy(_EXAMPLE)
    data["mailboxes"][0]["acknowledgement"] = {"enabled": True, "subject": "Case {case_no}"}
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert "mailboxes[0].acknowledgement.subject: unknown placeholder {case_no}" in str(info.value)
