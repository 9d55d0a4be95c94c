"""Telegram's rules that people run into in normal use, kept by the fake Bot API as Telegram
keeps them, and what the bot does about each: someone blocks the bot and comes back, a button
pressed long ago, an edited message, a message too old to delete, a group's privacy mode, and
per-chat send limits."""

from __future__ import annotations

import asyncio
import re
import time

from sqlmodel import select

from bot.features.broadcasts import feature
from bot.features.broadcasts.subscribers import subscribe
from storage.models import OutboxMessage, User, utcnow
from tests.conftest import RunningBot
from bot.engine.i18n import Translator
from tests.fakes.bot_api import WAIT, SentMessage
from tests.story import TelegramUser
from tests.test_reports import BANGKOK, CASEWORKER, partner_groups


async def a_report_in_bangkok(user: TelegramUser, texts: Translator, description: str, *, contact: str) -> str:
    """An English speaker's whole report of kept documents in Bangkok; its case code."""
    from tests.test_reports import report_until_consent
    en = lambda key, **p: texts.get("en", key, **p)  # noqa: E731
    await user.start_in(texts, "en")
    await report_until_consent(user, en, category="documents_wages", danger=False, country="TH", province="bangkok",
                               description=description, contact=contact)
    await user.press(en("report.consent.yes"))
    return re.search(r"<b>([A-Z0-9]{6})</b>", (await user.expect("Your report has been received")).html).group(1)  # type: ignore[union-attr]


async def handled(bot: RunningBot, update_id: int, timeout: float = WAIT) -> None:
    """Wait until the bot has recorded the update as handled (it may answer nothing)."""
    deadline = time.monotonic() + timeout
    while (row := await bot.core.inbox.get("telegram", str(update_id))) is None or row.status == "pending":
        assert time.monotonic() < deadline, f"update {update_id} not handled"
        await asyncio.sleep(0.02)


async def user_row(bot: RunningBot, uid: int) -> User:
    async with bot.core.db.session() as session:
        return (await session.exec(select(User).where(User.address == str(uid)))).one()


async def test_someone_who_blocks_the_bot_is_skipped_by_campaigns_until_they_come_back(running_bot: RunningBot, daytime: None) -> None:
    fake, core = running_bot.fake, running_bot.core
    user = running_bot.user(7701, "th")
    await user.start_in(core.texts, "th")
    async with core.db.transaction() as session:
        me = (await session.exec(select(User).where(User.address == "7701"))).one()
        await subscribe(session, me, tz="Asia/Bangkok")
        admin = User(channel="telegram", address="7799", lang="en")
        session.add(admin)
        await session.flush()
        await feature(core).campaigns.create(session, admin, name="first", texts={"th": "ระวังนายหน้าเถื่อน"})

    await handled(running_bot, await fake.user_blocks_bot(7701))
    assert not (await user_row(running_bot, 7701)).reachable, "Telegram said they blocked the bot"
    runs = await feature(core).campaigns.fire_due(core.db, utcnow())
    assert [run.recipients for run in runs] == [0], "no send that Telegram would refuse with 403"

    await handled(running_bot, await fake.user_blocks_bot(7701, blocked=False))
    await user.send("/start")
    await user.expect(".")
    assert (await user_row(running_bot, 7701)).reachable
    async with core.db.transaction() as session:
        admin = (await session.exec(select(User).where(User.address == "7799"))).one()
        await feature(core).campaigns.create(session, admin, name="second", texts={"th": "โทร 1300"})
    runs = await feature(core).campaigns.fire_due(core.db, utcnow())
    assert [run.recipients for run in runs] == [1]
    core.outbox.notify()
    await user.expect("1300")
    assert not [e for e in fake.errors if "blocked" in e[1]], "the bot never wrote to them while they had blocked it"


async def test_a_button_too_old_to_answer_still_does_what_it_says(running_bot: RunningBot) -> None:
    """Telegram refuses to answer a callback query after about 15 seconds (the bot was down,
    the phone was offline). The press itself still counts; the refusal is not an error."""
    fake, core = running_bot.fake, running_bot.core
    user = running_bot.user(7702, "en")
    await user.start_in(core.texts, "en")
    await user.press(core.texts.get("en", "menu.hotlines"))
    fake.expire_queries()  # before the bot has even fetched the press
    await user.expect(core.texts.get("en", "hotlines.pick_country")[:20])
    refused = [e for e in fake.errors if e[0] == "answerCallbackQuery"]
    assert refused and "query is too old" in refused[0][1]
    async with core.db.session() as session:
        failed = (await session.exec(select(OutboxMessage).where(OutboxMessage.status == "failed"))).all()
    assert not failed, "an old query is nothing to retry or record as a failure"


async def test_an_edited_message_is_not_taken_as_a_new_answer(running_bot: RunningBot) -> None:
    fake, core = running_bot.fake, running_bot.core
    user = running_bot.user(7703, "en")
    await user.start_in(core.texts, "en")
    await user.send("hotline numbers")
    await user.expect(".")
    mine = [m for m in fake.messages[7703] if m.from_user == 7703][-1]
    edit = await fake.user_edits(7703, mine.message_id, "report")
    await user.send("/menu")
    await user.expect(re.escape(core.texts.get("en", "menu.prompt")))
    assert edit not in fake.deliveries, "the bot does not ask for edits (allowed_updates)"


