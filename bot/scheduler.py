"""APScheduler is only the clock: it wakes each feature's periodic pass, and every pass
reads what is due from the database, so a pass missed while the bot was down is simply
done at the next wake-up."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from datetime import timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, or_, update

from storage.db import Database
from storage.models import Lease, utcnow

log = logging.getLogger(__name__)

Job = tuple[str, float, Callable[[], Awaitable[object]]]


class ScheduleLease:
    """Several workers share one database; only the one holding this lease fires the periodic
    passes (a campaign must start once, a deadline escalate once). A row, not an advisory lock,
    so that it works through a transaction-pooling proxy such as PgBouncer, and on SQLite. The
    holder renews it every `renew_every` seconds; when it dies, another takes it over once it
    runs out (`ttl`), well within 30 s."""

    def __init__(self, db: Database, *, name: str = "schedules", ttl: float = 20.0, renew_every: float = 5.0) -> None:
        self.db, self.name, self.ttl, self.renew_every = db, name, ttl, renew_every
        self.me = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.held = False

    async def renew(self) -> bool:
        now = utcnow()
        until = now + timedelta(seconds=self.ttl)
        async with self.db.transaction() as session:
            taken = await session.exec(update(Lease).where(  # type: ignore[call-overload]
                col(Lease.name) == self.name, or_(col(Lease.holder) == self.me, col(Lease.expires_at) < now)).values(holder=self.me, expires_at=until))
            if not taken.rowcount and await session.get(Lease, self.name) is None:
                try:
                    async with session.begin_nested():
                        session.add(Lease(name=self.name, holder=self.me, expires_at=until))
                        await session.flush()
                    taken = None
                except IntegrityError:
                    pass  # another process created it first
            held = taken is None or bool(taken.rowcount)
        if held != self.held:
            log.info("%s the lease on %s", "took" if held else "lost", self.name)
        self.held = held
        return held


class Clock:
    """Each pass runs in a task of its own. APScheduler's shutdown cancels the passes it
    started, and a pass cancelled inside a database call can leave a connection half-closed
    (with SQLite, a worker thread that keeps the process from exiting); `stop` lets them
    finish instead."""

    def __init__(self, jobs: list[Job], lease: ScheduleLease | None = None) -> None:
        self.scheduler = AsyncIOScheduler(timezone="UTC")
        self.passes: set[asyncio.Task[None]] = set()
        self.lease = lease
        if lease is not None:
            self.scheduler.add_job(self._renew, "interval", seconds=lease.renew_every, name="renew the schedule lease",
                                   coalesce=True, max_instances=1, misfire_grace_time=None)
        for name, seconds, work in jobs:
            self.scheduler.add_job(self._pass(name, work), "interval", seconds=seconds, name=name, coalesce=True, max_instances=1,
                                   misfire_grace_time=None)
            self.scheduler.add_job(self._pass(name, work), name=f"{name} (at start)")

    async def _renew(self) -> None:
        try:
            assert self.lease is not None
            await self.lease.renew()
        except Exception:
            log.exception("the schedule lease could not be renewed")
            if self.lease is not None:
                self.lease.held = False  # not sure it is still ours: fire nothing until it is

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
                if self.lease is not None and not (self.lease.held or await self.lease.renew()):
                    return  # another worker holds the schedules
                await work()
            except Exception:
                log.exception("job failed: %s", name)

        async def run() -> None:
            task = asyncio.create_task(logged(), name=name)
            self.passes.add(task)
            task.add_done_callback(self.passes.discard)
            await asyncio.shield(task)

        return run
