"""The bot process killed with SIGKILL at seeded random moments while people report in five
languages, their cases go to a partner's group and a campaign goes out; the fake Bot API
carries out every request that reached it, even from a process that died, as Telegram does.

CI kills it 10 times. The long mode, 50 kills or more (documented in docs/reliability.md):

    SAFEROUTE_CRASHES=50 .venv/bin/python -m pytest -n 0 -s tests/test_crashes.py

`SAFEROUTE_CRASH_SEED` picks other moments; a failing run is repeated with its seed.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
from pathlib import Path

from sqlalchemy import insert
from sqlmodel import col, func, select

from bot.app import build_core
from bot.engine.i18n import Translator
from bot.features.broadcasts import feature
from bot.features.reports import partners_path
from bot.features.reports.partners import load_partners
from bot.settings import PROJECT_ROOT, Settings
from storage import connect
from storage.broadcasts import Subscription
from storage.models import InboxEvent, OutboxMessage, User, utcnow
from storage.reports import Report
from tests.fakes.bot_api import FakeBotApi
from tests.processes import BotProcess
from tests.story import TelegramUser
from tests.test_reports import BANGKOK, partner_groups

CRASHES = int(os.environ.get("SAFEROUTE_CRASHES", "10"))
SEED = int(os.environ.get("SAFEROUTE_CRASH_SEED", "20261201"))
LANGS = ("en", "th", "km", "vi", "lo")
STEP = 90.0  # seconds one step of a journey may wait, restarts included; only a failing run waits this long


async def a_report(user: TelegramUser, texts: Translator, lang: str, words: str) -> str:
    """One person's whole report, pressing and typing, in their language; their case code."""
    t = lambda key, **p: texts.get(lang, key, **p)  # noqa: E731
    await user.send("/start")
    await user.press(t("language.self_name"), timeout=STEP)
    await user.expect(re.escape(t("menu.prompt")), timeout=STEP)
    await user.send("/report")
    for key in ("report.danger.no", "report.category.documents_wages", "country.TH", "province.TH.bangkok", "report.affected.me"):
        await user.press(t(key), timeout=STEP)
    await user.expect(re.escape(t("report.ask_description")[:20]), timeout=STEP)
    await user.send(words)
    await user.press(t("report.attachments_done"), timeout=STEP)
    await user.press(t("report.contact.on_check"), timeout=STEP)
    await user.press(t("report.consent.yes"), timeout=STEP)
    received = await user.expect(re.escape(t("report.received", report_code="@@").split("@@")[0][:12]), timeout=STEP)
    return re.search(r"<b>([A-Z0-9]{6})</b>", received.html).group(1)  # type: ignore[union-attr]


async def in_flight(url: str, fake: FakeBotApi, copies_before: dict[int, int]) -> int:
    """Campaign messages this process got accepted by Telegram but had not recorded as sent
    when it was killed: the only ones that may arrive again (a request cannot be taken back).
    `copies_before`: how many each chat had at the previous kill, so a message counts for the
    process that sent it, however many processes held its row."""
    db = await connect(url, migrate=False)
    try:
        async with db.session() as session:
            chats = (await session.exec(select(OutboxMessage.chat).where(
                OutboxMessage.status == "sending", col(OutboxMessage.batch).like("run:%")))).all()
    finally:
        await db.close()
    return sum(1 for chat in chats if len(fake.sent_to(int(chat))) > copies_before.get(int(chat), 0))


