"""Awareness campaigns: what to send, to whom, when; and the pass that sends what is due.

Campaigns, their runs and every recipient's row (in the outbox) live in the database.
The scheduler only wakes `fire_due`; a slot missed while the bot was down is found at the
next pass and sent once; the unique (campaign, slot) of a run makes a recurring campaign
fire at most once per slot.
"""

from __future__ import annotations

import html
import logging
import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, func, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.engine.i18n import LANGUAGES, Translator
from bot.engine.runner import OPEN_FLOW
from bot.outbox import PRIORITY_BROADCAST, PRIORITY_REPLY, Outbox
from storage.broadcasts import Campaign, CampaignRun, Subscription
from storage.db import Database
from storage.models import OutboxMessage, User, utcnow

log = logging.getLogger(__name__)

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DEFAULT_TZ = "Asia/Bangkok"
QUIET_START, QUIET_END = time(21, 0), time(7, 0)
TOPICS = ("safe_migration", "scams", "rights", "hotlines")
BUTTON_FLOWS = ("guidance", "report", "hotlines", "scam", "agency", "redflags", "selfcheck")
INSERT_CHUNK = 2000


class CampaignError(ValueError):
    """Campaign input that cannot be accepted; the message says what is wrong."""


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise CampaignError(f"unknown time zone '{name}' (use an IANA name such as Asia/Bangkok)") from exc


def _clock(text: str) -> time:
    match = re.fullmatch(r"(\d{1,2}):(\d{2})", text.strip())
    if not match or int(match.group(1)) > 23 or int(match.group(2)) > 59:
        raise CampaignError(f"'{text}' is not a time of day like 09:00")
    return time(int(match.group(1)), int(match.group(2)))


def validate(name: str, texts: dict[str, str], button: dict[str, Any] | None, audience: dict[str, Any],
             schedule: dict[str, Any], now: datetime) -> dict[str, Any]:
    """Check a campaign as staff or the API give it; return it normalised."""
    if not name or len(name) > 120:
        raise CampaignError("name: 1 to 120 characters")
    texts = {lang: text.strip() for lang, text in (texts or {}).items() if text and text.strip()}
    unknown = set(texts) - set(LANGUAGES)
    if unknown:
        raise CampaignError(f"texts: unknown language(s) {sorted(unknown)}; use {', '.join(LANGUAGES)}")
    if not texts:
        raise CampaignError("texts: give the message in at least one language")
    for lang, text in texts.items():
        if len(text) > 3500:
            raise CampaignError(f"texts.{lang}: {len(text)} characters; at most 3500")
    if button:
        if button.get("flow") and button["flow"] not in BUTTON_FLOWS:
            raise CampaignError(f"button.flow: one of {', '.join(BUTTON_FLOWS)}")
        if button.get("url") and not str(button["url"]).startswith("https://"):
            raise CampaignError("button.url must start with https://")
        if not button.get("flow") and not button.get("url"):
            raise CampaignError("button: give a flow or a url")
    audience = dict(audience or {})
    for key, allowed in (("languages", LANGUAGES), ("topics", TOPICS)):
        bad = set(audience.get(key) or []) - set(allowed)
        if bad:
            raise CampaignError(f"audience.{key}: unknown {sorted(bad)}")
    for country in audience.get("countries") or []:
        if not re.fullmatch(r"[A-Z]{2}", str(country)):
            raise CampaignError(f"audience.countries: '{country}' is not a two-letter country code")
    kind = (schedule or {}).get("kind", "now")
    tz = str(schedule.get("tz") or DEFAULT_TZ) if schedule else DEFAULT_TZ
    _zone(tz)
    if kind == "now":
        schedule = {"kind": "now", "at": now.isoformat()}
    elif kind == "once":
        try:
            local = datetime.fromisoformat(str(schedule.get("at")))
        except ValueError as exc:
            raise CampaignError("schedule.at: a date and time like 2026-12-01T09:00") from exc
        at = (local if local.tzinfo else local.replace(tzinfo=_zone(tz))).astimezone(timezone.utc)
        if at < now - timedelta(minutes=1):
            raise CampaignError("schedule.at is in the past")
        schedule = {"kind": "once", "at": at.isoformat(), "tz": tz}
    elif kind == "weekly":
        weekday = str(schedule.get("weekday", "")).lower()[:3]
        if weekday not in WEEKDAYS:
            raise CampaignError(f"schedule.weekday: one of {', '.join(WEEKDAYS)}")
        schedule = {"kind": "weekly", "weekday": weekday, "time": _clock(str(schedule.get("time", ""))).strftime("%H:%M"), "tz": tz}
    else:
        raise CampaignError("schedule.kind: now, once or weekly")
    return {"name": name, "texts": texts, "button": button or None, "audience": audience, "schedule": schedule}


