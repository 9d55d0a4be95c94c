"""Who gets awareness messages: users who said yes, in their language, for their topics."""

from __future__ import annotations

from sqlmodel.ext.asyncio.session import AsyncSession

from storage.broadcasts import Subscription
from storage.models import User, utcnow

from bot.features.broadcasts.campaigns import DEFAULT_TZ, TOPICS


async def subscription(session: AsyncSession, user: User) -> Subscription | None:
    return await session.get(Subscription, user.id)


async def subscribe(session: AsyncSession, user: User, *, topics: list[str] | None = None, origin: str | None = None,
                    tz: str = DEFAULT_TZ) -> Subscription:
    row = await session.get(Subscription, user.id) or Subscription(user_id=user.id)  # type: ignore[arg-type]
    row.active = True
    row.topics = [t for t in (topics or list(TOPICS)) if t in TOPICS]
    row.origin = origin or row.origin
    row.timezone = tz or row.timezone
    row.changed_at = utcnow()
    session.add(row)
    return row


async def unsubscribe(session: AsyncSession, user: User) -> bool:
    """Stop at once; returns whether the user was subscribed."""
    row = await session.get(Subscription, user.id)
    if row is None:
        row = Subscription(user_id=user.id, active=False, topics=[])  # type: ignore[arg-type]
        session.add(row)  # remembers that they were asked, so the offer does not come back
        return False
    was = row.active
    row.active = False
    row.changed_at = utcnow()
    session.add(row)
    return was


async def was_asked(session: AsyncSession, user: User) -> bool:
    return await session.get(Subscription, user.id) is not None


async def declined(session: AsyncSession, user: User) -> None:
    if await session.get(Subscription, user.id) is None:
        session.add(Subscription(user_id=user.id, active=False, topics=[]))  # type: ignore[arg-type]
