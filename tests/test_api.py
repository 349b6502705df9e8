"""The HTTP API (/api/v1) over the operations layer: roles, tokens, errors, views, events."""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import yaml
from sqlmodel import select

from routedesk import auth
from routedesk.models import OfferRow
from starter.http import HttpIntakeServer, start_http_intake
from tests.cli import routedesk, stack_env
from tests.support import EXAMPLES, Stack, eventually, example_email, history_events, make_email


@asynccontextmanager
async def api(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    server: HttpIntakeServer = await start_http_intake(
        stack.client, stack.store, token="intake-token", port=0, task_queue=stack.task_queue, id_prefix=stack.id_prefix
    )
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            yield http
    finally:
        await server.stop()


def token_for(stack: Stack, name: str, role: str, agent: str | None = None) -> dict[str, str]:
    auth.add_user(stack.store, name, role, agent)
    return {"Authorization": f"Bearer {auth.create_token(stack.store, name)}"}


async def test_each_role_is_allowed_and_refused_what_its_rules_say(stack: Stack) -> None:
    alice = token_for(stack, "alice-user", "agent", "alice")
    dave = token_for(stack, "dave-user", "agent", "dave")
    boss = token_for(stack, "sam", "supervisor")
    # Jane (Globex) prefers dave, then alice: the case is offered to dave first.
    first = await stack.submit(example_email("03-key-account-outage.eml"))
    await stack.wait_offer(first.workflow_id, "dave")
    handle = stack.handle(first.workflow_id)
    async with api(stack) as http:
        # The agent's offers view: subject, contact, priority, queue and time left.
        offers = (await http.get("/api/v1/agents/dave/offers", headers=dave)).json()
        assert [(o["case"], o["queue_id"], o["contact_id"], o["priority"]) for o in offers] == [
            ("CASE-000001", "vip", "globex-jane", "Urgent")
        ]
        assert offers[0]["subject"] and 0 < offers[0]["seconds_left"] <= 600

        # Another agent's offer: 403, and nothing enters the workflow's history.
        before = len(await history_events(handle))
        res = await http.post("/api/v1/agents/dave/accept", json={"case": "CASE-000001"}, headers=alice)
        assert res.status_code == 403 and "acts only for agent alice" in res.json()["error"]
        assert len(await history_events(handle)) == before
        assert (await http.get("/api/v1/agents/dave/offers", headers=alice)).status_code == 403

        res = await http.post("/api/v1/agents/dave/accept", json={"case": "CASE-000001"}, headers=dave)
        assert (res.status_code, res.json()["message"]) == (200, "assigned")
        trace = stack.trace(case_id=stack.cases()[0].id)
        assert [(t.subject, t.outcome, t.reason) for t in trace if t.stage == "operation"] == [
            ("dave-user", "accept", "accept for dave by dave-user (agent)")
        ]

        # Presence: one's own, not another agent's.
        res = await http.put("/api/v1/agents/dave/presence", json={"presence": "Away"}, headers=alice)
        assert res.status_code == 403 and stack.agent("dave").presence == "Available"
        res = await http.put("/api/v1/agents/alice/presence", json={"presence": "busy"}, headers=alice)
        assert res.status_code == 200 and stack.agent("alice").presence == "Busy"
        bad = await http.put("/api/v1/agents/alice/presence", json={"presence": "Asleep"}, headers=alice)
        assert bad.status_code == 422 and "Available" in bad.json()["error"]

        # Assign: a supervisor may, an agent may not (refused before the workflow sees it).
        second = await stack.submit(make_email(subject="Question about opening hours"))
        await stack.queued(second.workflow_id)
        number = (await stack.status(second.workflow_id)).case_number
        h2 = stack.handle(second.workflow_id)
        before = len(await history_events(h2))
        res = await http.post(f"/api/v1/cases/{number}/assign", json={"agent_id": "alice"}, headers=alice)
        assert res.status_code == 403 and "supervisor" in res.json()["error"]
        assert len(await history_events(h2)) == before
        res = await http.post(f"/api/v1/cases/{number}/assign", json={"agent_id": "erin"}, headers=boss)
        assert res.status_code == 200, res.text
        shown = (await http.get(f"/api/v1/cases/{number}", headers=alice)).json()
        assert (shown["case"]["status"], shown["case"]["assigned_agent_id"]) == ("assigned", "erin")
        assert any(t["reason"] == "assigned to erin by sam (supervisor)" for t in shown["trace"])
        assert shown["emails"][0]["kind"] == "first" and shown["emails"][0]["text"].startswith("Hi there")

        # Tokens: a wrong or missing one is 401, as JSON.
        wrong = await http.get("/api/v1/cases", headers={"Authorization": "Bearer rd_nope"})
        assert wrong.status_code == 401 and "wrong bearer token" in wrong.json()["error"]
        assert (await http.get("/api/v1/cases")).status_code == 401

        # Unknown things: 404 and 422, never 500.
        assert (await http.get("/api/v1/cases/CASE-999999", headers=boss)).status_code == 404
        assert (await http.get("/api/v1/emails/99999999999999999999", headers=boss)).status_code == 404
        assert (await http.get("/api/v1/emails/abc", headers=boss)).status_code == 422
        assert (await http.post("/api/v1/cases/CASE-000001/assign", json={}, headers=boss)).status_code == 422


async def test_invalid_filters_are_refused_naming_the_valid_values(stack: Stack) -> None:
    tok = token_for(stack, "root", "admin")
    async with api(stack) as http:
        res = await http.get("/api/v1/cases", params={"status": "open"}, headers=tok)
        assert res.status_code == 422 and "waiting_for_agent" in res.json()["error"]
        res = await http.get("/api/v1/cases", params={"queue": "nosuch"}, headers=tok)
        assert res.status_code == 422 and "general" in res.json()["error"]
        res = await http.get("/api/v1/cases", params={"status": "waiting_for_agent"}, headers=tok)
        assert res.status_code == 200 and res.json() == []
    env = stack_env(stack)
    bad = await routedesk("case", "list", "--status", "open", env=env)
    assert bad.code == 1 and "unknown case status 'open'" in bad.err and "unassigned" in bad.err
    bad = await routedesk("case", "list", "--queue", "nosuch", env=env)
    assert bad.code == 1 and "unknown queue 'nosuch'" in bad.err and "vip" in bad.err
    bad = await routedesk("case", "list", "--agent", "zed", env=env)
    assert bad.code == 1 and "unknown agent 'zed'" in bad.err


async def test_tokens_are_compared_in_constant_time_and_one_wrong_character_is_refused(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth.add_user(stack.store, "ann", "supervisor", None)
    token = auth.create_token(stack.store, "ann")
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    assert auth.authenticate(stack.store, token).user == "ann"
    assert calls, "the hash was not compared with hmac.compare_digest"
    last = "A" if token[-1] != "A" else "B"
    with pytest.raises(auth.Unauthenticated):
        auth.authenticate(stack.store, token[:-1] + last)
    # Only the hash is stored.
    with stack.store.db.read() as s:
        rows = s.exec(select(auth.ApiTokenRow)).all()
    assert [r.token_hash for r in rows] == [auth.token_hash(token)] and token not in json.dumps(
        [r.lookup for r in rows]
    )


async def test_agent_list_and_queue_show_match_the_store(stack: Stack) -> None:
    # The 3 general agents offline: two cases wait; then bob comes back and holds one live
    # offer (the other waits: bob holds an offer, the others are offline).
    for agent in ("alice", "bob", "carol"):
        await stack.set_presence(agent, "Offline")
    subs = [await stack.submit(make_email(subject=f"Opening hours {i}")) for i in (1, 2)]
    for sub in subs:
        await stack.wait_stage(sub.workflow_id, "waiting_for_agent")
    await stack.set_presence("bob", "Available")
    # Either case may be the one offered (same priority, queued in the same instant).
    await eventually(
        lambda: [o for o in stack.offers() if o.agent_id == "bob" and o.status == "live"], what="bob's offer"
    )
    env = stack_env(stack)

    shown = json.loads((await routedesk("queue", "show", "general", "--json", env=env)).out)
    q = shown["queue"]
    with stack.store.db.read() as s:
        live = list(s.exec(select(OfferRow).where(OfferRow.status == "live")).all())
    waiting = [c for c in stack.cases() if c.queue_id == "general" and c.status == "queued"]
    assert (
        (q["waiting"], q["offered"], q["assignment_method"])
        == (len(waiting), len(live), "round_robin")
        == (
            2,
            1,
            "round_robin",
        )
    )
    assert q["eligible_now"] == [] and q["members"] == ["alice", "bob", "carol"]
    assert sum(q["by_priority"].values()) == 2 and q["oldest_wait_seconds"] >= 0
    assert sorted(i["status"] for i in shown["items"]) == ["offered", "waiting_for_agent"]

    agents = {a["id"]: a for a in json.loads((await routedesk("agent", "list", "--json", env=env)).out)}
    assert {k: agents[k]["presence"] for k in ("alice", "bob", "carol")} == {
        "alice": "Offline",
        "bob": "Available",
        "carol": "Offline",
    }
    assert agents["bob"]["live_offer"]["case"] == live[0].case_number
    assert agents["bob"]["live_offer"]["deadline"] is not None
    assert (agents["alice"]["live_offer"], agents["alice"]["active"], agents["alice"]["capacity"]) == (None, 0, 3)
    assert agents["bob"]["queues"] == ["general", "sales"]
    table = await routedesk("agent", "list", env=env)
    assert table.code == 0 and "0/2" in table.out and live[0].case_number in table.out

    listed = json.loads((await routedesk("case", "list", "--status", "offered", "--json", env=env)).out)
    assert [c["number"] for c in listed] == [live[0].case_number]


@pytest.mark.serial  # a latency bound: run alone, not beside another test process
async def test_an_offer_made_while_the_event_stream_is_open_arrives_within_a_second(stack: Stack) -> None:
    dave = token_for(stack, "dave-user", "agent", "dave")
    async with api(stack) as http, http.stream("GET", "/api/v1/agents/dave/events", headers=dave) as stream:
        assert stream.status_code == 200
        lines = stream.aiter_lines()
        assert (await anext(lines)).startswith(":")
        sub = await stack.submit(example_email("03-key-account-outage.eml"))

        async def next_offer() -> dict[str, Any]:
            event = ""
            async for line in lines:
                if line.startswith("event:"):
                    event = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and event == "offer":
                    return dict(json.loads(line[5:]))
            raise AssertionError("stream ended")

        task = asyncio.create_task(next_offer())
        await stack.wait_offer(sub.workflow_id, "dave")
        seen = time.monotonic()
        offer = await asyncio.wait_for(task, timeout=1.0)
        assert offer["case"] == "CASE-000001" and offer["agent_id"] == "dave"
        assert time.monotonic() - seen < 1.0


async def test_user_and_token_commands(stack: Stack) -> None:
    env = stack_env(stack)
    added = await routedesk("user", "add", "ann", "--role", "agent", "--agent", "alice", env=env)
    assert added.code == 0, added.err
    bad = await routedesk("user", "add", "bo", "--role", "boss", env=env)
    assert bad.code == 1 and "agent, supervisor, admin" in bad.err
    made = await routedesk("token", "create", "ann", env=env)
    token = made.out.strip().splitlines()[-1]
    assert made.code == 0 and token.startswith("rd_")
    assert auth.authenticate(stack.store, token).agent_id == "alice"
    # Who added the user and created the token is stored: the CLI's local admin.
    [user] = [u for u in auth.list_users(stack.store) if u.name == "ann"]
    with stack.store.db.read() as s:
        [tok] = s.exec(select(auth.ApiTokenRow).where(auth.ApiTokenRow.user_name == "ann")).all()
    assert user.created_by is not None and user.created_by.endswith(" (admin)")
    assert tok.created_by == user.created_by
    # With the agent's token, the CLI acts as that agent.
    refused = await routedesk("agent", "presence", "bob", "Away", env={**env, "ROUTEDESK_TOKEN": token})
    assert refused.code == 1 and "acts only for agent alice" in refused.err


async def test_reply_endpoint_lets_the_owning_agent_reply_and_refuses_another_agent(make_stack: Any) -> None:
    from routedesk.models import CaseReplyRow
    from tests.intake_support import smtp_sink
    from tests.test_replies import assigned_case, relay_config, reply_notes

    with smtp_sink() as sink:
        stack: Stack = await make_stack(relay_config(sink))
        case = await assigned_case(stack)  # alice's
        alice = token_for(stack, "alice-user", "agent", "alice")
        bob = token_for(stack, "bob-user", "agent", "bob")
        url = f"/api/v1/cases/{case.number}/replies"
        async with api(stack) as http:
            # Another agent: 403, for themselves or in the owner's name, and no reply row.
            res = await http.post(url, json={"body": "Not mine"}, headers=bob)
            assert res.status_code == 403, res.text
            assert "is assigned to alice: only its assigned agent or a supervisor may reply" in res.json()["error"]
            res = await http.post(url, json={"body": "Not mine", "agent_id": "alice"}, headers=bob)
            assert res.status_code == 403 and "acts only for agent bob" in res.json()["error"]
            with stack.store.db.read() as s:
                assert s.exec(select(CaseReplyRow)).all() == []
            assert reply_notes(stack) == [] and sink.received() == []

            res = await http.post(url, json={"body": "We are on it."}, headers=alice)
            assert res.status_code == 202, res.text
            queued = res.json()
            assert (queued["case"], queued["to"], queued["status"]) == (case.number, "kim@customer.example", "queued")
            with stack.store.db.read() as s:
                [row] = s.exec(select(CaseReplyRow)).all()
            assert (row.id, row.agent_id, row.by_supervisor, row.written_by, row.body) == (
                queued["reply_id"],
                "alice",
                False,
                "alice-user (agent)",
                "We are on it.",
            )
            await eventually(lambda: reply_notes(stack, "sent"), what="the reply sent")
            [delivered] = sink.received()
            assert delivered.message["Message-ID"] == f"<{queued['message_id']}>"

            # The case detail lists it with its delivery; the trace names who did it.
            shown = (await http.get(f"/api/v1/cases/{case.number}", headers=alice)).json()
            assert [(r["reply_id"], r["agent_id"], r["status"], r["body"]) for r in shown["replies"]] == [
                (queued["reply_id"], "alice", "sent", "We are on it.")
            ]
            reasons = [t["reason"] for t in shown["trace"] if t["stage"] == "reply"]
            assert any("queued by alice-user (agent)" in r for r in reasons), reasons
            listed = (await http.get(url, headers=bob)).json()
            assert [r["status"] for r in listed] == ["sent"]


async def test_config_over_the_api_is_for_admins_and_wakes_the_queues_it_gives_a_member(stack: Stack) -> None:
    admin = token_for(stack, "ada", "admin")
    boss = token_for(stack, "sam", "supervisor")
    alice = token_for(stack, "alice-user", "agent", "alice")
    # Nobody in general can take work: the item waits for its assignment method.
    for agent in ("alice", "bob", "carol"):
        await stack.set_presence(agent, "Offline")
    sub = await stack.submit(make_email(subject="Question about opening hours"))
    await stack.wait_stage(sub.workflow_id, "waiting_for_agent")
    data = yaml.safe_load((EXAMPLES / "routing.yaml").read_text())
    data["agents"].append({"id": "zoe", "name": "Zoe New", "presence": "Available"})
    [general] = [q for q in data["queues"] if q["id"] == "general"]
    general["members"].append("zoe")
    text = yaml.safe_dump(data, sort_keys=False)
    async with api(stack) as http:
        refused = await http.post("/api/v1/config", content=text, headers=boss)
        assert refused.status_code == 403 and "admin" in refused.json()["error"]
        bad = await http.post("/api/v1/config", content="queues: [", headers=admin)
        assert bad.status_code == 422 and "not valid YAML" in bad.json()["error"]
        wrong = await http.post("/api/v1/config", content="queues: 3\n", headers=admin)
        assert wrong.status_code == 422 and "queues" in wrong.json()["error"]

        assert (await http.post("/api/v1/config/diff", content=text, headers=alice)).status_code == 403
        diff = await http.post("/api/v1/config/diff", content=text, headers=boss)
        assert diff.status_code == 200, diff.text
        assert not diff.json()["unchanged"] and "zoe" in json.dumps(diff.json()["changes"])
        whatif = await http.post("/api/v1/config/whatif", params={"since": "1d"}, content=text, headers=boss)
        assert whatif.status_code == 200 and whatif.json()["emails"] >= 1 and whatif.json()["changed"] == 0
        bad_since = await http.post("/api/v1/config/whatif", params={"since": "soon"}, content=text, headers=boss)
        assert bad_since.status_code == 422 and "7d" in bad_since.json()["error"]

        before = (await http.get("/api/v1/config/versions", headers=boss)).json()
        loaded = await http.post("/api/v1/config", content=text, headers=admin)
        assert loaded.status_code == 200, loaded.text
        body = loaded.json()
        assert (body["changed"], body["version"], body["woken_queues"]) == (True, before[-1]["number"] + 1, ["general"])
        # The new member is offered the waiting item now, not at the queue's next sweep (60 s).
        await stack.wait_offer(sub.workflow_id, "zoe", timeout=10)
        versions = (await http.get("/api/v1/config/versions", headers=boss)).json()
        assert (versions[-1]["loaded_by"], versions[-1]["source"]) == ("ada (admin)", "api")
        again = (await http.post("/api/v1/config", content=text, headers=admin)).json()
        assert (again["changed"], again["woken_queues"]) == (False, [])


# --- role x endpoint: each role's expected answer on every guarded action --------------------

ROLE_USERS = {
    "agent": ("bob-user", "agent", "bob"),
    "supervisor": ("sam", "supervisor", None),
    "admin": ("ada", "admin", None),
}
ROLE_INDEX = {"agent": 0, "supervisor": 1, "admin": 2}
# endpoint -> HTTP status for an (agent, supervisor, admin) token, in the order they are sent.
# bob is in general and sales, not in vip; CASE-000001 is a vip case offered to dave.
# A supervisor's pick for bob passes the role check and is refused by the case's workflow
# (409: a business refusal, not 403).
ROLE_TABLE: dict[str, tuple[int, int, int]] = {
    "pick a vip case for bob": (403, 409, 409),
    "release held mail": (403, 200, 200),
    "reprocess a rejected email": (403, 200, 200),
    "verify a mailbox": (403, 403, 200),
    "resolve a case": (403, 200, 200),
    "load configuration": (403, 403, 200),
    "list users": (403, 403, 200),
    "add a user": (403, 403, 201),
    "create a token": (403, 403, 201),
}


@pytest.mark.parametrize("role", ["agent", "supervisor", "admin"])
async def test_role_by_endpoint_table(stack: Stack, role: str) -> None:
    from routedesk.models import ApiTokenRow, ConfigVersionRow, EmailRow, IntakeHoldRow, MailboxRow, UserRow

    user, _, _ = ROLE_USERS[role]
    headers = token_for(stack, *ROLE_USERS[role])
    vip = await stack.submit(example_email("03-key-account-outage.eml"))
    await stack.wait_offer(vip.workflow_id, "dave")
    rejected = await stack.submit(example_email("07-no-routing-address.eml"))
    await stack.handle(rejected.workflow_id).result()
    [rejected_row] = [e for e in stack.emails() if e.status == "rejected"]
    with stack.store.db.write() as s:  # a mailbox to verify; its mail is held until then
        box = s.get(MailboxRow, "billing@acme.example")
        assert box is not None
        box.verified = False
        s.add(box)
    held = await stack.submit(make_email(subject="Invoice question", to="billing@acme.example"))
    await stack.wait_stage(held.workflow_id, "held")
    data = yaml.safe_load((EXAMPLES / "routing.yaml").read_text())
    data["agents"].append({"id": "zoe", "name": "Zoe New", "presence": "Available"})
    config_text = yaml.safe_dump(data, sort_keys=False)

    def rows(table: Any) -> list[Any]:
        with stack.store.db.read() as s:
            return list(s.exec(select(table)).all())

    versions_before = len(rows(ConfigVersionRow))
    got: dict[str, httpx.Response] = {}
    async with api(stack) as http:
        requests = {
            "pick a vip case for bob": http.post(
                "/api/v1/agents/bob/pick", json={"case": "CASE-000001"}, headers=headers
            ),
            "release held mail": http.post("/api/v1/emails/release", json={"all": True}, headers=headers),
            "reprocess a rejected email": http.post(
                f"/api/v1/emails/{rejected_row.id}/reprocess", json={}, headers=headers
            ),
            "verify a mailbox": http.post("/api/v1/mailboxes/billing@acme.example/verify", headers=headers),
            "resolve a case": http.post("/api/v1/cases/CASE-000001/resolve", headers=headers),
            "load configuration": http.post("/api/v1/config", content=config_text, headers=headers),
            "list users": http.get("/api/v1/users", headers=headers),
            "add a user": http.post("/api/v1/users", json={"name": "newbie", "role": "supervisor"}, headers=headers),
            "create a token": http.post(f"/api/v1/users/{user}/tokens", headers=headers),
        }
        assert list(requests) == list(ROLE_TABLE)
        for what, request in requests.items():  # one at a time, in the table's order
            got[what] = await request
    statuses = {what: res.status_code for what, res in got.items()}
    assert statuses == {what: codes[ROLE_INDEX[role]] for what, codes in ROLE_TABLE.items()}, {
        w: r.text for w, r in got.items()
    }
    for what, res in got.items():  # every refusal is JSON a person can act on
        if res.status_code >= 400:
            assert res.json()["error"], what

    allowed = {what: got[what].status_code < 300 for what in ROLE_TABLE}
    # What changed state did so in the store, and only when allowed.
    with stack.store.db.read() as s:
        box = s.get(MailboxRow, "billing@acme.example")
        email = s.get(EmailRow, rejected_row.id)
        newbie = s.get(UserRow, "newbie")
        hold = s.get(IntakeHoldRow, held.email_id)
    assert box is not None and box.verified is allowed["verify a mailbox"]
    assert hold is not None and hold.released_by == (f"{user} ({role}) (release)" if role != "agent" else None)
    if role != "agent":
        assert got["release held mail"].json()["released"] == [held.email_id]
    assert email is not None and email.reprocessed == (1 if allowed["reprocess a rejected email"] else 0)
    versions = rows(ConfigVersionRow)
    assert len(versions) == versions_before + (1 if allowed["load configuration"] else 0)
    assert [t.created_by for t in sorted(rows(ApiTokenRow), key=lambda t: t.id or 0) if t.user_name == user] == (
        [None, "ada (admin)"] if role == "admin" else [None]
    )
    if role == "agent":
        assert got["pick a vip case for bob"].json()["error"] == (
            "bob-user (agent) may not pick CASE-000001: bob is not in its queue vip"
        )
        assert "needs the supervisor role" in got["release held mail"].json()["error"]
        assert stack.cases()[0].status != "resolved" and newbie is None
    if role == "supervisor":
        assert got["verify a mailbox"].json()["error"] == (
            "sam (supervisor) may not verify mailboxes: it needs the admin role or above"
        )
        assert (
            got["add a user"].json()["error"] == "sam (supervisor) may not add users: it needs the admin role or above"
        )
        assert newbie is None
    if role != "agent":  # the role check passed; the case's workflow refused: bob is not in vip
        assert got["pick a vip case for bob"].json()["error"] == (
            "cannot assign CASE-000001 to bob: bob is not a member of queue vip"
        )
        await eventually(lambda: stack.cases()[0].status == "resolved", what="the case resolved in the store")
        assert any(t.reason == f"resolved by {user} ({role})" for t in stack.trace(case_id=stack.cases()[0].id))
    if role == "admin":
        assert (versions[-1].loaded_by, versions[-1].source) == ("ada (admin)", "api")
        assert newbie is not None and (newbie.role, newbie.agent_id, newbie.created_by) == (
            "supervisor",
            None,
            "ada (admin)",
        )
        token = got["create a token"].json()
        assert (token["user"], token["created_by"]) == (user, "ada (admin)")
        assert auth.authenticate(stack.store, token["token"]).user == user
        listed = {u["name"]: u for u in got["list users"].json()}
        assert (listed["ada"]["role"], listed["ada"]["tokens"]) == ("admin", 1)  # listed before the new token


async def test_user_endpoints_refuse_duplicates_bad_roles_and_unknown_users_as_json(stack: Stack) -> None:
    from routedesk.models import UserRow

    admin = token_for(stack, "ada", "admin")
    async with api(stack) as http:
        made = await http.post(
            "/api/v1/users", json={"name": "kim", "role": "agent", "agent_id": "alice"}, headers=admin
        )
        assert made.status_code == 201, made.text
        assert (made.json()["role"], made.json()["agent_id"], made.json()["created_by"]) == (
            "agent",
            "alice",
            "ada (admin)",
        )
        again = await http.post("/api/v1/users", json={"name": "kim", "role": "admin"}, headers=admin)
        assert again.status_code == 409 and "user 'kim' exists (role agent)" in again.json()["error"]
        bad = await http.post("/api/v1/users", json={"name": "bo", "role": "boss"}, headers=admin)
        assert bad.status_code == 422 and "role must be one of agent, supervisor, admin" in bad.json()["error"]
        no_agent = await http.post("/api/v1/users", json={"name": "bo", "role": "agent"}, headers=admin)
        assert no_agent.status_code == 422 and "needs agent_id" in no_agent.json()["error"]
        ghost = await http.post("/api/v1/users", json={"name": "bo", "role": "agent", "agent_id": "zed"}, headers=admin)
        assert ghost.status_code == 422 and "no agent 'zed'" in ghost.json()["error"]
        missing = await http.post("/api/v1/users", json={"role": "agent"}, headers=admin)
        assert missing.status_code == 422 and "name" in missing.json()["error"]
        nobody = await http.post("/api/v1/users/nobody/tokens", headers=admin)
        assert nobody.status_code == 404 and "no user 'nobody'" in nobody.json()["error"]
        # The new user's token acts as them.
        token = (await http.post("/api/v1/users/kim/tokens", headers=admin)).json()["token"]
        me = (await http.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})).json()
        assert (me["user"], me["role"], me["agent_id"]) == ("kim", "agent", "alice")
    with stack.store.db.read() as s:
        users = {u.name: (u.role, u.agent_id) for u in s.exec(select(UserRow)).all()}
    assert users == {"ada": ("admin", None), "kim": ("agent", "alice")}  # the refusals changed nothing


