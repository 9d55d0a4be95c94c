"""Runs one user event through the flows: load state, move through steps, save state.

The engine returns messages to send; the caller stores them in the outbox in the same
transaction as the new state, so a crash never loses an answer or half-moves a user.
"""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass, field
from typing import Any

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.engine.content import Content
from bot.engine.events import Button, Event, Message, split_text
from bot.engine.flows import VAR, Choice, FlowSet, Step, callback_data, matches, parse_callback
from bot.engine.i18n import Translator
from bot.engine.matching import contains_keyword, first_match, fold, split_keywords
from storage.models import Conversation, User, utcnow

log = logging.getLogger(__name__)

MAX_HOPS = 64
MAX_ANSWER_CHARS = 4000


class FlowLoop(RuntimeError):
    """A flow moved more than MAX_HOPS steps without waiting for the user."""


@dataclass
class Turn:
    user: User
    conversation: Conversation
    lang: str
    client_lang: str | None
    values: dict[str, Any]
    messages: list[Message] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)


class Engine:
    def __init__(self, flows: FlowSet, content: Content, texts: Translator, default_language: str = "en") -> None:
        self.flows = flows
        self.content = content
        self.texts = texts
        self.default_language = default_language

    async def load_user(self, session: AsyncSession, channel: str, address: str) -> tuple[User, Conversation]:
        user = (await session.exec(select(User).where(User.channel == channel, User.address == address))).first()
        if user is None:
            user = User(channel=channel, address=address)
            session.add(user)
            await session.flush()
        conversation = await session.get(Conversation, user.id)
        if conversation is None:
            conversation = Conversation(user_id=user.id, vars={})
            session.add(conversation)
        return user, conversation

    async def set_language(self, session: AsyncSession, channel: str, address: str, lang: str) -> None:
        if lang not in self.texts.locales:
            raise ValueError(f"unknown language {lang!r}; known: {', '.join(self.texts.languages)}")
        user, _ = await self.load_user(session, channel, address)
        user.lang = lang
        session.add(user)

    def language_for(self, user: User, client_lang: str | None) -> str:
        if user.lang:
            return user.lang
        client = (client_lang or "").split("-")[0].lower()
        return client if client in self.texts.locales else self.default_language

    async def handle(self, session: AsyncSession, event: Event) -> list[Message]:
        user, conversation = await self.load_user(session, event.channel, event.address)
        turn = Turn(user, conversation, self.language_for(user, event.client_lang), event.client_lang, dict(conversation.vars or {}))
        if event.command is not None:
            self._on_command(turn, event.command, event.args)
        elif event.choice is not None:
            self._on_choice(turn, event.choice)
        elif event.text is not None:
            self._on_text(turn, event.text)
        self._flush(turn)
        conversation.vars = dict(turn.values)
        conversation.updated_at = utcnow()
        session.add(conversation)
        session.add(user)
        return turn.messages

    # -- input -------------------------------------------------------------------------

    def _on_command(self, turn: Turn, name: str, args: str) -> None:
        if name == "start" and args:
            target = self.flows.deep_links.get(args.strip())
            if target and turn.user.lang:
                return self._enter(turn, target)
            if target:
                turn.values["then"] = target
        command = self.flows.commands.get(name)
        if command is None:
            self._say(turn, "common.unknown_command")
            return self._enter(turn, "menu")
        self._enter(turn, command.flow)

    def _on_choice(self, turn: Turn, data: str) -> None:
        parsed = parse_callback(data)
        step = self._current_step(turn)
        if parsed is None or step is None or parsed[:2] != (turn.conversation.flow, turn.conversation.step):
            return self._stale_button(turn)
        choice = next((c for c in self._visible(turn, step) if c.id == parsed[2]), None)
        if choice is None:
            return self._stale_button(turn)
        self._take(turn, choice)

    def _on_text(self, turn: Turn, text: str) -> None:
        step = self._current_step(turn)
        if step is not None and step.ask:
            turn.values[step.ask] = text[:MAX_ANSWER_CHARS]
            return self._run(turn, turn.conversation.flow or "menu", step.next or "")
        if step is not None and step.choices:
            choice = self._choice_from_text(turn, step, text)
            if choice is not None:
                return self._take(turn, choice)
        intent = self._intent_from_text(turn, text)
        if intent is not None:
            return self._enter(turn, intent)
        if turn.user.lang is None:
            return self._enter(turn, "start")
        self._say(turn, "common.not_understood")
        self._enter(turn, "menu")

    def _choice_from_text(self, turn: Turn, step: Step, text: str) -> Choice | None:
        visible = self._visible(turn, step)
        stripped = text.strip()
        if stripped.isdigit() and 1 <= int(stripped) <= len(visible):
            return visible[int(stripped) - 1]
        folded = fold(stripped)
        for choice in visible:
            if fold(self._label(turn, choice)) == folded:
                return choice
        for choice in visible:
            if choice.keywords and any(contains_keyword(text, kw) for kw in self._keywords(turn, choice.keywords)):
                return choice
        return None

    def _intent_from_text(self, turn: Turn, text: str) -> str | None:
        candidates = [(c.flow, self._keywords(turn, c.keywords)) for c in self.flows.commands.values() if c.keywords]
        return first_match(text, candidates)

    def _keywords(self, turn: Turn, key: str) -> list[str]:
        """Keywords in the user's language and in English, which many users mix in."""
        words = split_keywords(self.texts.get(turn.lang, key))
        if turn.lang != "en":
            words += split_keywords(self.texts.get("en", key))
        return words

    def _stale_button(self, turn: Turn) -> None:
        self._say(turn, "common.old_button")
        step = self._current_step(turn)
        if step is not None and (step.choices or step.ask):
            return self._run(turn, turn.conversation.flow or "menu", step.id)
        self._enter(turn, "menu")

    # -- moving through steps -------------------------------------------------------------

    def _current_step(self, turn: Turn) -> Step | None:
        flow = self.flows.flows.get(turn.conversation.flow or "")
        return flow.steps.get(turn.conversation.step or "") if flow else None

    def _visible(self, turn: Turn, step: Step) -> list[Choice]:
        choices = [c for c in step.choices if matches(c.when, self._values(turn))]
        preferred = (turn.client_lang or "").split("-")[0].lower()
        if preferred and any(c.set_lang == preferred for c in choices):
            choices.sort(key=lambda c: c.set_lang != preferred)
        return choices

    def _values(self, turn: Turn) -> dict[str, Any]:
        return {**turn.values, "lang": turn.user.lang}

    def _take(self, turn: Turn, choice: Choice) -> None:
        turn.values.update(choice.set)
        if choice.set_lang:
            turn.user.lang = choice.set_lang
            turn.lang = choice.set_lang
        if choice.goto:
            return self._enter(turn, self._resolve(turn, choice.goto))
        self._run(turn, turn.conversation.flow or "menu", choice.next or "")

    def _resolve(self, turn: Turn, target: str) -> str:
        match = VAR.match(target)
        if not match:
            return target
        value = turn.values.get(match.group(1))
        return str(value) if value in self.flows.flows else "menu"

    def _enter(self, turn: Turn, flow_id: str) -> None:
        flow = self.flows.flows.get(flow_id) or self.flows.flows["menu"]
        self._run(turn, flow.id, flow.start)

    def _run(self, turn: Turn, flow_id: str, step_id: str) -> None:
        for _ in range(MAX_HOPS):
            flow = self.flows.flows[flow_id]
            step = flow.steps[step_id]
            turn.values.update(step.set)
            if step.branch:
                step_id = next(c.next for c in step.branch if matches(c.when, self._values(turn)))
                continue
            for key in step.say:
                self._say(turn, key)
            if step.facts:
                self._show_facts(turn, self._fill(turn, step.facts))
            if step.hotlines:
                self._show_hotlines(turn, self._fill(turn, step.hotlines))
            target = self._resolve(turn, step.goto) if step.goto else None
            for name in step.clear:
                turn.values.pop(name, None)
            if step.choices or step.ask:
                turn.conversation.flow, turn.conversation.step = flow_id, step_id
                if step.choices:
                    self._flush(turn, self._buttons(turn, flow_id, step), step.columns)
                return
            if target:
                flow_id, step_id = target, self.flows.flows[target].start
                continue
            if step.next:
                step_id = step.next
                continue
            turn.conversation.flow, turn.conversation.step = None, None
            return
        raise FlowLoop(f"{flow_id}:{step_id}")

    def _fill(self, turn: Turn, value: str) -> str:
        match = VAR.match(value)
        return str(turn.values.get(match.group(1), "")) if match else value

    # -- output --------------------------------------------------------------------------

    def _label(self, turn: Turn, choice: Choice) -> str:
        if choice.label_lang:
            return self.texts.get(choice.label_lang, "language.self_name")
        return self.texts.get(turn.lang, choice.label or "")

    def _buttons(self, turn: Turn, flow_id: str, step: Step) -> list[Button]:
        return [Button(callback_data(flow_id, step.id, c.id), self._label(turn, c)) for c in self._visible(turn, step)]

    def _say(self, turn: Turn, key: str, **params: object) -> None:
        turn.pending.append(self.texts.get(turn.lang, key, **params))

    def _flush(self, turn: Turn, buttons: list[Button] | None = None, columns: int | None = None) -> None:
        """Join what was said since the last message into as few messages as fit."""
        if not turn.pending and not buttons:
            return
        parts = split_text("\n\n".join(turn.pending)) if turn.pending else [self.texts.get(turn.lang, "common.choose")]
        turn.pending = []
        for part in parts[:-1]:
            turn.messages.append(Message(part))
        turn.messages.append(Message(parts[-1], buttons or [], columns or (2 if buttons and max(len(b.label) for b in buttons) <= 16 else 1)))

    def _source_line(self, turn: Turn, source_ids: list[str], verified: object | None = None) -> str:
        labels = [f"[{sid}] {self.content.sources[sid].label}" for sid in source_ids if sid in self.content.sources]
        line = self.texts.get(turn.lang, "common.sources", sources=html.escape("; ".join(labels)))
        if verified:
            line += " · " + self.texts.get(turn.lang, "common.verified_on", date=str(verified))
        return f"<i>{line}</i>"

    def _show_facts(self, turn: Turn, topic: str) -> None:
        facts = self.content.facts_for(topic, turn.values.get("origin"), turn.values.get("destination"))
        if not facts:
            self._say(turn, "guide.no_facts")
            return
        for fact in facts:
            turn.pending.append(f"• {self.texts.get(turn.lang, fact.text_key)}\n{self._source_line(turn, fact.sources)}")

    def _show_hotlines(self, turn: Turn, country: str) -> None:
        name = self.texts.get(turn.lang, f"country.{country}") if self.texts.has(f"country.{country}") else country
        numbers = self.content.hotlines_for(country)
        if not numbers:
            self._say(turn, "hotlines.none_verified", country=name)
            return
        self._say(turn, "hotlines.header", country=name)
        for hotline in sorted(numbers, key=lambda h: not h.emergency):
            marker = "🚨 " if hotline.emergency else "☎️ "
            turn.pending.append(
                f"{marker}<b>{html.escape(hotline.number)}</b>: {self.texts.get(turn.lang, hotline.what or '')}\n"
                f"{self._source_line(turn, hotline.sources, hotline.verified_on)}"
            )