async def test_killed_at_seeded_moments_no_report_case_or_broadcast_is_lost_and_every_repeat_is_marked(
        fake_api: FakeBotApi, tmp_path: Path, daytime: None) -> None:
    fake, rng = fake_api, random.Random(SEED)
    fake.accept_any_chat = True
    texts = Translator.from_dir(PROJECT_ROOT / "locales")
    partner_groups(fake)
    url = f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}"
    reporters = max(5, CRASHES)
    subscribers = 40 * max(5, CRASHES)

    core = await build_core(Settings(database_url=url, flows_dir=PROJECT_ROOT / "flows", locales_dir=PROJECT_ROOT / "locales"))
    now = utcnow()
    async with core.db.transaction() as session:
        admin = User(channel="telegram", address="7001", lang="en")
        session.add(admin)
        await session.exec(insert(User), params=[{"channel": "telegram", "address": str(4_000_000 + i), "lang": "en",  # type: ignore[call-overload]
                                                  "reachable": True, "created_at": now} for i in range(subscribers)])
        await session.flush()
        ids = (await session.exec(select(User.id).where(col(User.address) != "7001"))).all()
        await session.exec(insert(Subscription), params=[{"user_id": uid, "active": True, "topics": [], "timezone": "Asia/Bangkok",  # type: ignore[call-overload]
                                                          "asked_at": now, "changed_at": now} for uid in ids])
        await feature(core).campaigns.create(session, admin, name="monsoon", texts={"en": "Before you sign, read the contract twice."})
    await core.close()
    fake.add_user(7001, "Staff", "en")

    def start() -> BotProcess:
        return BotProcess(fake, url, tmp_path / "bot.log", SEND_RATE="30", CAMPAIGN_PASS_SECONDS="2")

    people = [TelegramUser(fake, 8100 + n, LANGS[n % 5]) for n in range(reporters)]
    words = [f"Report {n}: the agency took our passports and {n + 2} months of wages" for n in range(reporters)]
    process = start()
    journeys = [asyncio.create_task(a_report(person, texts, LANGS[n % 5], words[n])) for n, person in enumerate(people)]
    kills, may_repeat, most_at_once = 0, 0, 0
    audience = [4_000_000 + i for i in range(subscribers)]
    copies: dict[int, int] = {}
    try:
        for _ in range(CRASHES):
            target = len(fake.calls) + rng.randint(10, 45)
            await fake.wait_for(lambda: len(fake.calls) >= target, timeout=STEP)
            await process.kill()
            kills += 1
            accepted_unrecorded = await in_flight(url, fake, copies)
            copies = {uid: len(fake.sent_to(uid)) for uid in audience}
            may_repeat, most_at_once = may_repeat + accepted_unrecorded, max(most_at_once, accepted_unrecorded)
            process = start()
        codes = await asyncio.wait_for(asyncio.gather(*journeys), timeout=STEP * 4)
        await fake.wait_for(lambda: all(any(code in m.text for m in fake.bot_messages(BANGKOK)) for code in codes), timeout=STEP)
        await fake.wait_for(lambda: all(fake.sent_to(uid) for uid in audience), timeout=STEP)
        await fake.wait_for(lambda: any("monsoon" in m.text for m in fake.sent_to(7001)), timeout=STEP)
        for n, person in enumerate(people):  # every conversation goes on
            await person.send("/help")
            await person.expect(re.escape(texts.get(LANGS[n % 5], "help.text")[:20]), timeout=STEP)
    finally:
        for journey in journeys:
            journey.cancel()
        await process.stop()

    db = await connect(url, migrate=False)
    try:
        async with db.session() as session:
            reports = (await session.exec(select(Report.code))).all()
            set_aside = (await session.exec(select(func.count()).select_from(InboxEvent).where(InboxEvent.status == "failed"))).one()
    finally:
        await db.close()
    assert sorted(reports) == sorted(codes) and len(set(codes)) == reporters, "each report once, none lost"
    assert set_aside == 0, "no update set aside"

    console = load_partners(partners_path(PROJECT_ROOT / "flows")).partners["demo_bangkok"].console_language
    repeats, unmarked = 0, []
    for code, said in zip(codes, words):
        cards = [m for m in fake.bot_messages(BANGKOK) if code in m.text and said in m.text]
        assert cards, f"case {code} reached the partner"
        repeats += len(cards) - 1
        note = texts.get(console, "partner.repeat_note", code=code)
        unmarked += [code for card in cards[1:] if not card.text.startswith(note)]
    assert not unmarked, f"a repeated case card must say it is a repeat: {unmarked}"

    received = [len(fake.sent_to(uid)) for uid in audience]
    twice = sum(n - 1 for n in received)
    assert all(n >= 1 for n in received), "everyone got the campaign"
    assert twice <= may_repeat, f"{twice} duplicate broadcast messages; at most the {may_repeat} sends in flight at the kills"
    print(f"\n{kills} SIGKILLs (seed {SEED}): {reporters} reports in 5 languages, none lost; {len(codes)} cases at the partner, "
          f"{repeats} repeated card(s), all marked; {subscribers} subscribers reached, {twice} duplicate broadcast message(s) "
          f"(bound: {may_repeat} messages accepted but not recorded when a kill came, at most {most_at_once} at one kill); "
          f"{len(fake.calls)} Bot API calls")
