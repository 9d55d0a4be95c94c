"""Awareness broadcasts: staff roles, subscribers, campaigns, and their delivery."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from bot.engine.runner import Action
from bot.features.broadcasts import chat
from bot.features.broadcasts.campaigns import Campaigns
from bot.features.broadcasts.staff import Staff
from storage.models import utcnow

if TYPE_CHECKING:
    from bot.app import Core

ACTION_NAMES = chat.ACTION_NAMES
TEXT_KEYS = ("broadcast.final_report", "broadcast.button.link",
             *(f"broadcast.button.{flow}" for flow in ("guidance", "report", "hotlines", "scam", "agency", "redflags", "selfcheck")),
             *chat.TEXT_KEYS)


class BroadcastsFeature:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.staff = Staff(core.settings.admin_ids)
        self.campaigns = Campaigns(core.outbox, core.texts, rate=core.settings.rate)

    async def send_due(self) -> int:
        """The scheduler's pass: start the runs that are due, close the ones that are done."""
        now = utcnow()
        async with self.core.db.transaction() as session:
            started = await self.campaigns.fire_due(session, now)
            finished = await self.campaigns.finish_runs(session, now)
        if started or finished:
            self.core.outbox.notify()
        return len(started)


_features: dict[int, BroadcastsFeature] = {}


def feature(core: Core) -> BroadcastsFeature:
    if id(core) not in _features:
        _features[id(core)] = BroadcastsFeature(core)
    return _features[id(core)]


def actions(core: Core) -> dict[str, Action]:
    return chat.actions(feature(core))


def jobs(core: Core) -> list[tuple[str, float, Callable[[], Awaitable[object]]]]:
    return [("send due campaigns", 30.0, feature(core).send_due)]
