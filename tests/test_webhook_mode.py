"""Webhook mode: Telegram posts each update to the bot's own HTTP server (next to the staff
API); a post without the secret token is refused and nothing of it is stored; an update is
in the inbox before the bot answers 200; going back to polling deletes the webhook."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bot.api.app import build_api
from bot.app import Core, StartupError, webhook_settings
from bot.channels.telegram import TelegramChannel
from bot.features.broadcasts import feature
from bot.settings import Settings
from tests.fakes.bot_api import FakeBotApi
from tests.story import TelegramUser

SECRET = "s3cret_-token"


def channel_for(core: Core, fake: FakeBotApi, webhook: tuple[str, str] | None) -> TelegramChannel:
    return TelegramChannel(fake.token, fake.base_url, core.conversations, core.inbox, core.outbox, core.flows, core.texts,
                           poll_timeout=2, webhook=webhook)


async def test_in_webhook_mode_updates_arrive_by_post_and_a_post_without_the_secret_stores_nothing(core: Core, fake_api: FakeBotApi) -> None:
    fake, texts = fake_api, core.texts
    holder: dict[str, TelegramChannel] = {}

    async def on_webhook(request: web.Request) -> web.Response:
        return await holder["channel"].on_webhook(request)

    server = TestServer(build_api(feature(core), webhook=("/telegram/hook", on_webhook)))
    await server.start_server()
    url = f"http://127.0.0.1:{server.port}/telegram/hook"
    channel = holder["channel"] = channel_for(core, fake, (url, SECRET))
    running = asyncio.create_task(channel.run())
    try:
        await fake.wait_for(lambda: fake.webhook is not None)
        assert fake.webhook == (url, SECRET)
        user = TelegramUser(fake, 7951, "km")
        await user.start_in(texts, "km")
        await user.press(texts.get("km", "menu.hotlines"))
        await user.expect(re.escape(texts.get("km", "hotlines.pick_country")))
        assert not any(method == "getUpdates" for method, _ in fake.calls), "no polling in webhook mode"
        assert fake.webhook_posts and all(status == 200 for _, status in fake.webhook_posts)

        forged = {"update_id": 990001, "message": {"message_id": 1, "date": 0, "chat": {"id": 7952, "type": "private"},
                                                   "from": {"id": 7952, "is_bot": False, "first_name": "X"}, "text": "/start"}}
        async with aiohttp.ClientSession() as http:
            for headers in ({}, {"X-Telegram-Bot-Api-Secret-Token": "wrong"}, {"X-Telegram-Bot-Api-Secret-Token": SECRET[:-1]}):
                async with http.post(url, json=forged, headers=headers) as answer:
                    assert answer.status == 403
            assert await core.inbox.get("telegram", "990001") is None, "a refused post leaves nothing in the inbox"
            async with http.post(url, json=forged, headers={"X-Telegram-Bot-Api-Secret-Token": SECRET}) as answer:
                assert answer.status == 200
                assert await core.inbox.get("telegram", "990001") is not None, "stored before Telegram hears 200"
            async with http.post(url, data=b"not json", headers={"X-Telegram-Bot-Api-Secret-Token": SECRET}) as answer:
                assert answer.status == 400
    finally:
        channel.request_stop()
        await running
        await server.close()

    polling = channel_for(core, fake, None)  # back to polling: the webhook is deleted, getUpdates works again
    running = asyncio.create_task(polling.run())
    try:
        await fake.wait_for(lambda: any(method == "getUpdates" for method, _ in fake.calls))
        assert fake.webhook is None
        await user.send("/help")
        await user.expect(re.escape(texts.get("km", "help.text")[:15]))
    finally:
        polling.request_stop()
        await running


@pytest.mark.parametrize(("url", "secret", "port", "says"), [
    ("https://bot.example.org/telegram/x", None, 8080, "TELEGRAM_WEBHOOK_SECRET"),
    ("https://bot.example.org/telegram/x", "has spaces", 8080, "TELEGRAM_WEBHOOK_SECRET"),
    ("https://bot.example.org", "fine", 8080, "with a path"),
    ("https://bot.example.org/telegram/x", "fine", 0, "API_PORT=0"),
])
def test_webhook_settings_that_cannot_work_are_one_clear_line(url: str, secret: str | None, port: int, says: str, tmp_path: Path) -> None:
    settings = Settings(telegram_bot_token="1:x", telegram_webhook_url=url, telegram_webhook_secret=secret, api_port=port,
                        database_url=f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(StartupError, match=re.escape(says)):
        webhook_settings(settings)


def test_a_webhook_behind_a_proxy_on_the_same_machine_may_be_served_on_a_unix_socket(tmp_path: Path) -> None:
    settings = Settings(telegram_bot_token="1:x", telegram_webhook_url="https://bot.example.org/telegram/x", telegram_webhook_secret="fine",
                        api_port=0, api_socket=str(tmp_path / "bot.sock"), database_url=f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    assert webhook_settings(settings) == ("https://bot.example.org/telegram/x", "fine")
    assert settings.http_address == f"unix:{tmp_path / 'bot.sock'}"
