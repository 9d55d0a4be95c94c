"""Several workers on one database: only one fires the schedules, and when it dies another
takes over well within 30 s and fires the next campaign."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path

from sqlmodel import select, update

from bot.app import build_core
from bot.features.broadcasts import feature
from bot.scheduler import Clock, ScheduleLease
from bot.settings import PROJECT_ROOT, Settings
from storage import connect
from storage.broadcasts import CampaignRun
from storage.models import Lease, User, utcnow
from tests.fakes.bot_api import FakeBotApi
from tests.processes import BotProcess


async def test_one_lease_holder_at_a_time_and_a_dead_holders_lease_is_taken_over(database_url: str) -> None:
    db = await connect(database_url)
    first, second = ScheduleLease(db), ScheduleLease(db)
    fired: list[str] = []

    async def work() -> None:
        fired.append("pass")

    try:
        assert await first.renew() and not await second.renew(), "one holder"
        assert await first.renew(), "the holder renews"
        clock = Clock([], second)
        await clock._pass("a pass", work)()
        assert fired == [], "a worker without the lease fires nothing"
        async with db.transaction() as session:  # the holder died 21 s ago: its lease ran out
            await session.exec(update(Lease).values(expires_at=utcnow() - timedelta(seconds=1)))  # type: ignore[call-overload]
        assert await second.renew() and not await first.renew(), "taken over, and the old holder knows"
        await clock._pass("a pass", work)()
        assert fired == ["pass"]
    finally:
        await db.close()


async def holder(url: str) -> str | None:
    db = await connect(url, migrate=False)
    try:
        async with db.session() as session:
            lease = await session.get(Lease, "schedules")
            return lease.holder if lease is not None and lease.expires_at.replace(tzinfo=None) > utcnow().replace(tzinfo=None) else None
    finally:
        await db.close()


async def until(check, timeout: float) -> float:  # type: ignore[no-untyped-def]
    """Seconds until check() holds (polling the other processes' database); fails after timeout."""
    started = time.monotonic()
    while not await check():
        assert time.monotonic() - started < timeout, "not within the time allowed"
        await asyncio.sleep(0.1)
    return time.monotonic() - started


async def test_when_the_worker_firing_schedules_is_killed_another_fires_the_next_campaign_within_30_s(
        database_url: str, fake_api: FakeBotApi, tmp_path: Path) -> None:
    settings = Settings(database_url=database_url, flows_dir=PROJECT_ROOT / "flows", locales_dir=PROJECT_ROOT / "locales")
    core = await build_core(settings)
    try:
        async with core.db.transaction() as session:
            session.add(User(channel="telegram", address="7001", lang="en"))
    finally:
        await core.close()
    fake_api.add_user(7001, "Staff", "en")

    def worker(name: str) -> BotProcess:
        return BotProcess(fake_api, database_url, tmp_path / f"{name}.log", SCHEDULE_LEASE_SECONDS="4", CAMPAIGN_PASS_SECONDS="1")

    a = worker("a")
    b = None
    try:
        await until(lambda: _held_by(database_url, a), 30)
        b = worker("b")
        await fake_api.wait_for(lambda: sum(1 for m, _ in fake_api.calls if m == "getUpdates") >= 2, timeout=30)
        await a.kill()
        core = await build_core(settings)
        try:
            async with core.db.transaction() as session:
                staff = (await session.exec(select(User).where(User.address == "7001"))).one()
                campaign = await feature(core).campaigns.create(session, staff, name="after the crash", texts={"en": "Hotline 1300"})
        finally:
            await core.close()
        took = await until(lambda: _fired(database_url, campaign.id), 30)
        assert await _held_by(database_url, b)
        print(f"\nthe other worker took the schedules over and fired the campaign {took:.1f} s after the kill")
    finally:
        for process in (a, b):
            if process is not None:
                await process.stop()


async def _held_by(url: str, process: BotProcess) -> bool:
    found = await holder(url)
    return found is not None and f":{process.process.pid}:" in found


async def _fired(url: str, campaign_id: int | None) -> bool:
    db = await connect(url, migrate=False)
    try:
        async with db.session() as session:
            return (await session.exec(select(CampaignRun).where(CampaignRun.campaign_id == campaign_id))).first() is not None
    finally:
        await db.close()


async def test_workers_starting_together_migrate_once(database_url: str) -> None:
    """The first to start migrates; the others wait for it (on PostgreSQL, an advisory lock)
    and find nothing to do, instead of failing on tables half made."""
    from tests.conftest import PG_URL, reset_postgres
    if database_url.startswith("postgresql") and PG_URL:
        await reset_postgres(database_url)
    # Without the lock, three migrations at once deadlock on PostgreSQL: the timeout fails the test instead.
    databases = await asyncio.wait_for(asyncio.gather(*(connect(database_url) for _ in range(3))), 60)
    try:
        from storage.db import head_revision, schema_revision
        assert {await schema_revision(db) for db in databases} == {head_revision()}
    finally:
        for db in databases:
            await db.close()


async def test_workers_sharing_one_bot_are_never_granted_more_than_its_send_rate_in_a_second(database_url: str) -> None:
    """Telegram limits the bot, not each process: two workers' limiters draw on one budget
    per second of the clock, so between them they get at most the rate, then wait for the
    next second, which gives them the rate again."""
    from bot.outbox import RateLimiter, SharedBudget

    db = await connect(database_url)
    now = [1_000_000.25]
    try:
        budgets = [SharedBudget(db, "telegram", 30, clock=lambda: now[0]) for _ in range(2)]
        limiters = [RateLimiter(1000, clock=lambda: now[0], shared=budget) for budget in budgets]

        async def grants(limiter: RateLimiter) -> int:
            """Permits this worker gets before it would have to wait (asked to stop at its first wait)."""
            got = 0
            while True:
                looks = iter([False])  # the first look goes ahead; a second one means it waited
                permit = await limiter.acquire(urgent=True, stopping=lambda: next(looks, True))
                if permit is None:
                    return got
                got += 1
                limiter.release(permit)

        first = [await grants(limiters[0]), await grants(limiters[1])]
        assert sum(first) == 30, f"two workers together, one second: {first}"
        assert await budgets[0].take() > 0 and await budgets[1].take() > 0, "both told to wait for the next second"
        now[0] += 1.0
        second = await asyncio.gather(grants(limiters[1]), grants(limiters[0]))
        assert sum(second) == 30, f"the next second: {second}"
    finally:
        await db.close()
