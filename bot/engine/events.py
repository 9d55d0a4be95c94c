"""What a channel hands the engine, and what the engine hands back: no platform types."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

MAX_MESSAGE_CHARS = 4096


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

    def to_payload(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Message:
        return cls(payload["text"], [Button(**b) for b in payload.get("buttons", [])], payload.get("columns", 1),
                   payload.get("reply_to"), payload.get("force_reply", False))


@dataclass
class Deletion:
    """Remove a message from the chat (quick exit)."""

    ref: str


Output = Message | Deletion


def split_text(text: str, limit: int = MAX_MESSAGE_CHARS) -> list[str]:
    """Split at paragraph, then line boundaries so that no part exceeds the limit."""
    if len(text) <= limit:
        return [text]
    parts: list[str] = []
    current = ""
    for para in text.split("\n"):
        candidate = f"{current}\n{para}" if current else para
        if len(candidate) <= limit:
            current = candidate
            continue
        if current:
            parts.append(current)
        while len(para) > limit:
            parts.append(para[:limit])
            para = para[limit:]
        current = para
    if current:
        parts.append(current)
    return parts
