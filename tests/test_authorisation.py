"""Authorisation as a table: every staff command and every staff HTTP route, for each kind
of person: a stranger, a subscriber, a member of partner A, a member of partner B, campaign
staff, an admin, and staff whose role was revoked. Each cell is an exact allow or deny.
The same for the buttons on a case card and a caseworker's reply to it (end to end, through
the fake Bot API: `test_a_member_of_another_partners_group_cannot_act_on_the_case`)."""

from __future__ import annotations

import itertools
import json

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bot.api.app import build_api
from bot.app import Core
from bot.engine.events import Event, Message
from bot.features.broadcasts import feature
from bot.features.broadcasts.subscribers import subscribe
from bot.outbox import Outbox
from sqlmodel import col, select
from storage.broadcasts import StaffRole
from storage.models import OutboxMessage, User
from storage.reports import CaseMessage, CasePost, Report, ReportRoute

PEOPLE = {"stranger": 7801, "subscriber": 7802, "partner_a": 7803, "partner_b": 7804, "campaign": 7805, "admin": 7806, "revoked": 7807}
STAFF = {"campaign", "admin"}
# command → who may use it
COMMANDS = {
    "/broadcast": STAFF,
    "/campaigns": STAFF,
    "/grant 7801 campaign": {"admin"},
    "/revoke 7801 campaign": {"admin"},
    "/invite campaign": {"admin"},
}
# route → who may use it (everyone else: 401 without a valid token, 403 with one)
OPEN_ROUTES = ("/healthz", "/readyz", "/metrics")
ROUTES = [*(("GET", path) for path in OPEN_ROUTES), ("GET", "/campaigns"), ("POST", "/campaigns"), ("GET", "/campaigns/1"), ("POST", "/campaigns/1/pause"),
          ("POST", "/campaigns/1/resume"), ("POST", "/campaigns/1/cancel"), ("GET", "/partner/cases"), ("GET", "/partner/cases/T00001")]
PARTNER_ROUTES = ("/partner/cases", "/partner/cases/T00001")


@pytest.fixture
async def people(core: Core) -> AsyncIterator[dict[str, str]]:
    """Each kind of person, with an API token each (issued while each had a role, for the revoked one)."""
    staff = feature(core).staff
    tokens: dict[str, str] = {}
    async with core.db.transaction() as session:
        users = {kind: User(channel="telegram", address=str(uid), lang="en") for kind, uid in PEOPLE.items()}
        session.add_all(users.values())
        await session.flush()
        await subscribe(session, users["subscriber"])
        roles = {"partner_a": "partner", "partner_b": "partner", "campaign": "campaign", "admin": "admin", "revoked": "campaign"}
        for kind, role in roles.items():
            session.add(StaffRole(user_id=users[kind].id, role=role))  # type: ignore[arg-type]
        await session.flush()
        for kind, user in users.items():
            tokens[kind] = await staff.new_api_token(session, user, kind)
        await staff.revoke(session, users["admin"], users["revoked"], "campaign")
        campaign = await feature(core).campaigns.create(session, users["admin"], name="table", texts={"en": "Be careful"},
                                                        schedule={"kind": "once", "at": "2099-01-01T08:00:00+00:00"})
        assert campaign.id == 1
    yield tokens


async def reply_to(core: Core, kind: str, command: str) -> str:
    head, _, args = command[1:].partition(" ")
    outputs = await core.conversations.handle(Event(channel="telegram", address=str(PEOPLE[kind]), client_lang="en", command=head, args=args))
    return "\n".join(o.text for o in outputs if isinstance(o, Message))


async def test_staff_commands_allow_exactly_who_they_should(core: Core, people: dict[str, str]) -> None:
    refused = core.texts.get("en", "staff.refused")
    wrong = []
    for command, allowed_kinds in COMMANDS.items():
        for kind in PEOPLE:
            answer = await reply_to(core, kind, command)
            if (refused not in answer) is not (kind in allowed_kinds):
                wrong.append(f"{kind} {command}: {'allowed' if kind in allowed_kinds else 'denied'} expected; got {answer[:80]!r}")
    assert not wrong, "\n".join(wrong)


async def test_staff_http_routes_allow_exactly_who_they_should(core: Core, people: dict[str, str]) -> None:
    client = TestClient(TestServer(build_api(feature(core))))
    await client.start_server()
    wrong = []
    try:
        for kind in [*PEOPLE, "no token", "wrong token"]:
            token = {"no token": None, "wrong token": "srt_wrong"}.get(kind, people.get(kind))
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            for method, path in ROUTES:
                body = {"name": "x", "texts": {"en": "hello"}, "schedule": {"kind": "once", "at": "2099-02-01T08:00:00+00:00"}}
                answer = await client.request(method, path, json=body if path == "/campaigns" and method == "POST" else None, headers=headers)
                expected = (200, 201, 409) if kind in STAFF else (401,) if kind in ("no token", "wrong token") else (403,)
                if path in OPEN_ROUTES:
                    expected = (200,)  # health, readiness and metrics are open (they hold nothing about anyone)
                if path in PARTNER_ROUTES:
                    expected = (401,)  # cases are read with a partner's own token only (tests/test_case_cards.py)
                if answer.status not in expected or (answer.status >= 400 and "error" not in await answer.json()):
                    wrong.append(f"{kind} {method} {path}: {answer.status}, expected {expected}")
    finally:
        await client.close()
    assert not wrong, "\n".join(wrong)