async def test_quick_exit_on_a_chat_older_than_48_hours_still_leaves_the_cover_screen(running_bot: RunningBot) -> None:
    """Telegram lets a bot delete its messages for 48 hours only. Deleting what it can and
    being refused the rest is not a failure, and the harmless cover message still comes."""
    fake, core = running_bot.fake, running_bot.core
    en = lambda key: core.texts.get("en", key)  # noqa: E731
    user = running_bot.user(7704, "en")
    await user.start_in(core.texts, "en")
    await user.send("/selfcheck")
    await user.expect(".")
    fake.advance_hours(49)
    await user.press(en("common.quick_exit"))
    await user.expect(re.escape(en("quick_exit.cover")))
    await fake.wait_for(lambda: any("can't be deleted" in e[1] for e in fake.errors))
    async with core.db.session() as session:
        failed = (await session.exec(select(OutboxMessage).where(OutboxMessage.status == "failed"))).all()
    assert not failed


async def test_in_a_partner_group_with_privacy_mode_the_bot_sees_only_replies_to_it_and_commands(running_bot: RunningBot) -> None:
    """Telegram's default for bots in groups: chatter among caseworkers never reaches the bot
    (nor its database); a reply to one of its messages does."""
    fake = running_bot.fake
    partner_groups(fake)
    fake.add_user(CASEWORKER, "Caseworker")
    assert await fake.member_sends(BANGKOK, CASEWORKER, "Who is on duty tonight?") == 0
    assert fake.dropped_by_privacy == 1
    update = await fake.member_sends(BANGKOK, CASEWORKER, "/help")
    await handled(running_bot, update)
    async with running_bot.core.db.session() as session:
        assert not (await session.exec(select(User).where(User.address == str(CASEWORKER)))).all(), "a group member is not a user"


async def test_a_burst_to_one_chat_above_telegrams_per_chat_limit_arrives_whole_and_in_order(running_bot: RunningBot) -> None:
    """Telegram answers 429 with retry_after to more than about one message a second in one
    chat. Seven different questions typed at once are all answered, in order, none twice."""
    fake, core = running_bot.fake, running_bot.core
    en = lambda key: core.texts.get("en", key)  # noqa: E731
    user = running_bot.user(7705, "en")
    await user.start_in(core.texts, "en")
    fake.chat_limits = (3, 20)
    before = len(fake.sent_to(7705))
    asked = ["/help", "/hotlines", "/menu", "/language", "/help", "/hotlines", "/menu"]
    expected = {"/help": en("help.text")[:15], "/hotlines": en("hotlines.pick_country")[:15], "/menu": en("menu.prompt")[:15],
                "/language": "language"}
    for command in asked:
        await user.send(command)
    slow_down = en("common.slow_down")  # seven at once is also more than the bot's own pace for one person

    def answers() -> list[SentMessage]:
        return [m for m in fake.sent_to(7705)[before:] if m.text != slow_down]

    await fake.wait_for(lambda: len(answers()) >= len(asked), timeout=30)
    assert len(answers()) == len(asked), "each answered once"
    for command, answer in zip(asked, answers()):
        assert expected[command].lower() in answer.text.lower(), f"{command} answered by {answer.text[:60]!r}: out of order"
    assert fake.chat_too_many >= 1, "the limit was met and waited out"


async def test_in_a_partner_group_with_topics_a_case_and_everything_about_it_stay_in_the_cases_topic(running_bot: RunningBot) -> None:
    """A partner whose group is a forum names its cases topic (`telegram_topic_id`): the card
    goes there, and the bot's answers to the caseworkers follow it (a reply stays in the topic
    of what it answers). If the topic is deleted, cases go to General rather than being lost."""
    from bot.features.reports import feature as reports
    from tests.test_reports import in_group
    fake, core = running_bot.fake, running_bot.core
    partner_groups(fake)
    fake.add_group(BANGKOK, "Demo Bangkok", topics=(7,))
    fake.add_user(CASEWORKER, "Caseworker")
    reports(core).book.partners["demo_bangkok"].telegram_topic_id = 7
    console = reports(core).book.partners["demo_bangkok"].console_language
    try:
        reporter = running_bot.user(7706, "en")
        code = await a_report_in_bangkok(reporter, core.texts, "The agency kept our contracts", contact="anytime")
        card = await in_group(fake, BANGKOK, code)
        assert card.topic == 7, "the card is in the cases topic"
        await fake.user_presses(CASEWORKER, card, core.texts.get(console, "partner.button.ask"))
        prompt = await in_group(fake, BANGKOK, re.escape(core.texts.get(console, "partner.ask_prompt", code=code)[:20]))
        assert prompt.topic == 7, "the bot's answer follows the card into its topic"
        await fake.member_sends(BANGKOK, CASEWORKER, "Which province are you in now?", reply_to=prompt)
        relayed = await in_group(fake, BANGKOK, re.escape(core.texts.get(console, "partner.relayed", code=code)[:20]))
        assert relayed.topic == 7
        await reporter.expect("Which province are you in now")

        fake.forums[BANGKOK].clear()  # someone deleted the topic
        code = await a_report_in_bangkok(running_bot.user(7707, "en"), core.texts, "They took my phone", contact="none")
        moved = await in_group(fake, BANGKOK, code)
        assert moved.topic is None, "in General rather than lost"
    finally:
        reports(core).book.partners["demo_bangkok"].telegram_topic_id = None


