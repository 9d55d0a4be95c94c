"""Hotline-style reports routed to partner NGOs, with an anonymous two-way relay."""

from __future__ import annotations

import argparse
import html
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from sqlmodel import col, select

from bot.engine.runner import Action, Turn
from bot.engine.yamlfile import ContentError, Problem
from bot.features.reports.console import PartnerConsole
from bot.features.reports.partners import PartnerBook, coverage_problems, load_partners
from bot.features.reports.privacy import forget_user, purge
from bot.features.reports.service import WEBHOOK, ReportDesk
from bot.features.reports.stats import as_csv, as_text, report_table
from bot.features.reports.webhook import SCHEMA, WebhookDelivery
from bot.outbox import PRIORITY_PARTNER, Outbox, Sender
from storage.models import utcnow
from storage.reports import Report

if TYPE_CHECKING:
    from bot.app import Core
    from bot.settings import Settings

TEXT_KEYS = (
    [f"report.state.{s}" for s in ("open", "acknowledged", "claimed", "closed")]
    + ["report.partner_message", "report.status", "report.status_not_found", "report.answer_sent", "report.answer_failed",
       "report.update_acknowledged", "report.update_closed", "report.reply_prompt", "report.reply_later", "report.repeat_note"]
    + [f"partner.card.{k}" for k in ("title", "urgent", "category", "where", "affected", "contact", "language", "received",
                                     "status", "escalated", "answer_in", "location", "phone", "attachments", "screening", "original", "continued",
                                     "attachments_cut")]
    + [f"partner.status.{k}" for k in ("new", "acknowledged", "claimed", "closed")]
    + [f"report.feedback.{k}" for k in ("ask", "useful", "not_useful", "skip", "thanks")]
    + ["report.within.minutes", "report.within.hours", "report.expect_answer"]
    + [f"report.case_add.{k}" for k in ("offer", "yes", "no", "dropped", "done")] + ["partner.reporter_added"]
    + [f"partner.cases.{k}" for k in ("header", "line", "left", "overdue", "none", "more", "open")]
    + [f"partner.duration.{k}" for k in ("hours", "days")]
    + [f"partner.button.{k}" for k in ("ack", "claim", "ask", "close")]
    + [f"partner.outcome.{k}" for k in ("resolved", "referred", "no_contact", "not_a_case")]
    + [f"partner.{k}" for k in ("refused", "already_closed", "acknowledged", "ask_prompt", "close_prompt", "closed",
                                "claimed_by", "caseworker", "no_bot_contact", "relayed", "waiting_for_check", "reporter_answer", "forgotten", "repeat_note")]
)
ACTION_NAMES = frozenset({"reports.check_limit", "reports.check_coverage", "reports.submit", "reports.count_only", "reports.status",
                          "reports.relay_answer", "reports.forget", "reports.case_add", "reports.feedback"})


def partners_path(flows_dir: Path) -> Path:
    return flows_dir / "data" / "partners.yaml"


