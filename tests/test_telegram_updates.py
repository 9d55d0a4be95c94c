"""Telegram's updates read from their JSON (bot/channels/telegram_updates.py) give the same
events python-telegram-bot's objects gave, for every kind of update SafeRoute acts on, and an
update that breaks the Bot API's types is set aside as python-telegram-bot would have."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings, strategies as st
from telegram import Update

from bot.channels.telegram_updates import UnreadableUpdate, chat_of, client_language, event_from_update
from bot.engine.events import Event

CHANNEL = "telegram"
USER = st.integers(1, 2**52)
GROUP = st.integers(-(2**52), -1)
TEXT = st.text(max_size=30) | st.sampled_from(["/start", "/status AB12CD", "/report@SafeRouteBot now", "ជួយផង", "/", "/ "])
LANG = st.none() | st.sampled_from(["km", "lo", "th", "vi", "en-US", "my"])


def _as_python_telegram_bot_read_it(update: Update) -> tuple[Event, list[Any]] | None:
    """The conversion as it was, on python-telegram-bot's objects: the oracle."""
    if update.callback_query is not None:
        query = update.callback_query
        receipts: list[Any] = [("ack", {"callback_id": query.id})]
        chat = str(query.message.chat.id) if query.message is not None else str(query.from_user.id)
        if query.message is not None and query.message.chat.type == "private":
            receipts.append(("clear_buttons", {"message_id": query.message.message_id}))
        return Event(CHANNEL, str(query.from_user.id), choice=query.data or "", client_lang=query.from_user.language_code, chat=chat,
                     message_ref=str(query.message.message_id) if query.message else None), receipts
    member = update.my_chat_member
    if member is not None:
        if member.chat.type != "private":
            return None
        status = member.new_chat_member.status
        presence = "left" if status in ("kicked", "left") else "back" if status == "member" else None
        return (Event(CHANNEL, str(member.from_user.id), chat=str(member.chat.id), presence=presence), []) if presence else None
    message = update.message
    if message is None or message.from_user is None:
        return None
    user = message.from_user
    text = message.text or message.caption or ""
    attachments = [{"kind": "photo", "file_id": message.photo[-1].file_id}] if message.photo else []
    for kind in ("voice", "audio", "video", "document", "video_note"):
        media = getattr(message, kind)
        if media is not None:
            attachments.append({"kind": kind, "file_id": media.file_id})
    base: dict[str, Any] = dict(
        channel=CHANNEL, address=str(user.id), client_lang=user.language_code, chat=str(message.chat.id),
        message_ref=str(message.message_id), attachments=attachments,
        location={"lat": message.location.latitude, "lon": message.location.longitude} if message.location else None,
        contact_phone=message.contact.phone_number if message.contact else None,
        reply_to_ref=str(message.reply_to_message.message_id) if message.reply_to_message else None,
    )
    if message.text and text.startswith("/"):
        head, _, args = text[1:].partition(" ")
        return Event(**base, command=head.split("@")[0].lower(), args=args.strip()), []
    return Event(**base, text=text), []


@st.composite
def person(draw: Any) -> dict[str, Any]:
    user = {"id": draw(USER), "is_bot": False, "first_name": "Dara"}
    lang = draw(LANG)
    if lang:
        user["language_code"] = lang
    return user


@st.composite
def chat(draw: Any, user: dict[str, Any]) -> dict[str, Any]:
    if draw(st.booleans()):
        return {"id": user["id"], "type": "private", "first_name": "Dara"}
    return {"id": draw(GROUP), "type": draw(st.sampled_from(["group", "supergroup"])), "title": "Partner"}


@st.composite
def message(draw: Any, user: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"message_id": draw(st.integers(1, 2**31)), "date": 1764590000, "chat": draw(chat(user)), "from": user}
    what = draw(st.sampled_from(["text", "caption", "location", "contact", "photo", "voice", "document", "sticker"]))
    if what == "text":
        out["text"] = draw(TEXT) or "."
    elif what == "caption":
        out["photo"] = [{"file_id": f"P{n}", "file_unique_id": f"u{n}", "width": 90 * n, "height": 90 * n} for n in (1, 2, 3)]
        out["caption"] = draw(TEXT) or "."
    elif what == "location":
        out["location"] = {"latitude": draw(st.floats(-90, 90)), "longitude": draw(st.floats(-180, 180))}
    elif what == "contact":
        out["contact"] = {"phone_number": draw(st.text(min_size=1, max_size=15)), "first_name": "Dara"}
    elif what == "photo":
        out["photo"] = [{"file_id": "small", "file_unique_id": "s", "width": 90, "height": 90},
                        {"file_id": "large", "file_unique_id": "l", "width": 800, "height": 800}]
    elif what == "sticker":
        out["sticker"] = {"file_id": "S", "file_unique_id": "S1", "type": "regular", "width": 512, "height": 512,
                          "is_animated": False, "is_video": False}
    else:
        out[what] = {"file_id": f"{what}-1", "file_unique_id": "x", **({"duration": 3} if what == "voice" else {})}
    if draw(st.booleans()):
        out["reply_to_message"] = {"message_id": draw(st.integers(1, 2**31)), "date": 1764589000, "chat": out["chat"], "text": "earlier"}
    return out


