"""Recruitment-agency registry and check: is the agency that offers me a job licensed?

- data: agencies as official lists publish them (storage/agencies.py), loaded from a CSV with
  `python -m bot agencies import FILE` (every rejected row is reported with its line and
  reason); `flows/data/agencies.csv` is the shipped registry (empty: no official list could
  be confirmed) and `flows/data/agencies.yaml` says what to tell people per country.
- flow: flows/agency.yaml, whose `agencies.lookup` step finds the agency by fuzzy matching.
"""

from __future__ import annotations

import argparse
import asyncio
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.engine.content import load_content
from bot.engine.runner import Action
from bot.engine.yamlfile import ContentError, Problem
from bot.features.agencies.lookup import TEXT_KEYS, AgencyLookup, load_config, registry_path
from bot.features.agencies.registry import COLUMNS, ImportResult, import_file, read_agencies, summary

if TYPE_CHECKING:
    from bot.app import Core
    from bot.settings import Settings

ACTION_NAMES = frozenset({"agencies.lookup"})

__all__ = ["ACTION_NAMES", "actions", "add_commands", "check_content", "import_file", "read_agencies", "TEXT_KEYS"]


def actions(core: Core) -> dict[str, Action]:
    config, problems = load_config(core.settings.flows_dir, core.content)
    if problems:
        raise ContentError(problems)
    return {"agencies.lookup": AgencyLookup(config, core.content)}


def check_content(flows_dir: Path, flows: Any = None) -> list[Problem]:
    """The agency check's settings, and every row of the shipped registry."""
    try:
        content = load_content(flows_dir)
    except ContentError:
        content = None  # check reports the content errors itself
    _, problems = load_config(flows_dir, content)
    path = registry_path(flows_dir)
    if not path.exists():
        return problems + [Problem(path, 0, f"missing: the agency registry (a CSV with the header {','.join(COLUMNS)})")]
    return problems + read_agencies(path).problems()


# -- command line ----------------------------------------------------------------------------


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    agencies = sub.add_parser("agencies", help="the recruitment-agency registry: import an official list, list what is loaded",
                              description="Manage the registry of recruitment agencies that the agency check searches.")
    actions_ = agencies.add_subparsers(dest="agencies_command", metavar="ACTION", required=True)
    imp = actions_.add_parser(
        "import", help="validate a CSV of agencies and load it",
        description="Validate FILE (CSV, UTF-8, header: " + ",".join(COLUMNS) + ") and load it into the registry. "
                    "Every rejected row is printed with its line number and reason, and then nothing is loaded (exit 1). "
                    "Rows replace the records that came from the same country and source before; other lists are kept.")
    imp.add_argument("file", type=Path, help="the CSV file")
    imp.add_argument("--dry-run", action="store_true", help="only validate; load nothing")
    imp.set_defaults(func=_import)
    lst = actions_.add_parser("list", help="the lists in the registry: country, source, date and number of agencies",
                              description="Show which official lists are loaded, how old they are and how many agencies each has.")
    lst.set_defaults(func=_list)


def print_result(result: ImportResult, path: Path) -> int:
    parsed = result.parsed
    for rejected in parsed.rejected:
        print(terminal_safe(f"{path}:{rejected.line}: rejected: {'; '.join(rejected.reasons)}"))
    if not parsed.ok:
        print(f"{len(parsed.rejected)} row(s) rejected, {len(parsed.records)} valid; nothing imported. Fix the rows and run again.")
        return 1
    if result.dry_run:
        print(f"{len(parsed.records)} row(s) valid; nothing imported (--dry-run).")
    elif not parsed.records:
        print("No agencies in the file; nothing imported.")
    else:
        print(f"Imported {result.imported} agencies (replacing {result.replaced} from the same lists).")
    return 0


def _import(args: argparse.Namespace, settings: Settings) -> int:
    from storage import connect

    async def run() -> int:
        parsed = read_agencies(args.file)
        if not parsed.ok or args.dry_run:
            return print_result(ImportResult(parsed, dry_run=args.dry_run), args.file)
        db = await connect(settings.database_url)
        try:
            return print_result(await import_file(db, args.file), args.file)
        finally:
            await db.close()

    return asyncio.run(run())


def _list(args: argparse.Namespace, settings: Settings) -> int:
    from storage import connect

    async def run() -> int:
        db = await connect(settings.database_url)
        try:
            rows = await summary(db)
        finally:
            await db.close()
        if not rows:
            print("The registry is empty: no official list is loaded (see README, Agency registry).")
        for country, source, date, count in rows:
            print(f"{country}  {date.isoformat()}  {count:>5} agencies  {source}")
        return 0

    return asyncio.run(run())


def terminal_safe(text: str) -> str:
    """Imported data shown in a terminal: control characters (escape sequences that could
    rewrite the screen) are shown as their code, never acted on."""
    return "".join(ch if ch == "\n" or unicodedata.category(ch) != "Cc" else f"\\x{ord(ch):02x}" for ch in text)
