"""Awareness broadcasts in chat: staff roles and invites, composing a broadcast, following
it, and subscribers opting in and out. The clock is the test's: a campaign fires when the
test calls `fire_due` with a chosen `now`; the running bot's sender then delivers it."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import select, update

from bot.app import Core
from bot.features.broadcasts import feature, subscribers
from bot.settings import PROJECT_ROOT, Settings
from storage.broadcasts import AuditEntry, Campaign, StaffRole, Subscription
from storage.models import User, utcnow
from tests.conftest import RunningBot, sqlite_url
from tests.fakes.bot_api import WAIT, FakeBotApi, visible_text
from tests.story import TelegramUser

ADMIN, STAFF = 7001, 7002
BOT_USERNAME = "saferoute_test_bot"
KM_TEXT = "ប្រយ័ត្ន! ការងារអនឡាញដែលសន្យាប្រាក់ខែខ្ពស់ & មិនត្រូវការបទពិសោធន៍ <ជាការបោកប្រាស់>"
NAME = "Scam warning & tips <weekly>"
TH_TEXT = "ระวัง! งานออนไลน์ที่สัญญาเงินเดือนสูง & ไม่ต้องมีประสบการณ์ <มักเป็นการหลอกลวง>"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The first admin comes from the settings, as in production."""
    return Settings(database_url=sqlite_url(tmp_path), telegram_bot_token=None, flows_dir=PROJECT_ROOT / "flows",
                    locales_dir=PROJECT_ROOT / "locales", poll_timeout=5,
                    admin_telegram_ids=str(ADMIN), bot_username=BOT_USERNAME)


class Settled:
    """Wakes the test each time the bot's sender records what happened to rows, so a test
    can wait for the database to show a delivery's outcome without polling a clock."""

    def __init__(self, core: Core) -> None:
        self.count = 0
        self.changed = asyncio.Condition()
        real_settle = core.outbox.settle

        async def settle(outcomes: Any) -> None:
            try:
                await real_settle(outcomes)
            finally:
                async with self.changed:
                    self.count += 1
                    self.changed.notify_all()

        core.outbox.settle = settle  # type: ignore[method-assign]

    async def until(self, check: Callable[[], Awaitable[bool]], timeout: float = WAIT) -> None:
        """Wait until check() holds, re-checking after each recorded outcome."""
        async def wait() -> None:
            while True:
                seen = self.count
                if await check():
                    return
                async with self.changed:
                    await self.changed.wait_for(lambda: self.count > seen)

        await asyncio.wait_for(wait(), timeout)


@pytest.fixture
def settled(running_bot: RunningBot) -> Settled:
    return Settled(running_bot.core)


def texts_of(core: Core, lang: str) -> Callable[..., str]:
    return lambda key, **params: core.texts.get(lang, key, **params)


def shown(text: str, chars: int | None = None) -> str:
    """A pattern for a text as the user sees it (tags removed), or for its first chars."""
    return re.escape(visible_text(text)[:chars])


async def subscribe_in_chat(user: TelegramUser, core: Core, lang: str) -> None:
    t = texts_of(core, lang)
    await user.send("/subscribe")
    topics = await user.expect(re.escape(visible_text(t("subscribe.ask_topics", sub_chosen="@@")).split("@@")[0]))
    assert t("subscribe.topic.scams") in topics.labels
    await user.press(t("subscribe.done_button"), topics)
    await user.expect(re.escape(t("subscribe.subscribed", topics="@@").split("@@")[0]))


async def guidance_journey(user: TelegramUser, core: Core, lang: str) -> None:
    t = texts_of(core, lang)
    await user.press(t("menu.guidance"))
    await user.press(t("country.KH"))
    await user.press(t("country.TH"))
    await user.press(t("guide.topic.fees"))
    await user.expect(re.escape(t("guide.ask_topic")))
    await user.press(t("common.back_to_menu"))


async def invite_staff(admin: TelegramUser, user: TelegramUser, core: Core, role: str = "campaign") -> None:
    """An admin sends an invite link; the person opens it (/start inv_<token>) and gets the role."""
    en = texts_of(core, "en")
    await admin.send(f"/invite {role}")
    invite = await admin.expect(re.escape(f"https://t.me/{BOT_USERNAME}?start=inv_"))
    token = re.search(rf"https://t\.me/{BOT_USERNAME}\?start=inv_([A-Za-z0-9_-]+)", invite.text).group(1)  # type: ignore[union-attr]
    await user.send(f"/start inv_{token}")
    await user.press(en("language.self_name"))  # someone new picks a language first, then the link opens
    await user.expect(re.escape(en("staff.invite_accepted", role=en(f"staff.role.{role}"))))


async def add_bulk_subscribers(core: Core, fake: FakeBotApi, ids: list[int], lang: str) -> None:
    async with core.db.transaction() as session:
        for uid in ids:
            fake.add_user(uid, f"Bulk {uid}", lang)
            user = User(channel="telegram", address=str(uid), lang=lang)
            session.add(user)
            await session.flush()
            await subscribers.subscribe(session, user, origin="KH")


