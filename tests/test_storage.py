"""The inbox and outbox on SQLite and, when TEST_DATABASE_URL is set, on PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st
from sqlmodel import select

from bot.inbox import ChatLocks, Inbox
from bot.outbox import Outbox, RateLimiter, Rejected, RecipientGone, RetryLater, Sender
from storage import connect
from storage.models import OutboxMessage, User

BIG = 9_007_199_254_740_993  # beyond 2**53: must survive as an exact 64-bit id


async def test_a_redelivered_event_is_stored_once(database_url: str) -> None:
    db = await connect(database_url)
    inbox = Inbox(db)
    try:
        assert await inbox.store("telegram", [("1001", str(BIG), {"text": "hi"})]) == ["1001"]
        assert await inbox.store("telegram", [("1001", str(BIG), {"text": "hi"}), ("1002", "5", {})]) == ["1002"]
        pending = await inbox.pending("telegram")
        assert [(row.event_key, row.chat) for row in pending] == [("1001", str(BIG)), ("1002", "5")]
        assert await inbox.highest_key("telegram") == 1002
    finally:
        await db.close()


async def test_more_events_at_once_than_one_sqlite_statement_can_carry_are_all_stored(database_url: str) -> None:
    """The inbox writes a batch as one INSERT on SQLite; 40,000 events have more values than
    one statement may (250,000 in Debian's SQLite, 32,766 in SQLite's own build), so they go
    in several, and none is lost."""
    db = await connect(database_url)
    try:
        keys = await Inbox(db).store("telegram", [(str(n), str(n % 7), {"n": n}) for n in range(40_000)])
        assert sorted(map(int, keys)) == list(range(40_000))
    finally:
        await db.close()


async def test_two_senders_never_claim_the_same_row(database_url: str) -> None:
    db = await connect(database_url)
    outbox = Outbox(db)
    try:
        async with db.transaction() as session:
            for n in range(40):
                Outbox.add(session, "telegram", str(BIG + n), "message", {"text": f"m{n}"})
        first, second = await asyncio.gather(outbox.claim("telegram", limit=25), outbox.claim("telegram", limit=25))
        ids = [row.id for row in first + second]
        assert len(ids) == len(set(ids)) == 40
    finally:
        await db.close()


async def test_replies_go_before_broadcasts_and_failures_are_sorted_out(database_url: str) -> None:
    db = await connect(database_url)
    outbox = Outbox(db)
    async with db.transaction() as session:
        session.add(User(channel="telegram", address="3", lang="en"))
        Outbox.add(session, "telegram", "1", "message", {"text": "broadcast"}, priority=20)
        Outbox.add(session, "telegram", "2", "message", {"text": "reply"}, priority=0)
        Outbox.add(session, "telegram", "3", "message", {"text": "to someone who blocked the bot"}, priority=0)
        Outbox.add(session, "telegram", "4", "message", {"text": "refused"}, priority=0)
        Outbox.add(session, "telegram", "5", "message", {"text": "rate limited"}, priority=0)
    order: list[str] = []

    async def deliver(row: OutboxMessage, payload: dict) -> str | None:
        order.append(payload["text"])
        if row.chat == "3":
            raise RecipientGone()
        if row.chat == "4":
            raise Rejected("bad request")
        if row.chat == "5":
            raise RetryLater(3600)
        return "42"

    try:
        await Sender(outbox, "telegram", deliver).drain()
        assert order[0] == "reply" and order[-1] == "broadcast"
        statuses = await outbox.counts()
        assert statuses == {"sent": 2, "unreachable": 1, "failed": 1, "pending": 1}
        async with db.session() as session:
            user = (await session.exec(select(User).where(User.address == "3"))).one()
            assert user.reachable is False
            sent = (await session.exec(select(OutboxMessage).where(OutboxMessage.status == "sent"))).all()
            assert all(row.payload is None for row in sent), "what was sent is not kept"
    finally:
        await db.close()


async def test_one_chat_in_order_other_chats_in_parallel() -> None:
    locks = ChatLocks()
    events: list[str] = []
    release = asyncio.Event()

    async def handle(chat: str, name: str, wait: bool) -> None:
        async with locks.hold(chat):
            events.append(f"start {name}")
            if wait:
                await release.wait()
            events.append(f"end {name}")

    first = asyncio.create_task(handle("a", "a1", True))
    second = asyncio.create_task(handle("a", "a2", False))
    other = asyncio.create_task(handle("b", "b1", False))
    await other
    assert events == ["start a1", "start b1", "end b1"]
    release.set()
    await asyncio.gather(first, second)
    assert events[3:] == ["end a1", "start a2", "end a2"]


async def test_reading_waits_for_no_writer(database_url: str) -> None:
    """On SQLite a write transaction holds the one write lock; a read (someone's /status, the
    sender's look at what is due) reads a snapshot beside it instead of waiting (for up to the
    10 s busy timeout, then failing)."""
    db = await connect(database_url)
    try:
        async with db.transaction() as writing:
            writing.add(User(channel="telegram", address="501", lang="en"))
            await writing.flush()
            async with db.session() as reading:
                assert (await reading.exec(select(User).where(User.address == "501"))).first() is None, "not yet committed"
        async with db.session() as reading:
            assert (await reading.exec(select(User).where(User.address == "501"))).one().lang == "en"
    finally:
        await db.close()


async def test_the_message_rate_counts_messages_not_button_answers_or_keyboard_edits(database_url: str) -> None:
    """Telegram's send limit is about messages. A button press costs an answer to the press,
    the old keyboard's removal and the reply: only the reply waits for the limiter, so 200
    people pressing at once are not answered three times slower than they need be."""
    db = await connect(database_url)
    outbox = Outbox(db)
    granted: list[str] = []

    class CountingLimiter(RateLimiter):
        async def acquire(self, **kwargs: object) -> list[bool] | None:  # type: ignore[override]
            granted.append("permit")
            return await super().acquire(**kwargs)  # type: ignore[arg-type]

    async def deliver(row: OutboxMessage, payload: dict) -> str | None:  # type: ignore[type-arg]
        return "1"

    try:
        async with db.transaction() as session:
            for kind in ("ack", "clear_buttons", "message", "delete", "commands"):
                Outbox.add(session, "telegram", "5", kind, {"text": "hi", "callback_id": "1", "message_id": 1})
        await Sender(outbox, "telegram", deliver, limiter=CountingLimiter(100.0)).drain()
        assert (await outbox.counts()) == {"sent": 5}
        assert granted == ["permit"], "only the message counted against the rate"
    finally:
        await db.close()


async def test_a_persons_conversation_read_and_written_on_core_agrees_with_the_orm_in_one_transaction(database_url: str) -> None:
    """Group commit puts a caseworker's action (which moves the reporter's conversation
    through the ORM: closing a case asks them for feedback) and the reporter's own message
    into one transaction. The engine reads and writes conversations on Core: it must see the
    ORM's change not yet flushed, and a later ORM read must not get a stale copy."""
    from storage.models import Conversation
    from storage.people import load_person, save_conversation

    db = await connect(database_url)
    async with db.transaction() as session:
        reporter, conversation, stored = await load_person(session, "telegram", "700")
        assert not stored and conversation.flow is None
        conversation.flow, conversation.step, conversation.vars = "menu", "start", {"_trail": [1]}
        await save_conversation(session, conversation, stored=False)
    async with db.transaction() as session:
        ours = await session.get(User, reporter.id)
        theirs = await session.get(Conversation, reporter.id)  # the caseworker's side, through the ORM
        assert theirs is not None and theirs.flow == "menu"
        theirs.flow, theirs.step, theirs.vars = "case_feedback", "ask", {**theirs.vars, "feedback_case": "AB12CD"}
        session.add(theirs)  # not flushed yet
        user, conversation, stored = await load_person(session, "telegram", "700")
        assert user is ours, "one instance of the person in the session"
        assert stored and (conversation.flow, conversation.step) == ("case_feedback", "ask")
        assert conversation.vars == {"_trail": [1], "feedback_case": "AB12CD"}
        conversation.step, conversation.vars = "thanks", {}
        await save_conversation(session, conversation, stored=True)
        again = await session.get(Conversation, reporter.id)
        assert again is not theirs and (again.flow, again.step, again.vars) == ("case_feedback", "thanks", {})  # type: ignore[union-attr]
    async with db.session() as session:
        kept = await session.get(Conversation, reporter.id)
        assert kept is not None and (kept.step, kept.vars) == ("thanks", {})
    await db.close()


