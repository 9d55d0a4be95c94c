"""Reports: taking one from a reporter, routing it, and handing it to partners.

Everything here runs inside the transaction of the event that caused it: the report, its
routing decisions, the partner deliveries and the reply to the reporter are committed
together, so the reporter is never told "received" about a report that is not stored,
and a crash never leaves a report that no one was sent.
"""

from __future__ import annotations

import html
import logging
import secrets
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import icu
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.engine.events import split_text, telegram_len
from bot.engine.flows import callback_data
from bot.engine.i18n import Translator
from bot.engine.runner import Turn
from bot.features.reports.partners import Partner, PartnerBook
from bot.features.reports.routing import CaseFacts, RouteDecision, next_partner, route_report
from bot.features.reports.webhook import webhook_payload
from bot.outbox import PRIORITY_PARTNER, PRIORITY_REPLY, Outbox
from storage import crypto
from storage.models import Conversation, OutboxMessage, User, utcnow
from storage.counters import add_one
from storage.reports import CasePost, FeedbackCount, Report, ReportCount, ReportRoute

log = logging.getLogger(__name__)

CODE_ALPHABET = "ACDEFGHJKLMNPQRTUVWXY34679"  # no 0/O, 1/I, 2/Z, 5/S, 8/B look-alikes
DRAFT_KEYS = ("category", "urgent", "country", "province", "place", "affected", "description", "attachments", "attachments_dropped",
              "contact_mode", "phone", "screening_summary")
WEBHOOK = "webhook"


CARD_LIMIT = 3900  # Telegram's 4,096, less room for what a language's labels may add


def _chunks(text: str, limit: int) -> list[str]:
    """Plain text in pieces whose escaped form fits `limit` UTF-16 units, cut between words."""
    pieces = split_text(html.escape(text), limit, telegram_len)
    return [html.unescape(piece) for piece in pieces] or [""]


def report_batch(report: Report) -> str:
    """Marks every delivery of a report, so that /forget can cancel the ones not yet made."""
    return f"report:{report.id}"


def new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(6))