async def test_api_docs_serve_swagger_and_the_openapi_lists_the_user_endpoints(stack: Stack) -> None:
    async with api(stack) as http:
        docs = await http.get("/api/docs")
        assert docs.status_code == 200 and docs.headers["content-type"].startswith("text/html")
        assert "swagger-ui" in docs.text and "<title>routedesk - Swagger UI</title>" in docs.text
        spec = (await http.get("/openapi.json")).json()
    assert spec["info"]["title"] == "routedesk"
    paths = spec["paths"]
    assert set(paths["/api/v1/users"]) == {"get", "post"}
    assert set(paths["/api/v1/users/{name}/tokens"]) == {"post"}
    assert "201" in paths["/api/v1/users"]["post"]["responses"] and "403" in paths["/api/v1/users"]["post"]["responses"]
    assert {"/api/v1/cases/{case}", "/api/v1/config", "/api/v1/agents/{agent_id}/offers"} <= set(paths)


async def test_case_show_lists_a_customer_reply_with_its_text(stack: Stack) -> None:
    admin = token_for(stack, "ada", "admin")
    first = await stack.submit(
        make_email(subject="Printer on fire", sender="kim@customer.example", message_id="orig-1@customer.example")
    )
    await stack.queued(first.workflow_id)
    reply = await stack.submit(
        make_email(
            subject="Re: Printer on fire",
            sender="kim@customer.example",
            body="Update: the fire spread to the scanner.",
            extra_headers=["In-Reply-To: <orig-1@customer.example>"],
        )
    )
    outcome = await stack.handle(reply.workflow_id).result()
    assert (outcome.stage, outcome.case_number) == ("threaded", "CASE-000001")
    async with api(stack) as http:
        shown = (await http.get("/api/v1/cases/CASE-000001", headers=admin)).json()
        emails = (await http.get("/api/v1/cases/CASE-000001/emails", headers=admin)).json()
    for listed in (shown["emails"], emails):
        assert [(e["kind"], e["text"].strip()) for e in listed] == [
            ("first", "Hi there"),
            ("reply", "Update: the fire spread to the scanner."),
        ]
    cli = await routedesk("case", "show", "CASE-000001", env=stack_env(stack))
    assert cli.code == 0 and "Update: the fire spread to the scanner." in cli.out
