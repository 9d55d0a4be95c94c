"""People type instead of tapping, in every language, and are never dropped: typed answers
at every kind of step, danger typed in the middle of a journey, a draft report continued
after a detour, and the numbers a person needs on the receipt."""

from __future__ import annotations

import re

import pytest

from tests.conftest import RunningBot
from tests.fakes.bot_api import visible_text

# What a person types for "yes", the country Thailand, a place, and "no more" at the photo step.
TYPED = {
    "km": {"yes": "ចាស", "no": "ទេ", "thailand": "ថៃ", "place": "នៅក្បែររោងចក្រ", "done": "រួចហើយ"},
    "lo": {"yes": "ແມ່ນ", "no": "ບໍ່", "thailand": "ໄທ", "place": "ໃກ້ໂຮງງານ", "done": "ແລ້ວ"},
    "th": {"yes": "ใช่", "no": "ไม่", "thailand": "ไทย", "place": "ใกล้โรงงาน", "done": "เสร็จแล้ว"},
    "vi": {"yes": "co", "no": "khong", "thailand": "thai lan", "place": "gan nha may", "done": "xong"},
    "en": {"yes": "yes", "no": "no", "thailand": "thailand", "place": "near the factory", "done": "done"},
}
LANGUAGES = list(TYPED)


def shown(text: str) -> str:
    return re.escape(visible_text(text)[:40])


@pytest.mark.parametrize("lang", LANGUAGES)
async def test_a_typed_yes_at_is_anyone_in_danger_shows_labelled_numbers_and_keeps_the_report(running_bot: RunningBot, lang: str) -> None:
    t = lambda key, **kw: running_bot.core.texts.get(lang, key, **kw)  # noqa: E731
    words = TYPED[lang]
    user = running_bot.user(5100 + LANGUAGES.index(lang), lang)
    await user.start_in(running_bot.core.texts, lang)

    await user.send("/report")
    await user.expect(shown(t("report.ask_danger")))
    await user.send(words["yes"])
    numbers = await user.expect(shown(t("report.emergency_header")))
    police = t("hotline.kind.police")
    assert police in numbers.text and t("hotline.kind.ambulance") in numbers.text, "every emergency number says what it is for"
    assert re.search(rf"191</b> {re.escape(police)}", numbers.text.replace("<b>", "")) or "191 " + police in visible_text(numbers.text)
    first_line = next(line for line in numbers.text.split("\n") if "🚨" in line)
    if lang == "th":
        assert "191" in first_line and "1669" in first_line, "a Thai speaker sees Thailand's police and ambulance first"

    category = await user.expect(shown(t("report.ask_category")))
    assert t("common.back") in category.labels and t("common.quick_exit") in category.labels
    await user.press(t("report.category.documents_wages"), category)
    await user.expect(shown(t("report.ask_country")))
    await user.send(words["thailand"])
    here = await user.expect(shown(t("report.emergency_header")))
    assert "191" in here.text and "1669" in here.text and "1300" not in here.text.split("\n")[0]
    await user.expect(shown(t("report.ask_province")))
    await user.send(words["place"])
    await user.press(t("report.affected.me"), await user.expect(shown(t("report.ask_affected"))))
    await user.expect(shown(t("report.ask_description")))
    await user.send("I have not been paid for two months / 2 months no pay")
    await user.expect(shown(t("report.ask_attachments")))
    await user.send(words["done"])
    await user.press(t("report.contact.on_check"), await user.expect(shown(t("report.ask_contact"))))
    await user.expect(shown(t("report.ask_consent")))
    await user.send(words["yes"])

    receipt = await user.expect(shown(t("report.received", report_code="XXXXXX")[:20]))
    numbers_after = receipt if "1300" in receipt.text else await user.expect("1300")
    assert visible_text(t("hotlines.header", country=t("country.TH"))) in numbers_after.text, "the receipt names the country"
    assert "1300" in numbers_after.text and "191" in numbers_after.text
    assert t("hotline.kind.trafficking") in numbers_after.text or t("hotline.kind.labour") in numbers_after.text
    assert "{" not in receipt.text


@pytest.mark.parametrize("lang", LANGUAGES)
async def test_danger_typed_in_the_middle_of_guidance_shows_the_numbers_then_asks_the_same_question(running_bot: RunningBot, lang: str) -> None:
    t = lambda key, **kw: running_bot.core.texts.get(lang, key, **kw)  # noqa: E731
    danger = {"km": "ជួយផង គេចាក់សោខ្ញុំក្នុងបន្ទប់", "lo": "ຊ່ວຍແດ່ ເຂົາຂັງຂ້ອຍໄວ້", "th": "ช่วยด้วย โดนขังอยู่ในห้อง",
              "vi": "cuu toi voi, ho nhot toi trong phong", "en": "help they locked me in a room"}[lang]
    user = running_bot.user(5200 + LANGUAGES.index(lang), lang)
    await user.start_in(running_bot.core.texts, lang)
    await user.press(t("menu.guidance"))
    await user.expect(shown(t("guide.ask_origin")))
    await user.send(danger)
    numbers = await user.expect(shown(t("report.emergency_header")))
    assert t("hotline.kind.police") in numbers.text
    again = await user.expect(".")
    assert t("country.KH") in again.labels, "the same question comes back with its buttons"
    await user.press(t("country.LA"), again)
    await user.expect(shown(t("guide.ask_destination")))


