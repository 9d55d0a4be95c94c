"""Links into the bot on Telegram: t.me deep links, whose start payload opens a journey."""

from __future__ import annotations


def deep_link(bot_username: str, payload: str) -> str:
    return f"https://t.me/{bot_username}?start={payload}"


def message_link(chat_id: int | str | None, message_id: str | None) -> str | None:
    """A link that opens a message in a supergroup (their ids start with -100); None elsewhere."""
    chat = str(chat_id or "")
    if not message_id or not chat.startswith("-100"):
        return None
    return f"https://t.me/c/{chat[4:]}/{message_id}"
