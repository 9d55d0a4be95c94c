"""Background work that never dies silently: a crash is logged with its cause and the work
restarts after a growing pause; an error that no restart can heal (CannotContinue) ends it
and is raised to whoever waits on it, which stops the bot with a non-zero exit."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from bot.outbox import CannotContinue

log = logging.getLogger(__name__)


async def supervise(name: str, work: Callable[[], Awaitable[None]], *, stopping: Callable[[], bool] = lambda: False,
                    first_pause: float = 1.0, longest_pause: float = 60.0) -> None:
    pause = first_pause
    while True:
        try:
            await work()
            return
        except CannotContinue:
            log.critical("%s cannot continue; stopping", name)
            raise
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if stopping():
                log.error("%s failed while stopping: %s", name, type(exc).__name__)
                return
            log.error("%s crashed (%s); restarting in %.0fs", name, type(exc).__name__, pause, exc_info=True)
            await asyncio.sleep(pause)
            pause = min(pause * 2, longest_pause)