def last_weekly_slot(weekday: int, hour: int, tz: str) -> datetime:
    """The newest moment at or before now that is <weekday> <hour>:00 in tz (Monday = 0)."""
    local = utcnow().astimezone(ZoneInfo(tz))
    slot = (local - timedelta(days=(local.weekday() - weekday) % 7)).replace(hour=hour, minute=0, second=0, microsecond=0)
    if slot > local:
        slot -= timedelta(days=7)
    return slot.astimezone(timezone.utc)


@pytest.mark.usefixtures("daytime")
async def test_campaign_staff_schedule_a_weekly_khmer_and_thai_broadcast_that_only_opted_in_khmer_and_thai_subscribers_get(
        running_bot: RunningBot, settled: Settled) -> None:
    core, fake = running_bot.core, running_bot.fake
    en, km, th = texts_of(core, "en"), texts_of(core, "km"), texts_of(core, "th")

    # The admin (from the settings) invites a campaign staff member with a one-time link.
    admin, staff = running_bot.user(ADMIN, "en"), running_bot.user(STAFF, "en")
    await admin.start_in(core.texts, "en")
    await invite_staff(admin, staff, core)

    # Subscribers opt in through the chat: a Khmer speaker after their first guidance journey,
    # a Thai speaker with /subscribe; a Lao and a Vietnamese speaker subscribe too; a second
    # Khmer speaker says no; a third Khmer speaker subscribes and later blocks the bot.
    khmer = running_bot.user(7101, "km")
    await khmer.start_in(core.texts, "km")
    await guidance_journey(khmer, core, "km")
    offer = await khmer.expect(re.escape(km("subscribe.offer")[:40]))
    await khmer.press(km("subscribe.offer_yes"), offer)
    topics = await khmer.expect(re.escape(visible_text(km("subscribe.ask_topics", sub_chosen="@@")).split("@@")[0]))
    await khmer.press(km("subscribe.done_button"), topics)
    subscribed = await khmer.expect(re.escape(km("subscribe.subscribed", topics="@@").split("@@")[0]))
    assert km("subscribe.topic.scams") in subscribed.text and km("menu.prompt") in subscribed.text

    thai = running_bot.user(7102, "th")
    await thai.start_in(core.texts, "th")
    await subscribe_in_chat(thai, core, "th")
    lao = running_bot.user(7103, "lo")
    await lao.start_in(core.texts, "lo")
    await subscribe_in_chat(lao, core, "lo")
    vietnamese = running_bot.user(7106, "vi")
    await vietnamese.start_in(core.texts, "vi")
    await subscribe_in_chat(vietnamese, core, "vi")

    declined = running_bot.user(7104, "km")
    await declined.start_in(core.texts, "km")
    await guidance_journey(declined, core, "km")
    await declined.press(km("subscribe.offer_no"))
    await declined.expect(re.escape(km("subscribe.later")))

    blocker = running_bot.user(7105, "km")
    await blocker.start_in(core.texts, "km")
    await subscribe_in_chat(blocker, core, "km")
    await add_bulk_subscribers(core, fake, [7201, 7202], "th")

    # Campaign staff compose the broadcast in chat.
    await staff.send("/broadcast")
    await staff.expect(re.escape(en("broadcast.ask_name")[:30]))
    await staff.send(NAME)
    await staff.expect(shown(en("broadcast.ask_text.km")))
    await staff.send(KM_TEXT)
    await staff.press(en("broadcast.skip"), await staff.expect(shown(en("broadcast.ask_text.lo"))))
    await staff.expect(shown(en("broadcast.ask_text.th")))
    await staff.send(TH_TEXT)
    await staff.press(en("broadcast.skip"), await staff.expect(shown(en("broadcast.ask_text.vi"))))
    await staff.press(en("broadcast.skip"), await staff.expect(shown(en("broadcast.ask_text.en"))))
    await staff.press(en("broadcast.skip"), await staff.expect(shown(en("broadcast.ask_text.my"))))
    await staff.press(en("broadcast.button_flow"), await staff.expect(re.escape(en("broadcast.ask_button"))))
    await staff.press(en("broadcast.button.scam"), await staff.expect(re.escape(en("broadcast.ask_button_flow"))))
    await staff.press(en("broadcast.audience_by.langs"),
                      await staff.expect(shown(en("broadcast.ask_audience", bc_audience=en("broadcast.everyone")))))
    await staff.press(km("language.self_name"))
    await staff.expect(shown(en("broadcast.ask_languages", bc_chosen="Khmer")))
    await staff.press(th("language.self_name"))
    await staff.press(en("broadcast.done"), await staff.expect(shown(en("broadcast.ask_languages", bc_chosen="Khmer, Thai"))))
    audience = await staff.expect(shown(en("broadcast.ask_audience", bc_audience="languages: Khmer, Thai")))
    await staff.press(en("broadcast.audience_ok"), audience)
    await staff.press(en("broadcast.schedule.weekly"), await staff.expect(re.escape(en("broadcast.ask_schedule"))))
    await staff.press(en("broadcast.weekday.mon"), await staff.expect(re.escape(en("broadcast.ask_weekday"))))
    await staff.expect(shown(en("broadcast.ask_time"), 30))
    await staff.send("9:00")

    # The preview: each language exactly as its subscribers will see it, and what is not sent.
    intro = await staff.expect(re.escape(en("broadcast.preview_intro", name=NAME)))
    assert intro.text.endswith(visible_text(en("broadcast.preview_lang", language="Khmer")))
    khmer_preview = await staff.expect(re.escape(KM_TEXT))
    assert khmer_preview.text == KM_TEXT and khmer_preview.labels == [km("broadcast.button.scam")]
    assert khmer_preview.button(km("broadcast.button.scam"))["callback_data"] == "go:scam"
    await staff.expect(shown(en("broadcast.preview_lang", language="Thai")))
    thai_preview = await staff.expect(re.escape(TH_TEXT))
    assert thai_preview.text == TH_TEXT and thai_preview.labels == [th("broadcast.button.scam")]
    summary = await staff.expect(re.escape(en("broadcast.preview_not_sent", languages="Lao, Vietnamese, English, Burmese")))
    assert en("broadcast.preview_summary", button=en("broadcast.button.scam"), audience="languages: Khmer, Thai",
              schedule="every Monday at 09:00 (Asia/Bangkok)", count=5) in summary.text
    assert en("broadcast.confirm") in summary.labels
    async with core.db.session() as session:
        assert (await session.exec(select(Campaign))).all() == [], "nothing is created before confirmation"
    await staff.press(en("broadcast.confirm"), summary)
    created = await staff.expect(r"Scheduled: broadcast #(\d+)")
    campaign_id = int(re.search(r"#(\d+)", created.text).group(1))  # type: ignore[union-attr]

    async with core.db.transaction() as session:
        campaign = await session.get(Campaign, campaign_id)
        assert campaign is not None
        assert campaign.texts == {"km": KM_TEXT, "th": TH_TEXT}
        assert campaign.button == {"flow": "scam"} and campaign.audience == {"languages": ["km", "th"]}
        assert campaign.schedule == {"kind": "weekly", "weekday": "mon", "time": "09:00", "tz": "Asia/Bangkok"}
        assert campaign.status == "scheduled"
        staff_user = (await session.exec(select(User).where(User.address == str(STAFF)))).one()
        assert campaign.created_by == staff_user.id
        assert (await session.exec(select(AuditEntry).where(AuditEntry.action == "campaign_create"))).one().actor_id == staff_user.id
        # It was scheduled a week ago; now it is Monday 09:00 in Bangkok.
        monday_nine = last_weekly_slot(0, 9, "Asia/Bangkok")
        campaign.created_at = monday_nine - timedelta(days=7)
        session.add(campaign)
    fake.users[7105].blocked_bot = True

    runs = await feature(core).campaigns.fire_due(core.db, monday_nine)
    assert [r.recipients for r in runs] == [5]
    assert await feature(core).campaigns.fire_due(core.db, monday_nine + timedelta(minutes=5)) == [], "once per slot"
    core.outbox.notify()

    # Only the opted-in Khmer and Thai subscribers get it, each in their own language.
    got = await khmer.expect(re.escape(KM_TEXT))
    assert got.labels == [km("broadcast.button.scam")] and got.button(km("broadcast.button.scam"))["callback_data"] == "go:scam"
    assert (await thai.expect(re.escape(TH_TEXT))).labels == [th("broadcast.button.scam")]
    for uid in (7201, 7202):
        await running_bot.user(uid, "th").expect(re.escape(TH_TEXT))

    async def nothing_left() -> bool:
        async with core.db.session() as session:
            found = await session.get(Campaign, campaign_id)
            assert found is not None
            return (await feature(core).campaigns.progress(session, found, utcnow())).remaining == 0

    await settled.until(nothing_left)
    for user in (lao, vietnamese, declined, blocker):
        assert KM_TEXT not in user.all_text() and TH_TEXT not in user.all_text()
    async with core.db.session() as session:
        blocked = (await session.exec(select(User).where(User.address == "7105"))).one()
        assert blocked.reachable is False, "a user who blocked the bot is marked unreachable"

    # The scheduler's pass closes the run; staff get the final report, and /campaigns shows it.
    await feature(core).send_due()
    await staff.expect(re.escape(en("broadcast.final_report", name=NAME, sent=4, failed=0, blocked=1, recipients=5)))
    await staff.send("/campaigns")
    listing = await staff.expect(re.escape(visible_text(en("campaigns.header"))))
    assert f"#{campaign_id} {NAME}: scheduled" in listing.text
    assert "sent 4 · failed 0 · blocked the bot 1 · still to send 0" in listing.text
    next_monday = (monday_nine + timedelta(days=7)).astimezone(ZoneInfo("Asia/Bangkok")).strftime("%Y-%m-%d %H:%M")
    assert f"next sending: {next_monday} (Asia/Bangkok)" in listing.text


