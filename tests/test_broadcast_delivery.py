"""Broadcast delivery: the rate is never exceeded, replies jump the queue, and a process
killed in the middle of a campaign finishes it after restart with no duplicate."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import col, func, select

from bot.app import build_core
from bot.features.broadcasts import feature
from bot.features.broadcasts.subscribers import subscribe
from bot.outbox import PRIORITY_BROADCAST, PRIORITY_REPLY, Outbox, RateLimiter, Sender
from bot.settings import PROJECT_ROOT, Settings
from storage import connect
from storage.models import OutboxMessage, User
from tests.fakes.bot_api import FakeBotApi
from tests.processes import BotProcess


pytestmark = pytest.mark.usefixtures("daytime")  # quiet hours would hold the broadcasts back


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    """Wait for a condition in another process's database; the timeout only fails a test."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_the_limiter_never_allows_more_than_the_rate_in_any_one_second_window() -> None:
    clock = FakeClock()
    limiter = RateLimiter(3, clock=clock)
    permits = [await limiter.acquire(urgent=True) for _ in range(3)]
    waiting = asyncio.create_task(limiter.acquire(urgent=True))
    await asyncio.sleep(0)
    assert not waiting.done(), "a fourth send in the same second waits"
    clock.now = 0.2
    for permit in permits:
        limiter.release(permit)  # answered at 0.2: each may have reached the server as late as that
    clock.now = 1.1
    await asyncio.sleep(0.002)
    assert not waiting.done(), "one second is counted from the answer, not from the grant"
    clock.now = 1.2
    limiter.release(await asyncio.wait_for(waiting, 1))

    limiter.pause(5)
    paused = asyncio.create_task(limiter.acquire(urgent=True))
    await asyncio.sleep(0.002)
    assert not paused.done(), "a 429 pauses even replies"
    clock.now = 6.5
    assert await asyncio.wait_for(paused, 1) is not None


async def test_a_send_still_waiting_for_its_answer_holds_its_place_in_the_window() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1, clock=clock)
    unanswered = await limiter.acquire(urgent=True)
    waiting = asyncio.create_task(limiter.acquire(urgent=True))
    clock.now = 5.0
    await asyncio.sleep(0.005)
    assert not waiting.done(), "its request may still reach the server at any moment"
    limiter.release(unanswered)
    clock.now = 6.0
    assert await asyncio.wait_for(waiting, 1) is not None


async def test_broadcast_sends_are_spread_through_the_second_so_a_reply_never_waits_behind_a_burst() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, clock=clock, smoothing=0)
    limiter.release(await limiter.acquire())
    next_broadcast = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0.002)
    assert not next_broadcast.done(), "the next broadcast send waits a tenth of a second"
    assert await asyncio.wait_for(limiter.acquire(urgent=True), 1) is not None, "a reply goes at once"
    clock.now = 0.1
    assert await asyncio.wait_for(next_broadcast, 1) is not None


async def test_replies_are_sent_before_a_backlog_of_broadcasts(tmp_path: Path) -> None:
    db = await connect(f"sqlite+aiosqlite:///{tmp_path / 'o.db'}")
    outbox = Outbox(db)
    order: list[str] = []
    try:
        async with db.transaction() as session:
            for n in range(30):
                Outbox.add(session, "telegram", str(1000 + n), "message", {"text": f"broadcast {n}"}, PRIORITY_BROADCAST)
            Outbox.add(session, "telegram", "42", "message", {"text": "reply"}, PRIORITY_REPLY)

        async def deliver(row: OutboxMessage, payload: dict) -> str:
            order.append(payload["text"])
            return "1"

        await Sender(outbox, "telegram", deliver, bulk_batch=10).drain()
        assert order[0] == "reply" and len(order) == 31
    finally:
        await db.close()