class ReportsFeature:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.book: PartnerBook = load_partners(partners_path(core.settings.flows_dir))
        self.desk = ReportDesk(self.book, core.texts, core.settings.reports_per_hour)
        self.console = PartnerConsole(self.desk, core.message_link)
        self.webhooks = WebhookDelivery(self.book, core.outbox)

    async def status(self, turn: Turn) -> str | None:
        code = str(turn.values.pop("args", "") or turn.values.pop("status_code", "") or "").strip().upper()
        if not code:
            return "ask_code"
        report = (await turn.session.exec(select(Report).where(Report.code == code, Report.reporter_id == turn.user.id))).first()
        if report is None:
            turn.say("report.status_not_found", code=html.escape(code))
            return None
        turn.say("report.status", code=report.code, state=turn.text(f"report.state.{report.status}"))
        waiting = await self.console.pending_for(turn.session, report)
        for message in waiting:
            turn.say("report.partner_message", code=report.code, text=html.escape(message.body or ""))
            message.status = "read"
            turn.session.add(message)
        if waiting:
            turn.values["reply_case"] = report.code
            return "reply"
        return None

    async def relay_answer(self, turn: Turn) -> str | None:
        code, text = turn.values.pop("reply_case", None), turn.values.pop("reply_text", None)
        if code and isinstance(text, str) and await self.console.answer_from_reporter(turn.session, turn.user, code, text):
            turn.say("report.answer_sent", code=code)
        else:
            turn.say("report.answer_failed")
        return None

    async def offer_case_add(self, turn: Turn) -> bool:
        """Something sent outside any question while the sender has an open case the partner
        can answer through the bot: offered, with one tap, as an addition to that case."""
        event = turn.event
        if not (event.text or event.attachments):
            return False
        report = (await turn.session.exec(select(Report).where(
            Report.reporter_id == turn.user.id, Report.status != "closed", col(Report.partner_id).is_not(None),
            col(Report.contact_mode).in_(["anytime", "on_check"])).order_by(col(Report.created_at).desc()))).first()
        if report is None:
            return False
        turn.values["case_add"] = {"code": report.code, "text": event.text or "", "attachments": list(event.attachments)}
        turn.values["case_add_code"] = report.code
        await turn.engine.run_flow(turn, "case_add")
        return True

    async def case_add(self, turn: Turn) -> str | None:
        item = turn.values.pop("case_add", None) or {}
        turn.values.pop("case_add_code", None)
        code = str(item.get("code") or "")
        if code and await self.console.add_from_reporter(turn.session, turn.user, code, str(item.get("text") or ""),
                                                         list(item.get("attachments") or [])):
            turn.say("report.case_add.done", code=code)
        else:
            turn.say("report.answer_failed")
        return None

    async def feedback(self, turn: Turn) -> str | None:
        code = turn.values.pop("feedback_case", None)
        answer = turn.event.choice.rsplit(":", 1)[-1] if turn.event.choice else ""
        if code:
            await self.desk.record_feedback(turn.session, turn.user, str(code), answer)
        return None

    async def forget(self, turn: Turn) -> str | None:
        def tell_partner(report: Report, channel: str, chat: str) -> None:
            """A partner that already holds the case is told, through its own channel."""
            if channel == WEBHOOK:
                Outbox.add(turn.session, WEBHOOK, chat, "forgotten", {"schema": SCHEMA, "event": "reporter_forgotten",
                                                                       "case": {"code": report.code}}, PRIORITY_PARTNER)
                return
            partner = self.book.by_chat.get(int(chat)) if chat.lstrip("-").isdigit() else None
            lang = partner.console_language if partner else "en"
            Outbox.add(turn.session, channel, chat, "message", {"text": self.core.texts.get(lang, "partner.forgotten", code=report.code)},
                       PRIORITY_PARTNER)

        await forget_user(turn.session, turn.user, tell_partner)
        turn.forget = True
        return None

    def actions(self) -> dict[str, Action]:
        return {
            "reports.check_limit": self.desk.check_limit,
            "reports.check_coverage": self.desk.check_coverage,
            "reports.submit": self.desk.submit,
            "reports.count_only": self.desk.count_only,
            "reports.status": self.status,
            "reports.relay_answer": self.relay_answer,
            "reports.forget": self.forget,
            "reports.case_add": self.case_add,
            "reports.feedback": self.feedback,
        }

    async def escalate(self) -> int:
        async with self.core.db.transaction() as session:
            moved = await self.desk.escalate_overdue(session, utcnow())
        if moved:
            self.core.outbox.notify()
        return moved

    async def purge(self) -> dict[str, int]:
        async with self.core.db.transaction() as session:
            return await purge(session, utcnow(), retention_days=self.core.settings.report_retention_days)


def feature(core: Core) -> ReportsFeature:
    return core.part("reports", lambda: ReportsFeature(core))


def actions(core: Core) -> dict[str, Action]:
    reports = feature(core)
    core.conversations.group_handler = reports.console.handle
    if reports.offer_case_add not in core.engine.followups:
        core.engine.followups.append(reports.offer_case_add)
    return reports.actions()


def jobs(core: Core) -> list[tuple[str, float, Callable[[], Awaitable[object]]]]:
    """Periodic passes; the scheduler only wakes them, what is due lives in the database."""
    reports = feature(core)
    return [("escalate unacknowledged cases", 60.0, reports.escalate), ("purge old cases", 6 * 3600.0, reports.purge)]


