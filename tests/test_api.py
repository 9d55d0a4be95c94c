"""The staff HTTP API: campaign staff create and cancel a campaign; bad input gets a 4xx
that says what is wrong; no token, no access."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer
from openapi_spec_validator import validate
from sqlmodel import select

from bot.api.app import SPEC, build_api
from bot.app import Core
from bot.features.broadcasts import feature
from storage.broadcasts import AuditEntry, StaffRole
from storage.models import User


@pytest.fixture
async def api(core: Core) -> AsyncIterator[tuple[TestClient, dict[str, str]]]:
    broadcasts = feature(core)
    async with core.db.transaction() as session:
        staff, stranger = User(channel="telegram", address="7100", lang="en"), User(channel="telegram", address="7101", lang="en")
        session.add_all([staff, stranger])
        await session.flush()
        session.add(StaffRole(user_id=staff.id, role="campaign"))  # type: ignore[arg-type]
        tokens = {"staff": await broadcasts.staff.new_api_token(session, staff, "test"),
                  "stranger": await broadcasts.staff.new_api_token(session, stranger, "test")}
    client = TestClient(TestServer(build_api(broadcasts)))
    await client.start_server()
    yield client, tokens
    await client.close()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_campaign_staff_create_inspect_and_cancel_a_campaign(api: tuple[TestClient, dict[str, str]], core: Core) -> None:
    client, tokens = api
    body = {"name": "Harvest season warning", "texts": {"km": "កុំជឿការងារប្រាក់ខែខ្ពស់ងាយៗ", "th": "ระวังงานเงินดีที่ง่ายเกินจริง"},
            "button": {"flow": "scam"}, "audience": {"languages": ["km", "th"]},
            "schedule": {"kind": "weekly", "weekday": "mon", "time": "09:00", "tz": "Asia/Phnom_Penh"}}
    empty = await client.post("/campaigns", json=body, headers=auth(tokens["staff"]))
    assert empty.status == 409 and "reaches no subscriber" in (await empty.json())["error"], "no one yet: said, not silently accepted"
    body["confirm_empty"] = True
    created = await client.post("/campaigns", json=body, headers=auth(tokens["staff"]))
    assert created.status == 201, await created.text()
    campaign = await created.json()
    assert campaign["status"] == "scheduled" and campaign["schedule"]["weekday"] == "mon" and campaign["next_run"]

    listed = await (await client.get("/campaigns", headers=auth(tokens["staff"]))).json()
    assert [c["id"] for c in listed["campaigns"]] == [campaign["id"]]
    shown = await (await client.get(f"/campaigns/{campaign['id']}", headers=auth(tokens["staff"]))).json()
    assert {"sent", "failed", "blocked", "remaining", "estimated_finish"} <= set(shown)

    paused = await client.post(f"/campaigns/{campaign['id']}/pause", headers=auth(tokens["staff"]))
    assert (await paused.json())["status"] == "paused"
    cancelled = await client.post(f"/campaigns/{campaign['id']}/cancel", headers=auth(tokens["staff"]))
    assert (await cancelled.json())["status"] == "cancelled"
    again = await client.post(f"/campaigns/{campaign['id']}/cancel", headers=auth(tokens["staff"]))
    assert again.status == 409 and "cancelled" in (await again.json())["error"]

    async with core.db.session() as session:
        actions = [a.action for a in (await session.exec(select(AuditEntry))).all()]
    assert {"campaign_created_api", "campaign_pause_api", "campaign_cancel_api"} <= set(actions)


@pytest.mark.parametrize(("body", "says"), [
    ({"name": "x", "texts": {}}, "at least one language"),
    ({"name": "x", "texts": {"fr": "bonjour"}}, "unknown language"),
    ({"name": "x", "texts": {"km": "សួស្ដី"}, "schedule": {"kind": "weekly", "weekday": "someday", "time": "09:00"}}, "schedule.weekday"),
    ({"name": "x", "texts": {"km": "សួស្ដី"}, "schedule": {"kind": "weekly", "weekday": "mon", "time": "25:00"}}, "time of day"),
    ({"name": "x", "texts": {"km": "សួស្ដី"}, "schedule": {"kind": "once", "at": "2020-01-01T09:00"}}, "in the past"),
    ({"name": "x", "texts": {"km": "សួស្ដី"}, "schedule": {"kind": "once", "at": "2030-01-01T09:00", "tz": "Mars/Olympus"}}, "time zone"),
    ({"name": "x", "texts": {"km": "សួស្ដី"}, "button": {"url": "http://insecure.example"}}, "https://"),
    ({"name": "x", "texts": {"km": "សួស្ដី"}, "colour": "red"}, "unknown field"),
    ({"name": "", "texts": {"km": "សួស្ដី"}}, "name"),
])
async def test_bad_input_gets_a_400_that_says_what_is_wrong(api: tuple[TestClient, dict[str, str]], body: dict, says: str) -> None:
    client, tokens = api
    response = await client.post("/campaigns", json=body, headers=auth(tokens["staff"]))
    assert response.status == 400
    assert says in (await response.json())["error"]


async def test_no_token_a_wrong_token_or_no_role_is_refused(api: tuple[TestClient, dict[str, str]]) -> None:
    client, tokens = api
    assert (await client.get("/campaigns")).status == 401
    assert (await client.get("/campaigns", headers=auth("srt_not-a-token"))).status == 401
    refused = await client.get("/campaigns", headers=auth(tokens["stranger"]))
    assert refused.status == 403 and "role" in (await refused.json())["error"]


async def test_other_client_mistakes(api: tuple[TestClient, dict[str, str]]) -> None:
    client, tokens = api
    not_json = await client.post("/campaigns", data="name=x", headers={**auth(tokens["staff"]), "Content-Type": "text/plain"})
    assert not_json.status == 415
    broken = await client.post("/campaigns", data="{oops", headers={**auth(tokens["staff"]), "Content-Type": "application/json"})
    assert broken.status == 400 and "not valid JSON" in (await broken.json())["error"]
    assert (await client.get("/campaigns/999", headers=auth(tokens["staff"]))).status == 404
    assert (await client.get("/campaigns/abc", headers=auth(tokens["staff"]))).status == 400


def test_the_openapi_file_is_valid_and_describes_every_route() -> None:
    spec = yaml.safe_load(SPEC.read_text())
    validate(spec)
    documented = {(path, method) for path, ops in spec["paths"].items() for method in ops if method in ("get", "post", "patch")}
    routes = {(r.resource.canonical, r.method.lower()) for r in build_api(object()).router.routes()  # type: ignore[arg-type]
              if r.resource is not None and r.method in ("GET", "POST", "PATCH") and r.resource.canonical != "/openapi.yaml"}
    assert documented == routes
    assert documented == {("/healthz", "get"), ("/readyz", "get"), ("/metrics", "get"),
                          ("/campaigns", "get"), ("/campaigns", "post"), ("/campaigns/{campaign_id}", "get"),
                          ("/campaigns/{campaign_id}/pause", "post"), ("/campaigns/{campaign_id}/resume", "post"),
                          ("/campaigns/{campaign_id}/cancel", "post"), ("/partner/cases", "get"), ("/partner/cases/{code}", "get"),
                          ("/campaigns/{campaign_id}/figures.csv", "get"), ("/campaigns/{campaign_id}", "patch")}


@pytest.mark.parametrize(("body", "says"), [
    ({"name": 5, "texts": {"km": "x"}}, "name must be a string"),
    ({"name": "x", "texts": {"km": 7}}, "every message must be a string"),
    ({"name": "x", "texts": {"km": "x"}, "audience": [1, 2]}, "audience must be an object"),
    ({"name": "x", "texts": {"km": "x"}, "paid": "yes"}, "paid must be true or false"),
    ({"name": "x", "texts": {"km": "x"}, "paid": True}, "paid broadcasts are off"),
])
async def test_wrong_types_and_a_paid_broadcast_while_it_is_off_are_400s_in_json(
        api: tuple[TestClient, dict[str, str]], body: dict, says: str) -> None:
    client, tokens = api
    answer = await client.post("/campaigns", json=body, headers=auth(tokens["staff"]))
    assert answer.status == 400 and says in (await answer.json())["error"]


async def test_an_id_too_large_to_exist_is_a_404_not_a_500(api: tuple[TestClient, dict[str, str]]) -> None:
    client, tokens = api
    for path in ("/campaigns/99999999999999999999", "/campaigns/99999999999999999999/pause"):
        method = client.get if not path.endswith("pause") else client.post
        answer = await method(path, headers=auth(tokens["staff"]))
        assert answer.status == 404 and "error" in await answer.json()


async def test_a_revoked_or_expired_token_is_refused(api: tuple[TestClient, dict[str, str]], core: Core) -> None:
    from datetime import timedelta

    from storage.broadcasts import ApiToken
    from storage.models import utcnow
    client, tokens = api
    assert (await client.get("/campaigns", headers=auth(tokens["staff"]))).status == 200
    async with core.db.transaction() as session:
        staff = (await session.exec(select(User).where(User.address == "7100"))).one()
        expiring = await feature(core).staff.new_api_token(session, staff, "short", days=1)
        rows = (await session.exec(select(ApiToken).where(ApiToken.user_id == staff.id))).all()
        first = min(r.id for r in rows)  # type: ignore[type-var]
        assert await feature(core).staff.revoke_api_token(session, first)  # type: ignore[arg-type]
        last = max(rows, key=lambda r: r.id)  # type: ignore[arg-type,return-value]
        last.expires_at = utcnow() - timedelta(minutes=1)
        session.add(last)
    assert (await client.get("/campaigns", headers=auth(tokens["staff"]))).status == 401, "revoked"
    assert (await client.get("/campaigns", headers=auth(expiring))).status == 401, "expired"


async def test_a_one_time_invite_opened_by_two_people_at_once_has_one_winner(database_url: str, tmp_path: object) -> None:
    import asyncio

    from bot.app import build_core
    from bot.features.broadcasts.staff import StaffError
    from bot.settings import PROJECT_ROOT, Settings
    core = await build_core(Settings(database_url=database_url, flows_dir=PROJECT_ROOT / "flows", locales_dir=PROJECT_ROOT / "locales",
                                     admin_telegram_ids="7200"))
    staff = feature(core).staff
    async with core.db.transaction() as session:
        admin = User(channel="telegram", address="7200", lang="en")
        first, second = User(channel="telegram", address="7201"), User(channel="telegram", address="7202")
        session.add_all([admin, first, second])
        await session.flush()
        session.add(StaffRole(user_id=admin.id, role="admin"))  # type: ignore[arg-type]
        await session.flush()
        token = await staff.invite(session, admin, "campaign")

    async def accept(user_id: int) -> str:
        async with core.db.transaction() as session:
            user = await session.get(User, user_id)
            return await staff.accept(session, user, token)  # type: ignore[arg-type]

    results = await asyncio.gather(accept(first.id), accept(second.id), return_exceptions=True)  # type: ignore[arg-type]
    assert sorted(type(r).__name__ for r in results) == sorted(["str", "StaffError"]), results
    assert any(isinstance(r, StaffError) for r in results)
    async with core.db.session() as session:
        roles = (await session.exec(select(StaffRole).where(StaffRole.role == "campaign"))).all()
        assert len(roles) == 1, "one winner"
    await core.close()
