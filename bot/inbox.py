"""Incoming events, stored raw before they are acted on.

A redelivered event finds its key taken and is dropped; an event stored but not handled
(the process died) is still `pending` and is handled at the next start. Events of one
chat are handled one at a time, in order; different chats run concurrently.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot import metrics
from storage import jsontext
from storage.db import Database, upsert
from storage.direct import Prepared
from storage.models import InboxEvent, utcnow
from storage.sqlite_driver import statements_inline


_STORED_COLUMNS = ["channel", "event_key", "chat", "payload", "status", "attempts", "received_at"]


class Inbox:
    def __init__(self, db: Database) -> None:
        self.db = db
        table = InboxEvent.__table__  # type: ignore[attr-defined]
        self._store = Prepared(upsert(table, postgres=db.is_postgres).on_conflict_do_nothing(index_elements=["channel", "event_key"])
                               .returning(table.c.event_key), column_keys=_STORED_COLUMNS, many_rows=True)

    async def store(self, channel: str, events: list[tuple[str, str, dict[str, Any]]]) -> list[str]:
        """Store (event_key, chat, payload) rows; return the keys that were new."""
        if not events:
            return []
        now = utcnow()
        started = time.perf_counter()
        async with self.db.transaction() as session:
            connection = await session.connection()
            with statements_inline():  # one insert of a few rows, under the write lock
                result = await self._store.run(connection, [
                    dict(channel=channel, event_key=key, chat=chat, payload=jsontext.dumps(payload), status="pending",
                         attempts=0, received_at=now) for key, chat, payload in events])
        metrics.INBOX_STORE_SECONDS.labels(channel).observe(time.perf_counter() - started)
        return result.scalars()

    async def pending(self, channel: str) -> list[InboxEvent]:
        async with self.db.session() as session:
            rows = await session.exec(
                select(InboxEvent).where(InboxEvent.channel == channel, InboxEvent.status == "pending").order_by(col(InboxEvent.id))
            )
            return list(rows)

    async def earlier_pending(self, channel: str, chat: str, key: str) -> list[InboxEvent]:
        """A chat's events stored before this one and not handled yet (by any process), oldest first."""
        mine = select(InboxEvent.id).where(InboxEvent.channel == channel, InboxEvent.event_key == key).scalar_subquery()
        async with self.db.session() as session:
            return list(await session.exec(select(InboxEvent).where(
                InboxEvent.channel == channel, InboxEvent.chat == chat, InboxEvent.status == "pending", col(InboxEvent.id) < mine,
            ).order_by(col(InboxEvent.id))))

    async def get(self, channel: str, key: str) -> InboxEvent | None:
        async with self.db.session() as session:
            return (await session.exec(select(InboxEvent).where(InboxEvent.channel == channel, InboxEvent.event_key == key))).first()

    async def highest_key(self, channel: str) -> int | None:
        """For channels whose keys are increasing numbers (Telegram's update_id)."""
        async with self.db.session() as session:
            rows = await session.exec(select(InboxEvent.event_key).where(InboxEvent.channel == channel).order_by(col(InboxEvent.id).desc()).limit(200))
            keys = [int(k) for k in rows if k.isdigit()]
            return max(keys) if keys else None

    @staticmethod
    async def mark_done(session: AsyncSession, row: InboxEvent) -> None:
        row.status = "done"
        row.payload = None
        row.handled_at = utcnow()
        session.add(row)

    async def mark_failed(self, channel: str, key: str, error: str = "", attempts: int = 1) -> None:
        """A poison event, set aside in the dead-letter list (status failed, with the type of
        its error and without its content) so that it is not retried for ever and the chat's
        later events go on."""
        async with self.db.transaction() as session:
            row = (await session.exec(select(InboxEvent).where(InboxEvent.channel == channel, InboxEvent.event_key == key))).first()
            if row is not None and row.status == "pending":
                row.attempts += attempts
                row.status = "failed"
                row.payload = None
                row.error = error[:120] or None
                row.handled_at = utcnow()
                session.add(row)

    async def dead_letters(self, limit: int = 50) -> list[InboxEvent]:
        async with self.db.session() as session:
            return list(await session.exec(
                select(InboxEvent).where(InboxEvent.status == "failed").order_by(col(InboxEvent.id).desc()).limit(limit)))

    async def count(self, status: str) -> int:
        async with self.db.session() as session:
            return (await session.exec(select(func.count()).select_from(InboxEvent).where(InboxEvent.status == status))).one()


class ChatLocks:
    """One lock per chat, so one chat's events run in order and others in parallel."""

    def __init__(self) -> None:
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._users: defaultdict[str, int] = defaultdict(int)

    @asynccontextmanager
    async def hold(self, chat: str) -> AsyncIterator[None]:
        self._users[chat] += 1
        try:
            async with self._locks[chat]:
                yield
        finally:
            self._users[chat] -= 1
            if not self._users[chat]:
                del self._users[chat]
                self._locks.pop(chat, None)


class ChatPace:
    """A person who sends more than a few messages a second is slowed down, not dropped:
    their messages wait (in order, in their chat's own queue, so nobody else waits), and
    they are told once. A token bucket per chat: `burst` at once, then `rate` a second."""

    def __init__(self, rate: float = 2.0, burst: int = 6, clock: Callable[[], float] = time.monotonic, tell_every: float = 60.0) -> None:
        self.rate, self.burst, self.clock, self.tell_every = rate, burst, clock, tell_every
        self._tokens: dict[str, tuple[float, float]] = {}
        self._told: dict[str, float] = {}

    def wait_needed(self, chat: str) -> float:
        """Seconds this chat's next message must wait (0: go now); takes a token when it can go."""
        now = self.clock()
        tokens, since = self._tokens.get(chat, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - since) * self.rate)
        if tokens >= 1.0:
            self._tokens[chat] = (tokens - 1.0, now)
            if len(self._tokens) > 50_000:
                self._forget_idle(now)
            return 0.0
        self._tokens[chat] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def should_tell(self, chat: str) -> bool:
        now = self.clock()
        if now - self._told.get(chat, -1e9) < self.tell_every:
            return False
        self._told[chat] = now
        return True

    def _forget_idle(self, now: float) -> None:
        for chat, (tokens, since) in list(self._tokens.items()):
            if tokens + (now - since) * self.rate >= self.burst:
                del self._tokens[chat]
