"""The intake and mailbox commands: output, and one-line errors when things are down."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
import yaml

from tests.cli import routedesk, stack_env
from tests.intake_support import settled
from tests.support import EXAMPLES, Stack, make_email

CORPUS = Path(__file__).parent / "corpus"
UNREACHABLE_TEMPORAL = "127.0.0.1:1"


async def test_intake_list_and_show_explain_each_decision(stack: Stack) -> None:
    env = stack_env(stack)
    ignored = await stack.submit(make_email(subject="Out of office", extra_headers=["Auto-Submitted: auto-replied"]))
    await settled(stack, ignored.email_id)
    listed = json.loads((await routedesk("intake", "list", "--status", "ignored", "--json", env=env)).out)
    assert [(e["email_id"], e["status"]) for e in listed] == [(ignored.email_id, "ignored")]
    assert "Auto-Submitted" in listed[0]["reason"]

    shown = await routedesk("intake", "show", str(ignored.email_id), env=env)
    assert shown.code == 0, shown.err
    for text in ("ignored", "Auto-Submitted: auto-replied", "someone@customer.example", "intake"):
        assert text in shown.out
    as_json = json.loads((await routedesk("intake", "show", str(ignored.email_id), "--json", env=env)).out)
    assert as_json["email"]["status"] == "ignored" and as_json["trace"][0]["outcome"] == "ignored"
    missing = await routedesk("intake", "show", "999", env=env)
    assert missing.code == 1 and "no email 999" in missing.err


async def test_release_needs_something_to_release(stack: Stack) -> None:
    res = await routedesk("intake", "release", env=stack_env(stack))
    assert res.code == 1 and "name email ids, --sender ADDRESS or --all" in res.err


@pytest.mark.parametrize(
    "args",
    [
        ["mailbox", "verify", "support@acme.example"],
        ["intake", "release", "--all"],
    ],
)
async def test_commands_say_in_one_line_when_temporal_is_unreachable(args: list[str], tmp_path: Path) -> None:
    env = {
        "TEMPORAL_ADDRESS": UNREACHABLE_TEMPORAL,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'ok.db'}",
    }
    config = tmp_path / "unverified.yaml"
    data = yaml.safe_load((EXAMPLES / "routing.yaml").read_text())
    data["mailboxes"][0]["verified"] = False
    config.write_text(yaml.safe_dump(data))
    loaded = await routedesk("config", "load", str(config), env=env)
    assert loaded.code == 0, loaded.err
    res = await routedesk(*args, env=env)
    assert res.code == 2
    assert res.err.strip().count("\n") == 0, res.err
    assert f"cannot reach the Temporal server at {UNREACHABLE_TEMPORAL}" in res.err
    assert "Traceback" not in res.err + res.out
    # Nothing was changed before Temporal answered.
    boxes = json.loads((await routedesk("mailbox", "list", "--json", env=env)).out)
    assert [b["verified"] for b in boxes] == [False, True, True]


@pytest.mark.parametrize(
    "args",
    [
        ["mailbox", "verify", "support@acme.example"],
        ["mailbox", "list"],
        ["intake", "held"],
        ["intake", "release", "--all"],
        ["intake", "list"],
        ["intake", "show", "1"],
    ],
)
async def test_commands_say_in_one_line_when_the_store_is_unreachable(args: list[str]) -> None:
    url = "sqlite:////nonexistent-dir/routedesk.db"
    res = await routedesk(*args, env={"DATABASE_URL": url, "TEMPORAL_ADDRESS": UNREACHABLE_TEMPORAL})
    assert res.code == 2
    assert res.err.strip().count("\n") == 0, res.err
    assert "cannot reach the case store at sqlite:////nonexistent-dir/routedesk.db" in res.err
    assert "Traceback" not in res.err + res.out


# 03 is latin-1 behind quoted-printable; 38 carries raw 8-bit latin-1/cp1252 bytes; 08 and 34
# are not UTF-8 either.
@pytest.mark.parametrize(
    "name", ["03_latin1.eml", "38_latin1_label_cp1252_bytes.eml", "08_shift_jis.eml", "34_garbage_bytes.eml"]
)
async def test_intake_show_json_gives_raw_bytes_as_size_hash_and_base64(stack: Stack, name: str) -> None:
    raw = (CORPUS / name).read_bytes()
    sub = await stack.submit(raw)
    stored = stack.store.email(sub.email_id)
    assert stored is not None
    env = stack_env(stack)
    shown = await routedesk("intake", "show", str(sub.email_id), "--json", env=env)
    assert shown.code == 0, shown.err
    email = json.loads(shown.out)["email"]
    assert email["raw_size"] == len(stored.raw) == stored.size
    assert email["raw_sha256"] == hashlib.sha256(stored.raw).hexdigest()
    assert "raw" not in email and "raw_base64" not in email
    full = await routedesk("intake", "show", str(sub.email_id), "--json", "--raw-base64", env=env)
    assert full.code == 0, full.err
    assert base64.b64decode(json.loads(full.out)["email"]["raw_base64"]) == stored.raw
    plain = await routedesk("intake", "show", str(sub.email_id), env=env)
    assert plain.code == 0 and f"email {sub.email_id}" in plain.out, plain.err


async def test_raw_base64_without_json_is_a_one_line_error(stack: Stack) -> None:
    sub = await stack.submit(make_email())
    res = await routedesk("intake", "show", str(sub.email_id), "--raw-base64", env=stack_env(stack))
    assert res.code == 1 and "--raw-base64 goes with --json" in res.err and "Traceback" not in res.err