def senders(core: Core) -> list[Sender]:
    """Senders of channels this feature adds: partner webhooks."""
    return [feature(core).webhooks.sender]


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    stats = sub.add_parser("stats", help="reports by month × country × category (cells under 5 hidden)",
                           description="Anonymous report statistics for research. Cells under --min-cell are shown as <N.")
    stats.add_argument("--csv", metavar="FILE", help="also write the table as CSV to FILE ('-' for standard output)")
    stats.add_argument("--min-cell", type=int, default=5, help="hide counts below this (default 5)")
    stats.set_defaults(func=_stats)
    purge_cmd = sub.add_parser("purge", help="delete closed cases past the retention period, keeping anonymous counts",
                               description="Purge closed cases older than REPORT_RETENTION_DAYS, and delivery traces older than 7 days.")
    purge_cmd.set_defaults(func=_purge)
    partner = sub.add_parser("partner", help="a partner's case system: read-only API tokens for its own cases",
                             description="Tokens for GET /partner/cases: each reads one partner's cases and nothing else.")
    tools = partner.add_subparsers(dest="partner_command", metavar="TOOL", required=True)
    token = tools.add_parser("token", help="create a token for one partner (printed once)",
                             description="Create a bearer token that reads only this partner's cases (GET /partner/cases).")
    token.add_argument("--partner", required=True, help="the partner's id in flows/data/partners.yaml, e.g. demo_bangkok")
    token.add_argument("--label", default="", help="what the token is for, e.g. 'case system'")
    token.add_argument("--days", type=int, default=90, help="how many days it works (default: 90)")
    token.set_defaults(func=_new_partner_token)
    listing = tools.add_parser("tokens", help="list partner tokens: id, partner, label, created, expires, revoked",
                               description="List every partner token (never the token itself).")
    listing.set_defaults(func=_list_partner_tokens)
    revoke = tools.add_parser("revoke", help="revoke a partner token by its id (see `partner tokens`)",
                              description="Revoke a partner token at once; requests with it are refused from then on.")
    revoke.add_argument("token_id", type=int, help="the id shown by `python -m bot partner tokens`")
    revoke.set_defaults(func=_revoke_partner_token)


def _new_partner_token(args: argparse.Namespace, settings: Settings) -> int:
    from bot.features.reports.case_api import new_partner_token

    async def work(core: Core) -> int:
        async with core.db.transaction() as session:
            try:
                token = await new_partner_token(session, feature(core).book, args.partner, args.label, days=args.days)
            except KeyError as exc:
                print(exc.args[0], file=sys.stderr)
                return 1
        print(token)
        return 0

    return _with_core(settings, work)


def _list_partner_tokens(args: argparse.Namespace, settings: Settings) -> int:
    from sqlmodel import col, select

    from storage.reports import PartnerToken

    async def work(core: Core) -> int:
        async with core.db.session() as session:
            rows = (await session.exec(select(PartnerToken).order_by(col(PartnerToken.id)))).all()
        stamp = lambda d: d.strftime("%Y-%m-%d %H:%M") if d else "-"  # noqa: E731
        print(f"{'id':>4}  {'partner':<24} {'label':<20} {'created':<17} {'expires':<17} revoked")
        for row in rows:
            print(f"{row.id:>4}  {row.partner_id[:24]:<24} {row.label[:20]:<20} {stamp(row.created_at):<17} {stamp(row.expires_at):<17} "
                  f"{stamp(row.revoked_at)}")
        if not rows:
            print("no partner tokens")
        return 0

    return _with_core(settings, work)


def _revoke_partner_token(args: argparse.Namespace, settings: Settings) -> int:
    from storage.reports import PartnerToken

    async def work(core: Core) -> int:
        async with core.db.transaction() as session:
            row = await session.get(PartnerToken, args.token_id)
            done = row is not None and row.revoked_at is None
            if done:
                row.revoked_at = utcnow()
                session.add(row)
        print(f"partner token {args.token_id} revoked" if done else f"no active partner token with id {args.token_id}",
              file=sys.stdout if done else sys.stderr)
        return 0 if done else 1

    return _with_core(settings, work)


def _with_core(settings: Settings, work: Callable[[Core], Awaitable[int]]) -> int:
    from bot.app import with_core

    return with_core(settings, work)


def _stats(args: argparse.Namespace, settings: Settings) -> int:
    async def work(core: Core) -> int:
        async with core.db.session() as session:
            rows = await report_table(session, min_cell=args.min_cell)
        print(as_text(rows))
        if args.csv == "-":
            print(as_csv(rows), end="")
        elif args.csv:
            Path(args.csv).write_text(as_csv(rows), encoding="utf-8")
            print(f"wrote {len(rows)} rows to {args.csv}")
        return 0

    return _with_core(settings, work)


def _purge(args: argparse.Namespace, settings: Settings) -> int:
    async def work(core: Core) -> int:
        result = await feature(core).purge()
        print(f"purged {result['reports']} closed case(s), {result['outbox']} delivered message(s), {result['inbox']} handled event(s)")
        return 0

    return _with_core(settings, work)


def check_content(flows_dir: Path, flows: object) -> list[Problem]:
    """Partners validate, and every country and province the report journey offers is covered."""
    try:
        book = load_partners(partners_path(flows_dir))
    except ContentError as exc:
        return exc.problems
    report_flow = getattr(flows, "flows", {}).get("report")
    if report_flow is None:
        return [Problem(flows_dir / "report.yaml", 0, "the report journey is missing")]
    offered: dict[str, list[str]] = {}
    for choice in report_flow.steps["country"].choices:
        step = report_flow.steps.get(f"province_{choice.id}")
        offered[choice.id] = [c.id for c in step.choices if c.id != "other"] if step else []
    return coverage_problems(book, offered, report_flow.path)