def due_slot(campaign: Campaign, now: datetime, last_slot: datetime | None) -> datetime | None:
    """The newest slot at or before now that has not run yet (one, even if several were missed)."""
    schedule = campaign.schedule
    if schedule["kind"] in ("now", "once"):
        slot = datetime.fromisoformat(schedule["at"])
        return slot if slot <= now and last_slot is None else None
    zone = _zone(schedule["tz"])
    local_now = now.astimezone(zone)
    hour, minute = (int(x) for x in schedule["time"].split(":"))
    days_back = (local_now.weekday() - WEEKDAYS.index(schedule["weekday"])) % 7
    slot_local = (local_now - timedelta(days=days_back)).replace(hour=hour, minute=minute, second=0, microsecond=0)
    if slot_local > local_now:
        slot_local -= timedelta(days=7)
    slot = slot_local.astimezone(timezone.utc)
    created = campaign.created_at
    if slot < created or (last_slot is not None and slot <= last_slot):
        return None
    return slot


def next_slot(campaign: Campaign, now: datetime) -> datetime | None:
    schedule = campaign.schedule
    if schedule["kind"] in ("now", "once"):
        return datetime.fromisoformat(schedule["at"])
    later = due_slot(campaign, now + timedelta(days=7), None)
    return later if later and later > now else (later + timedelta(days=7) if later else None)


def quiet_until(now: datetime, tz: str) -> datetime | None:
    """When a subscriber's quiet hours (21:00-07:00 local) end, if they are in them now."""
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo(DEFAULT_TZ)
    local = now.astimezone(zone)
    if QUIET_END <= local.time() < QUIET_START:
        return None
    end = local.replace(hour=QUIET_END.hour, minute=QUIET_END.minute, second=0, microsecond=0)
    if local.time() >= QUIET_START:
        end += timedelta(days=1)
    return end.astimezone(timezone.utc)


@dataclass
class Progress:
    campaign_id: int
    name: str
    status: str
    sent: int = 0
    failed: int = 0
    blocked: int = 0
    remaining: int = 0
    next_run: datetime | None = None
    finish_eta: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.campaign_id, "name": self.name, "status": self.status, "sent": self.sent, "failed": self.failed,
                "blocked": self.blocked, "remaining": self.remaining,
                "next_run": self.next_run.isoformat() if self.next_run else None,
                "estimated_finish": self.finish_eta.isoformat() if self.finish_eta else None}


