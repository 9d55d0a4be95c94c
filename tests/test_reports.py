"""Reports routed to partner NGOs: danger first, an anonymous two-way relay, nothing lost."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import shutil
from pathlib import Path

import pytest
from aiohttp import web
from sqlmodel import select

from bot.app import build_core
from bot.features.reports import feature
from bot.settings import PROJECT_ROOT, Settings
from storage.reports import Report, ReportRoute
from tests.conftest import RunningBot
from tests.fakes.bot_api import FakeBotApi, SentMessage, visible_text
from tests.story import TelegramUser

BANGKOK, NETWORK, PHNOM_PENH = -1001000000101, -1001000000102, -1001000000201
CASEWORKER, OTHER_CASEWORKER = 9001, 9002


def partner_groups(fake: FakeBotApi) -> None:
    fake.add_group(BANGKOK, "Demo Bangkok")
    fake.add_group(NETWORK, "Demo Thailand network")
    fake.add_group(PHNOM_PENH, "Demo Phnom Penh")
    fake.add_user(CASEWORKER, "Somchai")
    fake.add_user(OTHER_CASEWORKER, "Dara")


async def in_group(fake: FakeBotApi, chat: int, pattern: str, after: int = 0) -> SentMessage:
    regex = re.compile(pattern, re.S)
    return await fake.wait_for(lambda: next((m for m in fake.bot_messages(chat) if m.message_id > after and regex.search(m.text)), None))


async def report_until_consent(user: TelegramUser, t, *, category: str, danger: bool, country: str, province: str | None,  # type: ignore[no-untyped-def]
                               description: str, contact: str) -> None:
    await user.send("/report")
    await user.press(t("report.danger.yes" if danger else "report.danger.no"))
    await user.press(t("report.category." + category))
    await user.press(t(f"country.{country}"))
    if province:
        await user.press(t(f"province.{country}.{province}"))
    await user.press(t("report.affected.me"))
    await user.expect(re.escape(t("report.ask_description")[:30]))
    await user.send(description)
    await user.press(t("report.attachments_done"))
    await user.press(t(f"report.contact.{contact}"))


async def test_a_message_for_a_case_thread_still_reaches_the_group_after_the_card_was_deleted(running_bot: RunningBot) -> None:
    from bot.outbox import PRIORITY_PARTNER, Outbox

    fake, core = running_bot.fake, running_bot.core
    partner_groups(fake)
    async with core.db.transaction() as session:
        card = Outbox.add(session, "telegram", str(BANGKOK), "message", {"text": "Case AB12CD"}, PRIORITY_PARTNER)
    core.outbox.notify()
    sent_card = await in_group(fake, BANGKOK, "AB12CD")
    sent_card.deleted = True  # someone tidied the group
    async with core.db.transaction() as session:
        Outbox.add(session, "telegram", str(BANGKOK), "message", {"text": "Reporter answered: yes, today", "reply_to_outbox": card.id},
                   PRIORITY_PARTNER)
    core.outbox.notify()
    answer = await in_group(fake, BANGKOK, "Reporter answered")
    assert answer.reply_to is None, "sent without the thread rather than lost"


async def test_a_vietnamese_speaker_reports_an_urgent_case_in_thailand_and_a_bangkok_caseworker_handles_it(running_bot: RunningBot) -> None:
    fake, texts = running_bot.fake, running_bot.core.texts
    vi = lambda key, **p: texts.get("vi", key, **p)  # noqa: E731
    partner_groups(fake)
    user = running_bot.user(6001, "vi")
    fake.users[6001].first_name = "Lan"
    await user.start_in(texts, "vi")

    await user.send("/report")
    await user.press(vi("report.danger.yes"))
    numbers = await user.expect(re.escape(visible_text(vi("report.emergency_header"))))
    assert "191" in numbers.text and "113" in numbers.text and "117" in numbers.text
    question = await user.expect(re.escape(vi("report.ask_category")))
    assert numbers.message_id < question.message_id, "the emergency numbers come before any further question"
    await user.press(vi("report.category.trafficking"), question)

    await user.press(vi("country.TH"))
    await user.press(vi("province.TH.bangkok"))
    await user.press(vi("report.affected.me"))
    await user.expect(re.escape(vi("report.ask_description")[:30]))
    await user.send("Họ giữ hộ chiếu của tôi <b>& đánh tôi</b>")
    await user.expect(re.escape(vi("report.ask_attachments")[:30]))
    await fake.user_sends_photo(6001, "PHOTO-FILE-1")
    await user.expect(re.escape(vi("common.attachment_received", count=1)[:20]))
    await user.press(vi("report.attachments_done"))
    await user.press(vi("report.contact.anytime"))
    await user.press(vi("report.consent.yes"))
    received = await user.expect(re.escape(visible_text(vi("report.received", report_code="XXXXXX"))[:20]))
    code = re.search(r"\b([A-Z0-9]{6})\b", received.text).group(1)  # type: ignore[union-attr]

    card = await in_group(fake, BANGKOK, code)
    assert "Họ giữ hộ chiếu của tôi <b>& đánh tôi</b>" in card.text, "the original text arrives, escaped, as written"
    assert "URGENT" in card.text and "Bangkok" in card.text
    assert await in_group(fake, NETWORK, code), "an urgent case also goes to the fallback"
    photo = await fake.wait_for(lambda: next((m for m in fake.bot_messages(BANGKOK) if m.media), None))
    assert photo.media == {"kind": "photo", "file_id": "PHOTO-FILE-1"} and photo.reply_to == card.message_id

    await fake.user_presses(CASEWORKER, card, "🙋 Claim")
    await in_group(fake, BANGKOK, f"Case {code} claimed")
    await fake.user_presses(CASEWORKER, card, "💬 Ask the reporter")
    prompt = await in_group(fake, BANGKOK, "Reply to this message")
    assert prompt.force_reply and prompt.reply_to == card.message_id
    await fake.member_sends(BANGKOK, CASEWORKER, "Bạn đang ở khu nào? Có an toàn không?", reply_to=prompt)

    relayed = await user.expect("Bạn đang ở khu nào")
    await user.send("Tôi ở Bang Na, tôi an toàn lúc này")
    answer = await in_group(fake, BANGKOK, "Tôi ở Bang Na")
    assert answer.reply_to == card.message_id, "the answer arrives in the case's thread"
    await user.expect(re.escape(vi("report.answer_sent", code=code)[:15]))

    await fake.user_presses(CASEWORKER, card, "✅ Close")
    outcomes = await in_group(fake, BANGKOK, f"Close case {code}")
    await fake.user_presses(CASEWORKER, outcomes, "Resolved")
    await in_group(fake, BANGKOK, f"Case {code} closed")
    async with running_bot.core.db.session() as session:
        report = (await session.exec(select(Report).where(Report.code == code))).one()
        assert (report.status, report.outcome, report.partner_id) == ("closed", "resolved", "demo_bangkok")
        routes = (await session.exec(select(ReportRoute).where(ReportRoute.report_id == report.id))).all()
        assert {(r.partner_id, r.kind) for r in routes} == {("demo_bangkok", "primary"), ("demo_thailand_network", "fallback")}
        assert all(r.reason for r in routes)

    group_text = "\n".join(m.text for chat in (BANGKOK, NETWORK) for m in fake.bot_messages(chat))
    assert "Lan" not in group_text and "6001" not in group_text, "the partner never sees who reported"
    assert "Somchai" not in user.all_text() and str(CASEWORKER) not in relayed.text, "the reporter never sees who answered"


async def test_a_member_of_another_partners_group_cannot_act_on_the_case(running_bot: RunningBot, caplog: pytest.LogCaptureFixture) -> None:
    fake, texts = running_bot.fake, running_bot.core.texts
    en = lambda key, **p: texts.get("en", key, **p)  # noqa: E731
    partner_groups(fake)
    user = running_bot.user(6002, "en")
    await user.start_in(texts, "en")
    await report_until_consent(user, en, category="documents_wages", danger=False, country="TH", province="samut_sakhon",
                               description="The factory keeps our passports", contact="none")
    await user.press(en("report.consent.yes"))
    received = await user.expect("Your report has been received")
    code = re.search(r"code is ([A-Z0-9]{6})", received.text).group(1)  # type: ignore[union-attr]
    card = await in_group(fake, BANGKOK, code)

    # The card, with its buttons, turns up in the Phnom Penh partner's group (forwarded, say).
    copy = SentMessage(card.message_id + 1000, PHNOM_PENH, card.text, card.html, card.buttons)
    fake.messages[PHNOM_PENH].append(copy)
    with caplog.at_level(logging.WARNING):
        await fake.user_presses(OTHER_CASEWORKER, copy, "🙋 Claim")
        await in_group(fake, PHNOM_PENH, "cannot act on it")
    assert any("refused" in r.message and "demo_phnom_penh" in r.message for r in caplog.records)
    # As a whole number: an object's address in a DEBUG line (0x7f0bb69002c0) may hold the digits.
    caseworker = re.compile(rf"(?<![\w.]){OTHER_CASEWORKER}(?![\w.])")
    leaked = [r.getMessage()[:120] for r in caplog.records if caseworker.search(r.getMessage()) or "passports" in r.getMessage()]
    assert not leaked, leaked
    async with running_bot.core.db.session() as session:
        report = (await session.exec(select(Report).where(Report.code == code))).one()
        assert report.status == "open" and report.claimed_by is None


async def test_status_shows_a_report_to_its_reporter_only_and_delivers_waiting_messages(running_bot: RunningBot) -> None:
    fake, texts = running_bot.fake, running_bot.core.texts
    en = lambda key, **p: texts.get("en", key, **p)  # noqa: E731
    partner_groups(fake)
    user = running_bot.user(6003, "en")
    await user.start_in(texts, "en")
    await report_until_consent(user, en, category="recruitment_fraud", danger=False, country="KH", province="phnom_penh",
                               description="An agent took 600 dollars and disappeared", contact="on_check")
    await user.press(en("report.consent.yes"))
    received = await user.expect("Your report has been received")
    code = re.search(r"code is ([A-Z0-9]{6})", received.text).group(1)  # type: ignore[union-attr]
    card = await in_group(fake, PHNOM_PENH, code)
    await fake.user_presses(OTHER_CASEWORKER, card, "💬 Ask the reporter")
    prompt = await in_group(fake, PHNOM_PENH, "Reply to this message")
    await fake.member_sends(PHNOM_PENH, OTHER_CASEWORKER, "Which agency was it?", reply_to=prompt)
    await in_group(fake, PHNOM_PENH, "waits until they open /status")
    assert "Which agency" not in user.all_text(), "someone who may be watched is not messaged unasked"

    stranger = running_bot.user(6004, "en")
    await stranger.start_in(texts, "en")
    await stranger.send(f"/status {code}")
    await stranger.expect("I cannot find a report")

    await user.send(f"/status {code}")
    status = await user.expect(f"Report {code}")
    assert "Which agency was it?" in status.text
    await user.send("Golden Star Agency")
    await in_group(fake, PHNOM_PENH, "Golden Star Agency")


async def test_without_consent_only_an_anonymous_count_is_kept(running_bot: RunningBot) -> None:
    fake, texts = running_bot.fake, running_bot.core.texts
    en = lambda key, **p: texts.get("en", key, **p)  # noqa: E731
    partner_groups(fake)
    user = running_bot.user(6005, "en")
    await user.start_in(texts, "en")
    await report_until_consent(user, en, category="trafficking", danger=False, country="TH", province="tak",
                               description="My cousin is locked in a boat", contact="anytime")
    await user.press(en("report.consent.no"))
    answer = await user.expect("not shared")
    assert "1300" in answer.text, "the hotline numbers are given instead"
    async with running_bot.core.db.session() as session:
        assert (await session.exec(select(Report))).all() == []
        from storage.reports import ReportCount
        counts = (await session.exec(select(ReportCount))).all()
        assert [(c.country, c.category, c.shared, c.count) for c in counts] == [("TH", "trafficking", False, 1)]
    assert not [m for chat in (BANGKOK, NETWORK) for m in fake.bot_messages(chat)]


async def test_quick_exit_leaves_no_message_of_the_report_in_the_chat(running_bot: RunningBot) -> None:
    fake, texts = running_bot.fake, running_bot.core.texts
    km = lambda key, **p: texts.get("km", key, **p)  # noqa: E731
    user = running_bot.user(6006, "km")
    await user.start_in(texts, "km")
    before = max(m.message_id for m in fake.messages[6006])

    await user.send("/report")
    await user.press(km("report.danger.no"))
    await user.press(km("report.category.recruitment_fraud"))
    await user.press(km("country.KH"))
    await user.send("Poipet")
    await user.press(km("report.affected.someone_else"))
    await user.expect(re.escape(km("report.ask_description")[:20]))
    await user.send("មេខ្យល់យកលិខិតឆ្លងដែនរបស់បងស្រីខ្ញុំ")
    asking = await user.expect(re.escape(km("report.ask_attachments")[:20]))
    await user.press(km("common.quick_exit"), asking)
    cover = await user.expect(re.escape(km("quick_exit.cover")))

    await fake.wait_for(lambda: all(m.deleted for m in fake.messages[6006] if before < m.message_id < cover.message_id))
    remaining = [m for m in fake.messages[6006] if not m.deleted and m.message_id > before]
    assert remaining == [cover], [m.text[:40] for m in remaining]
    assert not cover.buttons
    async with running_bot.core.db.session() as session:
        assert (await session.exec(select(Report))).all() == []


async def test_a_webhook_partner_gets_a_signed_payload_and_the_retry_keeps_its_idempotency_key(
        tmp_path: Path, fake_api: FakeBotApi, monkeypatch: pytest.MonkeyPatch) -> None:
    received: list[tuple[dict[str, str], bytes]] = []

    async def receive(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.read()))
        return web.Response(status=500 if len(received) == 1 else 200)

    app = web.Application()
    app.router.add_post("/hook", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    flows = tmp_path / "flows"
    shutil.copytree(PROJECT_ROOT / "flows", flows)
    partners = flows / "data" / "partners.yaml"
    partners.write_text(partners.read_text().replace("http://127.0.0.1:8099/saferoute/reports", f"http://127.0.0.1:{port}/hook"))
    monkeypatch.setenv("DEMO_SCAM_WATCH_SECRET", "s3cret")
    core = await build_core(Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}", flows_dir=flows,
                                     locales_dir=PROJECT_ROOT / "locales", poll_timeout=5))
    bot = RunningBot(core, fake_api)
    await bot.start()
    try:
        partner_groups(fake_api)
        texts = core.texts
        en = lambda key, **p: texts.get("en", key, **p)  # noqa: E731
        user = bot.user(6007, "en")
        await user.start_in(texts, "en")
        await report_until_consent(user, en, category="scam_compound", danger=False, country="KH", province="sihanoukville",
                                   description="They hold 40 people in a building and force us to scam", contact="on_check")
        await user.press(en("report.consent.yes"))
        await user.expect("Your report has been received")

        webhooks = feature(core).webhooks
        webhooks.backoff_base = 0.0
        await webhooks.sender.drain()
        assert len(received) == 2, "one failure, then the retry"
        (first_headers, first_body), (second_headers, second_body) = received
        assert first_headers["Idempotency-Key"] == second_headers["Idempotency-Key"]
        assert first_body == second_body
        stamp = second_headers["X-SafeRoute-Timestamp"]
        expected = "sha256=" + hmac.new(b"s3cret", stamp.encode() + b"." + second_body, hashlib.sha256).hexdigest()
        assert second_headers["X-SafeRoute-Signature"] == expected, "the signature covers the timestamp"
        assert hmac.new(b"s3cret", second_body, hashlib.sha256).hexdigest() not in second_headers["X-SafeRoute-Signature"]
        payload = json.loads(second_body)
        assert payload["schema"] == "saferoute.report/1"
        assert payload["case"]["category"] == "scam_compound" and "40 people" in payload["case"]["description"]
        assert payload["delivery_id"] == first_headers["Idempotency-Key"]
    finally:
        await bot.stop()
        await core.close()
        await runner.cleanup()


async def test_an_unacknowledged_case_escalates_to_the_next_partner(running_bot: RunningBot) -> None:
    from datetime import timedelta

    fake, texts, core = running_bot.fake, running_bot.core.texts, running_bot.core
    en = lambda key, **p: texts.get("en", key, **p)  # noqa: E731
    partner_groups(fake)
    user = running_bot.user(6008, "en")
    await user.start_in(texts, "en")
    await report_until_consent(user, en, category="documents_wages", danger=False, country="TH", province="bangkok",
                               description="No wages for three months", contact="none")
    await user.press(en("report.consent.yes"))
    received = await user.expect("Your report has been received")
    code = re.search(r"code is ([A-Z0-9]{6})", received.text).group(1)  # type: ignore[union-attr]
    await in_group(fake, BANGKOK, code)

    desk = feature(core).desk
    async with core.db.transaction() as session:
        report = (await session.exec(select(Report).where(Report.code == code))).one()
        assert await desk.escalate_overdue(session, report.created_at + timedelta(minutes=1439)) == 0
        assert await desk.escalate_overdue(session, report.created_at + timedelta(minutes=1441)) == 1
    core.outbox.notify()
    await in_group(fake, NETWORK, code)
    async with core.db.session() as session:
        route = (await session.exec(select(ReportRoute).where(ReportRoute.kind == "escalation"))).one()
        assert route.partner_id == "demo_thailand_network" and "did not acknowledge within 1440 minutes" in route.reason


async def test_forget_deletes_what_the_bot_holds(running_bot: RunningBot) -> None:
    fake, texts, core = running_bot.fake, running_bot.core.texts, running_bot.core
    en = lambda key, **p: texts.get("en", key, **p)  # noqa: E731
    partner_groups(fake)
    user = running_bot.user(6009, "en")
    await user.start_in(texts, "en")
    await report_until_consent(user, en, category="other", danger=False, country="VN", province="hanoi",
                               description="Something happened at my workplace", contact="anytime")
    await user.press(en("report.consent.yes"))
    await user.expect("Your report has been received")
    await user.send("/forget")
    explain = await user.expect("keep their copy")
    await user.press(en("forget.yes"), explain)
    await user.expect(re.escape(en("forget.done")))
    from storage.models import User

    async with core.db.session() as session:
        assert (await session.exec(select(User).where(User.address == "6009"))).first() is None
        report = (await session.exec(select(Report))).one()
        assert report.reporter_id is None and report.content is None


async def test_a_process_killed_between_the_commit_and_the_delivery_delivers_exactly_once(fake_api: FakeBotApi, tmp_path: Path) -> None:
    from storage import connect
    from tests.processes import BotProcess

    partner_groups(fake_api)
    from bot.engine.i18n import Translator

    texts = Translator.from_dir(PROJECT_ROOT / "locales")
    en = lambda key, **p: texts.get("en", key, **p)  # noqa: E731
    user = TelegramUser(fake_api, 6010, "en")
    process = BotProcess.on_sqlite(fake_api, tmp_path / "bot.db")
    held = asyncio.Event()
    try:
        await user.start_in(texts, "en")
        await report_until_consent(user, en, category="documents_wages", danger=False, country="TH", province="bangkok",
                                   description="Our boss keeps all our passports", contact="none")
        consent = await user.expect(re.escape(en("report.ask_consent")[:30]))
        sends = sum(1 for method, _ in fake_api.calls if method == "sendMessage")
        fake_api.hold_sends = held
        await user.press(en("report.consent.yes"), consent)
        await fake_api.wait_for(lambda: sum(1 for method, _ in fake_api.calls if method == "sendMessage") > sends, timeout=30)
        await process.kill()  # the report is committed; nothing about it has left yet
        assert not [m for m in fake_api.bot_messages(BANGKOK)] and "received" not in user.all_text()
        fake_api.held_never_arrive = True  # what the process was sending had not reached Telegram
        held.set()
        await fake_api.wait_for(lambda: fake_api.held == 0)
        fake_api.hold_sends, fake_api.held_never_arrive = None, False
        process = BotProcess.on_sqlite(fake_api, tmp_path / "bot.db")
        received = await user.expect("Your report has been received", timeout=30)
        code = re.search(r"code is ([A-Z0-9]{6})", received.text).group(1)  # type: ignore[union-attr]
        await in_group(fake_api, BANGKOK, code)
        await user.send("/help")
        await user.expect("Press the buttons", timeout=30)
        assert len([m for m in fake_api.bot_messages(BANGKOK) if code in m.text]) == 1
        assert len([m for m in fake_api.sent_to(6010) if "Your report has been received" in m.text]) == 1
    finally:
        held.set()
        await process.stop()
    db = await connect(f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}", migrate=False)
    try:
        async with db.session() as session:
            assert len((await session.exec(select(Report))).all()) == 1
    finally:
        await db.close()