async def test_stop_typed_in_lao_opts_out_at_once_and_ordinary_sentences_do_not(running_bot: RunningBot) -> None:
    core = running_bot.core
    lo = texts_of(core, "lo")
    user = running_bot.user(7301, "lo")
    await user.start_in(core.texts, "lo")
    await subscribe_in_chat(user, core, "lo")

    await user.send("ນາຍຈ້າງບໍ່ໃຫ້ຂ້ອຍຢຸດພັກເລີຍ")  # "my employer never lets me take a break" (ຢຸດ, stop, alone)
    await user.send("/help")
    await user.expect(re.escape(visible_text(lo("help.text"))[:20]))
    assert lo("subscribe.stopped") not in user.all_text()
    async with core.db.session() as session:
        db_user = (await session.exec(select(User).where(User.address == "7301"))).one()
        assert (await session.get(Subscription, db_user.id)).active  # type: ignore[union-attr]

    await user.send("ກະລຸນາຢຸດຮັບຂ່າວ")  # "please stop the news"
    await user.expect(re.escape(lo("subscribe.stopped")))
    async with core.db.session() as session:
        row = await session.get(Subscription, db_user.id)
        assert row is not None and row.active is False

    await user.send("/unsubscribe")
    await user.expect(re.escape(lo("subscribe.was_not_subscribed")))
    await subscribe_in_chat(user, core, "lo")
    await user.send("/stop")
    await user.expect(re.escape(lo("subscribe.stopped")))


