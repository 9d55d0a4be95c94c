"""Forgetting a user on request, and purging what is no longer needed."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from collections.abc import Callable

from sqlmodel import col, delete, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.broadcasts import ApiToken, Campaign, StaffInvite, StaffRole, Subscription
from storage.models import InboxEvent, OutboxMessage, User
from storage.reports import CaseMessage, CasePost, Report, ReportRoute

log = logging.getLogger(__name__)


async def forget_user(session: AsyncSession, user: User, tell_partner: Callable[[Report, str, str], None] | None = None) -> int:
    """Delete, in the caller's one transaction, every row about a person: subscription,
    staff roles and tokens, their reports' contents and relay threads, stored events and
    queued messages of their chat; cancel deliveries of their reports not yet made, and tell
    each partner that already holds one that the person asked to be forgotten (the
    partner's copy is theirs to delete). Campaigns and invites they made as staff stay,
    without an author. The conversation and the user row go last (the engine deletes them).
    Returns how many reports were unlinked."""
    assert user.id is not None
    reports = (await session.exec(select(Report).where(Report.reporter_id == user.id))).all()
    for report in reports:
        held = (await session.exec(select(OutboxMessage.channel, OutboxMessage.chat).where(  # type: ignore[call-overload]
            col(OutboxMessage.batch) == f"report:{report.id}", col(OutboxMessage.status) == "sent").distinct())).all()
        cancelled = await session.exec(update(OutboxMessage).where(  # type: ignore[call-overload]
            col(OutboxMessage.batch) == f"report:{report.id}", col(OutboxMessage.status).in_(["pending", "sending"]))
            .values(status="cancelled", payload=None, claim_token=None))
        if tell_partner is not None:
            for channel, chat in held:
                tell_partner(report, channel, chat)
        await session.exec(delete(CaseMessage).where(col(CaseMessage.report_id) == report.id))  # type: ignore[call-overload]
        report.reporter_id = None
        report.content = None
        report.contact_mode = "none"
        session.add(report)
        log.info("report %s: reporter forgotten; %d delivery(ies) not yet made cancelled", report.id, cancelled.rowcount or 0)
    for table in (Subscription, StaffRole, ApiToken):
        await session.exec(delete(table).where(col(table.user_id) == user.id))  # type: ignore[attr-defined,call-overload]
    for table in (Campaign, StaffInvite):
        await session.exec(update(table).where(col(table.created_by) == user.id).values(created_by=None))  # type: ignore[attr-defined,call-overload]
    await session.exec(delete(OutboxMessage).where(  # type: ignore[call-overload]
        col(OutboxMessage.channel) == user.channel, col(OutboxMessage.chat) == user.address))
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
