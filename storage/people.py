"""A person and where they are in a conversation, read and written on SQLAlchemy Core.

Every update reads both and writes the conversation; through the ORM that was a query with
its compile state and instance loading, and a unit-of-work flush, about a seventh of the
bot's busy time under the update benchmark. Here the read is one Core statement built once;
the person is attached to the session as already loaded (features still read and change it
through the ORM), and the conversation is kept out of the session and written back with one
statement. Other code reads another person's conversation through the ORM (a caseworker
closing a case asks the reporter for feedback), possibly in the same transaction (group
commit), so pending ORM changes are flushed before the read and a loaded ORM copy of the
conversation is dropped once it is written here.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.orm.util import identity_key
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.direct import Prepared
from storage.models import Conversation, User, utcnow

_USERS = User.__table__  # type: ignore[attr-defined]
_CONVERSATIONS = Conversation.__table__  # type: ignore[attr-defined]
_USER_COLUMNS = [c.name for c in _USERS.c]
_CONVERSATION_COLUMNS = [c.name for c in _CONVERSATIONS.c]
# Locked for the transaction (PostgreSQL): with several workers, two updates of one person
# reaching two of them at once are handled one after the other, each on the other's result.
_LOAD = Prepared(select(*_USERS.c, *_CONVERSATIONS.c).select_from(_USERS.outerjoin(_CONVERSATIONS, _CONVERSATIONS.c.user_id == _USERS.c.id))
         .where(_USERS.c.channel == bindparam("channel_"), _USERS.c.address == bindparam("address_")).with_for_update(of=_USERS))
_UPDATE = Prepared(_CONVERSATIONS.update().where(_CONVERSATIONS.c.user_id == bindparam("user_")).values(
    flow=bindparam("flow_"), step=bindparam("step_"), vars=bindparam("vars_"), updated_at=bindparam("at_")))
_INSERT = Prepared(_CONVERSATIONS.insert().values(user_id=bindparam("user_"), flow=bindparam("flow_"), step=bindparam("step_"),
                                                  vars=bindparam("vars_"), updated_at=bindparam("at_")))
_DELETE = Prepared(_CONVERSATIONS.delete().where(_CONVERSATIONS.c.user_id == bindparam("user_")))


def _loaded(cls: type[Any], values: dict[str, Any]) -> Any:
    """An instance as the ORM builds one when it loads a row (no __init__: SQLModel's costs
    four times as much)."""
    instance = cls._sa_class_manager.new_instance()
    instance.__dict__.update(values)
    return instance


async def _flush_pending(session: AsyncSession) -> None:
    if session.new or session.dirty or session.deleted:
        await session.flush()


def _drop_loaded_conversation(session: AsyncSession, user_id: int) -> None:
    loaded = session.sync_session.identity_map.get(identity_key(Conversation, user_id))
    if loaded is not None:
        session.expunge(loaded)


async def load_person(session: AsyncSession, channel: str, address: str) -> tuple[User, Conversation, bool]:
    """The person (attached to the session; made if new) and their conversation (detached;
    empty if none), and whether the conversation is stored yet."""
    await _flush_pending(session)
    connection = await session.connection()
    found = (await _LOAD.run(connection, {"channel_": channel, "address_": address})).mappings()
    if not found:
        user = User(channel=channel, address=address)
        session.add(user)
        await session.flush()
        return user, _loaded(Conversation, {"user_id": user.id, "flow": None, "step": None, "vars": {}, "updated_at": utcnow()}), False
    values = found[0]
    attached = session.sync_session.identity_map.get(identity_key(User, values["id"]))
    if attached is not None:
        user = attached
    else:
        user = _loaded(User, {name: values[name] for name in _USER_COLUMNS})
        make_transient_to_detached(user)
        session.add(user)
    if values["user_id"] is None:
        return user, _loaded(Conversation, {"user_id": user.id, "flow": None, "step": None, "vars": {}, "updated_at": utcnow()}), False
    return user, _loaded(Conversation, {name: values[name] for name in _CONVERSATION_COLUMNS}), True


async def save_conversation(session: AsyncSession, conversation: Conversation, *, stored: bool) -> None:
    connection = await session.connection()
    await (_UPDATE if stored else _INSERT).run(connection, {
        "user_": conversation.user_id, "flow_": conversation.flow, "step_": conversation.step, "vars_": conversation.vars or {},
        "at_": conversation.updated_at})
    _drop_loaded_conversation(session, conversation.user_id)


async def delete_conversation(session: AsyncSession, user_id: int) -> None:
    await _flush_pending(session)
    connection = await session.connection()
    await _DELETE.run(connection, {"user_": user_id})
    _drop_loaded_conversation(session, user_id)
