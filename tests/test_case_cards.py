"""Case cards that live: the card in a partner's group shows where the case stands, in the
partner's own time zone, says which language to answer in, keeps routing reasons out of
sight, and is edited in place as the case moves, with only the buttons that still apply.
Caseworkers appear as "caseworker 1", "caseworker 2": the same number each time, never a
name or an id."""

from __future__ import annotations

import re
from datetime import timezone
from zoneinfo import ZoneInfo

from sqlmodel import select

from storage.reports import Report
from tests.conftest import RunningBot
from tests.fakes.bot_api import FakeBotApi, SentMessage
from tests.test_reports import BANGKOK, CASEWORKER, OTHER_CASEWORKER, in_group, partner_groups, report_until_consent

ALL = ["👀 Acknowledge", "🙋 Claim", "💬 Ask the reporter", "✅ Close"]


async def file_report(running_bot: RunningBot, user_id: int, lang: str, words: str) -> str:
    texts = running_bot.core.texts
    t = lambda key, **p: texts.get(lang, key, **p)  # noqa: E731
    user = running_bot.user(user_id, lang)
    await user.start_in(texts, lang)
    await report_until_consent(user, t, category="documents_wages", danger=False, country="TH", province="bangkok",
                               description=words, contact="anytime")
    await user.press(t("report.consent.yes"))
    received = await user.expect(r"\b[A-Z0-9]{6}\b")
    return re.search(r"\b([A-Z0-9]{6})\b", received.text).group(1)  # type: ignore[union-attr]


async def card_says(fake: FakeBotApi, card: SentMessage, pattern: str) -> SentMessage:
    await fake.wait_for(lambda: re.search(pattern, card.text) is not None)
    return card


async def test_a_lao_and_a_khmer_speakers_cards_change_as_their_cases_move_and_name_caseworkers_only_by_number(
        running_bot: RunningBot) -> None:
    fake, texts = running_bot.fake, running_bot.core.texts
    partner_groups(fake)

    lao_code = await file_report(running_bot, 6101, "lo", "ນາຍຈ້າງບໍ່ຈ່າຍຄ່າແຮງສາມເດືອນ")
    card = await in_group(fake, BANGKOK, lao_code)
    assert "Status: new, not yet acknowledged" in card.text
    assert f"Reporter's language: {texts.get('lo', 'language.self_name')}" in card.text
    assert f"Please answer in {texts.get('lo', 'language.self_name')}" in card.text, "the team is told which language to write in"
    assert "Routed to you" not in card.text and "most specific" not in card.text, "routing reasons stay in the audit trail"
    async with running_bot.core.db.session() as session:
        report = (await session.exec(select(Report).where(Report.code == lao_code))).one()
    local = report.created_at.replace(tzinfo=timezone.utc).astimezone(ZoneInfo("Asia/Bangkok"))
    assert f"Received: {local:%Y-%m-%d %H:%M} (Asia/Bangkok)" in card.text, "in the partner's own time zone"
    assert card.labels == ALL

    await fake.user_presses(OTHER_CASEWORKER, card, "👀 Acknowledge")
    await card_says(fake, card, "Status: acknowledged")
    assert card.labels == ["🙋 Claim", "💬 Ask the reporter", "✅ Close"], "acknowledged once: the button is gone"

    await fake.user_presses(CASEWORKER, card, "🙋 Claim")
    await card_says(fake, card, "Status: claimed by caseworker 1")
    await in_group(fake, BANGKOK, f"Case {lao_code} claimed by caseworker 1")
    assert card.labels == ["💬 Ask the reporter", "✅ Close"]

    khmer_code = await file_report(running_bot, 6102, "km", "ក្រុមហ៊ុនយកលិខិតឆ្លងដែនរបស់ខ្ញុំ")
    khmer_card = await in_group(fake, BANGKOK, khmer_code)
    assert f"Please answer in {texts.get('km', 'language.self_name')}" in khmer_card.text
    await fake.user_presses(OTHER_CASEWORKER, khmer_card, "🙋 Claim")
    await card_says(fake, khmer_card, "Status: claimed by caseworker 2")
    await fake.user_presses(CASEWORKER, khmer_card, "✅ Close")
    await in_group(fake, BANGKOK, f"Close case {khmer_code}")

    await fake.user_presses(CASEWORKER, card, "✅ Close")
    outcomes = await in_group(fake, BANGKOK, f"Close case {lao_code}")
    await fake.user_presses(CASEWORKER, outcomes, "Resolved")
    await card_says(fake, card, r"Status: closed \(Resolved\)")
    assert card.labels == [], "a closed case's card has no buttons left"
    assert "Status: claimed by caseworker 2" in khmer_card.text, "the same person keeps their number on every card"

    group_text = "\n".join(m.text for m in fake.bot_messages(BANGKOK))
    for leaked in ("Somchai", "Dara", str(CASEWORKER), str(OTHER_CASEWORKER)):
        assert leaked not in group_text, f"{leaked!r} shown in the partner's group"


