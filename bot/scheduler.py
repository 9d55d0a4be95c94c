"""APScheduler is only the clock: it wakes each feature's periodic pass, and every pass
reads what is due from the database, so a pass missed while the bot was down is simply
done at the next wake-up."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from apscheduler.schedulers.asyncio import AsyncIOScheduler

log = logging.getLogger(__name__)

Job = tuple[str, float, Callable[[], Awaitable[object]]]


class Clock:
    """Each pass runs in a task of its own. APScheduler's shutdown cancels the passes it
    started, and a pass cancelled inside a database call can leave a connection half-closed
    (with SQLite, a worker thread that keeps the process from exiting); `stop` lets them
    finish instead."""

    def __init__(self, jobs: list[Job]) -> None:
        self.scheduler = AsyncIOScheduler(timezone="UTC")
        self.passes: set[asyncio.Task[None]] = set()
        for name, seconds, work in jobs:
            self.scheduler.add_job(self._pass(name, work), "interval", seconds=seconds, name=name, coalesce=True, max_instances=1,
                                   misfire_grace_time=None)
            self.scheduler.add_job(self._pass(name, work), name=f"{name} (at start)")

    def start(self) -> Clock:
        self.scheduler.start()
        return self

    async def stop(self, grace: float = 10.0) -> None:
        self.scheduler.shutdown(wait=False)
        if not self.passes:
            return
        _, late = await asyncio.wait(list(self.passes), timeout=grace)
        for task in late:
            log.warning("a %s pass did not finish within %.0fs; cancelling it", task.get_name(), grace)
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)

    def _pass(self, name: str, work: Callable[[], Awaitable[object]]) -> Callable[[], Awaitable[None]]:
        async def logged() -> None:
            try:
                await work()
            except Exception:
                log.exception("job failed: %s", name)

        async def run() -> None:
            task = asyncio.create_task(logged(), name=name)
            self.passes.add(task)
            task.add_done_callback(self.passes.discard)
            await asyncio.shield(task)

        return run
