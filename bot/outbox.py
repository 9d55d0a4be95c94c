"""Everything the bot sends leaves through here.

Rows are written in the same transaction as the change that caused them, then drained by
one sender per channel. A row is claimed with a lease (and `FOR UPDATE SKIP LOCKED` on
PostgreSQL), so two processes never send the same row, and a row whose sender died is sent
again once the lease has run out.

The sender knows the platform's limits: a global rate that no one-second window exceeds;
at most one bulk message a second per chat; a 429 pauses all sending for its retry_after;
a 403 marks the user unreachable. It works two lanes: replies (and partner deliveries),
which take the rate first and never wait behind broadcast traffic, and bulk (broadcasts).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections import OrderedDict, defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, text
from sqlmodel import col, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel.ext.asyncio.session import AsyncSession

from bot import metrics
from storage import jsontext
from storage.db import Database, upsert
from storage.direct import Prepared
from storage.models import OutboxMessage, SendBudget, User, utcnow
from storage.sqlite_driver import statements_inline

log = logging.getLogger(__name__)

PRIORITY_REPLY = 0
PRIORITY_PARTNER = 10
PRIORITY_BROADCAST = 20
LEASE = timedelta(seconds=60)
MAX_ATTEMPTS = 8
def lane(priority: int) -> str:
    """Which of the three kinds of sending a row belongs to, for the metrics."""
    return "broadcast" if priority >= PRIORITY_BROADCAST else "partner" if priority >= PRIORITY_PARTNER else "reply"


# What the platform's message rate does not count: answering a button press, removing a
# keyboard, deleting or editing a message, setting a command menu. Only new messages wait for the limiter.
UNMETERED = frozenset({"ack", "clear_buttons", "delete", "commands", "edit"})
REPLIES_PER_CHAT = 3  # places one chat may take in a claim of the reply lane
REPLY_CLAIM = 50
_TABLE = OutboxMessage.__table__  # type: ignore[attr-defined]
# Not sent yet: pending (due, waiting, or handed straight to a sender and leased to it) or
# sending (claimed). A sender holds a row of either kind while its claim token is the sender's.
UNSENT = text("status IN ('pending', 'sending')")
# Core executemany, built once: the ORM's bulk update cost a tenth of the CPU at 1000/s. A
# compare-and-set on the claim: a row cancelled, stopped or taken over by another claim since
# keeps what happened to it.
_HELD = (_TABLE.c.id == bindparam("row_id")) & UNSENT & (_TABLE.c.claim_token == bindparam("token"))
_SETTLE = Prepared(_TABLE.update().where(_HELD).values(status=bindparam("outcome"), result_ref=bindparam("ref"), sent_at=bindparam("now_"),
                                                       payload=None, claim_token=None))
_ROW_COLUMNS = ["channel", "chat", "kind", "payload", "priority", "status", "attempts", "not_before", "created_at", "uncertain"]
_ADD_ROWS = Prepared(_TABLE.insert(), column_keys=_ROW_COLUMNS, many_rows=True)
# SQLAlchemy writes a RETURNING insert whose ids must come back in the rows' order one row
# a statement on SQLite (it has no sentinel to sort by): three statements for a reply of three
# messages. SQLite numbers the rows of one INSERT in their order, so there the ids are sorted.
_ADD_LEASED = _TABLE.insert().returning(_TABLE.c.id, sort_by_parameter_order=True)
_ADD_LEASED_SQLITE = Prepared(_TABLE.insert().returning(_TABLE.c.id), column_keys=[*_ROW_COLUMNS, "claim_token"], many_rows=True)
# Walks ix_outbox_claim over the replies and partner messages not yet sent (a few, however
# many broadcast rows are queued), then picks the chat's.
_OPEN_ROWS = Prepared(select(func.count()).select_from(_TABLE).where(_TABLE.c.channel == bindparam("channel_"), UNSENT,
                                                          _TABLE.c.priority < PRIORITY_BROADCAST, _TABLE.c.chat == bindparam("chat_")))
ADDED_TO = "outbox_chats"  # session.info: the (channel, chat) pairs a transaction queued rows for through `add`


@dataclass(slots=True)
class WrittenRow:
    """An outbox row as `add_many` wrote it, leased to a sender and handed to it after the
    commit: the columns the sender and the channels read, without an ORM instance (building
    those was a twentieth of the bot's busy time under the update benchmark). Never added to
    a session: the sender records its outcome by id and claim token, as for a claimed row."""

    id: int | None  # None: a receipt never stored (`Sender.receipt`)
    channel: str
    chat: str
    kind: str
    payload: str | None
    priority: int
    status: str
    attempts: int
    not_before: datetime
    created_at: datetime
    uncertain: bool
    claim_token: str | None = None
    batch: str | None = None
    sent_at: datetime | None = None
    result_ref: str | None = None


class DeliveryError(Exception):
    """Raised by a channel's deliver function; says what to do with the row."""


class RetryLater(DeliveryError):
    """Try the row again after `after` seconds. `waiting=True`: the row waits for something
    else (an earlier row it refers to), which is not a failed attempt."""

    def __init__(self, after: float, *, pause_all: bool = False, waiting: bool = False, uncertain: bool = False) -> None:
        super().__init__(f"retry after {after}s")
        self.after = after
        self.pause_all = pause_all
        self.waiting = waiting
        self.uncertain = uncertain  # no answer came: the platform may have accepted it


class RecipientGone(DeliveryError):
    """The user blocked the bot or deleted the chat: do not try them again."""


class Rejected(DeliveryError):
    """The platform refused this row for good (bad request)."""


class ChatMoved(DeliveryError):
    """The chat has a new id (a group upgraded to a supergroup): send there instead."""

    def __init__(self, new_chat: str) -> None:
        super().__init__("chat moved")
        self.new_chat = new_chat


class CannotContinue(Exception):
    """Nothing can be sent by anyone until a person acts (a revoked token, another instance
    polling the same bot): the bot stops loudly rather than keep failing quietly."""


class NotSentYet(Exception):
    """A row refers to an earlier row (e.g. a photo replying to a case card) that has not
    been sent yet."""


Deliver = Callable[[OutboxMessage, dict[str, Any]], Awaitable[str | None]]


@dataclass
class Outcome:
    row: OutboxMessage
    status: str  # sent, failed, unreachable, retry, later, moved
    ref: str | None = None
    after: float = 0.0
    chat: str | None = None  # moved: the chat's new id (a group that became a supergroup)
    uncertain: bool = False  # retry: the attempt may have arrived all the same


class Outbox:
    def __init__(self, db: Database, *, lease: timedelta = LEASE) -> None:
        self.db = db
        self.lease = lease
        self.wakeup = asyncio.Event()
        self._sent_refs: OrderedDict[int, str] = OrderedDict()
        # The sender of each channel that takes a reply straight from the transaction that
        # wrote it (Sender.take), while it runs in this process.
        self.takers: dict[str, Sender] = {}

    @staticmethod
    def encode(payload: dict[str, Any]) -> str:
        return jsontext.dumps(payload)

    @staticmethod
    def add(session: AsyncSession, channel: str, chat: str, kind: str, payload: dict[str, Any], priority: int = PRIORITY_REPLY,
            *, batch: str | None = None, not_before: Any = None) -> OutboxMessage:
        row = OutboxMessage(channel=channel, chat=chat, kind=kind, payload=Outbox.encode(payload), priority=priority, batch=batch)
        if not_before is not None:
            row.not_before = not_before
        session.add(row)
        session.info.setdefault(ADDED_TO, set()).add((channel, chat))
        return row

    @staticmethod
    async def add_many(session: AsyncSession, channel: str, chat: str, rows: list[tuple[str, dict[str, Any]]],
                       priority: int = PRIORITY_REPLY, *, connection: AsyncConnection | None = None,
                       leased_to: Sender | None = None) -> list[OutboxMessage]:
        """An update's answers as one statement on SQLAlchemy Core (the ORM's bulk insert cost
        a millisecond an update in the profile of the update path). With `leased_to`, the rows
        are written already leased to that sender and returned, to be handed to it once
        committed (`Sender.take`): no claim has to find them."""
        if not rows:
            return []
        now = utcnow()
        connection = connection or await session.connection()
        values = [dict(channel=channel, chat=chat, kind=kind, payload=Outbox.encode(payload), priority=priority, status="pending",
                       attempts=0, not_before=now, created_at=now, uncertain=False) for kind, payload in rows]
        if leased_to is None:
            await _ADD_ROWS.run(connection, values)
            return []
        until = now + leased_to.outbox.lease
        for value in values:
            # Marked as being sent, as a claim marks what it takes: if this process dies
            # mid-send, the next claim knows the row may have arrived.
            value.update(status="sending", attempts=1, not_before=until, claim_token=leased_to.token)
        if connection.dialect.name == "sqlite":
            ids = sorted((await _ADD_LEASED_SQLITE.run(connection, values)).scalars())
        else:
            ids = list((await connection.execute(_ADD_LEASED, values)).scalars().all())
        return [WrittenRow(id=row_id, **value) for row_id, value in zip(ids, values)]  # type: ignore[misc]

    @staticmethod
    async def open_rows(connection: AsyncConnection, channel: str, chat: str) -> int:
        """How many replies and partner messages for this chat are still to be sent, by any
        process (broadcasts wait behind replies anyway)."""
        return int((await _OPEN_ROWS.run(connection, {"channel_": channel, "chat_": chat})).rows[0][0])

    def remember_sent(self, outbox_id: int, ref: str | None) -> None:
        """Outcomes are recorded in groups, so a row sent a moment ago may not show as sent
        in the database yet; the next row of the same chat may already need its id."""
        if ref is None:
            return
        self._sent_refs[outbox_id] = ref
        while len(self._sent_refs) > 10_000:
            self._sent_refs.popitem(last=False)

    async def result_ref(self, outbox_id: int) -> str | None:
        """The platform id of what an earlier row sent (e.g. the card a photo replies to);
        None if it was never sent. Raises NotSentYet while it is still to be sent."""
        if outbox_id in self._sent_refs:
            return self._sent_refs[outbox_id]
        async with self.db.session() as session:
            row = await session.get(OutboxMessage, outbox_id)
            if row is not None and row.status in ("pending", "sending"):
                raise NotSentYet(outbox_id)
            return row.result_ref if row else None

    def notify(self) -> None:
        self.wakeup.set()

    async def claim(self, channel: str, limit: int = 50, *, min_priority: int = 0, max_priority: int = 1_000,
                    per_chat: int | None = None) -> list[OutboxMessage]:
        """Lease up to `limit` due rows, most urgent first: rows whose sender died (lease
        run out) before new ones. Each query walks ix_outbox_claim in order and stops at
        its limit, so its cost does not grow with the backlog. With `per_chat`, no chat
        takes more than that many places in one claim: one person's backlog of replies never
        holds back another person's (their next rows come in the next claim, in order)."""
        now = utcnow()
        async with self.db.transaction() as session:
            rows: list[OutboxMessage] = []
            taken: defaultdict[str, int] = defaultdict(int)
            waiting: dict[str, int] = {}
            if per_chat is not None and self.db.is_postgres:
                # Workers claim in-order lanes one at a time: otherwise one could skip a row
                # another is claiming (SKIP LOCKED) and take the same chat's next row, and two
                # replies to one person would be sent at once, in either order.
                await session.exec(text("SELECT pg_advisory_xact_lock(727002)"))  # type: ignore[call-overload]
                now = utcnow()
            if per_chat is not None:
                # In order within a chat: nothing overtakes a row of its chat that waits out a
                # 429 or is being sent. Few rows are in that state, and the claim index finds them.
                for status in ("pending", "sending"):
                    for chat, first in await session.exec(  # type: ignore[call-overload]
                            select(OutboxMessage.chat, func.min(OutboxMessage.id)).where(
                                OutboxMessage.channel == channel, OutboxMessage.status == status, col(OutboxMessage.not_before) > now,
                                col(OutboxMessage.priority) >= min_priority, col(OutboxMessage.priority) <= max_priority)
                            .group_by(OutboxMessage.chat)):
                        waiting[chat] = min(first, waiting.get(chat, first))
            for status in ("sending", "pending"):
                due = (OutboxMessage.channel == channel, OutboxMessage.status == status, col(OutboxMessage.not_before) <= now,
                       col(OutboxMessage.priority) >= min_priority, col(OutboxMessage.priority) <= max_priority)
                query = select(OutboxMessage).where(*due)
                if per_chat is not None:  # the first few rows of each chat, by a window over the due rows
                    ranked = (select(OutboxMessage.id, func.row_number().over(
                        partition_by=OutboxMessage.chat, order_by=(col(OutboxMessage.priority), col(OutboxMessage.id))).label("place"))
                        .where(*due).subquery())
                    query = select(OutboxMessage).where(col(OutboxMessage.id).in_(select(ranked.c.id).where(ranked.c.place <= per_chat)))
                query = query.order_by(col(OutboxMessage.priority), col(OutboxMessage.id)).limit(limit - len(rows))
                if self.db.is_postgres:
                    query = query.with_for_update(skip_locked=True)
                for row in await session.exec(query):
                    if row.chat in waiting and waiting[row.chat] < row.id:  # type: ignore[operator]
                        continue
                    if per_chat is None or taken[row.chat] < per_chat:
                        taken[row.chat] += 1
                        rows.append(row)
                if len(rows) >= limit:
                    break
            if rows:
                token = secrets.token_hex(8)
                # A row still marked sending was held by a sender that died mid-send: it may
                # have arrived, so its repeat says so (`repeat_note`).
                orphans = [r.id for r in rows if r.status == "sending"]
                if orphans:
                    await session.exec(update(OutboxMessage).where(col(OutboxMessage.id).in_(orphans))  # type: ignore[call-overload]
                                       .values(uncertain=True).execution_options(synchronize_session=False))
                await session.exec(
                    update(OutboxMessage).where(col(OutboxMessage.id).in_([r.id for r in rows]))  # type: ignore[call-overload]
                    .values(status="sending", attempts=OutboxMessage.attempts + 1, not_before=now + self.lease, claim_token=token)
                    .execution_options(synchronize_session=False)
                )
                for row in rows:
                    session.expunge(row)  # what the claim wrote is mirrored here; nothing is flushed twice
                    row.uncertain = row.uncertain or row.status == "sending"
                    row.attempts, row.status, row.claim_token = row.attempts + 1, "sending", token
            return rows

    async def renew(self, rows: list[OutboxMessage]) -> None:
        """Keep holding rows whose send (or a 429 pause) outlasts part of the lease, so that
        no other sender takes them over while this one still may deliver them."""
        if not rows:
            return
        until = utcnow() + self.lease
        async with self.db.transaction() as session:
            for token in {r.claim_token for r in rows}:
                await session.exec(
                    update(OutboxMessage)  # type: ignore[call-overload]
                    .where(col(OutboxMessage.id).in_([r.id for r in rows if r.claim_token == token]),
                           UNSENT, OutboxMessage.claim_token == token)
                    .values(not_before=until).execution_options(synchronize_session=False)
                )

    async def settle(self, outcomes: list[Outcome]) -> None:
        """Record what happened to a batch of rows, in one transaction."""
        if not outcomes:
            return
        now = utcnow()
        async with self.db.transaction() as session:
            with statements_inline():  # rows found by their id, under the write lock
                connection = await session.connection()
                done = [{"row_id": o.row.id, "token": o.row.claim_token, "outcome": o.status, "ref": o.ref, "now_": now}
                        for o in outcomes if o.status in ("sent", "failed", "unreachable")]
                if done:
                    await _SETTLE.run(connection, done)
                for o in outcomes:
                    if o.status in ("retry", "later", "moved"):
                        values: dict[str, Any] = {"status": "pending", "not_before": now + timedelta(seconds=o.after), "claim_token": None,
                                                  "attempts": _TABLE.c.attempts - (0 if o.status == "retry" else 1)}
                        if o.status == "moved" and o.chat:
                            values["chat"] = o.chat
                        if o.uncertain:
                            values["uncertain"] = True
                        await connection.execute(_TABLE.update().where(_HELD).values(**values), {"row_id": o.row.id, "token": o.row.claim_token})
                gone = {(o.row.channel, o.row.chat) for o in outcomes if o.status == "unreachable"}
                for channel, chat in gone:
                    await session.exec(
                        update(User).where(col(User.channel) == channel, col(User.address) == chat).values(reachable=False)  # type: ignore[call-overload]
                    )

    async def counts(self, batch: str | None = None) -> dict[str, int]:
        async with self.db.session() as session:
            query = select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status)  # type: ignore[call-overload]
            if batch is not None:
                query = query.where(OutboxMessage.batch == batch)
            return {status: n for status, n in await session.exec(query)}