async def test_someone_who_is_not_staff_cannot_broadcast_or_manage_staff(running_bot: RunningBot) -> None:
    core = running_bot.core
    vi = texts_of(core, "vi")
    user = running_bot.user(7401, "vi")
    await user.start_in(core.texts, "vi")
    for command in ("/broadcast", "/campaigns", "/campaigns cancel 1", "/grant 7401 admin", "/revoke 7001 admin", "/invite admin"):
        await user.send(command)
        await user.expect(re.escape(vi("staff.refused")))
    await user.send("Khuyến mãi lớn, gửi cho tất cả mọi người")  # typed after the refusal: not taken as a broadcast
    await user.send("/help")
    await user.expect(re.escape(visible_text(vi("help.text"))[:20]))
    async with core.db.session() as session:
        assert (await session.exec(select(Campaign))).all() == []
        assert (await session.exec(select(StaffRole))).all() == []
        assert (await session.exec(select(AuditEntry))).all() == []
    assert "t.me/" not in user.all_text()


async def test_admins_grant_and_revoke_roles_in_chat_invites_work_once_and_everything_is_audited(running_bot: RunningBot) -> None:
    core = running_bot.core
    en, th = texts_of(core, "en"), texts_of(core, "th")
    admin, helper = running_bot.user(ADMIN, "en"), running_bot.user(7501, "th")
    await admin.start_in(core.texts, "en")

    await admin.send("/grant 7501 campaign")
    await admin.expect(re.escape(en("staff.unknown_user", id="7501")[:40]))
    await helper.start_in(core.texts, "th")
    await helper.send("/broadcast")
    await helper.expect(re.escape(th("staff.refused")))

    await admin.send("/grant 7501")
    await admin.expect(re.escape(visible_text(en("staff.grant_usage", roles="admin, campaign, partner"))[:40]))
    await admin.send("/grant 7501 campaign")
    await admin.expect(re.escape(en("staff.granted", id="7501", role=en("staff.role.campaign"))))
    await helper.expect(re.escape(th("staff.you_got_role", role=th("staff.role.campaign"))))
    fake = running_bot.fake
    staff_menu = await fake.wait_for(lambda: {c["command"]: c["description"] for c in fake.chat_commands.get(7501, [])})
    assert staff_menu["broadcast"] == th("command.broadcast"), "the helper's own menu has the staff commands, in Thai"
    assert not any(c["command"] == "broadcast" for menu in fake.commands.values() for c in menu), "nobody else's has"
    await helper.send("/broadcast")
    await helper.expect(re.escape(th("broadcast.ask_name")[:30]))
    await helper.press(th("broadcast.cancel"))
    await helper.expect(re.escape(th("broadcast.discarded")))

    await admin.send("/revoke 7501 campaign")
    await admin.expect(re.escape(en("staff.revoked", id="7501", role=en("staff.role.campaign"))))
    await helper.expect(re.escape(th("staff.you_lost_role", role=th("staff.role.campaign"))))
    await fake.wait_for(lambda: 7501 not in fake.chat_commands)
    await helper.send("/broadcast")
    await helper.expect(re.escape(th("staff.refused")))

    partner, latecomer = running_bot.user(7502, "en"), running_bot.user(7503, "en")
    await admin.send("/invite partner")
    invite = await admin.expect(re.escape(f"https://t.me/{BOT_USERNAME}?start=inv_"))
    link = re.search(r"https://t\.me/\S+", invite.text).group(0)  # type: ignore[union-attr]
    token = link.split("start=inv_")[1]
    await partner.start_in(core.texts, "en")
    await partner.send(f"/start inv_{token}")
    await partner.expect(re.escape(en("staff.invite_accepted", role=en("staff.role.partner"))))
    await latecomer.start_in(core.texts, "en")
    await latecomer.send(f"/start inv_{token}")
    await latecomer.expect(re.escape(en("staff.invite_invalid")))
    await partner.send("/broadcast")
    await partner.expect(re.escape(en("staff.refused")), 5)

    async with core.db.session() as session:
        ids = {u.address: u.id for u in (await session.exec(select(User))).all()}
        roles = [(r.user_id, r.role) for r in (await session.exec(select(StaffRole))).all()]
        assert roles == [(ids["7502"], "partner")]
        audit = [(a.actor_id, a.action, a.target) for a in (await session.exec(select(AuditEntry).order_by(AuditEntry.id))).all()]
    assert audit == [
        (ids[str(ADMIN)], "grant", f"user:{ids['7501']} role:campaign"),
        (ids[str(ADMIN)], "revoke", f"user:{ids['7501']} role:campaign"),
        (ids[str(ADMIN)], "invite", "role:partner"),
        (ids["7502"], "accept_invite", "role:partner"),
    ]
    assert token not in str(audit)