# Case buttons and a caseworker's reply, on a case routed to partner A only. A partner acts through
# its own Telegram group (who is in that group is the partner's own access control), so partner A's
# member presses in group A, partner B's member in group B (a forwarded card), and everyone else
# presses a forged copy of the button in their own chat with the bot.
GROUP_A, GROUP_B = -1001000000101, -1001000000201  # demo_bangkok, demo_phnom_penh in flows/data/partners.yaml
CASE_ACTIONS = ("ack", "claim", "ask", "close", "out:resolved", "reply")
CASE_ALLOWED = {"partner_a"}


CASES = itertools.count(1)


async def a_case_for_partner_a(core: Core) -> tuple[int, str]:
    """A fresh open case routed to partner A, with its card posted in A's group (as Telegram message 500 + its id)."""
    n = next(CASES)
    async with core.db.transaction() as session:
        reporter = User(channel="telegram", address=str(8_800_000 + n), lang="en")
        session.add(reporter)
        await session.flush()
        report = Report(code=f"T{n:05d}", reporter_id=reporter.id, lang="en", category="documents_wages",
                        country="TH", province="bangkok", affected="me", contact_mode="anytime",
                        content={"description": "They keep our passports"})
        session.add(report)
        await session.flush()
        assert report.id is not None
        session.add(ReportRoute(report_id=report.id, partner_id="demo_bangkok", kind="primary", reason="test"))
        card = Outbox.add(session, "telegram", str(GROUP_A), "message", {"text": "card"})
        card.status, card.result_ref = "sent", str(500 + report.id)
        await session.flush()
        assert card.id is not None
        session.add(CasePost(report_id=report.id, partner_id="demo_bangkok", outbox_id=card.id))
        return report.id, report.code


async def press(core: Core, kind: str, action: str, report_id: int) -> None:
    uid = str(PEOPLE[kind])
    chat = {"partner_a": str(GROUP_A), "partner_b": str(GROUP_B)}.get(kind, uid)
    if action == "reply":
        event = Event(channel="telegram", address=uid, chat=chat, text="Which agency was it?", reply_to_ref=str(500 + report_id),
                      client_lang="en")
    else:
        event = Event(channel="telegram", address=uid, chat=chat, choice=f"p:{action.split(':')[0]}:{report_id}"
                      + (f":{action.split(':')[1]}" if ":" in action else ""), client_lang="en")
    await core.conversations.handle(event)


async def what_happened(core: Core, report_id: int, code: str) -> tuple[bool, list[tuple[str, str]]]:
    """Whether the action took effect on the case, and every (chat, text) the bot queued but the
    reporter's own messages (an acknowledgement, a closing, a caseworker's words are for them)."""
    async with core.db.session() as session:
        report = await session.get(Report, report_id)
        assert report is not None and report.reporter_id is not None
        reporter = await session.get(User, report.reporter_id)
        assert reporter is not None
        relayed = (await session.exec(select(CaseMessage).where(CaseMessage.report_id == report_id))).all()
        rows = (await session.exec(select(OutboxMessage).where(col(OutboxMessage.id) > 0))).all()
    payloads = [(row.chat, json.loads(row.payload or "{}")) for row in rows]
    posts = [(chat, str(payload.get("text", ""))) for chat, payload in payloads if payload.get("text") != "card" and chat != reporter.address]
    took_effect = (report.acknowledged_at is not None or report.status != "open" or bool(relayed)
                   or any(code in text and chat == str(GROUP_A) for chat, text in posts))
    return took_effect, posts


async def test_case_buttons_and_replies_allow_exactly_the_partner_the_case_was_routed_to(core: Core, people: dict[str, str]) -> None:
    refused = core.texts.get("en", "partner.refused")
    wrong = []
    for action in CASE_ACTIONS:
        for kind in PEOPLE:
            report_id, code = await a_case_for_partner_a(core)
            async with core.db.transaction() as session:
                for row in (await session.exec(select(OutboxMessage))).all():
                    if json.loads(row.payload or "{}").get("text") != "card":
                        await session.delete(row)
            await press(core, kind, action, report_id)
            took_effect, posts = await what_happened(core, report_id, code)
            leaked = [(chat, text) for chat, text in posts if chat not in (str(GROUP_A),) and ("passports" in text or code in text)]
            if took_effect is not (kind in CASE_ALLOWED):
                wrong.append(f"{kind} {action}: {'allowed' if kind in CASE_ALLOWED else 'denied'} expected; posts {posts!r:.160}")
            if leaked:
                wrong.append(f"{kind} {action}: the case reached {leaked!r:.160}")
            if kind == "partner_b" and action != "reply" and (str(GROUP_B), refused) not in posts:
                wrong.append(f"partner_b {action}: not told it cannot act on the case; posts {posts!r:.160}")
    assert not wrong, "\n".join(wrong)
