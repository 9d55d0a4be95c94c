"""What people tell the bot is encrypted at rest, and a key can be rotated."""

from __future__ import annotations

from cryptography.fernet import Fernet
from sqlalchemy import text

from storage import connect, crypto
from storage.models import Conversation, User


async def test_conversation_answers_are_not_stored_in_clear_and_survive_key_rotation(database_url: str) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    previous = crypto.active()
    crypto.use(crypto.Vault([old]))
    db = await connect(database_url)
    try:
        async with db.transaction() as session:
            user = User(channel="telegram", address="42")
            session.add(user)
            await session.flush()
            session.add(Conversation(user_id=user.id, vars={"description": "They took my passport in Mae Sot"}))
        async with db.session() as session:
            raw = (await session.exec(text("SELECT vars FROM conversations"))).one()[0]  # type: ignore[call-overload]
        assert "passport" not in raw and raw.startswith("gAAAA")

        counts = await crypto.rotate_all(db.engine, crypto.Vault([new, old]))
        assert counts["conversations.vars"] == 1
        crypto.use(crypto.Vault([new]))  # the old key is gone now
        async with db.session() as session:
            conversation = (await session.exec(Conversation.__table__.select())).one()  # type: ignore[attr-defined,call-overload]
        assert conversation.vars == {"description": "They took my passport in Mae Sot"}
    finally:
        crypto.use(previous)
        await db.close()