@pytest.mark.usefixtures("daytime")
async def test_campaigns_lists_pauses_resumes_and_cancels_and_a_stop_cancels_what_was_queued(
        running_bot: RunningBot, settled: Settled) -> None:
    core, fake = running_bot.core, running_bot.fake
    en, vi = texts_of(core, "en"), texts_of(core, "vi")
    admin = running_bot.user(ADMIN, "en")
    await admin.start_in(core.texts, "en")
    await admin.send("/campaigns")
    await admin.expect(re.escape(en("campaigns.none")))

    # A one-off Vietnamese broadcast at a date next year, composed with a web-link button.
    next_year = utcnow().year + 1
    await admin.send("/broadcast")
    await admin.expect(re.escape(en("broadcast.ask_name")[:30]))
    await admin.send("Tết safety")
    await admin.expect(shown(en("broadcast.ask_text.km")))
    await admin.send("ក" * 3600)
    asked_again = await admin.expect(re.escape(en("broadcast.too_long", count=3600, limit=3500)))
    assert asked_again.text.endswith(visible_text(en("broadcast.ask_text.km")))
    await admin.press(en("broadcast.skip"), asked_again)
    for lang in ("lo", "th"):
        await admin.press(en("broadcast.skip"), await admin.expect(shown(en(f"broadcast.ask_text.{lang}"))))
    await admin.expect(shown(en("broadcast.ask_text.vi")))
    await admin.send("Trước khi đi làm xa, hãy kiểm tra công ty tuyển dụng.")
    await admin.press(en("broadcast.skip"), await admin.expect(shown(en("broadcast.ask_text.en"))))
    await admin.press(en("broadcast.skip"), await admin.expect(shown(en("broadcast.ask_text.my"))))
    await admin.press(en("broadcast.button_url"))
    await admin.expect(re.escape(en("broadcast.ask_url")))
    await admin.send("http://example.org")
    await admin.expect(re.escape(en("broadcast.bad_url")))
    await admin.send("https://example.org/tet")
    await admin.press(en("broadcast.audience_ok"))
    await admin.press(en("broadcast.schedule.once"))
    await admin.expect(shown(en("broadcast.ask_at"), 30))
    await admin.send("tomorrow morning")
    await admin.expect(shown(en("broadcast.bad_at"), 30))
    await admin.send("2020-01-20 08:30")
    await admin.expect(re.escape(en("broadcast.in_past", at="2020-01-20 08:30", tz="Asia/Bangkok")))
    await admin.send(f"{next_year}-01-20 08:30 Mars/Olympus")
    await admin.expect(re.escape(en("broadcast.bad_tz", tz="Mars/Olympus")))
    await admin.send(f"{next_year}-01-20 08:30 Asia/Ho_Chi_Minh")
    vi_preview = await admin.expect("Trước khi đi làm xa")
    assert vi_preview.button(vi("broadcast.button.link"))["url"] == "https://example.org/tet"
    await admin.expect(re.escape(en("broadcast.preview_not_sent", languages="Khmer, Lao, Thai, English, Burmese")))
    await admin.press(en("broadcast.confirm_empty"))  # no Vietnamese subscriber yet: said, and confirmed as such
    assert any("reaches no subscriber now" in m.text for m in admin.fake.bot_messages(admin.id))
    created = await admin.expect(re.escape(f"on {next_year}-01-20 08:30 (Asia/Ho_Chi_Minh)"))
    campaign_id = int(re.search(r"#(\d+)", created.text).group(1))  # type: ignore[union-attr]

    # Listed, then paused and resumed by number, then cancelled after a confirmation.
    await admin.send("/campaigns")
    listing = await admin.expect(re.escape(visible_text(en("campaigns.header"))))
    assert f"#{campaign_id} Tết safety: scheduled" in listing.text
    await admin.send("999")
    await admin.expect(re.escape(en("campaigns.not_found", id="999")))
    await admin.send(str(campaign_id))
    manage = await admin.expect(f"Broadcast #{campaign_id} Tết safety: scheduled")
    assert manage.text.endswith(en("campaigns.ask_action"))
    assert en("campaigns.resume") not in manage.labels
    await admin.press(en("campaigns.pause"), manage)
    await admin.expect(re.escape(en("campaigns.paused", id=campaign_id, name="Tết safety")))
    await admin.send(f"/campaigns resume {campaign_id}")
    await admin.expect(re.escape(en("campaigns.resumed", id=campaign_id, name="Tết safety")))
    await admin.send("/campaigns")
    await admin.expect(re.escape(visible_text(en("campaigns.header"))))
    await admin.send(f"pause #{campaign_id}")
    await admin.expect(re.escape(en("campaigns.paused", id=campaign_id, name="Tết safety")))
    await admin.send("/campaigns")
    await admin.expect(re.escape(visible_text(en("campaigns.header"))))
    await admin.send(f"#{campaign_id}")
    await admin.press(en("campaigns.cancel"), await admin.expect(re.escape(en("campaigns.ask_action"))))
    await admin.press(en("campaigns.cancel_yes"), await admin.expect(re.escape(en("campaigns.confirm_cancel"))))
    await admin.expect(re.escape(en("campaigns.cancelled", id=campaign_id, name="Tết safety")))
    await admin.send(f"/campaigns resume {campaign_id}")
    await admin.expect(re.escape(en("campaigns.cannot", id=campaign_id, status=en("campaigns.status.cancelled"))))

    # A paused run holds its messages; someone who types /stop meanwhile never gets theirs.
    stays, leaves = running_bot.user(7601, "vi"), running_bot.user(7602, "vi")
    for user in (stays, leaves):
        await user.start_in(core.texts, "vi")
        await subscribe_in_chat(user, core, "vi")
    async with core.db.transaction() as session:
        admin_user = (await session.exec(select(User).where(User.address == str(ADMIN)))).one()
        now_campaign = await feature(core).campaigns.create(session, admin_user, name="Now", texts={"vi": "Tin khẩn: số đường dây nóng mới"})
    async with core.db.transaction() as session:
        assert await feature(core).campaigns.claim_due(session, utcnow())
        await feature(core).campaigns.set_status(session, now_campaign, "pause")
    assert await feature(core).campaigns.queue_audiences(core.db, utcnow()) == 2, "a paused run's audience is queued, held"
    await leaves.send("/stop")
    await leaves.expect(re.escape(vi("subscribe.stopped")))
    await admin.send(f"/campaigns resume {now_campaign.id}")
    await admin.expect(re.escape(en("campaigns.resumed", id=now_campaign.id, name="Now")))
    await stays.expect("Tin khẩn")

    async def nothing_left() -> bool:
        async with core.db.session() as session:
            found = await session.get(Campaign, now_campaign.id)
            return (await feature(core).campaigns.progress(session, found, utcnow())).remaining == 0  # type: ignore[arg-type]

    await settled.until(nothing_left)
    assert "Tin khẩn" not in leaves.all_text()
    async with core.db.session() as session:
        actions = [a.action for a in (await session.exec(select(AuditEntry).order_by(AuditEntry.id))).all()]
        leaver = (await session.exec(select(User).where(User.address == "7602"))).one()
    assert actions == ["campaign_create", "campaign_pause", "campaign_resume", "campaign_pause", "campaign_cancel", "campaign_resume"]
    assert leaver.reachable, "opting out is not the same as blocking the bot: the person can still be answered"


