"""Broadcast staff and subscribers in chat: the flow actions. (Filled in by the chat work.)"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.engine.runner import Action

if TYPE_CHECKING:
    from bot.features.broadcasts import BroadcastsFeature

ACTION_NAMES: frozenset[str] = frozenset()
TEXT_KEYS: tuple[str, ...] = ()


def actions(feature: BroadcastsFeature) -> dict[str, Action]:
    return {}
