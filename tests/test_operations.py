"""What an operator sees: /healthz, /readyz and Prometheus /metrics on the bot's HTTP server,
open without a token, with the counters moving while someone uses the bot."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from bot.api.app import build_api
from bot.features.broadcasts import feature
from tests.conftest import RunningBot


@pytest.fixture
async def http(running_bot: RunningBot) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    client = TestClient(TestServer(build_api(feature(running_bot.core), running_bot.channel.sending)))
    await client.start_server()
    yield client
    await client.close()


async def scrape(http: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:  # type: ignore[type-arg]
    answer = await http.get("/metrics")
    assert answer.status == 200 and answer.headers["Content-Type"].startswith("text/plain")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(await answer.text()) for sample in family.samples}


def total(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return sum(value for (metric, found), value in metrics.items()
               if metric == name and all((key, wanted) in found for key, wanted in labels.items()))


async def test_the_counters_move_while_someone_finds_the_hotlines(running_bot: RunningBot, http: TestClient) -> None:  # type: ignore[type-arg]
    texts = running_bot.core.texts
    before = await scrape(http)
    user = running_bot.user(7901, "en")
    await user.start_in(texts, "en")
    await user.press(texts.get("en", "menu.hotlines"))
    await user.press(texts.get("en", "country.TH"))
    await user.expect("1300")
    after = await scrape(http)
    assert total(after, "saferoute_updates_received_total", channel="telegram") - total(before, "saferoute_updates_received_total") >= 4
    assert total(after, "saferoute_updates_handled_total", outcome="done") - total(before, "saferoute_updates_handled_total", outcome="done") >= 4
    assert total(after, "saferoute_update_handling_seconds_count") > total(before, "saferoute_update_handling_seconds_count")
    assert total(after, "saferoute_sends_total", lane="reply", outcome="sent") - total(before, "saferoute_sends_total", lane="reply", outcome="sent") >= 4
    assert ("saferoute_inbox_updates", (("status", "failed"),)) in after
    page = (await (await http.get("/metrics")).text())
    labels = "\n".join(line for line in page.splitlines() if "{" in line)  # label values, not the numbers (0.17901… is a time)
    assert not re.search(r"(?<![\w.])7901(?![\w.])|Thailand|hotline", labels, re.I), "no person's id or words in a label"


async def test_health_is_open_and_readiness_says_what_is_wrong(running_bot: RunningBot, http: TestClient) -> None:  # type: ignore[type-arg]
    assert (await http.get("/healthz")).status == 200
    ready = await http.get("/readyz")
    assert ready.status == 200 and (await ready.json())["ok"] is True
    assert (await http.get("/campaigns")).status == 401, "the staff endpoints still want a token"
    async with running_bot.core.db.transaction() as session:
        await session.execute(text("UPDATE alembic_version SET version_num = '0008'"))
    stale = await http.get("/readyz")
    body = await stale.json()
    assert stale.status == 503 and "run the migrations" in body["problems"][0]
