"""Authorisation as a table: every staff command and every staff HTTP route, for each kind
of person: a stranger, a subscriber, a member of partner A, a member of partner B, campaign
staff, an admin, and staff whose role was revoked. Each cell is an exact allow or deny.
(Case buttons across partners: `test_a_member_of_another_partners_group_cannot_act_on_the_case`.)"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bot.api.app import build_api
from bot.app import Core
from bot.engine.events import Event, Message
from bot.features.broadcasts import feature
from bot.features.broadcasts.subscribers import subscribe
from storage.broadcasts import StaffRole
from storage.models import User

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
ROUTES = [("GET", "/campaigns"), ("POST", "/campaigns"), ("GET", "/campaigns/1"), ("POST", "/campaigns/1/pause"),
          ("POST", "/campaigns/1/resume"), ("POST", "/campaigns/1/cancel")]


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
                if answer.status not in expected or (answer.status >= 400 and "error" not in await answer.json()):
                    wrong.append(f"{kind} {method} {path}: {answer.status}, expected {expected}")
    finally:
        await client.close()
    assert not wrong, "\n".join(wrong)
