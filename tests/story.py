"""Writing end-to-end tests as transcripts: a user says something, the bot answers.

    user = bot.user(2001, "lo")
    await user.send("/start")
    choice = await user.expect("language")
    await user.press("ລາວ")
"""

from __future__ import annotations

import re

from bot.engine.i18n import Translator
from tests.fakes.bot_api import WAIT, FakeBotApi, SentMessage


class TelegramUser:
    def __init__(self, fake: FakeBotApi, user_id: int, language_code: str | None = None, first_name: str = "Test") -> None:
        self.fake = fake
        self.id = user_id
        if user_id not in fake.users:
            fake.add_user(user_id, first_name, language_code)
        self.seen = 0
        self.pressed_upto = 0
        self.last: SentMessage | None = None

    async def start_in(self, texts: Translator, lang: str) -> None:
        """/start, pick the language by its own name, and wait for the main menu."""
        await self.send("/start")
        await self.press(texts.get(lang, "language.self_name"))
        await self.expect(re.escape(texts.get(lang, "menu.prompt")))

    async def send(self, text: str) -> None:
        await self.fake.user_sends(self.id, text)

    async def expect(self, pattern: str, timeout: float = WAIT) -> SentMessage:
        """The next message from the bot whose text matches pattern (a regex); earlier
        non-matching messages are skipped over."""
        regex = re.compile(pattern, re.S)

        def find() -> SentMessage | None:
            messages = self.fake.messages.get(self.id, [])
            for index in range(self.seen, len(messages)):
                if messages[index].from_user is None and regex.search(messages[index].text):
                    self.seen = index + 1
                    return messages[index]
            return None

        try:
            message = await self.fake.wait_for(find, timeout)
        except TimeoutError:
            got = [m.text[:120] for m in self.fake.messages.get(self.id, [])[self.seen:] if m.from_user is None]
            raise AssertionError(f"no message matching {pattern!r}; got {got}") from None
        self.last = message
        return message

    async def press(self, label: str, message: SentMessage | None = None, timeout: float = WAIT) -> None:
        """Press a button: on the given message, else on the newest message carrying that
        label that came after the last message pressed (waiting for it to arrive)."""
        if message is None:
            try:
                message = await self.fake.wait_for(lambda: self._newest_with(label), timeout)
            except TimeoutError:
                labels = [m.labels for m in self.fake.messages.get(self.id, [])[-3:]]
                raise AssertionError(f"no new message with a button {label!r}; last buttons: {labels}") from None
        self.pressed_upto = max(self.pressed_upto, message.message_id)
        await self.fake.user_presses(self.id, message, label)

    def _newest_with(self, label: str) -> SentMessage | None:
        for message in reversed(self.fake.messages.get(self.id, [])):
            if message.message_id > self.pressed_upto and label in message.labels:
                return message
        return None

    def named_sources(self, content: object, *ids: str) -> list[str]:
        """The publishers a person is shown for these source ids, in plain words."""
        sources = content.sources  # type: ignore[attr-defined]
        return [sources[i].name or sources[i].publisher for i in ids]

    def all_text(self) -> str:
        return "\n".join(m.text for m in self.fake.messages.get(self.id, []))