def partner_time(when: datetime, partner: Partner) -> str:
    """A time as the partner's team reads it: in its own zone, named."""
    aware = when if when.tzinfo else when.replace(tzinfo=timezone.utc)
    try:
        zone = ZoneInfo(partner.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        return aware.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"{aware.astimezone(zone).strftime('%Y-%m-%d %H:%M')} ({partner.timezone})"


def caseworker_ref(address: str) -> str:
    """Who claimed a case, without keeping their platform id: a keyed hash, so that it
    cannot be reversed by hashing every possible Telegram id."""
    return crypto.active().pseudonym(address, "caseworker")


def facts_of(report: Report) -> CaseFacts:
    return CaseFacts(report.country, report.province, report.category, report.lang, report.urgent)


async def count(session: AsyncSession, when: datetime, country: str, category: str, shared: bool) -> None:
    await add_one(session, ReportCount, month=when.strftime("%Y-%m"), country=country, category=category, shared=shared)


class ReportDesk:
    """The report feature's services, shared by the flow actions, the partner console and jobs."""

    def __init__(self, book: PartnerBook, texts: Translator, reports_per_hour: int = 3) -> None:
        self.book = book
        self.texts = texts
        self.reports_per_hour = reports_per_hour

    async def check_limit(self, turn: Turn) -> str | None:
        """More reports in an hour than anyone in need sends: refused kindly, with the numbers."""
        since = utcnow() - timedelta(hours=1)
        sent = (await turn.session.exec(select(func.count()).select_from(Report).where(  # type: ignore[call-overload]
            Report.reporter_id == turn.user.id, col(Report.created_at) >= since))).one()
        return "too_many" if sent >= self.reports_per_hour else None

    # -- taking a report -------------------------------------------------------------------

    async def check_coverage(self, turn: Turn) -> str | None:
        """Whether a partner organisation takes this report, so that consent and the receipt
        promise no organisation where there is none (the report is then kept and counted)."""
        values = turn.values
        case = CaseFacts(str(values.get("country") or "other"), values.get("province"), str(values.get("category") or "other"),
                         turn.lang, bool(values.get("urgent")))
        values["_covered"] = bool(route_report(self.book, case))
        return None

    async def submit(self, turn: Turn) -> str | None:
        values = turn.values
        place = values.get("place")
        content: dict[str, Any] = {
            "description": values.get("description") or "",
            "place": place if isinstance(place, str) else None,
            "location": place.get("location") if isinstance(place, dict) else None,
            "phone": values.get("phone") if values.get("contact_mode") == "phone" else None,
            "attachments": values.get("attachments") or [],
            "attachments_dropped": int(values.get("attachments_dropped") or 0),
            "screening_summary": values.get("screening_summary"),
        }
        report = Report(
            code=await self._unique_code(turn.session), reporter_id=turn.user.id, lang=turn.lang,
            category=str(values.get("category") or "other"), urgent=bool(values.get("urgent")),
            country=str(values.get("country") or "other"), province=values.get("province"),
            affected=str(values.get("affected") or "unknown"), contact_mode=str(values.get("contact_mode") or "none"),
            content=content,
        )
        turn.session.add(report)
        await turn.session.flush()
        decisions = route_report(self.book, facts_of(report))
        for decision in decisions:
            await self.deliver(turn.session, report, decision)
        if decisions:
            primary = decisions[0].partner
            report.partner_id = primary.id
            report.ack_deadline = report.created_at + timedelta(minutes=primary.ack_minutes(report.urgent))
        else:
            log.warning("report %s: no partner covers %s/%s; kept for the hotline-only fallback", report.id, report.country, report.category)
        turn.session.add(report)
        await count(turn.session, report.created_at, report.country, report.category, shared=True)
        log.info("report %s stored and routed to %d partner(s)", report.id, len(decisions))
        for key in DRAFT_KEYS:
            if key != "country":  # the receipt shows the numbers of the report's country; the flow clears it after
                values.pop(key, None)
        values["_covered"] = bool(decisions)
        if decisions:
            values.update(self.expected_answer(report, decisions[0].partner, turn.lang))
        turn.values["report_code"] = report.code
        return None

    async def count_only(self, turn: Turn) -> str | None:
        """No consent: nothing but an anonymous count is kept."""
        await count(turn.session, utcnow(), str(turn.values.get("country") or "other"), str(turn.values.get("category") or "other"), shared=False)
        for key in DRAFT_KEYS:
            if key != "country":
                turn.values.pop(key, None)
        return None

    async def _unique_code(self, session: AsyncSession) -> str:
        while True:
            code = new_code()
            if (await session.exec(select(Report.id).where(Report.code == code))).first() is None:
                return code

    # -- delivering to partners --------------------------------------------------------------

    async def deliver(self, session: AsyncSession, report: Report, decision: RouteDecision) -> None:
        partner = decision.partner
        assert report.id is not None
        session.add(ReportRoute(report_id=report.id, partner_id=partner.id, kind=decision.kind, reason=decision.reason))
        if partner.telegram_chat_id is not None:
            text, rest = self.fitted_card(report, partner, decision)
            card = OutboxMessage(channel=partner.group_channel, chat=partner.group_address, kind="message", priority=PRIORITY_PARTNER,
                                 payload=Outbox.encode({"text": text, "buttons": self.card_buttons(report, partner), "columns": 2,
                                                        "repeat_note": self._t(partner, "partner.repeat_note", code=report.code),
                                                        **({"topic": partner.telegram_topic_id} if partner.telegram_topic_id else {})}),
                                 batch=report_batch(report))
            session.add(card)
            await session.flush()
            assert card.id is not None
            session.add(CasePost(report_id=report.id, partner_id=partner.id, outbox_id=card.id))
            for number, part in enumerate(rest, start=2):
                Outbox.add(session, partner.group_channel, partner.group_address, "message",
                           {"text": self._t(partner, "partner.card.continued", code=report.code, part=number, total=len(rest) + 1)
                            + "\n" + part, "reply_to_outbox": card.id, "repeat_note": self._t(partner, "partner.repeat_note", code=report.code)},
                           priority=PRIORITY_PARTNER, batch=report_batch(report))
            for item in (report.content or {}).get("attachments", []):
                Outbox.add(session, partner.group_channel, partner.group_address, item["kind"],
                           {"file_id": item["file_id"], "reply_to_outbox": card.id}, priority=PRIORITY_PARTNER, batch=report_batch(report))
        if partner.webhook_url:
            Outbox.add(session, WEBHOOK, partner.id, "report", webhook_payload(report, partner, decision), priority=PRIORITY_PARTNER,
                       batch=report_batch(report))

    def _t(self, partner: Partner, key: str, **params: object) -> str:
        return self.texts.get(partner.console_language, key, **params)

    def fitted_card(self, report: Report, partner: Partner, decision: RouteDecision | None = None, *,
                    claimed_by: str | None = None) -> tuple[str, list[str]]:
        """The card, within Telegram's limit as Telegram measures it, and the rest of a long
        description as messages that follow it in the case's thread: nothing is cut off."""
        card = self.card_text(report, partner, decision, claimed_by=claimed_by)
        if telegram_len(card) <= CARD_LIMIT:
            return card, []
        head = self.card_text(report, partner, decision, description="", claimed_by=claimed_by)
        description = (report.content or {}).get("description") or ""
        room = max(200, CARD_LIMIT - telegram_len(head) - 40)
        chunks = _chunks(description, room) 
        first, rest = chunks[0], chunks[1:]
        rest_parts = [html.escape(c) for c in _chunks(" ".join(rest), CARD_LIMIT - 200)] if rest else []
        return head + html.escape(first) + " …", rest_parts

    def card_text(self, report: Report, partner: Partner, decision: RouteDecision | None = None, *, description: str | None = None,
                  claimed_by: str | None = None) -> str:
        """The case as the partner's team needs it, in its console language. Why it was routed
        here stays in report_routes for audit; the card says only what the team acts on."""
        t = lambda key, **p: self._t(partner, key, **p)  # noqa: E731
        content = report.content or {}
        country = t(f"country.{report.country}") if self.texts.has(f"country.{report.country}") else report.country
        where = country + (f" / {t(f'province.{report.country}.{report.province}')}" if report.province and self.texts.has(f"province.{report.country}.{report.province}") else "")
        if content.get("place"):
            where += f" / {html.escape(content['place'])}"
        language = self.texts.get(report.lang, "language.self_name")
        lines = [
            t("partner.card.title", code=report.code) + (" " + t("partner.card.urgent") if report.urgent else ""),
            t("partner.card.status", status=self.status_text(report, partner, claimed_by)),
        ]
        if decision is not None and decision.kind == "escalation":
            lines.append(t("partner.card.escalated"))
        lines += [
            t("partner.card.category", category=t(f"report.category.{report.category}")),
            t("partner.card.where", where=where),
            t("partner.card.affected", affected=t(f"report.affected.{report.affected}") if self.texts.has(f"report.affected.{report.affected}") else report.affected),
            t("partner.card.contact", contact=t(f"report.contact.{report.contact_mode}")),
            t("partner.card.language", lang=language),
            t("partner.card.received", when=partner_time(report.created_at, partner)),
        ]
        if report.lang != partner.console_language and report.contact_mode not in ("phone", "none"):
            lines.append(t("partner.card.answer_in", lang=language))
        if content.get("location"):
            loc = content["location"]
            lines.append(t("partner.card.location", lat=f"{loc['lat']:.4f}", lon=f"{loc['lon']:.4f}"))
        if content.get("phone"):
            lines.append(t("partner.card.phone", phone=html.escape(content["phone"])))
        if content.get("attachments"):
            lines.append(t("partner.card.attachments", count=len(content["attachments"])))
        if content.get("attachments_dropped"):
            lines.append(t("partner.card.attachments_cut", count=content["attachments_dropped"]))
        if content.get("screening_summary"):
            lines.append(t("partner.card.screening", summary=html.escape(str(content["screening_summary"]))))
        shown = (content.get("description") or "—") if description is None else description
        lines += ["", t("partner.card.original"), html.escape(shown)]
        return "\n".join(lines)

    def status_text(self, report: Report, partner: Partner, claimed_by: str | None = None) -> str:
        if report.status == "closed":
            outcome = self._t(partner, f"partner.outcome.{report.outcome}") if report.outcome else "—"
            return self._t(partner, "partner.status.closed", outcome=outcome)
        if report.status == "claimed":
            return self._t(partner, "partner.status.claimed", who=claimed_by or self._t(partner, "partner.caseworker", number="?"))
        if report.status == "acknowledged":
            return self._t(partner, "partner.status.acknowledged")
        return self._t(partner, "partner.status.new")

    def card_buttons(self, report: Report, partner: Partner) -> list[dict[str, str]]:
        """Only what still makes sense: nothing once closed; no Acknowledge once acknowledged."""
        actions = {"open": ("ack", "claim", "ask", "close"), "acknowledged": ("claim", "ask", "close"),
                   "claimed": ("ask", "close")}.get(report.status, ())
        return [{"data": f"p:{action}:{report.id}", "label": self._t(partner, f"partner.button.{action}")} for action in actions]

    # -- escalation ------------------------------------------------------------------------------

    async def escalate_overdue(self, session: AsyncSession, now: datetime) -> int:
        """Cases not acknowledged in time go to the next partner; returns how many moved."""
        overdue = (await session.exec(select(Report).where(
            Report.status == "open", col(Report.ack_deadline).is_not(None), col(Report.ack_deadline) <= now,
        ))).all()
        moved = 0
        for report in overdue:
            already = set((await session.exec(select(ReportRoute.partner_id).where(ReportRoute.report_id == report.id))).all())
            late = self.book.partners.get(report.partner_id or "")
            found = next_partner(self.book, facts_of(report), already)
            if found is None:
                log.warning("report %s: not acknowledged and no partner left to escalate to", report.id)
                report.ack_deadline = None
                session.add(report)
                continue
            partner, why = found
            minutes = late.ack_minutes(report.urgent) if late else 0
            reason = f"escalated: {report.partner_id} did not acknowledge within {minutes} minutes; next: {why}"
            await self.deliver(session, report, RouteDecision(partner, "escalation", reason))
            report.partner_id = partner.id
            report.ack_deadline = now + timedelta(minutes=partner.ack_minutes(report.urgent))
            session.add(report)
            moved += 1
            log.info("report %s escalated to %s", report.id, partner.id)
        return moved

    # -- telling the reporter ----------------------------------------------------------------------

    async def tell_reporter(self, session: AsyncSession, report: Report, key: str, *, ask_feedback: bool = False,
                            **params: object) -> bool:
        """Send the reporter a message now, if they allowed contact at any time. With
        `ask_feedback`, it ends by asking whether the help was useful (optional, counted only)."""
        if report.reporter_id is None or report.contact_mode != "anytime":
            return False
        # Locked, as the reporter's own message locks it: asking for feedback never overwrites
        # a step the reporter is taking at the same moment (or the other way round).
        reporter = await session.get(User, report.reporter_id, with_for_update=True)
        if reporter is None or not reporter.reachable:
            return False
        lang = reporter.lang or report.lang
        text = self.texts.get(lang, key, code=report.code, **params)
        payload: dict[str, Any] = {"text": text}
        conversation = await session.get(Conversation, reporter.id) if ask_feedback else None
        if ask_feedback and (conversation is None or conversation.flow in (None, "menu")):
            # Asked only of someone not in the middle of something: their place is never taken.
            payload["text"] += "\n\n" + self.texts.get(lang, "report.feedback.ask")
            payload["buttons"] = [{"data": callback_data("case_feedback", "ask", choice), "label": self.texts.get(lang, f"report.feedback.{choice}")}
                                  for choice in ("useful", "not_useful", "skip")]
            payload["columns"] = 1
            conversation = conversation or Conversation(user_id=reporter.id, vars={})
            conversation.flow, conversation.step = "case_feedback", "ask"
            conversation.vars = {**(conversation.vars or {}), "feedback_case": report.code}
            session.add(conversation)
        Outbox.add(session, reporter.channel, reporter.address, "message", payload, priority=PRIORITY_REPLY)
        return True

    def expected_answer(self, report: Report, partner: Partner, lang: str) -> dict[str, str]:
        """For the receipt: how soon a caseworker usually answers, and when the office is open."""
        minutes = partner.ack_minutes(report.urgent)
        within = (self.texts.get(lang, "report.within.minutes", minutes=minutes) if minutes < 120
                  else self.texts.get(lang, "report.within.hours", hours=round(minutes / 60)))
        return {"answer_within": within, "office_hours": partner.office_hours, "office_zone": self._zone_name(partner.timezone, lang)}

    def _zone_name(self, zone: str, lang: str) -> str:
        """"Thailand" for Asia/Bangkok, in the reporter's language (ICU knows each zone's
        country); the zone's city only where it has none the texts can name."""
        try:
            region = icu.TimeZone.getRegion(zone)
        except icu.ICUError:
            region = ""
        if self.texts.has(f"country.{region}"):
            return self.texts.get(lang, f"country.{region}")
        return zone.rsplit("/", 1)[-1].replace("_", " ")

    async def record_feedback(self, session: AsyncSession, reporter: User, code: str, answer: str) -> bool:
        report = (await session.exec(select(Report).where(Report.code == code, Report.reporter_id == reporter.id))).first()
        if report is None or report.partner_id is None or answer not in ("useful", "not_useful"):
            return False
        await add_one(session, FeedbackCount, partner_id=report.partner_id, month=utcnow().strftime("%Y-%m"), answer=answer)
        return True