async def test_a_subscriber_gets_at_most_one_broadcast_message_a_second(tmp_path: Path) -> None:
    db = await connect(f"sqlite+aiosqlite:///{tmp_path / 'o.db'}")
    outbox = Outbox(db)
    sent: list[tuple[str, str]] = []
    try:
        async with db.transaction() as session:
            for campaign in ("harvest", "scam jobs"):
                Outbox.add(session, "telegram", "42", "message", {"text": campaign}, PRIORITY_BROADCAST)
            Outbox.add(session, "telegram", "43", "message", {"text": "harvest"}, PRIORITY_BROADCAST)

        async def deliver(row: OutboxMessage, payload: dict) -> str:
            sent.append((row.chat, payload["text"]))
            return "1"

        await Sender(outbox, "telegram", deliver).drain()
        assert sorted(sent) == [("42", "harvest"), ("43", "harvest")]
        async with db.session() as session:
            waiting = (await session.exec(select(OutboxMessage).where(OutboxMessage.status == "pending"))).one()
        assert waiting.chat == "42" and "scam jobs" in (waiting.payload or "")
        assert waiting.not_before - waiting.created_at >= timedelta(seconds=0.5), "deferred by about a second, not dropped"
    finally:
        await db.close()


async def test_a_process_killed_in_the_middle_of_a_campaign_finishes_it_after_restart_with_no_duplicate(
        fake_api: FakeBotApi, tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}"
    settings = Settings(database_url=url, flows_dir=PROJECT_ROOT / "flows", locales_dir=PROJECT_ROOT / "locales")
    core = await build_core(settings)
    subscribers = [3_000_000 + n for n in range(40)]
    async with core.db.transaction() as session:
        creator = User(channel="telegram", address="7001", lang="en")
        session.add(creator)
        for n, uid in enumerate(subscribers):
            user = User(channel="telegram", address=str(uid), lang="km" if n % 2 else "th")
            session.add(user)
            await session.flush()
            await subscribe(session, user, tz="Asia/Bangkok")
        await session.flush()
        await feature(core).campaigns.create(session, creator, name="harvest", texts={"km": "ប្រយ័ត្នមេខ្យល់", "th": "ระวังนายหน้าเถื่อน"})
    await core.close()
    fake_api.add_user(7001, "Staff", "en")
    for uid in subscribers:
        fake_api.add_user(uid, "Subscriber")

    def start() -> BotProcess:
        return BotProcess(fake_api, url, tmp_path / "bot.log", SEND_RATE="10", API_PORT="0", OUTBOX_LEASE_SECONDS="5",
                          CAMPAIGN_PASS_SECONDS="2")

    def broadcasts_received() -> int:
        return sum(len(fake_api.sent_to(uid)) for uid in subscribers)

    async def sent_in_db() -> int:
        db = await connect(url, migrate=False)
        try:
            async with db.session() as session:
                return (await session.exec(select(func.count()).select_from(OutboxMessage).where(
                    col(OutboxMessage.batch).is_not(None), OutboxMessage.status == "sent"))).one()
        finally:
            await db.close()

    process = start()
    held = asyncio.Event()
    try:
        await fake_api.wait_for(lambda: broadcasts_received() >= 12, timeout=60)
        fake_api.hold_sends = held  # what is sent from now on waits on its way to Telegram
        delivered = broadcasts_received()
        await eventually(lambda: _equals(sent_in_db, delivered))
        await fake_api.wait_for(lambda: fake_api.held > 0, timeout=30)
        await process.kill()
        in_flight = fake_api.held
        assert broadcasts_received() < len(subscribers), "killed in the middle"
        held.set()  # the sends in flight reach Telegram after all, as a request that got there does
        await fake_api.wait_for(lambda: fake_api.held == 0)
        fake_api.hold_sends = None

        process = start()
        await fake_api.wait_for(lambda: all(fake_api.sent_to(uid) for uid in subscribers), timeout=60)
        report = await fake_api.wait_for(lambda: next((m for m in fake_api.sent_to(7001) if "harvest" in m.text), None), timeout=60)
        twice = sum(len(fake_api.sent_to(uid)) - 1 for uid in subscribers)
        assert twice <= in_flight, f"{twice} got it twice; only the {in_flight} sends in flight at the kill may repeat"
        assert all(len(fake_api.sent_to(uid)) <= 2 for uid in subscribers)
        texts = {m.text for uid in subscribers for m in fake_api.sent_to(uid)}
        assert texts == {"ប្រយ័ត្នមេខ្យល់", "ระวังนายหน้าเถื่อน"}
        assert "40" in report.text
    finally:
        held.set()
        await process.stop()


async def _equals(count: Callable[[], Awaitable[int]], expected: int) -> bool:
    return await count() == expected