class Campaigns:
    def __init__(self, outbox: Outbox, texts: Translator, *, channels: tuple[str, ...], rate: float = 25.0) -> None:
        self.outbox = outbox
        self.texts = texts
        self.channels = channels
        self.rate = rate

    async def create(self, session: AsyncSession, creator: User, *, name: str, texts: dict[str, str], button: dict[str, Any] | None = None,
                     audience: dict[str, Any] | None = None, schedule: dict[str, Any] | None = None, paid: bool = False,
                     now: datetime | None = None) -> Campaign:
        clean = validate(name, texts, button, audience or {}, schedule or {"kind": "now"}, now or utcnow())
        campaign = Campaign(created_by=creator.id, paid=paid, **clean)  # type: ignore[arg-type]
        if now is not None:
            campaign.created_at = now
        session.add(campaign)
        await session.flush()
        return campaign

    async def set_status(self, session: AsyncSession, campaign: Campaign, action: str) -> None:
        """pause, resume or cancel; pending rows are held, released or cancelled with it."""
        batches = [f"run:{rid}" for rid in (await session.exec(select(CampaignRun.id).where(CampaignRun.campaign_id == campaign.id))).all()]
        if campaign.status in ("finished", "cancelled"):
            raise CampaignError(f"campaign {campaign.id} is {campaign.status}")
        if action == "pause":
            campaign.status = "paused"
            await self._move(session, batches, "pending", "held")
        elif action == "resume":
            if campaign.status != "paused":
                raise CampaignError(f"campaign {campaign.id} is not paused")
            running = (await session.exec(select(CampaignRun.id).where(CampaignRun.campaign_id == campaign.id,
                                                                       col(CampaignRun.status).in_(["queuing", "sending"])))).first()
            campaign.status = "running" if running else "scheduled"
            await self._move(session, batches, "held", "pending")
        elif action == "cancel":
            campaign.status = "cancelled"
            await self._move(session, batches, "pending", "cancelled")
            await self._move(session, batches, "held", "cancelled")
            await session.exec(update(CampaignRun).where(col(CampaignRun.campaign_id) == campaign.id,  # type: ignore[call-overload]
                                                         col(CampaignRun.status).in_(["queuing", "sending"]))
                               .values(status="finished", finished_at=utcnow()))
        else:
            raise CampaignError(f"unknown action '{action}' (pause, resume, cancel)")
        session.add(campaign)

    @staticmethod
    async def _move(session: AsyncSession, batches: list[str], old: str, new: str) -> None:
        if batches:
            await session.exec(update(OutboxMessage).where(col(OutboxMessage.batch).in_(batches), col(OutboxMessage.status) == old)  # type: ignore[call-overload]
                               .values(status=new))

    # -- the pass that sends what is due ----------------------------------------------------------

    async def fire_due(self, db: Database, now: datetime) -> list[CampaignRun]:
        """Start the runs that are due and queue their audiences, a chunk per transaction."""
        async with db.transaction() as session:
            started = await self.claim_due(session, now)
        await self.queue_audiences(db, now)
        if not started:
            return []
        async with db.session() as session:
            return [run for run in [await session.get(CampaignRun, r.id) for r in started] if run is not None]

    async def claim_due(self, session: AsyncSession, now: datetime) -> list[CampaignRun]:
        """Record a run for each slot that is due. Its audience is queued afterwards, so that
        claiming a slot is a short transaction."""
        started: list[CampaignRun] = []
        campaigns = (await session.exec(select(Campaign).where(col(Campaign.status).in_(["scheduled", "running"])))).all()
        for campaign in campaigns:
            last = (await session.exec(select(func.max(CampaignRun.slot)).where(CampaignRun.campaign_id == campaign.id))).one()
            slot = due_slot(campaign, now, last)
            if slot is None:
                continue
            try:
                async with session.begin_nested():
                    run = CampaignRun(campaign_id=campaign.id, slot=slot, started_at=now, status="queuing")  # type: ignore[arg-type]
                    session.add(run)
                    await session.flush()
            except IntegrityError:
                continue  # another process fired this slot
            campaign.status = "running"
            session.add(campaign)
            started.append(run)
            log.info("campaign %s: run %s for slot %s", campaign.id, run.id, slot.isoformat())
        return started

    async def queue_audiences(self, db: Database, now: datetime) -> int:
        """Queue the recipients of every run still queuing (also one a crash interrupted), a
        chunk per transaction: SQLite has one write lock, and queuing 100,000 people in one
        transaction held back everyone's replies for seconds. Each chunk records how far it
        got with its rows, so a restart carries on where the last committed chunk ended."""
        queued = 0
        async with db.session() as session:
            runs = (await session.exec(select(CampaignRun.id).where(CampaignRun.status == "queuing").order_by(col(CampaignRun.id)))).all()
        for run_id in runs:
            while True:
                async with db.transaction() as session:
                    # Locked: another process may be queuing the same run, or staff pausing it.
                    run = await session.get(CampaignRun, run_id, with_for_update=True)
                    campaign = await session.get(Campaign, run.campaign_id, with_for_update=True) if run is not None else None
                    if run is None or campaign is None or run.status != "queuing":
                        break
                    if campaign.status == "cancelled":
                        run.status, run.finished_at = "finished", now
                        session.add(run)
                        break
                    added, last = await self._enqueue_chunk(session, campaign, run, now, held=campaign.status == "paused")
                    run.recipients += added
                    queued += added
                    if last is None:
                        run.status = "sending"
                        log.info("campaign %s: run %s queued, %d recipient(s)", campaign.id, run.id, run.recipients)
                    else:
                        run.queued_after = last
                    session.add(run)
                self.outbox.notify()
                if last is None:
                    break
        return queued

    def _recipients(self, campaign: Campaign) -> Any:
        audience = campaign.audience
        languages = [lang for lang in (audience.get("languages") or LANGUAGES) if lang in campaign.texts]
        query = (select(User.id, User.address, User.channel, User.lang, Subscription.timezone, Subscription.topics)
                 .join(Subscription, col(Subscription.user_id) == col(User.id))
                 .where(col(Subscription.active), col(User.reachable), col(User.channel).in_(self.channels), col(User.lang).in_(languages)))
        if audience.get("countries"):
            query = query.where(col(Subscription.origin).in_(audience["countries"]))
        return query.order_by(col(User.id))

    async def _enqueue_chunk(self, session: AsyncSession, campaign: Campaign, run: CampaignRun, now: datetime,
                             *, held: bool) -> tuple[int, int | None]:
        """Queue the next chunk of recipients (keyset on the user id); return how many were
        queued and the last user id seen, or None when the audience is all queued."""
        topics = set(campaign.audience.get("topics") or [])
        payloads = {lang: Outbox.encode({"text": html.escape(text, quote=False), "buttons": self._buttons(campaign, lang), "paid": campaign.paid})
                    for lang, text in campaign.texts.items()}
        chunk = (await session.exec(self._recipients(campaign).where(col(User.id) > run.queued_after).limit(INSERT_CHUNK))).all()
        if not chunk:
            return 0, None
        rows = [{"channel": channel, "chat": address, "kind": "message", "payload": payloads[lang],
                 "priority": PRIORITY_BROADCAST, "status": "held" if held else "pending", "attempts": 0, "batch": f"run:{run.id}",
                 "not_before": quiet_until(now, tz) or now, "created_at": now}
                for _, address, channel, lang, tz, subscribed_topics in chunk
                if not topics or topics & set(subscribed_topics or [])]
        if rows:
            await session.exec(insert(OutboxMessage), params=rows)  # type: ignore[call-overload]
        return len(rows), chunk[-1][0]

    def _buttons(self, campaign: Campaign, lang: str) -> list[dict[str, str]]:
        button = campaign.button
        if not button:
            return []
        if button.get("flow"):
            return [{"data": OPEN_FLOW + button["flow"], "label": self.texts.get(lang, f"broadcast.button.{button['flow']}")}]
        return [{"data": "", "url": button["url"], "label": self.texts.get(lang, "broadcast.button.link")}]

    # -- progress and the end of a run -------------------------------------------------------------

    async def progress(self, session: AsyncSession, campaign: Campaign, now: datetime) -> Progress:
        runs = (await session.exec(select(CampaignRun.id).where(CampaignRun.campaign_id == campaign.id))).all()
        counts: dict[str, int] = {}
        if runs:
            rows = await session.exec(select(OutboxMessage.status, func.count())  # type: ignore[call-overload]
                                      .where(col(OutboxMessage.batch).in_([f"run:{r}" for r in runs])).group_by(OutboxMessage.status))
            counts = {status: n for status, n in rows}
        remaining = counts.get("pending", 0) + counts.get("sending", 0) + counts.get("held", 0)
        eta = now + timedelta(seconds=remaining / self.rate) if remaining and campaign.status == "running" else None
        return Progress(campaign.id or 0, campaign.name, campaign.status, counts.get("sent", 0), counts.get("failed", 0),
                        counts.get("unreachable", 0), remaining,
                        next_slot(campaign, now) if campaign.status in ("scheduled", "running") else None, eta)

    async def reach(self, session: AsyncSession, campaign: Campaign) -> int:
        """How many subscribers the campaign would reach if it were sent now."""
        topics = set(campaign.audience.get("topics") or [])
        rows = (await session.exec(self._recipients(campaign))).all()
        return sum(1 for row in rows if not topics or topics & set(row[-1] or []))

    async def figures(self, session: AsyncSession, campaign: Campaign) -> dict[str, dict[str, int]]:
        """Per language of the people it was for: delivered, failed, blocked (the person had
        blocked the bot), still to send, and opted out since (unsubscribed after its first run)."""
        runs = (await session.exec(select(CampaignRun).where(CampaignRun.campaign_id == campaign.id))).all()
        out: dict[str, dict[str, int]] = {lang: {"delivered": 0, "failed": 0, "blocked": 0, "remaining": 0, "opted_out": 0}
                                          for lang in LANGUAGES if lang in campaign.texts}
        if not runs:
            return out
        names = {"sent": "delivered", "failed": "failed", "unreachable": "blocked", "pending": "remaining", "sending": "remaining",
                 "held": "remaining"}
        rows = await session.exec(select(User.lang, OutboxMessage.status, func.count())  # type: ignore[call-overload]
                                  .join(User, (col(User.channel) == col(OutboxMessage.channel)) & (col(User.address) == col(OutboxMessage.chat)))
                                  .where(col(OutboxMessage.batch).in_([f"run:{r.id}" for r in runs]))
                                  .group_by(User.lang, OutboxMessage.status))
        for lang, status, n in rows:
            if status in names:
                out.setdefault(str(lang), {"delivered": 0, "failed": 0, "blocked": 0, "remaining": 0, "opted_out": 0})[names[status]] += n
        first = min(r.started_at for r in runs if r.started_at is not None) if any(r.started_at for r in runs) else None
        if first is not None:
            reached = select(OutboxMessage.chat).where(col(OutboxMessage.batch).in_([f"run:{r.id}" for r in runs]),
                                                       OutboxMessage.status == "sent")
            gone = await session.exec(select(User.lang, func.count()).join(Subscription, col(Subscription.user_id) == col(User.id))  # type: ignore[call-overload]
                                      .where(col(Subscription.active).is_(False), col(Subscription.changed_at) >= first,
                                             col(User.address).in_(reached)).group_by(User.lang))
            for lang, n in gone:
                out.setdefault(str(lang), {"delivered": 0, "failed": 0, "blocked": 0, "remaining": 0, "opted_out": 0})["opted_out"] += n
        return out

    async def edit(self, session: AsyncSession, campaign: Campaign, *, texts: dict[str, str] | None = None,
                   audience: dict[str, Any] | None = None, schedule: dict[str, Any] | None = None, now: datetime | None = None) -> Campaign:
        """Change a scheduled campaign's texts, audience or time until it first starts."""
        started = (await session.exec(select(CampaignRun.id).where(CampaignRun.campaign_id == campaign.id))).first()
        if campaign.status != "scheduled" or started is not None:
            raise CampaignError(f"campaign {campaign.id} has started or is {campaign.status}: only a scheduled campaign can be edited")
        clean = validate(campaign.name, texts if texts is not None else campaign.texts, campaign.button,
                         audience if audience is not None else campaign.audience, schedule if schedule is not None else campaign.schedule,
                         now or utcnow())
        campaign.texts, campaign.audience, campaign.schedule = clean["texts"], clean["audience"], clean["schedule"]
        session.add(campaign)
        return campaign

    async def finish_runs(self, session: AsyncSession, now: datetime) -> int:
        """Close runs with nothing left to send and report to the campaign's creator."""
        finished = 0
        for run in (await session.exec(select(CampaignRun).where(CampaignRun.status == "sending"))).all():
            left = (await session.exec(select(func.count()).select_from(OutboxMessage).where(
                OutboxMessage.batch == f"run:{run.id}", col(OutboxMessage.status).in_(["pending", "sending", "held"])))).one()
            if left:
                continue
            campaign = await session.get(Campaign, run.campaign_id)
            assert campaign is not None
            run.status, run.finished_at = "finished", now
            if campaign.status == "running":
                campaign.status = "finished" if campaign.schedule["kind"] in ("now", "once") else "scheduled"
            progress = await self.progress(session, campaign, now)
            creator = await session.get(User, campaign.created_by)
            if creator is not None:
                text = self.texts.get(creator.lang, "broadcast.final_report", name=html.escape(campaign.name, quote=False), sent=progress.sent,
                                      failed=progress.failed, blocked=progress.blocked, recipients=run.recipients)
                Outbox.add(session, creator.channel, creator.address, "message", {"text": text}, priority=PRIORITY_REPLY)
            session.add_all([run, campaign])
            finished += 1
        return finished
