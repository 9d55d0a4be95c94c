"""Features: each a small package that plugs actions into the engine, and optionally
commands into the command line and background jobs into the bot.

A feature module (a package under bot/features/) may define:
- `ACTION_NAMES`: the action names its flows use (so that `check` can validate flows);
- `actions(core) -> dict[str, Action]`: the actions, given the wired core;
- `add_commands(subparsers)`: extra `python -m bot …` commands (each sets `func`);
- `jobs(core) -> list[Job]`: periodic work for the scheduler; `senders(core)`: outbox senders of
  channels it adds (started with the bot, stopped gracefully);
- `TEXT_KEYS`: locale keys its code uses; `check_content(flows_dir, flows)`: validation of its data files.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from types import ModuleType

from bot.engine.yamlfile import Problem


def modules() -> list[ModuleType]:
    return [importlib.import_module(f"{__name__}.{info.name}") for info in pkgutil.iter_modules(__path__) if info.ispkg]


def action_names() -> set[str]:
    names: set[str] = set()
    for module in modules():
        names |= set(getattr(module, "ACTION_NAMES", ()))
    return names


def text_keys() -> set[str]:
    """Locale keys that features ask for from code (flows name the rest)."""
    keys: set[str] = set()
    for module in modules():
        keys |= set(getattr(module, "TEXT_KEYS", ()))
    return keys


def content_problems(flows_dir: Path, flows: object) -> list[Problem]:
    """Each feature's own content checks (e.g. partners, agency data)."""
    problems: list[Problem] = []
    for module in modules():
        if hasattr(module, "check_content"):
            problems += module.check_content(flows_dir, flows)
    return problems
