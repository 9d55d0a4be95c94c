"""Command line: `python -m bot [run|chat|check]`. With no command: Telegram when a token
is set, the terminal chat when not."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from bot import features
from bot.app import StartupError, configure_logging, rotate_keys, run_telegram, run_terminal, run_web
from bot.outbox import CannotContinue
from bot.check import check_project, format_report
from bot.settings import PROJECT_ROOT, SettingsError, load_settings
from bot.understand_cli import EVAL_SET, run_understand


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bot", description="SafeRoute: safe-migration guidance and help, on Telegram or in the terminal.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("run", help="run the Telegram bot (long polling); needs TELEGRAM_BOT_TOKEN",
                   description="Run the Telegram bot with long polling. Settings come from the environment (see README).")
    sub.add_parser("web", help="serve the web chat (no Telegram needed) at http://API_HOST:API_PORT/",
                   description="The web chat alone: the same journeys in a browser, served by the bot's HTTP server. "
                               "`run` serves it too, next to Telegram (WEB_CHAT=false turns it off).")
    chat = sub.add_parser("chat", help="talk to the bot in this terminal, no Telegram needed",
                          description="A conversation in the terminal with the same engine and database as the Telegram bot.")
    chat.add_argument("--lang", choices=["km", "lo", "th", "vi", "en", "my"], help="the language to talk in (default: ask)")
    chat.add_argument("--user", default="local", help="who you are, so that separate users keep separate conversations (default: local)")
    check = sub.add_parser("check", help="validate flows, content and translations; print coverage per language",
                           description="Validate every flow, content and locale file. Exits 1 on any error, naming file and line.")
    check.add_argument("--settings", action="store_true", help="print the settings in effect instead (secrets masked)")
    sub.add_parser("rotate-keys", help="re-encrypt stored data with the first key of SAFEROUTE_KEYS",
                   description="Key rotation: put a new key first in SAFEROUTE_KEYS (keep the old one after it), run this, "
                               "then remove the old key.")
    understand = sub.add_parser("understand", help="show what the bot makes of typed texts (intent, slots, score), or evaluate it",
                                description="Prints one JSON object per text: {text, intent, slots, score}. With --eval, runs the "
                                            "evaluation set and prints accuracy per language and recall of danger.")
    understand.add_argument("--lang", default="en", help="the language the texts are in (default: en)")
    understand.add_argument("--eval", metavar="PATH", nargs="?", const=str(EVAL_SET), type=Path,
                            help=f"an evaluation file or folder (default: {EVAL_SET.relative_to(PROJECT_ROOT)})")
    understand.add_argument("--misses", action="store_true", help="with --eval, list every phrase read wrongly")
    understand.add_argument("texts", nargs="*", metavar="TEXT")
    for feature in features.modules():
        if hasattr(feature, "add_commands"):
            feature.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"saferoute: settings: {exc}", file=sys.stderr)
        return 2
    if hasattr(args, "func"):
        return int(args.func(args, settings) or 0)
    if args.command == "rotate-keys":
        counts = asyncio.run(rotate_keys(settings))
        for column, n in counts.items():
            print(f"{column}: {n} value(s) re-encrypted")
        return 0
    if args.command == "understand":
        return run_understand(args, settings)
    if args.command == "check" and args.settings:
        width = max(len(name) for name in settings.shown())
        for name, value in settings.shown().items():
            print(f"{name:<{width}}  {value}")
        return 0
    if args.command == "check":
        report = check_project(settings.flows_dir, settings.locales_dir, settings.private_files())
        print(format_report(report))
        return 0 if report.ok else 1
    configure_logging(settings.log_level if args.command in ("run", "web") or settings.telegram_bot_token else "WARNING", settings.log_format)
    try:
        if args.command == "web":
            asyncio.run(run_web(settings))
            return 0
        if args.command == "chat" or (args.command is None and not settings.telegram_bot_token):
            asyncio.run(run_terminal(settings, user=getattr(args, "user", "local"), lang=getattr(args, "lang", None)))
            return 0
        if not settings.telegram_bot_token:
            print("No TELEGRAM_BOT_TOKEN is set: to talk to the bot without Telegram, run `python -m bot chat`.", file=sys.stderr)
            return 2
        asyncio.run(run_telegram(settings))
    except KeyboardInterrupt:
        pass
    except StartupError as exc:
        print(f"saferoute: {exc}", file=sys.stderr)
        return 2
    except CannotContinue as exc:
        print(f"saferoute: stopped: {exc}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
