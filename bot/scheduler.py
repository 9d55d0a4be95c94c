"""APScheduler is only the clock: it wakes each feature's periodic pass, and every pass
reads what is due from the database, so a pass missed while the bot was down is simply
done at the next wake-up."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from apscheduler.schedulers.asyncio import AsyncIOScheduler

log = logging.getLogger(__name__)

Job = tuple[str, float, Callable[[], Awaitable[object]]]


def start_clock(jobs: list[Job]) -> AsyncIOScheduler:
    scheduler = AsyncIOScheduler(timezone="UTC")
    for name, seconds, work in jobs:
        scheduler.add_job(_logged(name, work), "interval", seconds=seconds, name=name, coalesce=True, max_instances=1,
                          misfire_grace_time=None)
        scheduler.add_job(_logged(name, work), name=f"{name} (at start)")
    scheduler.start()
    return scheduler


def _logged(name: str, work: Callable[[], Awaitable[object]]) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        try:
            await work()
        except Exception:
            log.exception("job failed: %s", name)

    return run
