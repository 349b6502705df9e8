"""The CLI: send and case show against the dev server; one-line errors when things are down."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from routedesk.contracts import RoutingStatus, Stage, Status
from routedesk.models import CaseRow
from routedesk.operations import shown
from tests.cli import routedesk, stack_env
from tests.support import EXAMPLES, Stack, make_email


async def test_send_prints_workflow_and_case_then_case_show_prints_the_trace(stack: Stack) -> None:
    env = stack_env(stack)
    eml = str(EXAMPLES / "emails" / "03-key-account-outage.eml")
    sent = await routedesk("send", eml, "--json", env=env)
    assert sent.code == 0, sent.err
    data = json.loads(sent.out)
    assert data["workflow_id"].startswith(f"{stack.id_prefix}email-")
    assert data["case_number"] == "CASE-000001"
    assert data["stage"] in {s.value for s in Status}  # the people's words (never the workflow's "queued")

    again = await routedesk("send", eml, env=env)
    assert again.code == 0 and "CASE-000001" in again.out and data["workflow_id"] in again.out
    assert len(stack.cases()) == 1

    shown = await routedesk("case", "show", "CASE-000001", env=env)
    assert shown.code == 0, shown.err
    for text in (
        "vip",
        "key-accounts-to-vip",
        "urgent-words",
        "classification",
        "queue_routing",
        "Urgent",
    ):
        assert text in shown.out
    as_json = json.loads((await routedesk("case", "show", "1", "--json", env=env)).out)
    assert as_json["case"]["queue_id"] == "vip"
    assert [t["stage"] for t in as_json["trace"]][:2] == ["intake", "case"]


def test_the_workflows_queued_step_is_shown_as_waiting_for_agent() -> None:
    status = RoutingStatus(stage=Stage.QUEUED, email_id=1, case_number="CASE-000001", queue="vip")
    assert shown(status).stage == Stage.WAITING_FOR_AGENT == Status.WAITING_FOR_AGENT
    assert shown(status.model_copy(update={"stage": Stage.OFFERED})).stage == Stage.OFFERED


async def test_send_of_a_rejected_email_says_why(stack: Stack) -> None:
    res = await routedesk("send", str(EXAMPLES / "emails" / "07-no-routing-address.eml"), env=stack_env(stack))
    assert res.code == 3
    assert "no case: rejected" in res.out and "no routing address" in res.out


UNREACHABLE_TEMPORAL = "127.0.0.1:1"


@pytest.mark.parametrize(
    "args",
    [
        ["send", str(EXAMPLES / "emails" / "01-password-reset.eml")],
    ],
)
async def test_commands_say_in_one_line_when_temporal_is_unreachable(args: list[str], tmp_path: Path) -> None:
    env = {
        "TEMPORAL_ADDRESS": UNREACHABLE_TEMPORAL,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'ok.db'}",
    }
    res = await routedesk(*args, env=env)
    assert res.code == 2
    assert res.err.strip().count("\n") == 0, res.err
    assert f"cannot reach the Temporal server at {UNREACHABLE_TEMPORAL}" in res.err
    assert "Traceback" not in res.err + res.out


@pytest.mark.parametrize(
    "args",
    [
        ["send", str(EXAMPLES / "emails" / "01-password-reset.eml")],
        ["case", "show", "CASE-000001"],
        ["case", "list"],
        ["config", "load", str(EXAMPLES / "routing.yaml")],
    ],
)
async def test_commands_say_in_one_line_when_the_store_is_unreachable(args: list[str]) -> None:
    url = "sqlite:////nonexistent-dir/routedesk.db"
    res = await routedesk(*args, env={"DATABASE_URL": url, "TEMPORAL_ADDRESS": UNREACHABLE_TEMPORAL})
    assert res.code == 2
    assert res.err.strip().count("\n") == 0, res.err
    assert "cannot reach the case store at sqlite:////nonexistent-dir/routedesk.db" in res.err
    assert "Traceback" not in res.err + res.out


async def test_config_check_names_the_bad_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    text = (EXAMPLES / "routing.yaml").read_text()
    bad.write_text(text.replace("assignment_method: least_active", "assignment_method: fastest"))
    res = await routedesk("config", "check", str(bad))
    assert res.code == 1
    assert "queues[2].assignment_method" in res.err and "fastest" not in res.out
    ok = await routedesk("config", "check", str(EXAMPLES / "routing.yaml"))
    assert ok.code == 0 and "3 mailboxes" in ok.out


# The modules a read-only command must not load: the Temporal SDK, the servers, Alembic, the
# mail parser, and the ORM with everything built on it (the views read the store with the
# driver alone: routedesk/views.py). Their cost is measured by bench/cli_startup.py
# (docs/benchmarks.md); this guards the discipline without timing.
HEAVY = {
    "temporalio",
    "fastapi",
    "starlette",
    "uvicorn",
    "aiosmtpd",
    "alembic",
    "mako",
    "yaml",
    "starter",
    "sqlalchemy",
    "sqlmodel",
    "routedesk.operations",
    "routedesk.models",
    "routedesk.store",
    "routedesk.db",
    "routedesk.config",
    "routedesk.auth",
}
READ_ONLY = [
    ["case", "list"],
    ["case", "show", "CASE-000001"],
    ["case", "emails", "CASE-000001"],
    ["agent", "list"],
    ["agent", "offers", "alice"],
    ["queue", "list"],
    ["queue", "show", "general"],
]

IMPORTS_PROBE = """
import json, sys
from routedesk.cli.app import build
codes = []
for args in json.loads(sys.argv[1]):
    try:
        build(args)(args=args, prog_name="routedesk")
    except SystemExit as exc:
        codes.append(exc.code)
heavy = set(json.loads(sys.argv[2]))
loaded = sorted(m for m in sys.modules if m.split(".")[0] in heavy or m in heavy or m.startswith("routedesk.mail"))
print(json.dumps({"codes": codes, "loaded": loaded}))
"""


async def test_read_only_commands_import_no_orm_temporal_server_or_alembic_module(tmp_path: Path) -> None:
    import asyncio
    import os
    import sys

    from routedesk.config import load_config
    from routedesk.store import Store
    from tests.support import ROOT

    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = Store(url).init()
    store.load_config(load_config(EXAMPLES / "routing.yaml"))
    # One case with an SLA policy, so `case show` takes its whole path (emails, replies, SLA).
    saved = store.save_raw_email(make_email(subject="Printer on fire"))
    with store.db.write() as s:
        s.add(
            CaseRow(
                number="CASE-000001",
                source_email_id=saved.email_id,
                mailbox_address="support@acme.example",
                workstream_id="support-email",
                queue_id="general",
                status="queued",
                subject="Printer on fire",
                sla_policy_id="key-accounts",
                sla={"targets": {}},
            )
        )
    store.db.dispose()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        IMPORTS_PROBE,
        json.dumps(READ_ONLY),
        json.dumps(sorted(HEAVY)),
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": url, "COLUMNS": "200"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    result = json.loads(out.decode().strip().splitlines()[-1])
    # Each command ran, and `case show` showed the case with its SLA.
    assert result["codes"] == [0] * len(READ_ONLY), out.decode() + err.decode()
    assert "Printer on fire" in out.decode() and "key-accounts" in out.decode()
    assert result["loaded"] == []


def test_the_schema_head_read_from_the_revision_files_is_alembics() -> None:
    from routedesk import migrations

    revs, head = migrations.revisions()
    alembic_revs, alembic_head = migrations._alembic_revisions()
    assert (revs, head) == (alembic_revs, alembic_head)
    assert migrations.known(head) and not migrations.known("9999")
