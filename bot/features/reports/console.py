"""The partner's side: caseworkers act on case cards in their own group, and talk to the
reporter through the bot. Neither side ever sees the other's name, username or id.

Only the partners a case was routed to may act on it; any other attempt is refused and
logged (with the case id and the partner, never a person's id).
"""

from __future__ import annotations

import html
import logging
from datetime import timedelta
from collections.abc import Callable
from typing import Any

from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.engine.events import Event
from bot.engine.flows import callback_data
from bot.engine.runner import TRAIL, TRAIL_SINCE
from bot.features.reports.partners import Partner
from bot.features.reports.service import ReportDesk, caseworker_ref
from bot.outbox import PRIORITY_REPLY, Outbox
from storage.models import Conversation, OutboxMessage, User, utcnow
from storage.reports import CaseMessage, CasePost, Caseworker, Report, ReportRoute

log = logging.getLogger(__name__)

OUTCOMES = ("resolved", "referred", "no_contact", "not_a_case")
REPLY_FLOW, REPLY_STEP = "report_reply", "answer"


CASES_SHOWN = 20
ADD_MAX_FILES = 10  # as REPORT_MAX_ATTACHMENTS's default: a flood of files is not forwarded


class NotRecordedYet(RuntimeError):
    """A caseworker replied faster than the bot recorded the id of the message they replied to."""


MessageLink = Callable[[str, str, "str | None"], "str | None"]