async def test_a_bangkok_caseworker_lists_open_cases_with_slash_cases_and_each_opens_its_card(running_bot: RunningBot) -> None:
    fake = running_bot.fake
    partner_groups(fake)
    thai_code = await file_report(running_bot, 6201, "th", "นายจ้างยึดหนังสือเดินทางของฉัน")
    vietnamese_code = await file_report(running_bot, 6202, "vi", "Công ty giữ hộ chiếu của tôi")
    thai_card = await in_group(fake, BANGKOK, thai_code)
    vietnamese_card = await in_group(fake, BANGKOK, vietnamese_code)
    await fake.user_presses(CASEWORKER, vietnamese_card, "🙋 Claim")
    await card_says(fake, vietnamese_card, "claimed by caseworker 1")

    last = fake.bot_messages(BANGKOK)[-1].message_id
    await fake.member_sends(BANGKOK, CASEWORKER, "/cases")
    listing = await in_group(fake, BANGKOK, "Open cases: 2", after=last)
    lines = listing.text.splitlines()
    thai_line = next(line for line in lines if thai_code in line)
    vietnamese_line = next(line for line in lines if vietnamese_code in line)
    assert lines.index(thai_line) < lines.index(vietnamese_line), "oldest first"
    assert "new, not yet acknowledged" in thai_line and re.search(r"\d+ h \d+ min left to acknowledge", thai_line), thai_line
    assert "claimed by caseworker 1" in vietnamese_line and "left to acknowledge" not in vietnamese_line
    links = {b["text"]: b.get("url") for row in listing.buttons for b in row}
    assert links[f"Open {thai_code}"] == f"https://t.me/c/1000000101/{thai_card.message_id}", "each opens its card"
    assert links[f"Open {vietnamese_code}"] == f"https://t.me/c/1000000101/{vietnamese_card.message_id}"

    await fake.user_presses(CASEWORKER, thai_card, "✅ Close")
    outcomes = await in_group(fake, BANGKOK, f"Close case {thai_code}")
    await fake.user_presses(CASEWORKER, outcomes, "Referred to another service")
    await card_says(fake, thai_card, "Status: closed")
    last = fake.bot_messages(BANGKOK)[-1].message_id
    await fake.member_sends(BANGKOK, CASEWORKER, "/cases")
    listing = await in_group(fake, BANGKOK, "Open cases: 1", after=last)
    assert vietnamese_code in listing.text and thai_code not in listing.text, "a closed case leaves the list"


