"""What a channel hands the engine, and what the engine hands back: no platform types."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MAX_MESSAGE_CHARS = 4096
MAX_VISIBLE_CHARS = 1000  # what a phone shows on about one screen; no message of a journey is longer
_TAG = re.compile(r"<[^>]+>")


def visible_len(text: str) -> int:
    """Characters a person sees: tags out, entities as the one character they stand for."""
    return len(html.unescape(_TAG.sub("", text)))


def telegram_len(text: str) -> int:
    """Length as Telegram measures it against its 4,096 limit: UTF-16 code units of the
    text after its HTML entities are parsed (an emoji counts 2)."""
    return len(html.unescape(_TAG.sub("", text)).encode("utf-16-le")) // 2


@dataclass
class Event:
    channel: str
    address: str
    text: str | None = None
    choice: str | None = None
    command: str | None = None
    args: str = ""
    client_lang: str | None = None
    chat: str = ""
    message_ref: str | None = None
    reply_to_ref: str | None = None
    attachments: list[dict[str, str]] = field(default_factory=list)
    location: dict[str, float] | None = None
    contact_phone: str | None = None  # a contact card the person shared (their own number, at a phone question)
    presence: str | None = None  # "left" (blocked the bot, deleted the chat) or "back": nothing to answer
    zawgyi: bool = False  # the text came in the Zawgyi encoding and was read as Unicode

    @property
    def reply_to(self) -> str:
        return self.chat or self.address


@dataclass
class Button:
    data: str
    label: str
    url: str | None = None


@dataclass
class Message:
    text: str
    buttons: list[Button] = field(default_factory=list)
    columns: int = 1
    reply_to: str | None = None
    force_reply: bool = False
    nav: list[Button] = field(default_factory=list)

    @property
    def all_buttons(self) -> list[Button]:
        return [*self.buttons, *self.nav]

    def to_payload(self) -> dict[str, Any]:
        # By hand: dataclasses.asdict deep-copies every field, a tenth of a millisecond a message.
        payload: dict[str, Any] = {"text": self.text, "buttons": [_button(b) for b in self.buttons], "columns": self.columns,
                                   "reply_to": self.reply_to, "force_reply": self.force_reply}
        if self.nav:
            payload["nav"] = [_button(b) for b in self.nav]
        return payload

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Message:
        return cls(payload["text"], [Button(**b) for b in payload.get("buttons", [])], payload.get("columns", 1),
                   payload.get("reply_to"), payload.get("force_reply", False), [Button(**b) for b in payload.get("nav", [])])


def _button(button: Button) -> dict[str, Any]:
    return {"data": button.data, "label": button.label, "url": button.url}


@dataclass
class Deletion:
    """Remove a message from the chat (quick exit)."""

    ref: str


Output = Message | Deletion


def split_text(text: str, limit: int = MAX_VISIBLE_CHARS, measure: Callable[[str], int] = visible_len) -> list[str]:
    """Split at paragraph, then line boundaries so that no part measures more than `limit`
    (visible characters by default; Telegram's UTF-16 units with `telegram_len`). A single
    line longer than that is cut between words, never inside a tag or an entity."""
    if measure(text) <= limit:
        return [text]
    parts: list[str] = []
    current = ""
    for para in text.split("\n"):
        candidate = f"{current}\n{para}" if current else para
        if measure(candidate) <= limit:
            current = candidate
            continue
        if current:
            parts.append(current)
        while measure(para) > limit:
            cut = _cut_point(para, limit, measure is telegram_len)
            parts.append(para[:cut].rstrip())
            para = para[cut:].lstrip()
        current = para
    if current:
        parts.append(current)
    return [part for part in parts if part.strip()]


def _cut_point(text: str, limit: int, utf16: bool = False) -> int:
    """The last space (else any point) before `limit` is reached, never inside a tag or an
    entity, and preferably outside any open tag."""
    seen, index, last_space, any_point, depth = 0, 0, 0, 0, 0
    while index < len(text):
        ch = text[index]
        if ch == "<":
            end = text.find(">", index)
            depth += -1 if text.startswith("</", index) else 1
            index = end + 1 if end >= 0 else len(text)
            continue
        if ch == "&":
            end = text.find(";", index)
            shown = html.unescape(text[index:end + 1]) if 0 <= end - index <= 8 else ch
            step = end + 1 - index if 0 <= end - index <= 8 else 1
        else:
            shown, step = ch, 1
        width = len(shown.encode("utf-16-le")) // 2 if utf16 else len(shown)
        if seen + width > limit:
            break
        index += step
        seen += width
        if depth == 0:
            any_point = index
            if ch == " ":
                last_space = index
    return (last_space if last_space > any_point // 2 else any_point) or index