@pytest.mark.parametrize("lang", ["km", "vi"])
async def test_a_yes_typed_in_the_red_flag_check_answers_the_question_and_goes_on(running_bot: RunningBot, lang: str) -> None:
    t = lambda key, **kw: running_bot.core.texts.get(lang, key, **kw)  # noqa: E731
    yes = {"km": "បាទ", "vi": "có"}[lang]
    user = running_bot.user(5300 + LANGUAGES.index(lang), lang)
    await user.start_in(running_bot.core.texts, lang)
    await user.send("/redflags")
    await user.press(t("country.KH") if lang == "vi" else t("country.LA"), await user.expect(shown(t("guide.ask_origin"))))
    await user.press(t("country.TH"), await user.expect(shown(t("redflags.ask_destination"))))
    await user.expect(shown(t("redflags.q.social_media")))
    await user.send(yes)
    question = await user.expect(shown(t("redflags.q.easy_job")))
    assert t("common.back") in question.labels and t("common.nav_menu") in question.labels
    await user.send("?!")
    again = await user.expect(shown(t("common.reask")))
    assert t("redflags.yes") in again.labels, "anything else asks the same question again, with its buttons"


async def test_a_draft_report_survives_a_detour_and_the_menu_offers_to_continue_it(running_bot: RunningBot) -> None:
    t = lambda key, **kw: running_bot.core.texts.get("th", key, **kw)  # noqa: E731
    user = running_bot.user(5401, "th")
    await user.start_in(running_bot.core.texts, "th")
    await user.send("/report")
    await user.send("ไม่")
    await user.press(t("report.category.recruitment_fraud"), await user.expect(shown(t("report.ask_category"))))
    await user.expect(shown(t("report.ask_country")))

    await user.send("ขอเบอร์สายด่วนหน่อย")
    offer = await user.expect(shown(t("common.offer")))
    assert offer.labels == [t("intent.hotlines"), t("common.continue_report")]
    await user.press(t("intent.hotlines"), offer)
    await user.press(t("country.TH"), await user.expect(shown(t("hotlines.pick_country"))))
    await user.expect(r"1300")

    await user.send("/menu")
    menu = await user.expect(shown(t("menu.prompt")))
    assert menu.labels[0] == t("menu.resume_report")
    await user.press(t("menu.resume_report"), menu)
    await user.expect(shown(t("report.ask_country")))

    await user.send("/report")
    offer = await user.expect(shown(t("report.draft_offer")))
    await user.press(t("report.draft_continue"), offer)
    back_at = await user.expect(shown(t("report.ask_country")))
    await user.press(t("common.back"), back_at)
    await user.expect(shown(t("report.ask_category")))

    await user.send("/cancel")
    menu = await user.expect(shown(t("cancel.deleted")))
    assert visible_text(t("menu.prompt")) in menu.text
    assert t("menu.resume_report") not in menu.labels


async def test_a_report_from_a_country_with_no_partner_promises_no_organisation(running_bot: RunningBot) -> None:
    t = lambda key, **kw: running_bot.core.texts.get("en", key, **kw)  # noqa: E731
    user = running_bot.user(5402, "en")
    await user.start_in(running_bot.core.texts, "en")
    await user.send("/report")
    await user.send("no")
    await user.press(t("report.category.other"), await user.expect(shown(t("report.ask_category"))))
    await user.send("saudi arabia")
    await user.press(t("report.skip"), await user.expect(shown(t("report.ask_place"))))
    await user.press(t("report.affected.someone_else"), await user.expect(shown(t("report.ask_affected"))))
    await user.send("My cousin works as a maid and cannot leave the house.")
    await user.send("no")
    await user.press(t("report.contact.none"), await user.expect(shown(t("report.ask_contact"))))
    consent = await user.expect(shown(t("report.ask_consent_no_partner")))
    await user.press(t("report.consent.yes_kept"), consent)
    receipt = await user.expect(shown(t("report.received_kept", report_code="X")[:20]))
    assert "trusted organisation" not in user.all_text()
    assert visible_text(t("hotlines.none_verified", country=t("country.SA")))[:40] in receipt.text, "says plainly that no number is confirmed"
    assert "embassy" not in receipt.text.lower()


