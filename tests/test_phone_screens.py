"""Every answer fits a phone: no message of any journey shows more than 1,000 characters,
the first screen of an answer at most 600, and every emergency number says what it is for.
Walked through the real engine in every language: every guidance topic for every route,
every country's numbers, and seeded random walks over every button of every journey."""

from __future__ import annotations

import random
import re

import pytest

from bot.app import Core
from bot.engine.events import MAX_VISIBLE_CHARS, Event, Message, visible_len
from bot.engine.flows import parse_callback
from bot.engine.runner import CARD_CHARS

LANGUAGES = ["km", "lo", "th", "vi", "en"]
STAFF_FLOWS = {"broadcast", "campaigns", "staff_grant", "staff_revoke", "staff_new_invite", "staff_invite", "forget"}


class Walker:
    def __init__(self, core: Core, lang: str, address: str) -> None:
        self.core, self.lang, self.address = core, lang, address
        self.seen: list[Message] = []

    async def send(self, **event: object) -> list[Message]:
        outputs = await self.core.conversations.handle(Event(channel="terminal", address=self.address, client_lang=self.lang, **event))  # type: ignore[arg-type]
        messages = [o for o in outputs if isinstance(o, Message)]
        for message in messages:
            assert visible_len(message.text) <= MAX_VISIBLE_CHARS, f"{self.lang}: {visible_len(message.text)} characters: {message.text[:200]}"
        self.seen += messages
        return messages

    async def press(self, label_or_data: str) -> list[Message]:
        return await self.send(choice=label_or_data)

    async def start(self) -> None:
        async with self.core.db.transaction() as session:
            await self.core.engine.set_language(session, "terminal", self.address, self.lang)
        await self.send(command="menu")


@pytest.mark.parametrize("lang", LANGUAGES)
async def test_every_guidance_topic_for_every_route_fits_a_phone_screen(core: Core, lang: str) -> None:
    walker = Walker(core, lang, f"guide-{lang}")
    await walker.start()
    guidance = core.flows.flows["guidance"]
    topics = [c for c in guidance.steps["topic"].choices if c.next == "show" or c.next == "help"]
    cards = 0
    for origin in guidance.steps["origin"].choices:
        for destination in guidance.steps["destination"].choices:
            if destination.when and origin.id not in destination.when.get("origin", []):
                continue
            await walker.send(command="menu")
            await walker.press("c:menu:main:guide")
            await walker.press(f"c:guidance:origin:{origin.id}")
            await walker.press(f"c:guidance:destination:{destination.id}")
            for topic in topics:
                answer = await walker.press(f"c:guidance:topic:{topic.id}")
                assert answer, f"{origin.id}->{destination.id} {topic.id}: no answer"
                first = answer[0]
                assert visible_len(first.text) <= CARD_CHARS, (
                    f"{lang} {origin.id}->{destination.id} {topic.id}: the first screen is {visible_len(first.text)} characters")
                cards += 1
                while any(b.data.endswith(":mo") for b in answer[-1].all_buttons):
                    more = next(b.data for b in answer[-1].all_buttons if b.data.endswith(":mo"))
                    answer = await walker.press(more)
    assert cards >= 5 * 4 * len(topics) - 40


@pytest.mark.parametrize("lang", LANGUAGES)
async def test_every_countrys_numbers_are_labelled_and_fit(core: Core, lang: str) -> None:
    walker = Walker(core, lang, f"numbers-{lang}")
    await walker.start()
    kinds = {core.texts.get(lang, f"hotline.kind.{k}") for k in ("police", "ambulance", "fire", "emergency")}
    for country in core.flows.flows["hotlines"].steps["country"].choices:
        await walker.send(command="hotlines")
        shown = await walker.press(f"c:hotlines:country:{country.id}")
        text = "\n".join(m.text for m in shown)
        for hotline in core.content.hotlines_for(country.id):
            line = next((ln for ln in text.split("\n") if f"<b>{hotline.number}</b>" in ln), None)
            assert line is not None, f"{country.id} {hotline.number} not shown"
            label = re.sub(r".*</b>\s*", "", line).strip()
            assert label, f"{lang}: {country.id} {hotline.number} has no label"
            if hotline.emergency:
                assert label in kinds, f"{lang}: {country.id} {hotline.number} is labelled {label!r}"
        if not core.content.hotlines_for(country.id):
            assert "embassy" not in text.lower() and core.texts.get(lang, "hotlines.none_verified", country=core.texts.get(lang, f"country.{country.id}"))[:30] in text


@pytest.mark.parametrize("lang", LANGUAGES)
async def test_random_walks_over_every_button_never_show_a_wall_of_text(core: Core, lang: str) -> None:
    rng = random.Random(f"walk-{lang}")
    for walk in range(12):
        walker = Walker(core, lang, f"walk-{lang}-{walk}")
        await walker.start()
        buttons = walker.seen[-1].all_buttons
        for _ in range(25):
            choices = [b for b in buttons if b.data and not b.url and not b.data.endswith(":qx")
                       and (parse_callback(b.data) is None or parse_callback(b.data)[0] not in STAFF_FLOWS)]  # type: ignore[index]
            if not choices:
                await walker.send(command="menu")
                buttons = walker.seen[-1].all_buttons
                continue
            answer = await walker.press(rng.choice(choices).data)
            if not answer or not answer[-1].all_buttons:
                await walker.send(command="menu")
            buttons = walker.seen[-1].all_buttons
    # a typed sentence at a free-text step is kept, and the walk above never raised
