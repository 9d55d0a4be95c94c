"""Everything the bot sends leaves through here.

Rows are written in the same transaction as the change that caused them, then drained by
one sender per channel: replies before partner deliveries before broadcasts. A row is
claimed with a lease (and `FOR UPDATE SKIP LOCKED` on PostgreSQL), so two processes never
send the same row, and a row whose sender died is sent after the lease runs out.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from sqlmodel import col, func, or_, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.db import Database
from storage.models import OutboxMessage, User, utcnow

log = logging.getLogger(__name__)

PRIORITY_REPLY = 0
PRIORITY_PARTNER = 10
PRIORITY_BROADCAST = 20
LEASE = timedelta(seconds=60)
MAX_ATTEMPTS = 8


class DeliveryError(Exception):
    """Raised by a channel's deliver function; says what to do with the row."""


class RetryLater(DeliveryError):
    def __init__(self, after: float, *, pause_all: bool = False) -> None:
        super().__init__(f"retry after {after}s")
        self.after = after
        self.pause_all = pause_all


class RecipientGone(DeliveryError):
    """The user blocked the bot or deleted the chat: do not try them again."""


class Rejected(DeliveryError):
    """The platform refused this row for good (bad request)."""


Deliver = Callable[[OutboxMessage, dict[str, Any]], Awaitable[str | None]]


class Outbox:
    def __init__(self, db: Database, *, lease: timedelta = LEASE) -> None:
        self.db = db
        self.lease = lease
        self.wakeup = asyncio.Event()

    @staticmethod
    def encode(payload: dict[str, Any]) -> str:
        return json.dumps(payload, ensure_ascii=False)

    @staticmethod
    def add(session: AsyncSession, channel: str, chat: str, kind: str, payload: dict[str, Any], priority: int = PRIORITY_REPLY) -> OutboxMessage:
        row = OutboxMessage(channel=channel, chat=chat, kind=kind, payload=Outbox.encode(payload), priority=priority)
        session.add(row)
        return row

    async def result_ref(self, outbox_id: int) -> str | None:
        """The platform id of what an earlier row sent (e.g. the card a photo replies to)."""
        async with self.db.session() as session:
            row = await session.get(OutboxMessage, outbox_id)
            return row.result_ref if row else None

    def notify(self) -> None:
        self.wakeup.set()

    async def claim(self, channel: str, limit: int = 20) -> list[OutboxMessage]:
        now = utcnow()
        async with self.db.transaction() as session:
            due = or_(
                (col(OutboxMessage.status) == "pending") & (col(OutboxMessage.not_before) <= now),
                (col(OutboxMessage.status) == "sending") & (col(OutboxMessage.not_before) <= now),
            )
            query = (
                select(OutboxMessage)
                .where(OutboxMessage.channel == channel, due)
                .order_by(col(OutboxMessage.priority), col(OutboxMessage.id))
                .limit(limit)
            )
            if self.db.is_postgres:
                query = query.with_for_update(skip_locked=True)
            rows = list(await session.exec(query))
            for row in rows:
                row.status = "sending"
                row.attempts += 1
                row.not_before = now + self.lease
                session.add(row)
            return rows

    async def finish(self, row_id: int, *, status: str, ref: str | None = None) -> None:
        async with self.db.transaction() as session:
            await session.exec(
                update(OutboxMessage).where(col(OutboxMessage.id) == row_id)  # type: ignore[call-overload]
                .values(status=status, sent_at=utcnow(), result_ref=ref, payload=None)
            )

    async def retry(self, row: OutboxMessage, after: float, *, give_up: bool = False) -> None:
        async with self.db.transaction() as session:
            status = "failed" if give_up else "pending"
            await session.exec(
                update(OutboxMessage).where(col(OutboxMessage.id) == row.id)  # type: ignore[call-overload]
                .values(status=status, not_before=utcnow() + timedelta(seconds=after))
            )

    async def mark_unreachable(self, channel: str, chat: str) -> None:
        async with self.db.transaction() as session:
            await session.exec(
                update(User).where(col(User.channel) == channel, col(User.address) == chat).values(reachable=False)  # type: ignore[call-overload]
            )

    async def counts(self) -> dict[str, int]:
        async with self.db.session() as session:
            rows = await session.exec(select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status))  # type: ignore[call-overload]
            return {status: n for status, n in rows}


class Sender:
    """Drains one channel's rows in priority order and maps delivery errors to retries."""

    def __init__(self, outbox: Outbox, channel: str, deliver: Deliver, *, idle_poll: float = 2.0,
                 max_attempts: int | None = MAX_ATTEMPTS, max_age: timedelta | None = None) -> None:
        self.outbox = outbox
        self.channel = channel
        self.deliver = deliver
        self.idle_poll = idle_poll
        self.max_attempts = max_attempts
        self.max_age = max_age

    async def drain(self) -> int:
        """Send everything due now; return how many rows were handled."""
        handled = 0
        while rows := await self.outbox.claim(self.channel):
            for row in rows:
                await self._send(row)
                handled += 1
        return handled

    async def run(self) -> None:
        while True:
            self.outbox.wakeup.clear()
            await self.drain()
            try:
                await asyncio.wait_for(self.outbox.wakeup.wait(), timeout=self.idle_poll)
            except TimeoutError:
                pass

    async def _send(self, row: OutboxMessage) -> None:
        assert row.id is not None
        try:
            ref = await self.deliver(row, json.loads(row.payload or "{}"))
        except RetryLater as exc:
            too_many = self.max_attempts is not None and row.attempts >= self.max_attempts
            too_old = self.max_age is not None and utcnow() + timedelta(seconds=exc.after) - row.created_at > self.max_age
            if too_many or too_old:
                log.error("outbox %s: giving up after %d attempts", row.id, row.attempts)
            else:
                log.warning("outbox %s: retry in %.1fs (attempt %d)", row.id, exc.after, row.attempts)
            await self.outbox.retry(row, exc.after, give_up=too_many or too_old)
            if exc.pause_all:
                await asyncio.sleep(exc.after)
        except RecipientGone:
            log.info("outbox %s: recipient unreachable", row.id)
            await self.outbox.mark_unreachable(row.channel, row.chat)
            await self.outbox.finish(row.id, status="unreachable")
        except Rejected as exc:
            log.error("outbox %s: rejected by the platform: %s", row.id, exc)
            await self.outbox.finish(row.id, status="failed")
        else:
            await self.outbox.finish(row.id, status="sent", ref=ref)