async def test_the_offer_comes_once_after_the_first_guidance_journey(running_bot: RunningBot) -> None:
    core = running_bot.core
    th = texts_of(core, "th")
    user = running_bot.user(7701, "th")
    await user.start_in(core.texts, "th")
    await guidance_journey(user, core, "th")
    offer = await user.expect(re.escape(th("subscribe.offer")[:30]))
    assert offer.labels[:2] == [th("subscribe.offer_yes"), th("subscribe.offer_no")]
    await user.send("/menu")  # ignored: it is not asked again anyway
    await user.expect(re.escape(th("menu.prompt")))
    await guidance_journey(user, core, "th")
    back = await user.expect(re.escape(th("menu.prompt")))
    assert th("subscribe.offer")[:30] not in back.text
    assert user.all_text().count(th("subscribe.offer")[:30]) == 1
    async with core.db.session() as session:
        db_user = (await session.exec(select(User).where(User.address == "7701"))).one()
        row = await session.get(Subscription, db_user.id)
        assert row is not None and row.active is False



async def test_at_start_an_admin_named_in_settings_gets_the_staff_menu_before_writing_to_the_bot(running_bot: RunningBot) -> None:
    fake, core = running_bot.fake, running_bot.core
    assert await feature(core).refresh_staff_menus() == 1
    menu = await fake.wait_for(lambda: {c["command"] for c in fake.chat_commands.get(ADMIN, [])})
    assert {"broadcast", "campaigns", "grant", "revoke", "invite", "help"} <= menu


