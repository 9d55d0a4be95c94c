"""Features: each a small package that plugs actions into the engine, and optionally
commands into the command line and background jobs into the bot.

A feature module (a package under bot/features/) may define:
- `ACTION_NAMES`: the action names its flows use (so that `check` can validate flows);
- `actions(core) -> dict[str, Action]`: the actions, given the wired core;
- `add_commands(subparsers)`: extra `python -m bot …` commands (each sets `func`);
- `jobs(core) -> list[Job]`: periodic work for the scheduler.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def modules() -> list[ModuleType]:
    return [importlib.import_module(f"{__name__}.{info.name}") for info in pkgutil.iter_modules(__path__) if info.ispkg]


def action_names() -> set[str]:
    names: set[str] = set()
    for module in modules():
        names |= set(getattr(module, "ACTION_NAMES", ()))
    return names