async def test_a_message_that_matches_nothing_well_gets_the_nearest_choices_as_buttons(running_bot: RunningBot) -> None:
    t = lambda key, **kw: running_bot.core.texts.get("en", key, **kw)  # noqa: E731
    user = running_bot.user(5403, "en")
    await user.start_in(running_bot.core.texts, "en")
    await user.send("maybe something about my boss and money")
    offer = await user.expect(shown(t("common.did_you_mean")))
    assert 1 <= len(offer.labels) <= 3 and all(label.startswith(("🏠", "❓", "🌐", "☎️", "🚨", "🧭", "🏢", "🚩", "⚠️", "🔎", "📝", "📄", "🗑", "🔔", "🔕"))
                                                for label in offer.labels)
    await user.press(offer.labels[0], offer)
    opened = await user.expect(".")
    assert opened.labels, "the choice opens a journey"


@pytest.mark.parametrize("command", ["/redflags", "/scam", "/selfcheck"])
async def test_quick_exit_is_on_every_screen_of_the_checks_a_watched_phone_may_show(running_bot: RunningBot, command: str) -> None:
    t = lambda key, **kw: running_bot.core.texts.get("en", key, **kw)  # noqa: E731
    user = running_bot.user(5500 + ["/redflags", "/scam", "/selfcheck"].index(command), "en")
    await user.start_in(running_bot.core.texts, "en")
    await user.send(command)
    first = await user.expect(".")
    await running_bot.fake.wait_for(lambda: running_bot.fake.sent_to(user.id)[-1].labels)
    with_buttons = running_bot.fake.sent_to(user.id)[-1]
    assert t("common.quick_exit") in with_buttons.labels
    await user.press(t("common.quick_exit"), with_buttons)
    await user.expect(shown(t("quick_exit.cover")))
    assert first.deleted or first.text == t("quick_exit.cover")


async def test_a_shared_contact_answers_the_phone_question_and_a_sticker_is_never_an_empty_answer(running_bot: RunningBot) -> None:
    """The reproduction: a contact gave a card saying "Contact: By phone" with no number,
    and a sticker as the description became "—"."""
    from tests.test_reports import BANGKOK, in_group, partner_groups
    fake = running_bot.fake
    t = lambda key, **kw: running_bot.core.texts.get("km", key, **kw)  # noqa: E731
    partner_groups(fake)
    user = running_bot.user(5601, "km")
    await user.start_in(running_bot.core.texts, "km")
    await user.send("/report")
    await user.press(t("report.danger.no"), await user.expect(shown(t("report.ask_danger"))))
    await user.press(t("report.category.documents_wages"), await user.expect(shown(t("report.ask_category"))))
    await user.press(t("country.TH"), await user.expect(shown(t("report.ask_country"))))
    await user.press(t("province.TH.bangkok"), await user.expect(shown(t("report.ask_province"))))
    await user.press(t("report.affected.me"), await user.expect(shown(t("report.ask_affected"))))
    await user.expect(shown(t("report.ask_description")))
    await fake.user_sends_sticker(5601)
    again = await user.expect(shown(t("common.need_text")))
    assert t("common.quick_exit") in again.labels, "the question stays, with its buttons"
    await user.send("មេការយកលិខិតឆ្លងដែនខ្ញុំ")
    await user.press(t("report.attachments_done"), await user.expect(shown(t("report.ask_attachments"))))
    await user.press(t("report.contact.phone"), await user.expect(shown(t("report.ask_contact"))))
    await user.expect(shown(t("report.ask_phone")))
    await fake.user_sends_contact(5601, "+855 12 345 678")
    await user.press(t("report.consent.yes"), await user.expect(shown(t("report.ask_consent"))))
    received = await user.expect(shown(t("report.received", report_code="X")[:15]))
    code = re.search(r"\b([A-Z0-9]{6})\b", received.text).group(1)  # type: ignore[union-attr]
    card = await in_group(fake, BANGKOK, code)
    assert "+855 12 345 678" in card.text and "មេការយកលិខិតឆ្លងដែនខ្ញុំ" in card.text and "—" not in card.text.split("\n")[-1]


