"""Staff roles (admin, campaign, partner) and the audit log of what staff did."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta, timezone

from sqlmodel import col, or_, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.engine.i18n import SOURCE_LANGUAGE
from bot.outbox import Outbox
from storage.broadcasts import ApiToken, AuditEntry, StaffInvite, StaffRole
from storage.models import User, utcnow

ROLES = ("admin", "campaign", "partner")
INVITE_LIFETIME = timedelta(days=7)
TOKEN_DAYS = 90  # a staff API token works this long; make a new one with `python -m bot staff token`


class StaffError(ValueError):
    """A staff action that cannot be done; the message says why (shown to staff)."""


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Staff:
    def __init__(self, admin_ids: set[str], admin_channel: str) -> None:
        """`admin_ids`: the first admins, by their address on `admin_channel` (from the settings)."""
        self.admin_ids = admin_ids
        self.admin_channel = admin_channel

    async def roles(self, session: AsyncSession, user: User) -> set[str]:
        roles = set((await session.exec(select(StaffRole.role).where(StaffRole.user_id == user.id))).all())
        if user.channel == self.admin_channel and user.address in self.admin_ids:
            roles.add("admin")
        return roles

    async def can_broadcast(self, session: AsyncSession, user: User) -> bool:
        return bool({"admin", "campaign"} & await self.roles(session, user))

    async def is_admin(self, session: AsyncSession, user: User) -> bool:
        return "admin" in await self.roles(session, user)

    @staticmethod
    def audit(session: AsyncSession, actor: User | None, action: str, target: str = "") -> None:
        session.add(AuditEntry(actor_id=actor.id if actor else None, action=action, target=target[:128]))

    async def update_menu(self, session: AsyncSession, user: User) -> None:
        """Staff see their commands in the chat's command menu; everyone else does not."""
        await session.flush()
        menu = "staff" if await self.can_broadcast(session, user) else "everyone"
        Outbox.add(session, user.channel, user.address, "commands", {"menu": menu, "lang": user.lang})

    async def update_all_menus(self, session: AsyncSession) -> int:
        """At start: the menus of everyone with a role, and of the admins named in settings."""
        with_role = select(StaffRole.user_id)
        known = list(await session.exec(select(User).where(or_(
            col(User.id).in_(with_role), (col(User.channel) == self.admin_channel) & col(User.address).in_(self.admin_ids)))))
        for user in known:
            await self.update_menu(session, user)
        # An admin named in settings who has not written to the bot yet: their address is their
        # chat (so on Telegram), so the menu can be set already, until they pick a language.
        unknown = self.admin_ids - {u.address for u in known if u.channel == self.admin_channel}
        for address in unknown:
            Outbox.add(session, self.admin_channel, address, "commands", {"menu": "staff", "lang": SOURCE_LANGUAGE})
        return len(known) + len(unknown)

    async def grant(self, session: AsyncSession, admin: User, target: User, role: str) -> None:
        if role not in ROLES:
            raise StaffError(f"unknown role '{role}' (roles: {', '.join(ROLES)})")
        if not await self.is_admin(session, admin):
            raise StaffError("only an admin can grant roles")
        existing = (await session.exec(select(StaffRole).where(StaffRole.user_id == target.id, StaffRole.role == role))).first()
        if existing is None:
            session.add(StaffRole(user_id=target.id, role=role, granted_by=admin.id))  # type: ignore[arg-type]
        self.audit(session, admin, "grant", f"user:{target.id} role:{role}")
        await self.update_menu(session, target)

    async def revoke(self, session: AsyncSession, admin: User, target: User, role: str) -> bool:
        if not await self.is_admin(session, admin):
            raise StaffError("only an admin can revoke roles")
        row = (await session.exec(select(StaffRole).where(StaffRole.user_id == target.id, StaffRole.role == role))).first()
        if row is not None:
            await session.delete(row)
        self.audit(session, admin, "revoke", f"user:{target.id} role:{role}")
        await self.update_menu(session, target)
        return row is not None

    async def invite(self, session: AsyncSession, admin: User, role: str, now: datetime | None = None) -> str:
        """A one-time token for a deep link (`/start inv_<token>`)."""
        if role not in ROLES:
            raise StaffError(f"unknown role '{role}' (roles: {', '.join(ROLES)})")
        if not await self.is_admin(session, admin):
            raise StaffError("only an admin can invite staff")
        token = secrets.token_urlsafe(18)
        session.add(StaffInvite(token_hash=_hash(token), role=role, created_by=admin.id,  # type: ignore[arg-type]
                                expires_at=(now or utcnow()) + INVITE_LIFETIME))
        self.audit(session, admin, "invite", f"role:{role}")
        return token

    async def accept(self, session: AsyncSession, user: User, token: str, now: datetime | None = None) -> str:
        invite = (await session.exec(select(StaffInvite).where(StaffInvite.token_hash == _hash(token)))).first()
        now = now or utcnow()
        if invite is None or invite.used_at is not None or invite.expires_at < now:
            raise StaffError("this invite link is not valid any more")
        # One winner when two people open the link at once: a conditional update, not a read then a write.
        won = await session.exec(update(StaffInvite).where(  # type: ignore[call-overload]
            col(StaffInvite.id) == invite.id, col(StaffInvite.used_at).is_(None), col(StaffInvite.expires_at) >= now)
            .values(used_by=user.id, used_at=now).execution_options(synchronize_session=False))
        if won.rowcount != 1:
            raise StaffError("this invite link is not valid any more")
        if (await session.exec(select(StaffRole).where(StaffRole.user_id == user.id, StaffRole.role == invite.role))).first() is None:
            session.add(StaffRole(user_id=user.id, role=invite.role, granted_by=invite.created_by))  # type: ignore[arg-type]
        self.audit(session, user, "accept_invite", f"role:{invite.role}")
        await self.update_menu(session, user)
        return invite.role

    async def new_api_token(self, session: AsyncSession, user: User, label: str = "", days: int = TOKEN_DAYS) -> str:
        token = "srt_" + secrets.token_urlsafe(24)
        session.add(ApiToken(token_hash=_hash(token), user_id=user.id, label=label, expires_at=utcnow() + timedelta(days=days)))  # type: ignore[arg-type]
        self.audit(session, user, "api_token_created", label)
        return token

    async def user_for_token(self, session: AsyncSession, token: str) -> User | None:
        row = (await session.exec(select(ApiToken).where(ApiToken.token_hash == _hash(token), ApiToken.revoked_at == None))).first()  # noqa: E711
        if row is None or (row.expires_at is not None and row.expires_at.replace(tzinfo=timezone.utc) <= utcnow()):
            return None
        return await session.get(User, row.user_id)

    async def revoke_api_token(self, session: AsyncSession, token_id: int) -> bool:
        row = await session.get(ApiToken, token_id)
        if row is None or row.revoked_at is not None:
            return False
        row.revoked_at = utcnow()
        session.add(row)
        user = await session.get(User, row.user_id)
        if user is not None:
            self.audit(session, user, "api_token_revoked", f"token:{token_id}")
        return True
