"""End-to-end stories through python-telegram-bot's real HTTP layer and the fake Bot API."""

from __future__ import annotations

import copy
import re

from tests.conftest import RunningBot
from tests.fakes.bot_api import visible_text

LAO_LETTER = re.compile(r"[\u0e80-\u0eff]")
BIG_ID = 7_123_456_789  # Telegram ids no longer fit in 32 bits


async def test_a_lao_speaker_gets_the_document_checklist_for_thailand_in_lao(running_bot: RunningBot) -> None:
    t = running_bot.core.texts
    lo = lambda key: t.get("lo", key)  # noqa: E731
    user = running_bot.user(BIG_ID, language_code="lo")

    await user.send("/start")
    picker = await user.expect(re.escape(lo("language.pick")))
    assert picker.labels[0] == lo("language.self_name"), "the phone's language is offered first"
    assert t.get("km", "language.self_name") in picker.labels, "every language is named in its own script"

    await user.press(lo("language.self_name"))
    menu = await user.expect(re.escape(lo("menu.prompt")))
    assert LAO_LETTER.search(menu.text)
    # the pressed keyboard is removed (sent beside the answer, so it may land a moment after it)
    await running_bot.fake.wait_for(lambda: running_bot.fake.sent_to(BIG_ID)[0].buttons == [])
    assert running_bot.fake.callback_answers, "the button press is answered"

    await user.press(lo("menu.guidance"))
    await user.expect(re.escape(lo("guide.ask_origin")))
    await user.press(lo("country.LA"))
    await user.expect(re.escape(lo("guide.ask_destination")))
    await user.press(lo("country.TH"))
    await user.expect(re.escape(lo("guide.ask_topic")))
    await user.press(lo("guide.topic.documents"))

    checklist = await user.expect(re.escape(visible_text(lo("fact.th_pink_card"))[:40]))
    assert LAO_LETTER.search(checklist.text)
    assert "TH-19" not in checklist.text, "source ids stay in the data"
    topics = await user.expect(re.escape(lo("guide.ask_topic")))
    assert lo("guide.topic.fees") in topics.labels, "the checklist comes with buttons to go on"
    await user.press(lo("card.sources"), topics)
    sources = await user.expect(re.escape(visible_text(lo("card.sources_header"))))
    assert all(name in sources.text for name in user.named_sources(running_bot.core.content, "TH-19")), "every fact carries its source"
    checklist = topics

    await user.press(lo("guide.topic.fees"))
    fees = await user.expect(re.escape(lo("guide.ask_topic")))
    assert fees.message_id > checklist.message_id
    assert "RG-7" not in user.all_text() and "TH-22" not in user.all_text()


async def test_commands_are_registered_in_every_language(running_bot: RunningBot) -> None:
    fake, texts = running_bot.fake, running_bot.core.texts
    await fake.wait_for(lambda: len(fake.commands) == 6)  # sent once polling has begun
    assert set(fake.commands) == {None, "km", "lo", "th", "vi", "my"}
    thai = {c["command"]: c["description"] for c in fake.commands["th"]}
    assert thai["hotlines"] == texts.get("th", "command.hotlines")
    assert {"start", "menu", "help", "language", "hotlines"} <= set(thai)


async def test_free_text_that_matches_nothing_gets_a_kind_reply_and_the_menu(running_bot: RunningBot) -> None:
    t = running_bot.core.texts
    user = running_bot.user(4001, language_code="th")
    await user.send("/start")
    await user.press(t.get("th", "language.self_name"))
    await user.expect(re.escape(t.get("th", "menu.prompt")))

    await user.send("ฉันอยากกินข้าวมันไก่")
    reply = await user.expect(re.escape(t.get("th", "common.not_understood")))
    assert t.get("th", "menu.guidance") in reply.labels


async def test_thai_keyword_without_spaces_opens_the_hotlines(running_bot: RunningBot) -> None:
    t = running_bot.core.texts
    user = running_bot.user(4002, language_code="th")
    await user.send("/start")
    await user.press(t.get("th", "language.self_name"))
    await user.expect(re.escape(t.get("th", "menu.prompt")))

    keyword = t.get("th", "keywords.hotlines").split("|")[0].replace(" ", "")
    await user.send(f"ขอ{keyword}หน่อยค่ะ")
    await user.expect(re.escape(t.get("th", "hotlines.pick_country")))


async def test_vietnamese_typed_without_diacritics_is_understood(running_bot: RunningBot) -> None:
    from bot.engine.matching import fold

    t = running_bot.core.texts
    user = running_bot.user(4003, language_code="vi")
    await user.send("/start")
    await user.press(t.get("vi", "language.self_name"))
    await user.expect(re.escape(t.get("vi", "menu.prompt")))

    keyword = next(k for k in t.get("vi", "keywords.hotlines").split("|") if fold(k) != k)
    await user.send(f"cho toi {fold(keyword)}")
    await user.expect(re.escape(t.get("vi", "hotlines.pick_country")))


async def test_a_deep_link_opens_its_flow_after_the_language_is_chosen(running_bot: RunningBot) -> None:
    t = running_bot.core.texts
    user = running_bot.user(4004, language_code="km")
    await user.send("/start guidance")
    await user.press(t.get("km", "language.self_name"))
    await user.expect(re.escape(t.get("km", "guide.ask_origin")))


async def test_a_button_on_an_old_message_does_something_sensible(running_bot: RunningBot) -> None:
    t = running_bot.core.texts
    user = running_bot.user(4005, language_code="en")
    await user.send("/start")
    await user.press("English")
    menu = await user.expect("What would you like to do")
    old_menu = copy.deepcopy(menu)  # as another device still shows it, buttons and all
    await user.press(t.get("en", "menu.hotlines"), menu)
    await user.expect(re.escape(t.get("en", "hotlines.pick_country")))

    await running_bot.fake.user_presses(user.id, old_menu, t.get("en", "menu.guidance"))
    stale = await user.expect(re.escape(t.get("en", "common.old_button")))
    assert t.get("en", "country.KH") in stale.labels, "the current question is asked again"


async def test_the_hotline_directory_shows_only_sourced_numbers(running_bot: RunningBot) -> None:
    content = running_bot.core.content
    user = running_bot.user(4006, language_code="en")
    await user.send("/start")
    await user.press("English")
    await user.send("/hotlines")
    await user.press("Cambodia")
    numbers = await user.expect("Numbers for Cambodia")
    assert "117" in numbers.text and "police" in numbers.text
    hidden = [h.number for h in content.hotlines["KH"] if not h.shown]
    assert hidden and not any(number in numbers.text for number in hidden), "uncertain numbers are never shown"

    await user.press("🌏 Another country")
    await user.press("Laos")
    laos = await user.expect("Numbers for Laos")
    assert "1191 police" in laos.text and "1195 ambulance" in laos.text, "Laos's numbers, confirmed in the facts' section 8, labelled"
    assert "embassy" not in laos.text