async def _all_or_none(coroutines: list[Any]) -> None:
    """Run concurrently; when cancelled, cancel the rest and wait until each has really
    stopped (a database call being cancelled still has to close its connection)."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class RateLimiter:
    """At most `rate` requests reach the platform in any one-second window.

    A request reaches the server somewhere between being granted here and being answered,
    so it counts against the window from its grant until one second after its answer: only
    then can it not share the server's window with a new one. Counting from the grant alone
    let network jitter put a few requests too many into one server-side second (429s, each
    pausing everything); this costs about one round trip per second of throughput instead.

    Urgent callers (replies) go before bulk ones; a 429 pauses everyone until its
    retry_after has passed. Bulk sends are also paced evenly through the second (with
    `smoothing` seconds of slack): sent in one burst at the start of each second, they
    would fill the window and leave a reply arriving just after waiting most of a second.
    Waiters queue on a lock per lane, so only one of each lane polls the clock however
    many sends are waiting.
    """

    def __init__(self, rate: float, *, clock: Callable[[], float] = time.monotonic, smoothing: float = 0.05,
                 shared: SharedBudget | None = None) -> None:
        self.rate = max(1, int(rate))
        self.shared = shared
        self.clock = clock
        self.answered: deque[float] = deque()  # when each send of the last second was answered, oldest first
        self.in_flight = 0
        self.paused_until = 0.0
        self.urgent_waiting = 0
        self.smoothing = smoothing
        self.next_bulk = 0.0
        self._lanes = {True: asyncio.Lock(), False: asyncio.Lock()}

    def pause(self, seconds: float) -> None:
        self.paused_until = max(self.paused_until, self.clock() + seconds)

    def _wait_needed(self) -> float:
        now = self.clock()
        if self.paused_until > now:
            return self.paused_until - now
        while self.answered and self.answered[0] <= now - 1.0:
            self.answered.popleft()
        if self.in_flight + len(self.answered) < self.rate:
            return 0.0
        return self.answered[0] + 1.0 - now if self.answered else 0.002

    async def acquire(self, *, urgent: bool = False, stopping: Callable[[], bool] = lambda: False) -> list[bool] | None:
        """A permit to send now (give it back with `release` once answered), or None if
        the sender is stopping."""
        if urgent:
            self.urgent_waiting += 1
        try:
            async with self._lanes[urgent]:
                while not stopping():
                    wait = self._wait_needed()
                    if not urgent:
                        wait = max(wait, self.next_bulk - self.smoothing - self.clock())
                    if wait <= 0 and (urgent or not self.urgent_waiting) and self.shared is not None:
                        wait = await self.shared.take()  # the other workers' sends count too
                    if wait <= 0 and (urgent or not self.urgent_waiting):
                        permit = [True]
                        self.in_flight += 1
                        if not urgent:
                            self.next_bulk = max(self.clock() - self.smoothing, self.next_bulk) + 1.0 / self.rate
                        return permit
                    await asyncio.sleep(min(max(wait, 0.001), 0.05))
                return None
        finally:
            if urgent:
                self.urgent_waiting -= 1

    def release(self, permit: list[bool] | None) -> None:
        if permit is not None and permit[0]:
            permit[0] = False
            self.in_flight -= 1
            self.answered.append(self.clock())


class SharedBudget:
    """One bot's send rate, shared by all its worker processes: Telegram limits the bot, not
    each process. Each second of the clock has a row in `send_budget`; a worker takes a few
    permits at a time (one statement), so that between them the workers are never granted more
    than `rate` in one second. Permits a worker took and did not use in their second are lost,
    so several workers lightly loaded send a little below the rate, never above it."""

    def __init__(self, db: Database, channel: str, rate: float, *, chunk: int | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.db, self.channel, self.rate, self.clock = db, channel, max(1, int(rate)), clock
        self.chunk = chunk or max(1, self.rate // 10)
        self.second: int | None = None
        self.left = 0

    async def take(self) -> float:
        """0.0 with a permit taken, else how long to wait for the next second."""
        now = self.clock()
        second = int(now)
        if self.second == second and self.left > 0:
            self.left -= 1
            return 0.0
        granted = await self._reserve(second)
        self.second, self.left = second, granted
        if granted:
            self.left -= 1
            return 0.0
        return second + 1 - now

    async def _reserve(self, second: int) -> int:
        table = SendBudget.__table__  # type: ignore[attr-defined]
        smaller = func.least if self.db.is_postgres else func.min
        grant = smaller(self.chunk, self.rate - table.c.used)
        async with self.db.transaction() as session:
            await session.exec(upsert(table, postgres=self.db.is_postgres).values(channel=self.channel, second=second, used=0, last_grant=0)  # type: ignore[call-overload]
                               .on_conflict_do_nothing(index_elements=["channel", "second"]))
            granted = (await session.exec(update(table).where(  # type: ignore[call-overload]
                table.c.channel == self.channel, table.c.second == second, table.c.used < self.rate,
            ).values(used=table.c.used + grant, last_grant=grant).returning(table.c.last_grant))).scalar()
            if second % 60 == 0:
                await session.exec(delete(table).where(table.c.channel == self.channel, table.c.second < second - 60))  # type: ignore[call-overload]
        return int(granted or 0)


class Sender:
    """Drains one channel's rows: a reply lane and a bulk lane sharing one rate limit."""

    def __init__(self, outbox: Outbox, channel: str, deliver: Deliver, *, idle_poll: float = 2.0,
                 max_attempts: int | None = MAX_ATTEMPTS, max_age: timedelta | None = None,
                 limiter: RateLimiter | None = None, concurrency: int = 8, bulk_batch: int = 200,
                 per_chat_interval: float = 1.0, takes_replies: bool = False) -> None:
        self.outbox = outbox
        self.channel = channel
        self.deliver = deliver
        self.idle_poll = idle_poll
        self.max_attempts = max_attempts
        self.max_age = max_age
        self.limiter = limiter
        self.concurrency = concurrency
        self.bulk_batch = bulk_batch
        self.per_chat_interval = per_chat_interval
        self.last_bulk: OrderedDict[str, float] = OrderedDict()
        self.bulk_wakeup = asyncio.Event()
        self._unsettled: list[Outcome] = []
        self._waiters: list[asyncio.Future[None]] = []  # callers waiting for the next recording of outcomes
        self._recording: asyncio.Future[None] | None = None  # the recording being written
        self._recorder: asyncio.Task[None] | None = None
        self._stopping = False
        self._held: dict[int, OutboxMessage] = {}
        self._stopped = asyncio.Event()
        self.takes_replies = takes_replies
        self.token = secrets.token_hex(8)  # rows handed straight to this sender are leased with it
        self._chats: dict[str, deque[OutboxMessage]] = {}  # reply-lane rows being sent, in order, per chat
        self._set_back: dict[str, float] = {}  # chats whose rows wait (a 429, an earlier row): until when
        self._chat_tasks: set[asyncio.Task[Any]] = set()  # each chat's sending, and receipts on their way
        self._gate = asyncio.Semaphore(concurrency)
        # Receipts in flight at once: never more than half the connections, so that a flood of
        # button presses leaves room for the answers themselves.
        self._receipts = asyncio.Semaphore(max(1, concurrency // 2))
        self._open: dict[str, int] = {}  # rows taken per chat whose outcome is not yet recorded
        self._taken: set[int] = set()
        self._behind: set[str] = set()

    async def stop(self, running: asyncio.Task[None], grace: float = 5.0) -> None:
        """Let the lanes finish what they hold (recording every outcome), then end."""
        self._stopping = True
        self.outbox.wakeup.set()
        self.bulk_wakeup.set()
        try:
            await asyncio.wait_for(asyncio.shield(running), grace)
        except TimeoutError:
            log.warning("sender did not stop within %.0fs; cancelling", grace)
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
        await self._finish_chats(grace)
        try:
            await asyncio.wait_for(self._record([]), grace)
        except TimeoutError:
            log.warning("send outcomes not recorded within %.0fs; those rows are sent again at the next start", grace)

    def holds(self, chat: str) -> int:
        """How many of this chat's rows this sender holds (queued, being sent, or sent with
        the outcome not yet recorded). If that is all the chat has still to be sent, a new
        row may queue behind them here."""
        return self._open.get(chat, 0)

    def receipt(self, chat: str, kind: str, payload: dict[str, Any]) -> WrittenRow:
        """What the platform wants done in return for an update (answering a button press,
        removing the keyboard pressed), sent beside the answers and never stored: it
        needs no redelivery (Telegram refuses a stale answer to a button press; a keyboard
        left in place is handled as a stale button), and storing, leasing and recording
        those two rows was a tenth of a button press's cost in the update benchmark."""
        now = utcnow()
        return WrittenRow(id=None, channel=self.channel, chat=chat, kind=kind, payload=Outbox.encode(payload), priority=PRIORITY_REPLY,
                          status="sending", attempts=1, not_before=now, created_at=now, uncertain=False, claim_token=self.token)

    def waits_behind(self, chat: str) -> None:
        """A row of this chat was queued for the claim, behind rows held here: the claim is
        woken once those are recorded."""
        self._behind.add(chat)

    def take(self, rows: list[OutboxMessage], *, claimed: bool = False) -> None:
        """Send rows of one chat, already leased to this sender, after what it holds of that
        chat. Rows handed over while earlier rows of their chat are set back (a 429, a page
        not open) go back to the outbox to wait behind them; rows found by a claim are due,
        which the claim decided from the database."""
        if not rows:
            return
        chat = rows[0].chat
        stored = [row for row in rows if row.id is not None]
        for row in stored:
            self._held[row.id] = row  # type: ignore[index]
            self._taken.add(row.id)  # type: ignore[arg-type]
        if stored:
            self._open[chat] = self._open.get(chat, 0) + len(stored)
        until = None if claimed else self._set_back.get(chat)
        if until is not None and (until > time.monotonic() or self._stopping):
            self._record_soon([Outcome(row, "later", after=max(0.0, until - time.monotonic())) for row in rows])
            return
        self._set_back.pop(chat, None)
        queue = self._chats.get(chat)
        if queue is not None:
            queue.extend(rows)
            return
        self._chats[chat] = deque(rows)
        task = asyncio.create_task(self._send_chat(chat), name=f"{self.channel}-chat-replies")
        self._chat_tasks.add(task)
        task.add_done_callback(self._task_ended)

    def _task_ended(self, task: asyncio.Task[Any]) -> None:
        self._chat_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # Neither a chat's task nor the recorder lets an error out; one that does is a bug,
            # said loudly. The rows it held stay leased until the lease runs out, then are sent again.
            log.error("%s failed: %s", task.get_name(), type(task.exception()).__name__, exc_info=task.exception())

    async def _send_chat(self, chat: str) -> None:
        queue = self._chats[chat]
        try:
            async with self._gate:
                while queue:
                    row = queue.popleft()
                    if row.id is None:
                        # An unstored receipt (a press answered, its keyboard removed) goes beside
                        # the answer, not ahead of it: two round trips fewer before the person reads
                        # it. Tried once; the chat's messages keep their order.
                        receipt = asyncio.create_task(self._send_receipt(row), name=f"{self.channel}-receipt")
                        self._chat_tasks.add(receipt)  # type: ignore[arg-type]
                        receipt.add_done_callback(self._task_ended)  # type: ignore[arg-type]
                        continue
                    outcome = await self._send(row)
                    if outcome.status in ("retry", "later"):
                        self._set_back[chat] = time.monotonic() + outcome.after
                        rest = list(queue)
                        queue.clear()
                        self._record_soon([outcome] + [Outcome(r, "later", after=outcome.after) for r in rest])
                        break
                    self._record_soon([outcome])
        finally:
            leftover = list(queue)
            queue.clear()
            del self._chats[chat]
            if leftover:  # taken after the set-back above: they wait too
                self._record_soon([Outcome(r, "later", after=max(0.0, self._set_back.get(chat, 0.0) - time.monotonic())) for r in leftover])
            if len(self._set_back) > 10_000:
                now = time.monotonic()
                self._set_back = {c: t for c, t in self._set_back.items() if t > now}

    async def _send_receipt(self, row: OutboxMessage) -> Outcome:
        async with self._receipts:
            return await self._send(row)

    async def _finish_chats(self, grace: float) -> None:
        if not self._chat_tasks:
            return
        _, late = await asyncio.wait(list(self._chat_tasks), timeout=grace)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)

    async def drain(self) -> int:
        """Send everything due now, replies first; return how many rows were handled."""
        handled = 0
        while True:
            rows = await self.outbox.claim(self.channel, self.bulk_batch)
            if not rows:
                return handled
            await self._send_all(rows)
            handled += len(rows)

    async def run(self) -> None:
        self._stopped.clear()
        if self.takes_replies:
            self.outbox.takers[self.channel] = self
        try:
            await _all_or_none([self._lanes(), self._keep_leases()])
        finally:
            if self.outbox.takers.get(self.channel) is self:
                del self.outbox.takers[self.channel]
            self._stopped.set()

    async def _lanes(self) -> None:
        try:
            await _all_or_none([self._reply_lane(), self._bulk_lane()])
        finally:
            self._stopped.set()

    async def _keep_leases(self) -> None:
        """Renew the lease of every row held longer than a third of it (a slow send, a long
        429 pause), so that it is never sent by someone else while this sender may still."""
        every = max(0.5, self.outbox.lease.total_seconds() / 3)
        while not self._stopped.is_set():
            try:
                await asyncio.wait_for(self._stopped.wait(), every)
            except TimeoutError:
                await self.outbox.renew(list(self._held.values()))

    async def _reply_lane(self) -> None:
        """Rows no one handed over (written by another process, set back, or left by a sender
        that died) are claimed here and sent through the same per-chat queues (`stop` waits for them)."""
        while not self._stopping:
            while sum(self._open.values()) >= REPLY_CLAIM and self._chat_tasks:  # what was taken goes out before more is
                await asyncio.wait(list(self._chat_tasks), return_when=asyncio.FIRST_COMPLETED)
            self.outbox.wakeup.clear()
            rows = await self.outbox.claim(self.channel, REPLY_CLAIM, max_priority=PRIORITY_BROADCAST - 1, per_chat=REPLIES_PER_CHAT)
            if rows:
                by_chat: defaultdict[str, list[OutboxMessage]] = defaultdict(list)
                for row in rows:
                    by_chat[row.chat].append(row)
                for chat_rows in by_chat.values():
                    self.take(chat_rows, claimed=True)
                continue
            self.bulk_wakeup.set()
            await self._idle(self.outbox.wakeup)

    async def _bulk_lane(self) -> None:
        """Claims the next batch while the current one is being sent: waiting for the
        database between batches left the sender idle a tenth of the time at 1000/s. A chat
        with a row in the batch being sent waits for the following batch."""
        sending: asyncio.Task[None] | None = None
        busy: set[str] = set()
        try:
            while not self._stopping:
                self.bulk_wakeup.clear()
                rows = await self.outbox.claim(self.channel, self.bulk_batch, min_priority=PRIORITY_BROADCAST)
                if rows:
                    following = asyncio.create_task(self._send_all(rows, avoid=busy))
                    if sending is not None:
                        await sending
                    sending, busy = following, {row.chat for row in rows}
                elif sending is not None:
                    await sending
                    sending, busy = None, set()
                else:
                    await self._idle(self.bulk_wakeup)
        finally:
            if sending is not None:
                if not self._stopping:
                    sending.cancel()
                await asyncio.gather(sending, return_exceptions=True)

    async def _idle(self, wakeup: asyncio.Event) -> None:
        try:
            await asyncio.wait_for(wakeup.wait(), timeout=self.idle_poll)
        except TimeoutError:
            pass

    async def _send_all(self, rows: list[OutboxMessage], avoid: set[str] | frozenset[str] = frozenset()) -> None:
        """Rows of one chat in order; different chats concurrently. Each outcome is recorded
        as soon as it is known (group-committed), so a crash re-sends at most the rows whose
        send had not been recorded yet, never a whole batch."""
        by_chat: defaultdict[str, list[OutboxMessage]] = defaultdict(list)
        for row in rows:
            by_chat[row.chat].append(row)
            self._held[row.id] = row  # type: ignore[index]
        if avoid:
            waiting = [row for chat in avoid & by_chat.keys() for row in by_chat.pop(chat)]
            self._record_soon([Outcome(row, "later", after=self.per_chat_interval) for row in waiting])
        gate = asyncio.Semaphore(self.concurrency)

        async def chat_rows(chat_rows: list[OutboxMessage]) -> None:
            async with gate:
                for index, row in enumerate(chat_rows):
                    outcome = await self._send(row)
                    self._record_soon([outcome])
                    if outcome.status in ("retry", "later"):
                        self._record_soon([Outcome(rest, "later", after=outcome.after) for rest in chat_rows[index + 1:]])
                        return

        await _all_or_none([chat_rows(group) for group in by_chat.values()])
        await self._record([])

    async def _record(self, outcomes: list[Outcome]) -> None:
        """Record outcomes, returning once they are written (with nothing new, once what is
        being written is)."""
        self._record_soon(outcomes)
        if self._unsettled:
            written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(written)
            await asyncio.shield(written)
        elif self._recording is not None:
            await asyncio.shield(self._recording)

    def _record_soon(self, outcomes: list[Outcome]) -> None:
        """Outcomes are written in groups, by one task, as fast as the database takes them;
        the caller goes on (the next row of its chat). An unstored receipt has none to write."""
        outcomes = [outcome for outcome in outcomes if outcome.row.id is not None]
        for outcome in outcomes:
            self._held.pop(outcome.row.id, None)  # type: ignore[arg-type]
        self._unsettled.extend(outcomes)
        if self._unsettled and self._recorder is None:
            self._recorder = asyncio.create_task(self._write_outcomes(), name=f"{self.channel}-outcomes")
            self._recorder.add_done_callback(self._task_ended)

    async def _write_outcomes(self) -> None:
        """Runs while outcomes wait. A failed write (the database busy past its timeout) is
        logged and tried again: until written, the rows stay leased to this sender."""
        try:
            while self._unsettled:
                batch, self._unsettled = self._unsettled, []
                waiters, self._waiters = self._waiters, []
                self._recording = self._recording or asyncio.get_running_loop().create_future()
                try:
                    await self.outbox.settle(batch)
                except Exception as exc:
                    log.error("recording %d send outcome(s) failed (%s); trying again", len(batch), type(exc).__name__)
                    self._unsettled[:0], self._waiters[:0] = batch, waiters
                    await asyncio.sleep(0.5)
                    continue
                self._settled(batch)
                recording, self._recording = self._recording, None
                for written in [*waiters, recording]:
                    if not written.done():
                        written.set_result(None)
        finally:
            self._recorder = None

    def _settled(self, outcomes: list[Outcome]) -> None:
        wake = False
        for outcome in outcomes:
            if outcome.row.id not in self._taken:
                continue
            self._taken.discard(outcome.row.id)  # type: ignore[arg-type]
            chat = outcome.row.chat
            left = self._open.get(chat, 0)
            if left > 1:
                self._open[chat] = left - 1
                continue
            del self._open[chat]
            if chat in self._behind:
                self._behind.discard(chat)
                wake = True
        if wake:
            self.outbox.notify()

    async def _send(self, row: OutboxMessage) -> Outcome:
        outcome = await self._try(row)
        metrics.SENDS.labels(self.channel, lane(row.priority), outcome.status).inc()
        if outcome.status == "sent" and row.priority == PRIORITY_PARTNER:
            metrics.PARTNER_DELIVERIES.labels(self.channel).inc()
        return outcome

    async def _try(self, row: OutboxMessage) -> Outcome:
        bulk = row.priority >= PRIORITY_BROADCAST
        if self._stopping:
            return Outcome(row, "later")
        if bulk:
            last = self.last_bulk.get(row.chat)
            now = time.monotonic()
            if last is not None and now - last < self.per_chat_interval:
                return Outcome(row, "later", after=self.per_chat_interval - (now - last))
        permit = None
        if self.limiter is not None and row.kind not in UNMETERED:
            permit = await self.limiter.acquire(urgent=not bulk, stopping=lambda: self._stopping)
            if permit is None:
                return Outcome(row, "later")
        started = time.perf_counter()
        try:
            ref = await self.deliver(row, json.loads(row.payload or "{}"))
        except RetryLater as exc:
            if exc.waiting:
                return Outcome(row, "later", after=exc.after)
            metrics.SEND_FAILURES.labels(self.channel, type(exc.__cause__).__name__ if exc.__cause__ else "RetryLater").inc()
            if exc.pause_all:
                metrics.RATE_LIMITED.labels(self.channel).inc()
            if exc.pause_all and self.limiter is not None:
                self.limiter.pause(exc.after)
            too_many = self.max_attempts is not None and row.attempts >= self.max_attempts
            too_old = self.max_age is not None and utcnow() + timedelta(seconds=exc.after) - row.created_at > self.max_age
            if too_many or too_old:
                log.error("outbox %s: giving up after %d attempts", row.id, row.attempts)
                return Outcome(row, "failed")
            log.warning("outbox %s: retry in %.1fs (attempt %d)", row.id, exc.after, row.attempts)
            if exc.pause_all and self.limiter is None:
                await asyncio.sleep(exc.after)
            return Outcome(row, "retry", after=exc.after, uncertain=exc.uncertain)
        except RecipientGone:
            log.info("outbox %s: recipient unreachable", row.id)
            return Outcome(row, "unreachable")
        except Rejected as exc:
            metrics.SEND_FAILURES.labels(self.channel, "Rejected").inc()
            log.error("outbox %s: rejected by the platform: %s", row.id, exc)
            return Outcome(row, "failed")
        except ChatMoved as exc:
            log.warning("outbox %s: the chat has a new id; sending there", row.id)
            return Outcome(row, "moved", chat=exc.new_chat)
        except (CannotContinue, asyncio.CancelledError):
            raise
        except Exception as exc:  # an error no one foresaw must not stop every other send
            metrics.SEND_FAILURES.labels(self.channel, type(exc).__name__).inc()
            too_many = self.max_attempts is not None and row.attempts >= self.max_attempts
            log.error("outbox %s: unexpected %s on attempt %d%s", row.id, type(exc).__name__, row.attempts,
                      "; giving up" if too_many else "", exc_info=log.isEnabledFor(logging.DEBUG))
            return Outcome(row, "failed") if too_many else Outcome(row, "retry", after=min(2.0 ** row.attempts, 300.0))
        finally:
            metrics.SEND_SECONDS.labels(self.channel).observe(time.perf_counter() - started)
            if self.limiter is not None:
                self.limiter.release(permit)
        self.outbox.remember_sent(row.id, ref)
        if bulk:
            now = time.monotonic()
            self.last_bulk[row.chat] = now
            self.last_bulk.move_to_end(row.chat)
            while self.last_bulk and now - next(iter(self.last_bulk.values())) >= self.per_chat_interval:
                self.last_bulk.popitem(last=False)  # only the last second's chats matter
        return Outcome(row, "sent", ref)
