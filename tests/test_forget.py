"""/forget works for everyone and reaches everywhere: a subscriber, a staff member with a
token and a campaign, and a reporter whose partner webhook has not answered yet. Their rows
go in one transaction, deliveries not yet made are cancelled, and partners that already
hold the case are told. On SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from sqlmodel import col, select

from bot.app import build_core
from bot.engine.events import Event
from bot.features.broadcasts.subscribers import subscribe
from bot.outbox import PRIORITY_PARTNER, Outbox
from bot.settings import PROJECT_ROOT, Settings
from storage.broadcasts import ApiToken, Campaign, StaffRole, Subscription
from storage.models import Conversation, InboxEvent, OutboxMessage, User
from storage.reports import Report, ReportRoute

GROUP = "-1001000000101"


async def test_forget_deletes_every_row_about_a_subscribing_staff_reporter_and_cancels_what_was_not_delivered(
        database_url: str, tmp_path: Path) -> None:
    core = await build_core(Settings(database_url=database_url, flows_dir=PROJECT_ROOT / "flows", locales_dir=PROJECT_ROOT / "locales"))
    say = lambda **kw: core.conversations.handle(Event(channel="telegram", address="4242", client_lang="en", **kw))  # noqa: E731
    await say(command="start")
    await say(choice="c:start:pick_language:en")
    async with core.db.transaction() as session:
        user = (await session.exec(select(User).where(User.address == "4242"))).one()
        await subscribe(session, user)
        session.add(StaffRole(user_id=user.id, role="campaign"))
        session.add(ApiToken(token_hash="x" * 64, user_id=user.id))
        session.add(Campaign(name="harvest", created_by=user.id, texts={"en": "Be careful"}, audience={}, schedule={"kind": "now"}))
        report = Report(code="AB12CD", reporter_id=user.id, lang="en", category="other", urgent=False, country="TH",
                        affected="me", contact_mode="anytime", content={"description": "my boss keeps my passport", "phone": "0812345678"})
        session.add(report)
        await session.flush()
        session.add(ReportRoute(report_id=report.id, partner_id="demo_bangkok", kind="primary", reason="test"))
        sent_card = Outbox.add(session, "telegram", GROUP, "message", {"text": "card"}, PRIORITY_PARTNER, batch=f"report:{report.id}")
        sent_card.status = "sent"
        Outbox.add(session, "webhook", "demo_scam_watch", "report", {"case": {"description": "my boss keeps my passport"}},
                   PRIORITY_PARTNER, batch=f"report:{report.id}")  # the partner's webhook answered 503 so far
        report_id, user_id = report.id, user.id

    await say(command="forget")
    await say(choice="c:forget:confirm:yes")

    async with core.db.session() as session:
        assert (await session.get(User, user_id)) is None
        assert (await session.get(Conversation, user_id)) is None
        for table in (Subscription, StaffRole, ApiToken):
            assert not (await session.exec(select(table).where(col(table.user_id) == user_id))).all(), table.__name__
        campaign = (await session.exec(select(Campaign))).one()
        assert campaign.created_by is None, "the campaign stays, without its author"
        report = await session.get(Report, report_id)
        assert report is not None and report.reporter_id is None and report.content is None
        rows = (await session.exec(select(OutboxMessage))).all()
        webhook = [r for r in rows if r.channel == "webhook" and r.kind == "report"]
        assert [r.status for r in webhook] == ["cancelled"] and webhook[0].payload is None, "the waiting delivery never goes out"
        told = [r for r in rows if r.chat == GROUP and r.status == "pending"]
        assert len(told) == 1 and "AB12CD" in (told[0].payload or "") and "forget" in (told[0].payload or "")
        assert not [r for r in rows if r.channel == "webhook" and r.kind == "forgotten"], "the webhook partner never held it"
        mine = [r for r in rows if r.chat == "4242"]
        assert all("passport" not in (r.payload or "") for r in mine)
        assert not (await session.exec(select(InboxEvent).where(InboxEvent.chat == "4242", InboxEvent.status == "done"))).all()
    await core.close()


def test_the_key_file_and_the_database_are_private_from_their_first_byte_and_check_warns_otherwise(tmp_path: Path) -> None:
    import asyncio
    import stat

    from bot.check import private_file_warnings
    from storage import connect
    from storage.crypto import load_keys
    key_file = tmp_path / "data" / "secret.key"
    load_keys(None, key_file)
    database = tmp_path / "data" / "bot.db"

    async def open_db() -> None:
        await (await connect(f"sqlite+aiosqlite:///{database}")).close()

    asyncio.run(open_db())
    for path in (key_file, database):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert private_file_warnings([key_file, database]) == []
    database.chmod(0o644)
    [warning] = private_file_warnings([key_file, database])
    assert "chmod 600" in warning.message


def test_caseworker_pseudonyms_are_keyed_hashes() -> None:
    import hashlib

    from bot.features.reports.service import caseworker_ref
    ref = caseworker_ref("9001")
    assert ref == caseworker_ref("9001") and ref != caseworker_ref("9002")
    assert ref not in {hashlib.sha256(str(n).encode()).hexdigest()[:16] for n in range(9000, 9010)}, "not a plain hash of the id"