class PartnerConsole:
    def __init__(self, desk: ReportDesk, message_link: MessageLink = lambda channel, chat, ref: None) -> None:
        self.desk = desk
        self.message_link = message_link

    async def handle(self, session: AsyncSession, event: Event) -> None:
        partner = self.desk.book.by_chat.get(int(event.chat)) if event.chat.lstrip("-").isdigit() else None
        if partner is None:
            return  # a group the bot was added to that is no partner's: stay silent
        if event.choice and event.choice.startswith("p:"):
            await self._on_button(session, event, partner)
        elif event.command == "cases":
            await self.list_cases(session, partner)
        elif event.text and event.reply_to_ref:
            await self._on_reply(session, event, partner)

    # -- helpers -----------------------------------------------------------------------------

    def _say(self, session: AsyncSession, partner: Partner, key: str, *, reply_to_outbox: int | None = None,
             buttons: list[dict[str, str]] | None = None, force_reply: bool = False, **params: object) -> OutboxMessage:
        payload: dict[str, Any] = {"text": self.desk.texts.get(partner.console_language, key, **params), "buttons": buttons or [],
                                   "columns": 2, "force_reply": force_reply}
        if "code" in params:
            payload["repeat_note"] = self.desk.texts.get(partner.console_language, "partner.repeat_note", code=params["code"])
        if reply_to_outbox:
            payload["reply_to_outbox"] = reply_to_outbox
        return Outbox.add(session, partner.group_channel, partner.group_address, "message", payload, priority=PRIORITY_REPLY)

    async def _authorised(self, session: AsyncSession, report: Report | None, partner: Partner, what: str) -> bool:
        if report is None:
            return False
        routed = (await session.exec(select(ReportRoute.id).where(ReportRoute.report_id == report.id, ReportRoute.partner_id == partner.id))).first()
        if routed is None:
            log.warning("refused: partner %s tried to %s report %s, which was not routed to it", partner.id, what, report.id)
            return False
        return True

    async def _card(self, session: AsyncSession, report: Report, partner: Partner) -> int | None:
        return (await session.exec(select(CasePost.outbox_id).where(CasePost.report_id == report.id, CasePost.partner_id == partner.id)
                                   .order_by(col(CasePost.id)))).first()

    async def _post(self, session: AsyncSession, report: Report, partner: Partner, key: str, **kwargs: Any) -> None:
        card = await self._card(session, report, partner)
        row = self._say(session, partner, key, reply_to_outbox=card, **kwargs)
        await session.flush()
        assert report.id is not None and row.id is not None
        session.add(CasePost(report_id=report.id, partner_id=partner.id, outbox_id=row.id))

    # -- the team's overview -------------------------------------------------------------------

    async def list_cases(self, session: AsyncSession, partner: Partner) -> None:
        """`/cases` in a partner's group: its open cases, oldest first, with how long they have
        waited, where they stand and how long is left before an unacknowledged one escalates;
        each with a button that opens its card."""
        t = lambda key, **p: self.desk.texts.get(partner.console_language, key, **p)  # noqa: E731
        reports = list((await session.exec(
            select(Report).join(ReportRoute, col(ReportRoute.report_id) == col(Report.id))
            .where(ReportRoute.partner_id == partner.id, Report.status != "closed").order_by(col(Report.created_at))
        )).unique().all())
        if not reports:
            self._say(session, partner, "partner.cases.none")
            return
        now = utcnow().replace(tzinfo=None)
        lines, buttons = [t("partner.cases.header", count=len(reports))], []
        for report in reports[:CASES_SHOWN]:
            claimed_by = await self.caseworker_name(session, partner, report.claimed_by) if report.claimed_by else None
            line = t("partner.cases.line", code=report.code, status=self.desk.status_text(report, partner, claimed_by),
                     age=self._duration(partner, now - report.created_at.replace(tzinfo=None)))
            if report.urgent:
                line = "🚨 " + line
            if report.status == "open" and report.ack_deadline is not None:
                left = report.ack_deadline.replace(tzinfo=None) - now
                line += " " + (t("partner.cases.left", left=self._duration(partner, left)) if left.total_seconds() > 0
                               else t("partner.cases.overdue"))
            lines.append(line)
            card = await self._card(session, report, partner)
            ref = (await session.get(OutboxMessage, card)) if card is not None else None
            link = self.message_link(partner.group_channel, partner.group_address, ref.result_ref if ref is not None else None)
            if link:
                buttons.append({"data": "", "label": t("partner.cases.open", code=report.code), "url": link})
        if len(reports) > CASES_SHOWN:
            lines.append(t("partner.cases.more", count=len(reports) - CASES_SHOWN))
        Outbox.add(session, partner.group_channel, partner.group_address, "message",
                   {"text": "\n".join(lines), "buttons": buttons, "columns": 2}, priority=PRIORITY_REPLY)

    def _duration(self, partner: Partner, span: timedelta) -> str:
        minutes = max(0, int(span.total_seconds() // 60))
        days, rest = divmod(minutes, 24 * 60)
        key = "partner.duration.days" if days else "partner.duration.hours"
        return self.desk.texts.get(partner.console_language, key, days=days, hours=rest // 60, minutes=rest % 60)

    # -- buttons on the card -----------------------------------------------------------------------

    async def _on_button(self, session: AsyncSession, event: Event, partner: Partner) -> None:
        parts = (event.choice or "").split(":")
        action, report_id = parts[1], int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else -1
        report = await session.get(Report, report_id)
        if not await self._authorised(session, report, partner, action):
            self._say(session, partner, "partner.refused")
            return
        assert report is not None
        now = utcnow()
        if report.status == "closed":
            await self._post(session, report, partner, "partner.already_closed", code=report.code)
            return
        if action == "ack":
            if report.acknowledged_at is None:
                report.acknowledged_at = now
            report.ack_deadline = None
            report.status = "acknowledged" if report.status == "open" else report.status
            report.partner_id = partner.id
            await self._post(session, report, partner, "partner.acknowledged", code=report.code)
            await self.desk.tell_reporter(session, report, "report.update_acknowledged")
        elif action == "claim":
            report.acknowledged_at = report.acknowledged_at or now
            report.ack_deadline = None
            report.status = "claimed"
            report.partner_id = partner.id
            report.claimed_by = caseworker_ref(event.address)
            await self._post(session, report, partner, "partner.claimed_by", code=report.code,
                             who=await self.caseworker_name(session, partner, report.claimed_by))
        elif action == "ask":
            await self._post(session, report, partner, "partner.ask_prompt", code=report.code, force_reply=True)
        elif action == "close":
            buttons = [{"data": f"p:out:{report.id}:{o}", "label": self.desk.texts.get(partner.console_language, f"partner.outcome.{o}")}
                       for o in OUTCOMES]
            await self._post(session, report, partner, "partner.close_prompt", code=report.code, buttons=buttons)
        elif action == "out" and len(parts) > 3 and parts[3] in OUTCOMES:
            report.status, report.outcome, report.closed_at, report.ack_deadline = "closed", parts[3], now, None
            await self._post(session, report, partner, "partner.closed", code=report.code,
                             outcome=self.desk.texts.get(partner.console_language, f"partner.outcome.{parts[3]}"))
            await self.desk.tell_reporter(session, report, "report.update_closed", ask_feedback=True)
            log.info("report %s closed by partner %s: %s", report.id, partner.id, parts[3])
        session.add(report)
        if action in ("ack", "claim", "out"):
            await self.refresh_card(session, report, partner)

    async def refresh_card(self, session: AsyncSession, report: Report, partner: Partner) -> None:
        """The card edited in place: its status line and only the buttons that still apply."""
        card = await self._card(session, report, partner)
        if card is None:
            return
        claimed_by = await self.caseworker_name(session, partner, report.claimed_by) if report.claimed_by else None
        text, _ = self.desk.fitted_card(report, partner, claimed_by=claimed_by)
        Outbox.add(session, partner.group_channel, partner.group_address, "edit",
                   {"edit_outbox": card, "text": text, "buttons": self.desk.card_buttons(report, partner), "columns": 2},
                   priority=PRIORITY_REPLY)

    async def caseworker_name(self, session: AsyncSession, partner: Partner, ref: str) -> str:
        """"caseworker 2": the same number each time for the same person in this partner's team."""
        number = (await session.exec(select(Caseworker.number).where(Caseworker.partner_id == partner.id, Caseworker.ref == ref))).first()
        if number is None:
            last = (await session.exec(select(func.max(Caseworker.number)).where(Caseworker.partner_id == partner.id))).first()
            number = (last or 0) + 1
            session.add(Caseworker(partner_id=partner.id, ref=ref, number=number))
            await session.flush()
        return self.desk.texts.get(partner.console_language, "partner.caseworker", number=number)

    # -- a caseworker's reply: relayed to the reporter --------------------------------------------

    async def _on_reply(self, session: AsyncSession, event: Event, partner: Partner) -> None:
        post = (await session.exec(
            select(CasePost).join(OutboxMessage, col(OutboxMessage.id) == col(CasePost.outbox_id)).where(
                OutboxMessage.channel == event.channel, OutboxMessage.chat == event.chat, OutboxMessage.result_ref == event.reply_to_ref)
        )).first()
        if post is None:
            in_flight = (await session.exec(select(OutboxMessage.id).where(
                OutboxMessage.channel == event.channel, OutboxMessage.chat == event.chat, OutboxMessage.status == "sending"))).first()
            if in_flight is not None:
                raise NotRecordedYet(event.chat)  # the message replied to is sent but not yet recorded: try again shortly
            return  # a reply to something that is not about a case
        report = await session.get(Report, post.report_id)
        if not await self._authorised(session, report, partner, "message"):
            self._say(session, partner, "partner.refused")
            return
        assert report is not None and report.id is not None
        if report.reporter_id is None or report.contact_mode in ("phone", "none"):
            await self._post(session, report, partner, "partner.no_bot_contact", code=report.code)
            return
        message = CaseMessage(report_id=report.id, direction="to_reporter", body=event.text or "")
        if report.contact_mode == "anytime" and await self.relay_to_reporter(session, report, [message]):
            message.status = "queued"
            await self._post(session, report, partner, "partner.relayed", code=report.code)
        else:
            await self._post(session, report, partner, "partner.waiting_for_check", code=report.code)
        session.add(message)

    async def relay_to_reporter(self, session: AsyncSession, report: Report, messages: list[CaseMessage]) -> bool:
        """Show partner messages to the reporter and put them where their next words are
        the answer. Used at once (contact any time) or when they open /status."""
        # Locked, as the reporter's own message locks it: the two never move their step at once.
        reporter = await session.get(User, report.reporter_id, with_for_update=True) if report.reporter_id else None
        if reporter is None or not reporter.reachable or not messages:
            return False
        lang = reporter.lang or report.lang
        texts = self.desk.texts
        body = "\n\n".join(texts.get(lang, "report.partner_message", code=report.code, text=html.escape(m.body or "")) for m in messages)
        buttons = [{"data": callback_data(REPLY_FLOW, REPLY_STEP, "cancel"), "label": texts.get(lang, "report.reply_later")},
                   {"data": callback_data(REPLY_FLOW, REPLY_STEP, "qx"), "label": texts.get(lang, "common.quick_exit")}]
        row = Outbox.add(session, reporter.channel, reporter.address, "message",
                         {"text": body + "\n\n" + texts.get(lang, "report.reply_prompt"), "buttons": buttons, "columns": 1,
                          "repeat_note": texts.get(lang, "report.repeat_note")}, priority=PRIORITY_REPLY)
        await session.flush()
        conversation = await session.get(Conversation, reporter.id)
        if conversation is None:
            conversation = Conversation(user_id=reporter.id, vars={})
        conversation.flow, conversation.step = REPLY_FLOW, REPLY_STEP
        conversation.vars = {**(conversation.vars or {}), "reply_case": report.code, TRAIL_SINCE: row.id, TRAIL: []}
        session.add(conversation)
        for m in messages:
            m.status = "read"
            session.add(m)
        return True

    async def _open_case(self, session: AsyncSession, reporter: User, code: str) -> tuple[Report, Partner] | None:
        """The reporter's own open case and the partner holding it, if the partner can be written to."""
        report = (await session.exec(select(Report).where(Report.code == code, Report.reporter_id == reporter.id))).first()
        if report is None or report.status == "closed" or report.partner_id is None or report.id is None:
            return None
        partner = self.desk.book.partners.get(report.partner_id)
        if partner is None or partner.telegram_chat_id is None:
            return None
        return report, partner

    async def answer_from_reporter(self, session: AsyncSession, reporter: User, code: str, text: str) -> bool:
        found = await self._open_case(session, reporter, code)
        if found is None:
            return False
        report, partner = found
        assert report.id is not None
        session.add(CaseMessage(report_id=report.id, direction="to_partner", body=text, status="queued"))
        await self._post(session, report, partner, "partner.reporter_answer", code=report.code, text=html.escape(text))
        log.info("report %s: reporter's answer relayed to partner %s", report.id, partner.id)
        return True

    async def add_from_reporter(self, session: AsyncSession, reporter: User, code: str, text: str,
                                attachments: list[dict[str, str]]) -> bool:
        """What the reporter added to their open case, posted in the case's thread: the words,
        then each file as a reply to the card."""
        found = await self._open_case(session, reporter, code)
        if found is None:
            return False
        report, partner = found
        assert report.id is not None
        session.add(CaseMessage(report_id=report.id, direction="to_partner", body=text or None, status="queued"))
        await self._post(session, report, partner, "partner.reporter_added", code=report.code,
                         text=html.escape(text) if text else "—", count=len(attachments))
        card = await self._card(session, report, partner)
        for item in attachments[:ADD_MAX_FILES]:
            Outbox.add(session, partner.group_channel, partner.group_address, item["kind"], {"file_id": item["file_id"], "reply_to_outbox": card},
                       priority=PRIORITY_REPLY)
        log.info("report %s: the reporter added %d text(s) and %d file(s)", report.id, int(bool(text)), len(attachments))
        return True

    async def pending_for(self, session: AsyncSession, report: Report) -> list[CaseMessage]:
        return list((await session.exec(select(CaseMessage).where(
            CaseMessage.report_id == report.id, CaseMessage.direction == "to_reporter", CaseMessage.status == "waiting",
        ).order_by(col(CaseMessage.id)))).all())
