"""One user event, handled in one transaction: the event is marked handled, the user's
state moves on and the answers are queued in the outbox, or none of it happens."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel.ext.asyncio.session import AsyncSession

from sqlmodel import col, select, update

from bot import metrics
from bot.engine.events import Deletion, Event, Message, Output
from bot.engine.myanmar import read_as_unicode
from bot.engine.runner import Engine
from bot.inbox import Inbox
from bot.outbox import ADDED_TO, Outbox, Sender
from storage.db import Database
from storage.direct import Prepared
from storage.sqlite_driver import statements_inline
from storage.models import InboxEvent, OutboxMessage, User, utcnow

log = logging.getLogger(__name__)

Receipt = tuple[str, dict[str, Any]]
GroupHandler = Callable[[AsyncSession, Event], Awaitable[None]]
# As many as one getUpdates brings (100): the last event of a busy poll then waits for one
# commit (one sync of the disk) rather than four. Measured with bench.updates on SQLite,
# against 32: p99 280 ms against 310–350 ms, and as many updates a second or more.
BATCH_SIZE = 100
# PostgreSQL's two writers each take a smaller batch, so both have work while a poll's events
# are handled: with 100, one writer took them all (p99 660–760 ms against 530–620 with 32).
POSTGRES_BATCH_SIZE = 32
# PostgreSQL runs transactions side by side (each person's row is locked by whoever moves
# their conversation, and one chat's events reach this class one at a time), so while one
# batch waits for the server's answers another can be written. SQLite has one write lock:
# a second writer would only queue for it.
POSTGRES_WRITERS = 2
# PostgreSQL's answers that say "try the transaction again": a deadlock (two transactions
# locking the same rows in another order) or a serialization failure. Not the person's fault
# nor a bug in a flow: the event is handled again (the channel's retries), not apologised for.
TRANSIENT = frozenset({"40P01", "40001"})
_INBOX = InboxEvent.__table__  # type: ignore[attr-defined]
_CLAIM = Prepared(_INBOX.update().where(_INBOX.c.channel == bindparam("channel_"), _INBOX.c.event_key == bindparam("key_"),
                               _INBOX.c.status == "pending").values(status="done", payload=None, handled_at=bindparam("now_")))
_STORED = Prepared(select(_INBOX.c.id).where(_INBOX.c.channel == bindparam("channel_"), _INBOX.c.event_key == bindparam("key_")))


class EngineFailed(Exception):
    """The engine raised while handling an event; its transaction is rolled back."""


@dataclass
class _Waiting:
    event: Event
    inbox_key: str | None
    receipts: list[Receipt]
    done: asyncio.Future[list[Output]]
    apologise: bool = False


class Conversations:
    """Events of different chats that arrive while a transaction is being written wait for
    the next one and go together: one BEGIN, one COMMIT (one sync of the disk) for all of
    them (group commit). Each event still moves its person's state and queues its answers
    in that transaction, or none of it happens; a batch that fails is handled again one
    event at a time, so one bad event never takes another person's with it."""

    def __init__(self, db: Database, engine: Engine, inbox: Inbox, outbox: Outbox, *, batch_size: int | None = None,
                 writers: int | None = None) -> None:
        self.db = db
        self.engine = engine
        self.inbox = inbox
        self.outbox = outbox
        self.group_handler: GroupHandler | None = None
        self.batch_size = batch_size or (POSTGRES_BATCH_SIZE if db.is_postgres else BATCH_SIZE)
        self.writers = writers if writers is not None else POSTGRES_WRITERS if db.is_postgres else 1
        self._waiting: deque[_Waiting] = deque()
        self._writing: set[asyncio.Task[None]] = set()

    async def handle(self, event: Event, *, inbox_key: str | None = None, receipts: list[Receipt] | None = None) -> list[Output]:
        """Handle an event exactly once per inbox key; return what was queued for the user."""
        started = time.perf_counter()
        read_as_unicode(event)  # before anything is matched or stored, in a person's chat or a partner's group
        log.debug("handling a %s %s event", event.channel, "button" if event.choice else "command" if event.command else "message")
        waiting = _Waiting(event, inbox_key, list(receipts or []), asyncio.get_running_loop().create_future())
        self._waiting.append(waiting)
        if len(self._writing) < self.writers:
            self._writing.add(asyncio.create_task(self._write_batches(), name="conversation-batches"))
        try:
            messages = await asyncio.shield(waiting.done)
        except Exception:
            metrics.UPDATES_HANDLED.labels(event.channel, "error").inc()
            raise
        metrics.UPDATES_HANDLED.labels(event.channel, "done").inc()
        metrics.HANDLING_SECONDS.labels(event.channel).observe(time.perf_counter() - started)
        log.debug("handled: %d answer(s) queued", len(messages))
        return messages

    async def _write_batches(self) -> None:
        """Runs while events wait; every outcome, an error included, reaches the event's caller."""
        try:
            while self._waiting:
                batch = [self._waiting.popleft() for _ in range(min(self.batch_size, len(self._waiting)))]
                try:
                    await self._write(batch)
                except Exception as exc:
                    for waiting in batch:
                        if not waiting.done.done():
                            waiting.done.set_exception(exc)
        finally:
            # At once, not in a done callback: an event queued in between would find no writer.
            self._writing.discard(asyncio.current_task())  # type: ignore[arg-type]

    async def _write(self, batch: list[_Waiting]) -> None:
        if len(batch) == 1:
            return await self._write_one(batch[0])
        # Locks are taken in one order (by chat), so two workers' batches cannot wait on each other.
        batch.sort(key=lambda w: (w.event.channel, w.event.reply_to))
        try:
            results = await self._transaction(batch)
        except Exception:
            log.warning("a batch of %d events failed; handling them one at a time", len(batch), exc_info=log.isEnabledFor(logging.DEBUG))
            for waiting in batch:
                try:
                    await self._write_one(waiting)
                except Exception as exc:
                    waiting.done.set_exception(exc)
            return
        for waiting, messages in zip(batch, results):
            waiting.done.set_result(messages)

    async def _write_one(self, waiting: _Waiting) -> None:
        try:
            messages = (await self._transaction([waiting]))[0]
        except EngineFailed:
            # Everything the engine did is rolled back; the person is told, and the event is
            # done (handling it again would fail the same way).
            waiting.apologise = True
            messages = (await self._transaction([waiting]))[0]
        waiting.done.set_result(messages)

    async def _transaction(self, batch: list[_Waiting]) -> list[list[Output]]:
        results: list[list[Output]] = []
        written: list[tuple[Sender | None, list[OutboxMessage]]] = []
        async with self.db.transaction() as session:
            connection = await session.connection()
            with statements_inline():  # the write lock is held; each statement is small and indexed
                for waiting in batch:
                    results.append(await self._handle_in(session, connection, waiting, written))
            queued_for_claim = bool(session.info.get(ADDED_TO)) or any(sender is None for sender, _ in written)
        # Committed: the answers may go. Those handed over are sent at once; anything else
        # written is found by the sender's claim.
        for sender, rows in written:
            if sender is not None:
                sender.take(rows)
        if queued_for_claim:
            self.outbox.notify()
        return results

    async def _handle_in(self, session: AsyncSession, connection: AsyncConnection, waiting: _Waiting,
                         written: list[tuple[Sender | None, list[OutboxMessage]]]) -> list[Output]:
        event, inbox_key = waiting.event, waiting.inbox_key
        rows: list[tuple[str, dict[str, Any]]] = list(waiting.receipts)
        messages: list[Output] = []
        if inbox_key is not None and not await self._claim(connection, event.channel, inbox_key):
            return []
        if event.presence:
            await self._presence(session, event)
        elif event.chat and event.chat != event.address:
            if self.group_handler is not None:
                await self.group_handler(session, event)
        elif waiting.apologise:
            messages = [await self._apology(session, event)]
        else:
            try:
                messages = await self.engine.handle(session, event)
            except Exception as exc:
                if isinstance(exc, DBAPIError) and getattr(exc.orig, "sqlstate", None) in TRANSIENT:
                    raise  # the whole transaction is tried again, not apologised for
                log.exception("engine failed on %s event %s", event.channel, inbox_key or "-")
                raise EngineFailed from exc
        for output in messages:
            rows.append(("delete", {"message_id": output.ref}) if isinstance(output, Deletion) else ("message", output.to_payload()))
        if rows:
            sender = await self._sender_for(session, connection, event)
            receipts: list[Any] = []
            if sender is not None and waiting.receipts:  # handed straight over, unstored, sent beside the answers
                receipts = [sender.receipt(event.reply_to, kind, payload) for kind, payload in waiting.receipts]
                rows = rows[len(waiting.receipts):]
            written.append((sender, receipts + await Outbox.add_many(session, event.channel, event.reply_to, rows, connection=connection,
                                                                     leased_to=sender)))
        return messages

    async def _sender_for(self, session: AsyncSession, connection: AsyncConnection, event: Event) -> Sender | None:
        """The sender to hand this person's answers to straight after the commit, if there is
        one here and nothing of theirs is still to be sent (by any process) that the answers
        could overtake; otherwise they are queued for the sender's claim, behind it."""
        sender = self.outbox.takers.get(event.channel)
        chat = event.reply_to
        if sender is None or (event.chat and event.chat != event.address) or (event.channel, chat) in session.info.get(ADDED_TO, ()):
            return None
        if await Outbox.open_rows(connection, event.channel, chat) == sender.holds(chat):
            return sender
        sender.waits_behind(chat)
        return None

    @staticmethod
    async def _claim(connection: AsyncConnection, channel: str, key: str) -> bool:
        """Mark the stored event handled, in the transaction that handles it: one statement,
        which on PostgreSQL also locks the row, so a resumed and a live handler in two
        processes cannot both act on it (the second waits, then finds it done). An event
        with no stored row (handled directly, as the terminal chat does) goes ahead."""
        if (await _CLAIM.run(connection, {"channel_": channel, "key_": key, "now_": utcnow()})).rowcount:
            return True
        return not (await _STORED.run(connection, {"channel_": channel, "key_": key})).rows

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
        user = await self.engine.load_user(session, event.channel, event.address)
        lang = self.engine.language_for(user, event.client_lang)
        return Message(self.engine.texts.get(lang, "common.error"))
