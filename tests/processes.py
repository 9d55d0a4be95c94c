"""A real `python -m bot run` in its own process, so that a test can really kill it.

The fake Bot API runs in the test's event loop, so waiting for the process must never block
that loop: a bot that is stopping gracefully still talks to the fake while it finishes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from bot.settings import PROJECT_ROOT
from tests.fakes.bot_api import FakeBotApi


class BotProcess:
    """A real `python -m bot run`. The staff API is off unless a test asks for it (no test
    guesses a port), and a process a failing test left running is killed after the test."""

    running: set[BotProcess] = set()

    def __init__(self, fake: FakeBotApi, database_url: str, log: Path, **settings: str) -> None:
        env = {**os.environ, "TELEGRAM_BOT_TOKEN": fake.token, "TELEGRAM_API_BASE_URL": fake.base_url,
               "DATABASE_URL": database_url, "POLL_TIMEOUT": "2", "OUTBOX_LEASE_SECONDS": "1", "API_PORT": "0", **settings}
        with log.open("ab") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "bot", "run"], cwd=PROJECT_ROOT, env=env,
                                            stdout=out, stderr=out)
        BotProcess.running.add(self)

    @classmethod
    def kill_leftovers(cls) -> None:
        for bot in list(cls.running):
            if bot.process.poll() is None:
                bot.process.kill()
                bot.process.wait(10)
            cls.running.discard(bot)

    @classmethod
    def on_sqlite(cls, fake: FakeBotApi, db_path: Path, **settings: str) -> BotProcess:
        return cls(fake, f"sqlite+aiosqlite:///{db_path}", db_path.parent / "bot.log", **settings)

    async def kill(self) -> None:
        """SIGKILL: no chance to finish anything, as in a power cut."""
        self.process.send_signal(signal.SIGKILL)
        await self._exited()

    async def stop(self) -> None:
        """SIGTERM, as a service manager stops it; the bot finishes what it holds."""
        if self.process.poll() is None:
            self.process.terminate()
        try:
            await self._exited()
        except subprocess.TimeoutExpired:
            self.process.kill()
            await self._exited()
            raise AssertionError("the bot did not stop within 30 s of SIGTERM") from None

    async def _exited(self, timeout: float = 30) -> int:
        return await asyncio.to_thread(self.process.wait, timeout)