@pytest.mark.parametrize(("lang", "typed", "meaning"), [
    ("lo", "ຂ້ອຍ", "me"), ("lo", "ລູກຂ້ອຍ", "someone_else"), ("km", "ខ្ញុំ", "me"), ("km", "កូនខ្ញុំ", "someone_else"),
    ("th", "ผมเอง", "me"), ("th", "ลูกฉัน", "someone_else"), ("vi", "toi", "me"), ("vi", "con toi", "someone_else"),
    ("en", "me", "me"), ("en", "my sister", "someone_else"),
])
async def test_who_is_affected_can_be_typed_and_my_child_is_someone_else(core: object, lang: str, typed: str, meaning: str) -> None:
    from sqlmodel import select

    from bot.engine.events import Event
    from storage.models import Conversation, User
    send = lambda **kw: core.conversations.handle(Event(channel="terminal", address="aff", client_lang=lang, **kw))  # type: ignore[attr-defined]  # noqa: E731
    async with core.db.transaction() as session:  # type: ignore[attr-defined]
        await core.engine.set_language(session, "terminal", "aff", lang)  # type: ignore[attr-defined]
    for event in ({"command": "report"}, {"choice": "c:report:danger:no"}, {"choice": "c:report:category:other"},
                  {"choice": "c:report:country:TH"}, {"choice": "c:report:province_TH:bangkok"}, {"text": typed}):
        await send(**event)
    async with core.db.session() as session:  # type: ignore[attr-defined]
        user = (await session.exec(select(User).where(User.address == "aff"))).one()
        conversation = await session.get(Conversation, user.id)
    assert conversation.vars.get("affected") == meaning and conversation.step == "describe"  # type: ignore[union-attr]


@pytest.mark.parametrize("typed, lang", [("ខ្មែរ", "km"), ("ລາວ", "lo"), ("ไทย", "th"), ("tieng viet", "vi"), ("english", "en"), ("မြန်မာ", "my")])
async def test_a_new_person_types_their_languages_name_at_the_picker_and_is_answered_in_it(core: object, typed: str, lang: str) -> None:
    """The buttons say ភាសាខ្មែរ, ພາສາລາວ, ภาษาไทย…; people type ខ្មែរ, ລາວ, ไทย. Part of one
    label, typed, is that choice (the reproduction: the picker asked again, in English, for ever)."""
    from bot.engine.events import Event
    send = lambda **kw: core.conversations.handle(Event(channel="terminal", address=f"pick-{lang}", client_lang=None, **kw))  # type: ignore[attr-defined]  # noqa: E731
    await send(command="start")
    answers = await send(text=typed)
    welcome = core.texts.get(lang, "start.welcome").split("\n")[0]  # type: ignore[attr-defined]
    assert any(welcome in answer.text for answer in answers), [a.text[:80] for a in answers]


async def test_part_of_a_category_typed_in_lao_is_that_category_and_a_part_two_labels_share_is_asked_again(core: object) -> None:
    from sqlmodel import select

    from bot.engine.events import Event
    from storage.models import Conversation, User
    send = lambda **kw: core.conversations.handle(Event(channel="terminal", address="lo-cat", client_lang="lo", **kw))  # type: ignore[attr-defined]  # noqa: E731
    async with core.db.transaction() as session:  # type: ignore[attr-defined]
        await core.engine.set_language(session, "terminal", "lo-cat", "lo")  # type: ignore[attr-defined]
    await send(command="report")
    await send(choice="c:report:danger:no")
    again = await send(text="ວຽກ")  # "work": in two categories' labels
    assert core.texts.get("lo", "common.reask").split("\n")[0] in again[0].text  # type: ignore[attr-defined]
    await send(text="ຍຶດໜັງສືຜ່ານແດນ")  # "kept the passport": in one label only
    async with core.db.session() as session:  # type: ignore[attr-defined]
        user = (await session.exec(select(User).where(User.address == "lo-cat"))).one()
        conversation = await session.get(Conversation, user.id)
    assert conversation.vars.get("category") == "documents_wages", conversation.vars  # type: ignore[union-attr]


ASKING_FOR_NUMBERS = {"km": "ខ្ញុំត្រូវការលេខទូរស័ព្ទជំនួយ", "lo": "ຂ້ອຍຕ້ອງການເບີໂທຊ່ວຍເຫຼືອ", "th": "ขอเบอร์สายด่วนหน่อย",
                      "vi": "cho tôi số đường dây nóng", "en": "I need the hotline numbers"}


@pytest.mark.parametrize("lang", LANGUAGES)
async def test_typing_that_you_need_the_help_numbers_gets_them_with_the_police_first(running_bot: RunningBot, lang: str) -> None:
    """"I need the help-line number", typed at the menu, is a request for the numbers, not
    for how the bot works: in Lao the word for help (ຊ່ວຍເຫຼືອ) inside it drew the /help text,
    and a frightened person got instructions instead of a number."""
    t = lambda key, **kw: running_bot.core.texts.get(lang, key, **kw)  # noqa: E731
    user = running_bot.user(5200 + LANGUAGES.index(lang), lang)
    await user.start_in(running_bot.core.texts, lang)
    await user.send(ASKING_FOR_NUMBERS[lang])
    await user.expect(shown(t("hotlines.pick_country")))
    await user.send(TYPED[lang]["thailand"])
    numbers = await user.expect("191")
    assert numbers.text.index("191") < numbers.text.index("1300"), "the police first, then the hotlines"
    assert t("hotline.kind.police") in numbers.text
