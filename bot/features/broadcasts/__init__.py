"""Awareness broadcasts: staff roles, subscribers, campaigns, and their delivery."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from bot.engine.runner import Action
from bot.features.broadcasts import chat
from bot.features.broadcasts.campaigns import Campaigns
from bot.features.broadcasts.staff import Staff
from storage.models import utcnow

if TYPE_CHECKING:
    from bot.app import Core
    from bot.settings import Settings

ACTION_NAMES = chat.ACTION_NAMES
TEXT_KEYS = ("broadcast.final_report", "broadcast.button.link",
             *(f"broadcast.button.{flow}" for flow in ("guidance", "report", "hotlines", "scam", "agency", "redflags", "selfcheck")),
             *chat.TEXT_KEYS)


class BroadcastsFeature:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.staff = Staff(core.settings.admin_ids, core.admin_channel)
        self.campaigns = Campaigns(core.outbox, core.texts, channels=core.broadcast_channels, rate=core.settings.rate)

    async def send_due(self) -> int:
        """The scheduler's pass: start the runs that are due, close the ones that are done."""
        now = utcnow()
        started = await self.campaigns.fire_due(self.core.db, now)
        async with self.core.db.transaction() as session:
            finished = await self.campaigns.finish_runs(session, now)
        if started or finished:
            self.core.outbox.notify()
        return len(started)

    async def refresh_staff_menus(self) -> int:
        async with self.core.db.transaction() as session:
            count = await self.staff.update_all_menus(session)
        self.core.outbox.notify()
        return count


def feature(core: Core) -> BroadcastsFeature:
    return core.part("broadcasts", lambda: BroadcastsFeature(core))


def actions(core: Core) -> dict[str, Action]:
    return chat.actions(feature(core))


def jobs(core: Core) -> list[tuple[str, float, Callable[[], Awaitable[object]]]]:
    return [("send due campaigns", core.settings.campaign_pass_seconds, feature(core).send_due), ("refresh staff command menus", 24 * 3600.0, feature(core).refresh_staff_menus)]


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    staff = sub.add_parser("staff", help="staff tools: API tokens", description="Staff tools.")
    tools = staff.add_subparsers(dest="staff_command", metavar="TOOL", required=True)
    token = tools.add_parser("token", help="create an API token for a staff member (printed once)",
                             description="Create a bearer token for the staff HTTP API. The person must be an admin "
                                         "(ADMIN_TELEGRAM_IDS) or hold the campaign or admin role.")
    token.add_argument("--telegram-id", required=True, help="the staff member's Telegram user id")
    token.add_argument("--label", default="", help="what the token is for, e.g. 'campaign dashboard'")
    token.add_argument("--days", type=int, default=90, help="how many days it works (default: 90)")
    token.set_defaults(func=_new_token)
    listing = tools.add_parser("tokens", help="list API tokens: id, who, label, created, expires, revoked",
                               description="List every staff API token (never the token itself).")
    listing.set_defaults(func=_list_tokens)
    revoke = tools.add_parser("revoke", help="revoke an API token by its id (see `staff tokens`)",
                              description="Revoke a staff API token at once; requests with it are refused from then on.")
    revoke.add_argument("token_id", type=int, help="the id shown by `python -m bot staff tokens`")
    revoke.set_defaults(func=_revoke_token)


def _new_token(args: argparse.Namespace, settings: Settings) -> int:
    from sqlmodel import select

    from bot.app import build_core
    from storage.models import User

    async def run() -> int:
        core = await build_core(settings)
        try:
            async with core.db.transaction() as session:
                user = (await session.exec(select(User).where(User.channel == core.admin_channel, User.address == args.telegram_id))).first()
                if user is None:
                    user = User(channel=core.admin_channel, address=args.telegram_id)
                    session.add(user)
                    await session.flush()
                if not await feature(core).staff.can_broadcast(session, user):
                    print(f"{args.telegram_id} has no campaign or admin role: grant one first (/grant in chat)", file=sys.stderr)
                    return 1
                token = await feature(core).staff.new_api_token(session, user, args.label, days=args.days)
            print(token)
            return 0
        finally:
            await core.close()

    return asyncio.run(run())


def _with_core(settings: Settings, work: Callable[[Core], Awaitable[int]]) -> int:
    from bot.app import with_core

    return with_core(settings, work)


def _list_tokens(args: argparse.Namespace, settings: Settings) -> int:
    from sqlmodel import col, select

    from storage.broadcasts import ApiToken
    from storage.models import User

    async def work(core: Core) -> int:
        async with core.db.session() as session:
            rows = (await session.exec(select(ApiToken, User).join(User, col(User.id) == col(ApiToken.user_id))
                                       .order_by(col(ApiToken.id)))).all()
        print(f"{'id':>4}  {'telegram id':<14} {'label':<24} {'created':<17} {'expires':<17} revoked")
        for token, user in rows:
            stamp = lambda d: d.strftime("%Y-%m-%d %H:%M") if d else "-"  # noqa: E731
            print(f"{token.id:>4}  {user.address:<14} {token.label[:24]:<24} {stamp(token.created_at):<17} "
                  f"{stamp(token.expires_at):<17} {stamp(token.revoked_at)}")
        if not rows:
            print("no tokens")
        return 0

    return _with_core(settings, work)


def _revoke_token(args: argparse.Namespace, settings: Settings) -> int:
    async def work(core: Core) -> int:
        async with core.db.transaction() as session:
            done = await feature(core).staff.revoke_api_token(session, args.token_id)
        print(f"token {args.token_id} revoked" if done else f"no active token with id {args.token_id}", file=sys.stdout if done else sys.stderr)
        return 0 if done else 1

    return _with_core(settings, work)
