"""Read-only case endpoints for a partner's own case system.

A partner token reads the cases routed to its partner and nothing else: another partner's
case is answered as if it did not exist (404), so a token cannot even learn which codes are
in use. Staff tokens cannot read cases, and partner tokens cannot reach the campaign
endpoints. Each read is logged with the partner and the number of cases, never their content.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from datetime import datetime, timedelta, timezone
from typing import Any

from aiohttp import web
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.features.reports.console import PartnerConsole
from bot.features.reports.partners import PartnerBook
from storage.models import utcnow
from storage.reports import CaseMessage, PartnerToken, Report, ReportRoute

log = logging.getLogger(__name__)

PARTNER = web.RequestKey("partner_id", str)
STATUSES = ("open", "acknowledged", "claimed", "closed")
MAX_LIMIT = 500


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def new_partner_token(session: AsyncSession, book: PartnerBook, partner_id: str, label: str = "", *, days: int = 90) -> str:
    if partner_id not in book.partners:
        raise KeyError(f"no partner '{partner_id}' in partners.yaml (known: {', '.join(sorted(book.partners))})")
    token = "sr_p_" + secrets.token_urlsafe(32)
    session.add(PartnerToken(token_hash=_hash(token), partner_id=partner_id, label=label[:64], expires_at=utcnow() + timedelta(days=days)))
    return token


async def partner_for_token(session: AsyncSession, token: str) -> str | None:
    row = (await session.exec(select(PartnerToken).where(PartnerToken.token_hash == _hash(token), col(PartnerToken.revoked_at).is_(None)))).first()
    if row is None or (row.expires_at is not None and row.expires_at.replace(tzinfo=timezone.utc) <= utcnow()):
        return None
    return row.partner_id


def _when(value: datetime | None) -> str | None:
    return value.replace(tzinfo=value.tzinfo or timezone.utc).isoformat() if value else None


class CaseReader:
    def __init__(self, console: PartnerConsole) -> None:
        self.console = console
        self.book = console.desk.book

    async def cases(self, session: AsyncSession, partner_id: str, status: str | None, limit: int) -> list[dict[str, Any]]:
        query = (select(Report).join(ReportRoute, col(ReportRoute.report_id) == col(Report.id))
                 .where(ReportRoute.partner_id == partner_id).order_by(col(Report.created_at)).limit(limit))
        if status == "open":
            query = query.where(Report.status != "closed")
        elif status:
            query = query.where(Report.status == status)
        reports = list((await session.exec(query)).unique().all())
        return [await self.summary(session, partner_id, report) for report in reports]

    async def case(self, session: AsyncSession, partner_id: str, code: str) -> dict[str, Any] | None:
        report = (await session.exec(select(Report).join(ReportRoute, col(ReportRoute.report_id) == col(Report.id))
                                     .where(ReportRoute.partner_id == partner_id, Report.code == code))).first()
        if report is None:
            return None
        content = report.content or {}
        messages = (await session.exec(select(CaseMessage).where(CaseMessage.report_id == report.id).order_by(col(CaseMessage.id)))).all()
        return {
            **await self.summary(session, partner_id, report),
            "description": content.get("description"),
            "place": content.get("place"),
            "phone": content.get("phone"),
            "location": content.get("location"),
            "attachments": len(content.get("attachments") or []),
            "screening_summary": content.get("screening_summary"),
            "thread": [{"direction": m.direction, "text": m.body, "at": _when(m.created_at)} for m in messages],
        }

    async def summary(self, session: AsyncSession, partner_id: str, report: Report) -> dict[str, Any]:
        partner = self.book.partners.get(partner_id)
        claimed_by = None
        if report.claimed_by and partner is not None:
            claimed_by = await self.console.caseworker_name(session, partner, report.claimed_by)
        return {
            "code": report.code, "status": report.status, "urgent": report.urgent, "category": report.category,
            "country": report.country, "province": report.province, "affected": report.affected, "language": report.lang,
            "contact": report.contact_mode, "current_partner": report.partner_id == partner_id, "claimed_by": claimed_by,
            "received_at": _when(report.created_at), "acknowledged_at": _when(report.acknowledged_at),
            "acknowledge_by": _when(report.ack_deadline), "closed_at": _when(report.closed_at), "outcome": report.outcome,
        }


def routes(reader_for: Any) -> list[web.RouteDef]:
    """`reader_for(request)` gives the CaseReader and a database (the app wires it)."""

    async def list_cases(request: web.Request) -> web.Response:
        reader, db = reader_for(request)
        status = request.query.get("status", "open")
        if status not in (*STATUSES, "all"):
            return web.json_response({"error": f"status must be one of {', '.join((*STATUSES, 'all'))}"}, status=400)
        raw = request.query.get("limit", "100")
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
            return web.json_response({"error": f"limit must be a whole number from 1 to {MAX_LIMIT}"}, status=400)
        partner_id = request[PARTNER]
        async with db.transaction() as session:  # may number a caseworker seen for the first time
            cases = await reader.cases(session, partner_id, None if status == "all" else status, int(raw))
        log.info("partner %s read its case list (%d case(s))", partner_id, len(cases))
        return web.json_response({"partner": partner_id, "cases": cases})

    async def show_case(request: web.Request) -> web.Response:
        reader, db = reader_for(request)
        partner_id, code = request[PARTNER], request.match_info["code"].upper()
        async with db.transaction() as session:
            case = await reader.case(session, partner_id, code) if code.isalnum() and len(code) <= 12 else None
        if case is None:
            return web.json_response({"error": "no such case for this partner"}, status=404)
        log.info("partner %s read one of its cases", partner_id)
        return web.json_response(case)

    return [web.get("/partner/cases", list_cases), web.get("/partner/cases/{code}", show_case)]