async def test_an_admin_who_switches_to_khmer_gets_the_staff_menu_in_khmer(running_bot: RunningBot) -> None:
    fake, core = running_bot.fake, running_bot.core
    admin = running_bot.user(ADMIN, "en")
    await admin.start_in(core.texts, "en")
    await fake.wait_for(lambda: fake.chat_commands.get(ADMIN))  # the first pick of a language already set it
    await admin.send("/language")
    await admin.press("ភាសាខ្មែរ")
    khmer = core.texts.get("km", "command.broadcast")
    await fake.wait_for(lambda: any(c["description"] == khmer for c in fake.chat_commands.get(ADMIN, [])))


async def test_staff_composing_a_broadcast_can_type_skip_and_a_sentence_with_skip_in_it_is_a_text(running_bot: RunningBot) -> None:
    core = running_bot.core
    en = texts_of(core, "en")
    admin = running_bot.user(ADMIN, "en")
    await admin.start_in(core.texts, "en")
    await admin.send("/broadcast")
    await admin.expect(re.escape(en("broadcast.ask_name")[:30]))
    await admin.send("Typed skips")
    await admin.expect(shown(en("broadcast.ask_text.km")))
    await admin.send("skip")
    await admin.expect(shown(en("broadcast.ask_text.lo")))
    await admin.send("Skip")
    await admin.expect(shown(en("broadcast.ask_text.th")))
    await admin.send("skip")
    await admin.expect(shown(en("broadcast.ask_text.vi")))
    await admin.send("skip")
    await admin.expect(shown(en("broadcast.ask_text.en")))
    await admin.send("Do not skip the checks before you pay a broker.")
    after = await admin.expect(".")
    assert en("broadcast.ask_text.en") not in after.text, "a sentence that contains 'skip' is the English text"


