"""Forgetting a user on request, and purging what is no longer needed."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlmodel import col, delete, select
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.models import InboxEvent, OutboxMessage, User
from storage.reports import CaseMessage, CasePost, Report, ReportRoute

log = logging.getLogger(__name__)


async def forget_user(session: AsyncSession, user: User) -> int:
    """Delete what the bot holds about a user: their reports' contents and the relay
    thread (partners keep what they already received), messages waiting to be sent to
    them, and stored events from their chat (the one being handled now, and the messages
    that confirm the deletion, go with the 7-day purge of delivery traces). Returns how
    many reports were unlinked."""
    reports = (await session.exec(select(Report).where(Report.reporter_id == user.id))).all()
    for report in reports:
        await session.exec(delete(CaseMessage).where(col(CaseMessage.report_id) == report.id))  # type: ignore[call-overload]
        report.reporter_id = None
        report.content = None
        report.contact_mode = "none"
        session.add(report)
    await session.exec(delete(OutboxMessage).where(  # type: ignore[call-overload]
        col(OutboxMessage.channel) == user.channel, col(OutboxMessage.chat) == user.address, col(OutboxMessage.status) != "pending"))
    await session.exec(delete(InboxEvent).where(  # type: ignore[call-overload]
        col(InboxEvent.channel) == user.channel, col(InboxEvent.chat) == user.address, col(InboxEvent.status) != "pending"))
    log.info("user %s forgotten; %d report(s) unlinked", user.id, len(reports))
    return len(reports)


async def purge(session: AsyncSession, now: datetime, *, retention_days: int, trace_days: int = 7) -> dict[str, int]:
    """Closed cases older than the retention period go, leaving their anonymous counts;
    delivered messages and handled events go after a few days (they only served delivery)."""
    cutoff = now - timedelta(days=retention_days)
    old = (await session.exec(select(Report.id).where(Report.status == "closed", col(Report.closed_at) <= cutoff))).all()
    if old:
        for table in (CaseMessage, CasePost, ReportRoute):
            await session.exec(delete(table).where(col(table.report_id).in_(old)))  # type: ignore[attr-defined,call-overload]
        await session.exec(delete(Report).where(col(Report.id).in_(old)))  # type: ignore[call-overload]
    trace_cutoff = now - timedelta(days=trace_days)
    referenced = select(CasePost.outbox_id)
    sent = await session.exec(delete(OutboxMessage).where(  # type: ignore[call-overload]
        col(OutboxMessage.status).in_(["sent", "failed", "unreachable"]), col(OutboxMessage.created_at) <= trace_cutoff,
        col(OutboxMessage.id).not_in(referenced)))
    handled = await session.exec(delete(InboxEvent).where(  # type: ignore[call-overload]
        col(InboxEvent.status).in_(["done", "failed"]), col(InboxEvent.received_at) <= trace_cutoff))
    result = {"reports": len(old), "outbox": sent.rowcount or 0, "inbox": handled.rowcount or 0}
    log.info("purge: %s", result)
    return result