async def test_a_partners_case_system_reads_its_own_cases_with_its_own_token_and_never_another_partners(
        running_bot: RunningBot) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from bot.api.app import build_api
    from bot.features.broadcasts import feature as broadcasts
    from bot.features.reports import feature as reports
    from bot.features.reports.case_api import new_partner_token
    from storage.broadcasts import StaffRole
    from storage.models import User

    fake, core = running_bot.fake, running_bot.core
    partner_groups(fake)
    code = await file_report(running_bot, 6301, "lo", "ບໍລິສັດຍຶດໜັງສືຜ່ານແດນຂອງຂ້ອຍ")
    card = await in_group(fake, BANGKOK, code)
    await fake.user_presses(CASEWORKER, card, "🙋 Claim")
    await card_says(fake, card, "claimed by caseworker 1")
    async with core.db.transaction() as session:
        book = reports(core).book
        tokens = {"bangkok": await new_partner_token(session, book, "demo_bangkok", "case system"),
                  "phnom_penh": await new_partner_token(session, book, "demo_phnom_penh", "case system")}
        staff = User(channel="telegram", address="7300", lang="en")
        session.add(staff)
        await session.flush()
        session.add(StaffRole(user_id=staff.id, role="admin"))  # type: ignore[arg-type]
        tokens["staff"] = await broadcasts(core).staff.new_api_token(session, staff, "dashboard")

    client = TestClient(TestServer(build_api(broadcasts(core))))
    await client.start_server()
    try:
        def auth(who: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {tokens[who]}"}

        listed = await client.get("/partner/cases", headers=auth("bangkok"))
        assert listed.status == 200
        body = await listed.json()
        assert body["partner"] == "demo_bangkok"
        case = next(c for c in body["cases"] if c["code"] == code)
        assert (case["status"], case["language"], case["claimed_by"], case["country"]) == ("claimed", "lo", "caseworker 1", "TH")
        one = await (await client.get(f"/partner/cases/{code}", headers=auth("bangkok"))).json()
        assert one["description"] == "ບໍລິສັດຍຶດໜັງສືຜ່ານແດນຂອງຂ້ອຍ", "the reporter's words, as written"
        assert str(CASEWORKER) not in str(one) and "Somchai" not in str(one)

        others = await (await client.get("/partner/cases?status=all", headers=auth("phnom_penh"))).json()
        assert code not in str(others), "another partner's token does not see the case"
        hidden = await client.get(f"/partner/cases/{code}", headers=auth("phnom_penh"))
        assert hidden.status == 404, "nor can it open it (as if it did not exist)"
        assert (await client.get("/partner/cases", headers=auth("staff"))).status == 401, "staff tokens do not read cases"
        assert (await client.get("/campaigns", headers=auth("bangkok"))).status == 401, "a partner token reads only its cases"
        assert (await client.get("/partner/cases")).status == 401
        assert (await client.get("/partner/cases?status=lost", headers=auth("bangkok"))).status == 400
    finally:
        await client.close()


async def test_after_the_first_reply_a_vietnamese_reporter_adds_a_photo_of_the_contract_with_one_tap(running_bot: RunningBot) -> None:
    fake, texts = running_bot.fake, running_bot.core.texts
    vi = lambda key, **p: texts.get("vi", key, **p)  # noqa: E731
    partner_groups(fake)
    code = await file_report(running_bot, 6401, "vi", "Công ty giữ hộ chiếu và hợp đồng của tôi")
    user = running_bot.user(6401, "vi")
    user.seen = len(fake.messages.get(6401, []))
    card = await in_group(fake, BANGKOK, code)
    await fake.user_presses(CASEWORKER, card, "💬 Ask the reporter")
    prompt = await in_group(fake, BANGKOK, "Reply to this message")
    await fake.member_sends(BANGKOK, CASEWORKER, "Bạn có ảnh hợp đồng không?", reply_to=prompt)
    await user.expect("Bạn có ảnh hợp đồng không")
    await user.send("Có, tôi sẽ gửi ngay")
    await in_group(fake, BANGKOK, "Có, tôi sẽ gửi ngay")

    await fake.user_sends_photo(6401, "CONTRACT-PHOTO-1")  # outside any question now
    await user.expect(re.escape(vi("report.case_add.offer", case_add_code=code).split("<")[0]))
    await user.press(vi("report.case_add.yes"))
    await user.expect(re.escape(vi("report.case_add.done", code="X").split("<")[0]))
    note = await in_group(fake, BANGKOK, f"The reporter added to case {code}")
    assert note.reply_to == card.message_id, "in the case's thread"
    photo = await fake.wait_for(lambda: next((m for m in fake.bot_messages(BANGKOK) if m.media and m.media["file_id"] == "CONTRACT-PHOTO-1"), None))
    assert photo.reply_to == card.message_id

    await user.send("cảm ơn anh chị rất nhiều vì đã giúp đỡ")  # words, not a request: offered too, and can be declined
    await user.expect(re.escape(vi("report.case_add.offer", case_add_code=code).split("<")[0]))
    before = len(fake.bot_messages(BANGKOK))
    await user.press(vi("report.case_add.no"))
    await user.expect(re.escape(vi("report.case_add.dropped")))
    assert len(fake.bot_messages(BANGKOK)) == before, "declined: nothing reaches the partner"


async def test_the_receipt_says_when_to_expect_an_answer_and_closing_says_what_next_and_asks_once_if_it_helped(
        running_bot: RunningBot) -> None:
    from storage.reports import FeedbackCount

    fake, texts, core = running_bot.fake, running_bot.core.texts, running_bot.core
    partner_groups(fake)
    for uid, lang in ((6501, "lo"), (6502, "th")):
        t = lambda key, lang=lang, **p: texts.get(lang, key, **p)  # noqa: E731
        code = await file_report(running_bot, uid, lang, "ນາຍຈ້າງບໍ່ຈ່າຍເງິນ" if lang == "lo" else "นายจ้างไม่จ่ายค่าจ้าง")
        said = "\n".join(m.text for m in fake.bot_messages(uid))
        assert t("report.within.hours", hours=24) in said, "a normal case: answered within a day"
        assert "Mon-Fri 08:30-17:30 (" in said and t("country.TH") in said, "the partner's office hours, in its own time, named in the reader's language"

    user = running_bot.user(6501, "lo")
    user.seen = len(fake.messages.get(6501, []))
    lo = lambda key, **p: texts.get("lo", key, **p)  # noqa: E731
    card = await in_group(fake, BANGKOK, re.escape(f"Reporter's language: {lo('language.self_name')}"))  # the card may arrive after the receipt
    await fake.user_presses(CASEWORKER, card, "✅ Close")
    outcomes = await in_group(fake, BANGKOK, "Close case")
    await fake.user_presses(CASEWORKER, outcomes, "Resolved")
    closing = await user.expect(re.escape(lo("report.feedback.ask")[:20]))
    assert "/report" in closing.text and "/hotlines" in closing.text, "what they can do next"
    assert closing.labels == [lo("report.feedback.useful"), lo("report.feedback.not_useful"), lo("report.feedback.skip")]
    await user.press(lo("report.feedback.useful"), closing)
    await user.expect(re.escape(lo("report.feedback.thanks")))
    await fake.wait_for(lambda: closing.labels == [])  # answered once: the buttons are gone
    async with core.db.session() as session:
        counts = (await session.exec(select(FeedbackCount))).all()
    assert [(c.partner_id, c.answer, c.count) for c in counts] == [("demo_bangkok", "useful", 1)], "a count per partner, nothing else"


async def test_a_khmer_reporter_adds_a_voice_note_to_an_open_case_and_it_reaches_the_thread(running_bot: RunningBot) -> None:
    fake, texts = running_bot.fake, running_bot.core.texts
    km = lambda key, **p: texts.get("km", key, **p)  # noqa: E731
    partner_groups(fake)
    code = await file_report(running_bot, 6601, "km", "ក្រុមហ៊ុនមិនបើកប្រាក់ខែបីខែហើយ")
    card = await in_group(fake, BANGKOK, code)
    user = running_bot.user(6601, "km")
    user.seen = len(fake.messages.get(6601, []))

    await fake.user_sends_voice(6601, "VOICE-NOTE-1", caption="សំឡេងរបស់មេការ")
    offer = await user.expect(re.escape(km("report.case_add.offer", case_add_code=code).split("<")[0]))
    await user.press(km("report.case_add.yes"), offer)
    await user.expect(re.escape(km("report.case_add.done", code="X").split("<")[0]))
    note = await in_group(fake, BANGKOK, f"The reporter added to case {code}")
    assert "សំឡេងរបស់មេការ" in note.text and note.reply_to == card.message_id
    voice = await fake.wait_for(lambda: next((m for m in fake.bot_messages(BANGKOK) if m.media and m.media["file_id"] == "VOICE-NOTE-1"), None))
    assert voice.media["kind"] == "voice" and voice.reply_to == card.message_id