async def test_reports_counted_at_the_same_moment_are_all_counted(database_url: str) -> None:
    """The monthly counts are read by partners and donors. On PostgreSQL, transactions run
    side by side (two workers, or two batches of one): reading the count and writing it back
    one higher lost counts, and two first reports of a month failed on the row's unique key
    (the person got an apology instead of their report filed)."""
    from datetime import datetime

    from bot.features.reports.service import count
    from storage.reports import ReportCount

    db = await connect(database_url)
    when = datetime(2026, 12, 1, 9, 0)

    async def one_report() -> None:
        async with db.transaction() as session:
            await count(session, when, "TH", "trafficking", True)

    await asyncio.gather(*(one_report() for _ in range(12)))
    async with db.session() as session:
        rows = (await session.exec(select(ReportCount))).all()
    assert [(r.month, r.country, r.category, r.shared, r.count) for r in rows] == [("2026-12", "TH", "trafficking", True, 12)]
    await db.close()


def test_the_newest_migration_read_from_the_files_is_alembics_head() -> None:
    """A restart skips Alembic when the database is at the newest migration, read from the
    files' own `revision` and `down_revision` lines (a merge's tuple included)."""
    from storage.db import head_revision, newest_migration

    assert newest_migration() == head_revision() is not None


async def test_a_database_one_migration_behind_is_brought_to_the_newest_at_start(tmp_path: Any) -> None:
    from alembic import command

    from storage.db import alembic_config, head_revision, schema_revision

    url = f"sqlite+aiosqlite:///{tmp_path}/behind.db"
    db = await connect(url, migrate=False)

    def upgrade_to_0015(connection: Any) -> None:
        cfg = alembic_config()
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "0015")

    async with db.engine.begin() as conn:
        await conn.run_sync(upgrade_to_0015)
    assert await schema_revision(db) == "0015"
    await db.close()
    db = await connect(url)
    assert await schema_revision(db) == head_revision()
    await db.close()