@st.composite
def update(draw: Any) -> dict[str, Any]:
    user = draw(person())
    kind = draw(st.sampled_from(["message", "message", "callback_query", "callback_query", "my_chat_member", "edited_message", "channel_post"]))
    item: dict[str, Any] = {"update_id": draw(st.integers(1, 2**31))}
    if kind in ("message", "edited_message"):
        item[kind] = draw(message(user))
    elif kind == "channel_post":
        item[kind] = {"message_id": 5, "date": 1764590000, "chat": {"id": -1002000000001, "type": "channel", "title": "c"}, "text": "news"}
    elif kind == "callback_query":
        query: dict[str, Any] = {"id": str(draw(st.integers(1, 2**62))), "from": user, "chat_instance": "42"}
        if draw(st.booleans()):
            query["data"] = draw(st.text(max_size=20))
        where = draw(st.sampled_from(["message", "inaccessible", "none"]))
        if where == "message":
            query["message"] = {"message_id": draw(st.integers(1, 2**31)), "date": 1764590000, "chat": draw(chat(user)), "text": "Is anyone in danger?",
                                "from": {"id": 999, "is_bot": True, "first_name": "SafeRoute"}}
        elif where == "inaccessible":
            query["message"] = {"message_id": draw(st.integers(1, 2**31)), "date": 0, "chat": draw(chat(user))}
        item[kind] = query
    else:
        status = draw(st.sampled_from(["member", "kicked", "left", "administrator"]))
        member = {"user": {"id": 999, "is_bot": True, "first_name": "SafeRoute"}, "status": status}
        if status == "kicked":
            member["until_date"] = 0
        if status == "administrator":
            member.update({k: False for k in ("can_be_edited", "is_anonymous", "can_manage_chat", "can_delete_messages", "can_manage_video_chats",
                                               "can_restrict_members", "can_promote_members", "can_change_info", "can_invite_users",
                                               "can_post_stories", "can_edit_stories", "can_delete_stories")})
        old = {"user": member["user"], "status": "left"}
        item[kind] = {"chat": draw(chat(user)), "from": user, "date": 1764590000, "old_chat_member": old, "new_chat_member": member}
    return item


@settings(max_examples=300, deadline=None)
@given(item=update())
def test_an_update_read_from_its_json_gives_the_event_python_telegram_bot_objects_gave(item: dict[str, Any]) -> None:
    expected = _as_python_telegram_bot_read_it(Update.de_json(item, None))  # type: ignore[arg-type]
    chat_of(item)  # checked first, as the channel does
    assert event_from_update(item) == expected


def test_the_chat_and_the_persons_app_language_are_read_for_pacing_and_the_slow_down_note() -> None:
    item = {"update_id": 7, "message": {"message_id": 3, "date": 1764590000, "chat": {"id": 42, "type": "private"},
                                        "from": {"id": 42, "is_bot": False, "first_name": "Noy", "language_code": "lo"}, "text": "ຊ່ວຍແດ່"}}
    assert chat_of(item) == "42" and client_language(item) == "lo"
    assert chat_of({"update_id": 8, "inline_query": {"id": "1"}}) == "-"


@pytest.mark.parametrize("broken", [
    {"update_id": 9, "message": {"message_id": 9, "date": "yesterday", "chat": {"id": 1, "type": "private"}}},
    {"update_id": 9, "message": {"message_id": 9, "date": 0, "chat": {"id": "1", "type": "private"}}},
    {"update_id": 9, "message": {"message_id": 9, "date": 0}},
    {"update_id": 9, "message": {"message_id": 9, "date": 0, "chat": {"id": 1, "type": "private"}, "from": {"id": 1}, "text": 12}},
    {"update_id": 9, "callback_query": {"id": 5, "from": {"id": 1}}},
    {"update_id": 9, "callback_query": {"id": "5", "from": {"id": 1}, "message": {"chat": {"id": 1, "type": "private"}}}},
    {"update_id": 9, "my_chat_member": {"chat": {"id": 1, "type": "private"}, "from": {"id": 1}, "new_chat_member": {}}},
    {"update_id": "9"},
    ["not", "an", "update"],
])
def test_an_update_that_breaks_the_bot_api_types_is_unreadable(broken: Any) -> None:
    with pytest.raises(UnreadableUpdate):
        chat_of(broken)
