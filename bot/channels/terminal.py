"""The terminal chat: the same engine, database and outbox as Telegram, in a shell.

Buttons are printed as numbered options; typing a number presses one. Useful for trying
flows without Telegram, and it keeps the engine honest about knowing no platform.
"""

from __future__ import annotations

import asyncio
import html
import re
import sys
from collections.abc import Callable
from typing import Any, TextIO

from bot.conversation import Conversations
from bot.engine.events import Button, Event, Message
from bot.engine.i18n import Translator
from bot.outbox import Outbox, Sender
from storage.models import OutboxMessage

CHANNEL = "terminal"
_TAG = re.compile(r"<[^>]+>")


def plain(text: str) -> str:
    return html.unescape(_TAG.sub("", text))


class TerminalChat:
    def __init__(self, conversations: Conversations, outbox: Outbox, texts: Translator, *, user: str, lang: str | None,
                 out: TextIO = sys.stdout) -> None:
        self.conversations = conversations
        self.texts = texts
        self.user = user
        self.lang = lang
        self.out = out
        self.buttons: list[Button] = []
        self.sender = Sender(outbox, CHANNEL, self.deliver)

    async def deliver(self, row: OutboxMessage, payload: dict[str, Any]) -> str | None:
        if row.chat != self.user or row.kind != "message":
            return None
        message = Message.from_payload(payload)
        print(f"\nSafeRoute: {plain(message.text)}", file=self.out)
        if message.all_buttons:
            self.buttons = message.all_buttons
            for number, button in enumerate(self.buttons, start=1):
                print(f"  [{number}] {button.label}", file=self.out)
        self.out.flush()
        return None

    def event_for(self, line: str) -> Event:
        base = dict(channel=CHANNEL, address=self.user, client_lang=self.lang)
        stripped = line.strip()
        if stripped.startswith("/"):
            head, _, args = stripped[1:].partition(" ")
            return Event(**base, command=head.lower(), args=args.strip())  # type: ignore[arg-type]
        if stripped.isdigit() and 1 <= int(stripped) <= len(self.buttons):
            return Event(**base, choice=self.buttons[int(stripped) - 1].data)  # type: ignore[arg-type]
        return Event(**base, text=line)  # type: ignore[arg-type]

    async def send(self, line: str) -> None:
        """What happens when the person types a line and presses Enter."""
        await self.conversations.handle(self.event_for(line))
        await self.sender.drain()

    async def run(self, read_line: Callable[[], str] = input) -> None:
        if self.lang:
            async with self.conversations.db.transaction() as session:
                await self.conversations.engine.set_language(session, CHANNEL, self.user, self.lang)
        print(plain(self.texts.get(self.lang, "terminal.intro")), file=self.out)
        await self.sender.drain()
        first = "/start"
        loop = asyncio.get_running_loop()
        while True:
            if first:
                line, first = first, ""
            else:
                try:
                    line = await loop.run_in_executor(None, read_line)
                except (EOFError, KeyboardInterrupt):
                    break
            if line.strip() in ("/quit", "/exit"):
                break
            if line.strip():
                await self.send(line)