async def test_a_lao_text_typed_in_latin_letters_is_warned_about_and_the_campaigns_figures_are_shown_by_language(
        running_bot: RunningBot, settled: Settled) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from bot.api.app import build_api
    from storage.broadcasts import Subscription

    from bench.broadcast import daytime_zone

    core, fake = running_bot.core, running_bot.fake
    en = texts_of(core, "en")
    await add_bulk_subscribers(core, fake, [7401, 7402], "km")
    await add_bulk_subscribers(core, fake, [7403], "lo")
    async with core.db.transaction() as session:  # daytime where they are, whatever the hour the suite runs at
        await session.exec(update(Subscription).values(timezone=daytime_zone(utcnow())))  # type: ignore[call-overload]
    fake.users[7402].blocked_bot = True
    admin = running_bot.user(ADMIN, "en")
    await admin.start_in(core.texts, "en")

    await admin.send("/broadcast")
    await admin.expect(re.escape(en("broadcast.ask_name")[:30]))
    await admin.send("Fake job offers")
    await admin.expect(shown(en("broadcast.ask_text.km")))
    await admin.send(KM_TEXT)
    await admin.expect(shown(en("broadcast.ask_text.lo")))
    await admin.send("Beware of job offers that promise high pay")  # English typed into the Lao text
    warned = await admin.expect(re.escape(en("broadcast.script_warning", language="Lao", script="Lao")[:45]))
    assert "Lao script" in warned.text, "names the language and the script it should be in"
    assert warned.text.endswith(visible_text(en("broadcast.ask_text.th"))), "a warning, not a block: on to the next language"
    for lang in ("th", "vi", "en", "my"):
        await admin.press(en("broadcast.skip"), await admin.expect(shown(en(f"broadcast.ask_text.{lang}"))) if lang != "th" else warned)
    await admin.press(en("broadcast.button_none"), await admin.expect(re.escape(en("broadcast.ask_button"))))
    await admin.press(en("broadcast.audience_ok"))
    await admin.press(en("broadcast.schedule.now"))
    await admin.press(en("broadcast.confirm"))
    assert sum("Lao script" in m.text for m in fake.bot_messages(ADMIN)) == 2, "and again with the preview"
    created = await admin.expect(r"#\d+")
    campaign_id = int(re.search(r"#(\d+)", created.text).group(1))  # type: ignore[union-attr]

    await feature(core).send_due()
    await running_bot.user(7401, "km").expect(re.escape(KM_TEXT))
    await running_bot.user(7403, "lo").expect("Beware of job offers")

    async def nothing_left() -> bool:
        async with core.db.session() as session:
            found = await session.get(Campaign, campaign_id)
            return found is not None and (await feature(core).campaigns.progress(session, found, utcnow())).remaining == 0

    await settled.until(nothing_left)
    async with core.db.transaction() as session:  # the Lao subscriber opts out after it
        lao = (await session.exec(select(User).where(User.address == "7403"))).one()
        row = await session.get(Subscription, lao.id)
        assert row is not None
        row.active, row.changed_at = False, utcnow()
        session.add(row)

    await admin.send("/campaigns")
    await admin.expect(re.escape(visible_text(en("campaigns.header"))))
    await admin.send(str(campaign_id))
    detail = await admin.expect(re.escape(visible_text(en("campaigns.by_language"))[:11]))
    assert "Khmer: 1 / 0 / 1 / 0 / 0" in detail.text, detail.text
    assert "Lao: 1 / 0 / 0 / 0 / 1" in detail.text, detail.text

    async with core.db.transaction() as session:
        token = await feature(core).staff.new_api_token(session, (await session.exec(select(User).where(User.address == str(ADMIN)))).one(), "t")
    client = TestClient(TestServer(build_api(feature(core))))
    await client.start_server()
    try:
        headers = {"Authorization": f"Bearer {token}"}
        shown_ = await (await client.get(f"/campaigns/{campaign_id}", headers=headers)).json()
        assert shown_["by_language"]["km"] == {"delivered": 1, "failed": 0, "blocked": 1, "remaining": 0, "opted_out": 0}
        assert shown_["by_language"]["lo"]["opted_out"] == 1
        assert any(w.startswith("texts.lo:") for w in shown_["warnings"])
        csv = await (await client.get(f"/campaigns/{campaign_id}/figures.csv", headers=headers)).text()
        assert csv.splitlines() == ["language,delivered,failed,blocked,remaining,opted_out", "km,1,0,1,0,0", "lo,1,0,0,0,1"]
    finally:
        await client.close()


async def test_a_scheduled_campaign_is_edited_until_it_starts_and_the_edit_is_audited(running_bot: RunningBot) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from bot.api.app import build_api

    core, fake = running_bot.core, running_bot.fake
    await add_bulk_subscribers(core, fake, [7501], "th")
    async with core.db.transaction() as session:
        admin = User(channel="telegram", address=str(ADMIN), lang="en")
        session.add(admin)
        await session.flush()
        token = await feature(core).staff.new_api_token(session, admin, "t")
    client = TestClient(TestServer(build_api(feature(core))))
    await client.start_server()
    try:
        headers = {"Authorization": f"Bearer {token}"}
        body = {"name": "Songkran", "texts": {"th": TH_TEXT}, "schedule": {"kind": "once", "at": f"{utcnow().year + 1}-04-10T09:00"}}
        campaign = await (await client.post("/campaigns", json=body, headers=headers)).json()
        edited = await client.patch(f"/campaigns/{campaign['id']}", headers=headers,
                                    json={"texts": {"th": "ระวังงานหลอกช่วงสงกรานต์"}, "schedule": {"kind": "once", "at": f"{utcnow().year + 1}-04-11T09:00"}})
        assert edited.status == 200, await edited.text()
        view = await edited.json()
        assert view["texts"] == {"th": "ระวังงานหลอกช่วงสงกรานต์"} and view["schedule"]["at"].startswith(f"{utcnow().year + 1}-04-11")
        async with core.db.session() as session:
            entry = (await session.exec(select(AuditEntry).where(AuditEntry.action == "campaign_edited_api"))).one()
        assert entry.target == f"campaign:{campaign['id']}:schedule,texts"
        bad = await client.patch(f"/campaigns/{campaign['id']}", headers=headers, json={"texts": {"xx": "?"}})
        assert bad.status == 400
        await client.post(f"/campaigns/{campaign['id']}/cancel", headers=headers)
        late = await client.patch(f"/campaigns/{campaign['id']}", headers=headers, json={"texts": {"th": "x"}})
        assert late.status == 409 and "only a scheduled campaign" in (await late.json())["error"]
    finally:
        await client.close()


def test_the_script_a_text_should_be_in_is_named_in_the_readers_language() -> None:
    from bot.features.broadcasts.scripts import script_name, script_warnings
    assert script_warnings({"lo": "Come to the meeting", "km": "សូមប្រយ័ត្ន"}, "km") == [("lo", "ឡាវ")]
    assert (script_name("lo", "vi"), script_name("lo", "en")) == ("Chữ Lào", "Lao")