async def test_a_partner_group_over_its_minute_limit_holds_back_only_itself(running_bot: RunningBot) -> None:
    """Telegram allows a group about 20 messages a minute and answers more with a 429 whose
    retry_after can be most of a minute. Only that group waits; people's replies go on."""
    from bot.outbox import PRIORITY_PARTNER, Outbox
    fake, core = running_bot.fake, running_bot.core
    partner_groups(fake)
    fake.chat_limits = (100, 3)
    async with core.db.transaction() as session:
        for n in range(4):
            Outbox.add(session, "telegram", str(BANGKOK), "message", {"text": f"Case update {n}"}, PRIORITY_PARTNER)
    core.outbox.notify()
    await fake.wait_for(lambda: fake.chat_too_many >= 1)
    assert len(fake.bot_messages(BANGKOK)) == 3
    user = running_bot.user(7708, "en")
    await user.send("/help")
    await user.expect(re.escape(core.texts.get("en", "help.text")[:20]))
    assert [m.text for m in fake.bot_messages(BANGKOK)] == [f"Case update {n}" for n in range(3)], "the fourth waits its minute"
    async with core.db.session() as session:
        waiting = (await session.exec(select(OutboxMessage).where(OutboxMessage.chat == str(BANGKOK), OutboxMessage.status == "pending"))).all()
    assert len(waiting) == 1 and waiting[0].not_before > utcnow(), "kept for later, not dropped"


async def test_a_button_press_is_answered_and_its_keyboard_removed_beside_the_answer_and_neither_is_stored(running_bot: RunningBot) -> None:
    """A press stops the phone's spinner (answerCallbackQuery) and takes the pressed keyboard
    away (so the old buttons are not pressed again). Both go beside the answer, not ahead of
    it: with both held up on the way to Telegram, the answer still arrives. Neither is kept in
    the outbox: a stale answer is refused by Telegram, so there is nothing to redeliver."""
    fake, core = running_bot.fake, running_bot.core
    user = running_bot.user(7704, "km")
    await user.start_in(core.texts, "km")
    menu = fake.bot_messages(7704)[-1]
    assert menu.buttons, "the menu has buttons"
    start = len(fake.calls)
    fake.hold_receipts = asyncio.Event()
    try:
        await user.press(core.texts.get("km", "menu.hotlines"))
        await user.expect(re.escape(core.texts.get("km", "hotlines.pick_country")[:20]))
        assert fake.held_receipts == 2, "the answer came while both receipts were still on their way"
    finally:
        fake.hold_receipts.set()
    await fake.wait_for(lambda: fake.held_receipts == 0 and not [m for m in fake.bot_messages(7704) if m.message_id == menu.message_id][0].buttons)
    methods = [method for method, _ in fake.calls[start:] if method in ("answerCallbackQuery", "editMessageReplyMarkup", "sendMessage")]
    assert sorted(methods[:3]) == ["answerCallbackQuery", "editMessageReplyMarkup", "sendMessage"], methods
    assert not {"answerCallbackQuery", "editMessageReplyMarkup"} & set(fake.abandoned), "the answer did not wait for the receipts (nor did the bot give up on them to send it)"
    assert fake.callback_answers, "the spinner was stopped"
    async with core.db.session() as session:
        kinds = set((await session.exec(select(OutboxMessage.kind).where(OutboxMessage.chat == "7704"))).all())
    assert "message" in kinds and not kinds & {"ack", "clear_buttons"}, kinds


async def test_a_flood_of_button_presses_leaves_room_for_the_answers(running_bot: RunningBot) -> None:
    """Twenty people press at once while Telegram is slow to take the presses' receipts: no
    more than half the sender's connections carry receipts, and every answer arrives."""
    from bot.channels.telegram import SEND_CONNECTIONS

    fake, core = running_bot.fake, running_bot.core
    users = [running_bot.user(7800 + n, "th") for n in range(20)]
    for user in users:
        await user.start_in(core.texts, "th")
    fake.hold_receipts = asyncio.Event()
    try:
        await asyncio.gather(*(user.press(core.texts.get("th", "menu.hotlines")) for user in users))
        for user in users:
            await user.expect(re.escape(core.texts.get("th", "hotlines.pick_country")[:20]))
        assert 0 < fake.most_held_receipts <= SEND_CONNECTIONS // 2
    finally:
        fake.hold_receipts.set()
    await fake.wait_for(lambda: fake.held_receipts == 0 and len(fake.callback_answers) >= 20)