"""Telegram's updates read as it sends them (JSON), into the channel-neutral event.

python-telegram-bot builds an object for every part of an update (the message, its chat,
its sender, their keyboard, entities, dates) and hands it through its Application to a
handler: 5 % of the bot's busy time under the update benchmark, for the dozen fields
SafeRoute reads. Here those fields are read from the update itself, each checked against
the type the Bot API gives it, so an update that does not follow the Bot API (which
python-telegram-bot could not have read either) is set aside rather than half-understood.
"""

from __future__ import annotations

from typing import Any

from bot.conversation import Receipt
from bot.engine.events import Event

CHANNEL = "telegram"
MESSAGE_KINDS = ("message", "edited_message", "channel_post", "edited_channel_post", "business_message", "edited_business_message")
CHAT_KINDS = ("my_chat_member", "chat_member", "chat_join_request", "message_reaction", "message_reaction_count", "chat_boost",
              "removed_chat_boost")
MEDIA_KINDS = ("voice", "audio", "video", "document", "video_note")


class UnreadableUpdate(ValueError):
    """A field SafeRoute reads is missing or not of the Bot API's type; the text names the field, never its value."""


def _object(node: dict[str, Any], name: str) -> dict[str, Any]:
    value = node.get(name)
    if not isinstance(value, dict):
        raise UnreadableUpdate(name)
    return value


def _int(node: dict[str, Any], name: str) -> int:
    value = node.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise UnreadableUpdate(name)
    return value


def _optional(node: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = node.get(name)
    if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
        raise UnreadableUpdate(name)
    return value


def _chat(node: dict[str, Any]) -> int:
    chat = _object(node, "chat")
    if not isinstance(chat.get("type"), str):
        raise UnreadableUpdate("chat.type")
    return _int(chat, "id")


def _user(node: dict[str, Any], name: str = "from") -> dict[str, Any]:
    user = _object(node, name)
    _int(user, "id")
    _optional(user, "language_code", str)
    return user


def _check_message(message: dict[str, Any]) -> int:
    _int(message, "message_id")
    _int(message, "date")
    chat = _chat(message)
    if "from" in message:
        _user(message)
    _optional(message, "text", str)
    _optional(message, "caption", str)
    if "location" in message:
        location = _object(message, "location")
        for axis in ("latitude", "longitude"):
            if not isinstance(location.get(axis), int | float) or isinstance(location.get(axis), bool):
                raise UnreadableUpdate(f"location.{axis}")
    if "contact" in message and not isinstance(_object(message, "contact").get("phone_number"), str):
        raise UnreadableUpdate("contact.phone_number")
    if "reply_to_message" in message:
        _int(_object(message, "reply_to_message"), "message_id")
    if "photo" in message:
        sizes = message["photo"]
        if not isinstance(sizes, list) or not sizes or not all(isinstance(s, dict) and isinstance(s.get("file_id"), str) for s in sizes):
            raise UnreadableUpdate("photo")
    for kind in MEDIA_KINDS:
        if kind in message and not isinstance(_object(message, kind).get("file_id"), str):
            raise UnreadableUpdate(f"{kind}.file_id")
    return chat


def chat_of(update: dict[str, Any]) -> str:
    """The chat an update belongs to ("-" for none), once the update is checked: what
    SafeRoute reads of it must be there, of the Bot API's types; otherwise UnreadableUpdate."""
    if not isinstance(update, dict):
        raise UnreadableUpdate("update")
    _int(update, "update_id")
    for kind in MESSAGE_KINDS:
        if kind in update:
            return str(_check_message(_object(update, kind)))
    if "callback_query" in update:
        query = _object(update, "callback_query")
        if not isinstance(query.get("id"), str):
            raise UnreadableUpdate("callback_query.id")
        _user(query)
        _optional(query, "data", str)
        if "message" not in query:
            return "-"
        message = _object(query, "message")  # possibly inaccessible (date 0): its id and chat are still there
        _int(message, "message_id")
        return str(_chat(message))
    if "my_chat_member" in update:
        member = _object(update, "my_chat_member")
        _user(member)
        if not isinstance(_object(member, "new_chat_member").get("status"), str):
            raise UnreadableUpdate("my_chat_member.new_chat_member.status")
        return str(_chat(member))
    for kind in CHAT_KINDS:
        if kind in update and isinstance(update[kind], dict) and isinstance(update[kind].get("chat"), dict):
            return str(_chat(update[kind]))
    return "-"


def is_private_message(update: dict[str, Any]) -> bool:
    message = update.get("message")
    return isinstance(message, dict) and message["chat"]["type"] == "private"


def client_language(update: dict[str, Any]) -> str | None:
    """The language the person's Telegram app is set to, if the update says."""
    for kind in ("message", "callback_query", "my_chat_member"):
        node = update.get(kind)
        if isinstance(node, dict) and isinstance(node.get("from"), dict):
            return node["from"].get("language_code")
    return None


def _attachments(message: dict[str, Any]) -> list[dict[str, str]]:
    found: list[dict[str, str]] = []
    if message.get("photo"):
        found.append({"kind": "photo", "file_id": message["photo"][-1]["file_id"]})
    for kind in MEDIA_KINDS:
        if message.get(kind):
            found.append({"kind": kind, "file_id": message[kind]["file_id"]})
    return found


def event_from_update(update: dict[str, Any]) -> tuple[Event, list[Receipt]] | None:
    """The channel-neutral event for a checked update (`chat_of`), and what Telegram needs
    done in return; None for what SafeRoute does not act on."""
    query = update.get("callback_query")
    if query is not None:
        user = query["from"]
        receipts: list[Receipt] = [("ack", {"callback_id": query["id"]})]
        message = query.get("message")
        chat = str(message["chat"]["id"]) if message is not None else str(user["id"])
        if message is not None and message["chat"]["type"] == "private":
            receipts.append(("clear_buttons", {"message_id": message["message_id"]}))
        return Event(CHANNEL, str(user["id"]), choice=query.get("data") or "", client_lang=user.get("language_code"), chat=chat,
                     message_ref=str(message["message_id"]) if message is not None else None), receipts
    member = update.get("my_chat_member")
    if member is not None:
        if member["chat"]["type"] != "private":
            return None  # added to or removed from a group: partners' groups are set in their file
        status = member["new_chat_member"]["status"]
        presence = "left" if status in ("kicked", "left") else "back" if status == "member" else None
        return (Event(CHANNEL, str(member["from"]["id"]), chat=str(member["chat"]["id"]), presence=presence), []) if presence else None
    message = update.get("message")
    if message is None or message.get("from") is None:
        return None
    user = message["from"]
    text = message.get("text") or message.get("caption") or ""
    location = message.get("location")
    base: dict[str, Any] = dict(
        channel=CHANNEL, address=str(user["id"]), client_lang=user.get("language_code"), chat=str(message["chat"]["id"]),
        message_ref=str(message["message_id"]), attachments=_attachments(message),
        location={"lat": location["latitude"], "lon": location["longitude"]} if location else None,
        contact_phone=message["contact"]["phone_number"] if message.get("contact") else None,
        reply_to_ref=str(message["reply_to_message"]["message_id"]) if message.get("reply_to_message") else None,
    )
    if message.get("text") and text.startswith("/"):
        head, _, args = text[1:].partition(" ")
        return Event(**base, command=head.split("@")[0].lower(), args=args.strip()), []
    return Event(**base, text=text), []
