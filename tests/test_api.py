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
    documented = {(path, method) for path, ops in spec["paths"].items() for method in ops if method in ("get", "post")}
    routes = {(r.resource.canonical, r.method.lower()) for r in build_api(object()).router.routes()  # type: ignore[arg-type]
              if r.resource is not None and r.method in ("GET", "POST") and r.resource.canonical != "/openapi.yaml"}
    assert documented == routes
    assert documented == {("/campaigns", "get"), ("/campaigns", "post"), ("/campaigns/{campaign_id}", "get"),
                          ("/campaigns/{campaign_id}/pause", "post"), ("/campaigns/{campaign_id}/resume", "post"),
                          ("/campaigns/{campaign_id}/cancel", "post")}
