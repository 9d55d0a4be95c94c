"""An update is never lost and never answered twice: restarts, redeliveries and kills."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path

import pytest

from bot.app import build_core
from bot.outbox import PRIORITY_PARTNER, NotSentYet, Outbox
from bot.scheduler import Clock
from bot.settings import PROJECT_ROOT, Settings
from storage import connect
from tests.conftest import RunningBot
from tests.fakes.bot_api import FakeBotApi
from tests.processes import BotProcess
from tests.story import TelegramUser


def settings_for(url: str) -> Settings:
    return Settings(database_url=url, flows_dir=PROJECT_ROOT / "flows", locales_dir=PROJECT_ROOT / "locales", poll_timeout=5)


async def test_a_restart_in_the_middle_of_a_flow_resumes_it(database_url: str, fake_api: FakeBotApi) -> None:
    core = await build_core(settings_for(database_url))
    bot = RunningBot(core, fake_api)
    await bot.start()
    user = bot.user(5001, "en")
    await user.send("/start")
    await user.press("English")
    await user.press("🧭 Go abroad to work safely")
    origin = await user.expect("Which country are you from")
    await bot.stop()
    await core.close()

    core = await build_core(settings_for(database_url))
    bot = RunningBot(core, fake_api)
    await bot.start()
    try:
        await user.press("Vietnam", origin)
        await user.expect("Where do you want to work")
        await user.press("Japan")
        await user.expect("What would you like to know")
    finally:
        await bot.stop()
        await core.close()


async def test_an_update_delivered_twice_is_answered_once(running_bot: RunningBot) -> None:
    fake = running_bot.fake
    user = running_bot.user(5002, "en")
    await user.send("/start")
    await user.expect("Please choose your language")

    duplicate = copy.deepcopy(next(u for u in fake.delivered if "message" in u))
    # The getUpdates that confirmed it never reached Telegram (a crash, a dropped connection):
    # Telegram hands it out again.
    running_bot.channel._offset = duplicate["update_id"]
    await fake.push_update(duplicate)
    await user.send("/help")
    await user.expect("Press the buttons")
    pickers = [m for m in fake.sent_to(user.id) if m.text.startswith("Please choose your language")]
    assert fake.deliveries[duplicate["update_id"]] >= 2, "the update really was delivered twice"
    assert len(pickers) == 1


async def test_an_update_fetched_but_not_handled_before_a_crash_is_answered_after_restart(settings: Settings, fake_api: FakeBotApi) -> None:
    from bot.channels.telegram import TelegramChannel

    user = TelegramUser(fake_api, 5003, "en")
    await user.send("/start")

    core = await build_core(settings)
    doomed = TelegramChannel(fake_api.token, fake_api.base_url, core.conversations, core.inbox, core.outbox, core.flows, core.texts)
    await doomed.app.initialize()
    stored = await doomed.fetch_once(timeout=0)
    assert len(stored) == 1
    for task in list(doomed._tasks):  # the process dies before it handles the update
        task.cancel()
    await asyncio.gather(*doomed._tasks, return_exceptions=True)
    await doomed.app.shutdown()
    await core.close()
    assert fake_api.sent_to(5003) == []

    core = await build_core(settings)
    bot = RunningBot(core, fake_api)
    await bot.start()
    try:
        await user.expect("Please choose your language")
        await user.send("/help")
        await user.expect("Press the buttons")
        assert len([m for m in fake_api.sent_to(5003) if m.text.startswith("Please choose")]) == 1
    finally:
        await bot.stop()
        await core.close()


async def test_a_process_killed_before_answering_answers_once_after_restart(fake_api: FakeBotApi, tmp_path: Path) -> None:
    user = TelegramUser(fake_api, 5004, "en")
    held = fake_api.hold_sends = asyncio.Event()  # sendMessage hangs: the answer cannot get out
    process = BotProcess.on_sqlite(fake_api, tmp_path / "bot.db")
    try:
        await user.send("/start")
        await fake_api.wait_for(lambda: any(m == "sendMessage" for m, _ in fake_api.calls), timeout=30)
        await process.kill()
        assert fake_api.sent_to(5004) == []
        fake_api.held_never_arrive = True  # the answer had not reached Telegram when the process died
        held.set()
        await fake_api.wait_for(lambda: fake_api.held == 0)
        fake_api.hold_sends, fake_api.held_never_arrive = None, False
        process = BotProcess.on_sqlite(fake_api, tmp_path / "bot.db")
        await user.expect("Please choose your language", timeout=30)
        await user.send("/help")
        await user.expect("Press the buttons", timeout=30)
        assert len([m for m in fake_api.sent_to(5004) if m.text.startswith("Please choose")]) == 1
    finally:
        held.set()
        await process.stop()


async def test_a_stop_lets_a_periodic_pass_that_is_running_finish_instead_of_cutting_it_off() -> None:
    started, release = asyncio.Event(), asyncio.Event()
    finished: list[str] = []

    async def escalate() -> None:
        started.set()
        await release.wait()
        finished.append("escalate")

    clock = Clock([("escalate", 3600, escalate)]).start()
    await asyncio.wait_for(started.wait(), 5)
    stopping = asyncio.create_task(clock.stop())
    await asyncio.sleep(0)
    assert not stopping.done(), "the stop waits for the pass"
    release.set()
    await asyncio.wait_for(stopping, 5)
    assert finished == ["escalate"]


async def test_a_photo_for_a_case_card_waits_for_the_card_and_finds_its_id_before_the_outcome_is_recorded(tmp_path: Path) -> None:
    db = await connect(f"sqlite+aiosqlite:///{tmp_path / 'o.db'}")
    outbox = Outbox(db)
    try:
        async with db.transaction() as session:
            card = Outbox.add(session, "telegram", "-1001000000101", "message", {"text": "Case AB12CD"}, PRIORITY_PARTNER)
            await session.flush()
            card_id = card.id
        assert card_id is not None
        with pytest.raises(NotSentYet):
            await outbox.result_ref(card_id)  # the photo is put back to wait, not sent without its thread
        outbox.remember_sent(card_id, "77")  # the card went out; its outcome is not committed yet
        assert await outbox.result_ref(card_id) == "77"
    finally:
        await db.close()


def test_a_queued_answer_keeps_every_part_of_the_message() -> None:
    """Answers are written to the outbox as payloads made by hand (not dataclasses.asdict,
    which cost a tenth of a millisecond a message): every field of a message, each button's
    link included, comes back whole, and a field added later cannot be forgotten silently."""
    from dataclasses import fields

    from bot.engine.events import Button, Message

    message = Message("ជំនួយ <b>1280</b>", [Button("c:TH", "ថៃ"), Button("u:1", "Site", "https://example.org")], 2, "77", True,
                      [Button("nav:back", "↩")])
    payload = json.loads(Outbox.encode(message.to_payload()))
    assert Message.from_payload(payload) == message
    assert set(payload) == {f.name for f in fields(Message)}
    assert Message.from_payload(Message("plain").to_payload()) == Message("plain")
