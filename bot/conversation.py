"""One user event, handled in one transaction: the event is marked handled, the user's
state moves on and the answers are queued in the outbox, or none of it happens."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from sqlmodel import col, select, update

from bot import metrics
from bot.engine.events import Deletion, Event, Message, Output
from bot.engine.myanmar import read_as_unicode
from bot.engine.runner import Engine
from bot.inbox import Inbox
from bot.outbox import Outbox
from storage.db import Database
from storage.models import InboxEvent, OutboxMessage, User, utcnow

log = logging.getLogger(__name__)

Receipt = tuple[str, dict[str, Any]]
GroupHandler = Callable[[AsyncSession, Event], Awaitable[None]]


class EngineFailed(Exception):
    """The engine raised while handling an event; its transaction is rolled back."""


class Conversations:
    def __init__(self, db: Database, engine: Engine, inbox: Inbox, outbox: Outbox) -> None:
        self.db = db
        self.engine = engine
        self.inbox = inbox
        self.outbox = outbox
        self.group_handler: GroupHandler | None = None

    async def handle(self, event: Event, *, inbox_key: str | None = None, receipts: list[Receipt] | None = None) -> list[Output]:
        """Handle an event exactly once per inbox key; return what was queued for the user."""
        started = time.perf_counter()
        read_as_unicode(event)  # before anything is matched or stored, in a person's chat or a partner's group
        log.debug("handling a %s %s event", event.channel, "button" if event.choice else "command" if event.command else "message")
        try:
            messages = await self._handle(event, inbox_key, receipts)
        except Exception:
            metrics.UPDATES_HANDLED.labels(event.channel, "error").inc()
            raise
        metrics.UPDATES_HANDLED.labels(event.channel, "done").inc()
        metrics.HANDLING_SECONDS.labels(event.channel).observe(time.perf_counter() - started)
        log.debug("handled: %d answer(s) queued", len(messages))
        return messages

    async def _handle(self, event: Event, inbox_key: str | None, receipts: list[Receipt] | None) -> list[Output]:
        try:
            return await self._handle_once(event, inbox_key, receipts, apologise=False)
        except EngineFailed:
            # Everything the engine did is rolled back; the person is told, and the event is
            # done (handling it again would fail the same way).
            return await self._handle_once(event, inbox_key, receipts, apologise=True)

    async def _handle_once(self, event: Event, inbox_key: str | None, receipts: list[Receipt] | None, *, apologise: bool) -> list[Output]:
        rows: list[tuple[str, dict[str, Any]]] = list(receipts or [])
        messages: list[Output] = []
        async with self.db.transaction() as session:
            if inbox_key is not None and not await self._claim(session, event.channel, inbox_key):
                return []
            if event.presence:
                await self._presence(session, event)
            elif event.chat and event.chat != event.address:
                if self.group_handler is not None:
                    await self.group_handler(session, event)
            elif apologise:
                messages = [await self._apology(session, event)]
            else:
                try:
                    messages = await self.engine.handle(session, event)
                except Exception as exc:
                    log.exception("engine failed on %s event %s", event.channel, inbox_key or "-")
                    raise EngineFailed from exc
            for output in messages:
                rows.append(("delete", {"message_id": output.ref}) if isinstance(output, Deletion) else ("message", output.to_payload()))
            await Outbox.add_many(session, event.channel, event.reply_to, rows)
        self.outbox.notify()
        return messages

    @staticmethod
    async def _claim(session: AsyncSession, channel: str, key: str) -> bool:
        """Mark the stored event handled, in the transaction that handles it: one statement,
        which on PostgreSQL also locks the row, so a resumed and a live handler in two
        processes cannot both act on it (the second waits, then finds it done). An event
        with no stored row (handled directly, as the terminal chat does) goes ahead."""
        done = await session.exec(update(InboxEvent).where(  # type: ignore[call-overload]
            col(InboxEvent.channel) == channel, col(InboxEvent.event_key) == key, col(InboxEvent.status) == "pending",
        ).values(status="done", payload=None, handled_at=utcnow()))
        if done.rowcount:
            return True
        stored = (await session.exec(select(InboxEvent.id).where(InboxEvent.channel == channel, InboxEvent.event_key == key))).first()
        return stored is None

    async def _presence(self, session: AsyncSession, event: Event) -> None:
        """Someone blocked the bot (or came back). Nothing can be answered; they are marked so
        that campaigns skip them, and what was queued for them from a campaign is dropped now
        rather than refused one by one. Replies and partner messages stay: they fail once,
        recorded, if the person is still away."""
        user = (await session.exec(select(User).where(User.channel == event.channel, User.address == event.address))).first()
        if user is None:
            return
        user.reachable = event.presence == "back"
        session.add(user)
        if event.presence == "left":
            await session.exec(update(OutboxMessage).where(  # type: ignore[call-overload]
                col(OutboxMessage.channel) == event.channel, col(OutboxMessage.chat) == event.address,
                col(OutboxMessage.status).in_(["pending", "held"]), col(OutboxMessage.batch).like("run:%")).values(status="unreachable"))

    async def _apology(self, session: Any, event: Event) -> Message:
        user, _ = await self.engine.load_user(session, event.channel, event.address)
        lang = self.engine.language_for(user, event.client_lang)
        return Message(self.engine.texts.get(lang, "common.error"))