async def test_a_statement_run_straight_on_sqlite_or_asyncpg_answers_as_sqlalchemy_does(database_url: str) -> None:
    """The update path's statements skip SQLAlchemy's execution (storage/direct.py)
    but keep its type handling: the person's row read both ways is the same values of the same
    types (a date, a decrypted dict, a boolean), a duplicate key raises the same IntegrityError,
    and SQLAlchemy's own execution is really skipped (no cursor event) where it can be."""
    from sqlalchemy import Column, Integer, MetaData, Table, event
    from sqlalchemy.exc import IntegrityError

    from storage.direct import NotPreparable, Prepared
    from storage.models import Conversation
    from storage.people import _INSERT, _LOAD, _UPDATE
    from storage.sqlite_driver import statements_inline

    db = await connect(database_url)
    through_sqlalchemy: list[str] = []
    event.listen(db.engine.sync_engine, "before_cursor_execute", lambda *args: through_sqlalchemy.append(args[2]))
    async with db.transaction() as session:
        user = User(channel="telegram", address="801", lang="km", reachable=False)
        session.add(user)
        await session.flush()
        session.add(Conversation(user_id=user.id, flow="report", step="where", vars={"country": "TH", "note": "ខ្ញុំ"}))
    try:
        async with db.transaction() as session:
            connection = await session.connection()
            params = {"channel_": "telegram", "address_": "801"}
            slow = (await _LOAD.run(connection, params)).mappings()
            through_sqlalchemy.clear()
            with statements_inline():
                fast = (await _LOAD.run(connection, params)).mappings()
                assert through_sqlalchemy == [], "run on sqlite3 or asyncpg itself"
                with pytest.raises(IntegrityError) as duplicate:
                    await _INSERT.run(connection, {"user_": user.id, "flow_": "x", "step_": "y", "vars_": {}, "at_": slow[0]["updated_at"]})
                if db.is_postgres:  # what tells a deadlock from a bug (conversation.TRANSIENT) is still there
                    assert getattr(duplicate.value.orig, "sqlstate", None) == "23505"
        assert fast == slow and len(fast) == 1
        row = fast[0]
        assert row["vars"] == {"country": "TH", "note": "ខ្ញុំ"} and row["reachable"] is False and row["lang"] == "km"
        assert isinstance(row["updated_at"], datetime) and isinstance(row["created_at"], datetime)
        with pytest.raises(RuntimeError, match="undone"):  # the first statement of a transaction is inside it: a rollback undoes it
            async with db.transaction() as session:
                connection = await session.connection()
                with statements_inline():
                    await _UPDATE.run(connection, {"user_": user.id, "flow_": "menu", "step_": "start", "vars_": {}, "at_": row["updated_at"]})
                raise RuntimeError("undone")
        async with db.session() as session:
            assert (await session.get(Conversation, user.id)).step == "where"  # type: ignore[union-attr]
        with pytest.raises(NotPreparable):  # a default computed in Python would be skipped: refused when first compiled
            table = Table("t", MetaData(), Column("id", Integer, primary_key=True), Column("n", Integer, default=lambda: 1))
            Prepared(table.insert(), column_keys=["id"])._compile(db.engine.dialect)
    finally:
        await db.close()


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4), max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(value=_JSON_VALUES)
def test_what_the_bot_writes_as_json_reads_back_as_it_was(value: Any) -> None:
    """Answers, stored updates and conversation state are written with orjson, and with the
    standard library where orjson refuses (integers beyond 64 bits, lone surrogates typed in
    odd text): read back, every value is what was written."""
    import json

    from storage.jsontext import dumps, dumps_bytes

    assert json.loads(dumps(value)) == value
    if not (isinstance(value, str) and any(0xD800 <= ord(ch) <= 0xDFFF for ch in value)):
        try:
            body = dumps_bytes(value)
        except UnicodeEncodeError:
            return  # a lone surrogate deeper inside: not sendable as UTF-8, as before
        assert json.loads(body) == value
