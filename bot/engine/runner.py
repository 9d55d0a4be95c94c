"""Runs one user event through the flows: load state, move through steps, save state.

The engine returns what to send; the caller stores it in the outbox in the same
transaction as the new state, so a crash never loses an answer or half-moves a user.
Features plug in as named actions (`action: reports.submit` in a flow file): async
functions that get the turn, may read and write the database, say things, and choose the
next step.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.engine.content import Content
from bot.engine.events import Button, Deletion, Event, Message, Output, split_text
from bot.engine.flows import QUICK_EXIT, VAR, Choice, FlowSet, Step, callback_data, matches, parse_callback
from bot.engine.i18n import Translator
from bot.engine.matching import contains_keyword, first_match, fold, split_keywords
from storage.models import Conversation, OutboxMessage, User, utcnow

log = logging.getLogger(__name__)

MAX_HOPS = 64
MAX_ANSWER_CHARS = 4000
OPEN_FLOW = "go:"
TRAIL = "_trail"
TRAIL_SINCE = "_trail_since"


class FlowLoop(RuntimeError):
    """A flow moved more than MAX_HOPS steps without waiting for the user."""


@dataclass
class Turn:
    """One event being handled: who, where they are, what they answered, what to send."""

    engine: Engine
    session: AsyncSession
    event: Event
    user: User
    conversation: Conversation
    lang: str
    values: dict[str, Any]
    outputs: list[Output] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    forget: bool = False

    def say(self, key: str, /, **params: object) -> None:
        self.pending.append(self.engine.texts.get(self.lang, key, **params))

    def say_html(self, text: str) -> None:
        self.pending.append(text)

    def text(self, key: str, /, **params: object) -> str:
        return self.engine.texts.get(self.lang, key, **params)

    def flush(self, buttons: list[Button] | None = None, columns: int | None = None) -> None:
        self.engine._flush(self, buttons, columns)


Action = Callable[[Turn], Awaitable[str | None]]


class Engine:
    def __init__(self, flows: FlowSet, content: Content, texts: Translator, default_language: str = "en") -> None:
        self.flows = flows
        self.content = content
        self.texts = texts
        self.default_language = default_language
        self.actions: dict[str, Action] = {}

    def register(self, name: str, action: Action) -> None:
        self.actions[name] = action

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

    async def handle(self, session: AsyncSession, event: Event) -> list[Output]:
        user, conversation = await self.load_user(session, event.channel, event.address)
        turn = Turn(self, session, event, user, conversation, self.language_for(user, event.client_lang), dict(conversation.vars or {}))
        self._keep_trail(turn)
        if event.command is not None:
            await self._on_command(turn, event.command, event.args)
        elif event.choice is not None:
            await self._on_choice(turn, event.choice)
        elif event.location is not None or event.attachments:
            await self._on_media(turn)
        elif event.text is not None:
            await self._on_text(turn, event.text)
        self._flush(turn)
        if turn.forget:
            await session.delete(conversation)
            await session.flush()
            await session.delete(user)
            return turn.outputs
        conversation.vars = dict(turn.values)
        conversation.updated_at = utcnow()
        session.add(conversation)
        session.add(user)
        return turn.outputs

    async def run_flow(self, turn: Turn, flow_id: str) -> None:
        """Enter a flow from an action or a service (e.g. a partner's message arriving)."""
        await self._enter(turn, flow_id)

    # -- input -------------------------------------------------------------------------

    async def _on_command(self, turn: Turn, name: str, args: str) -> None:
        if name == "start" and args:
            found = self.flows.link_target(args.strip())
            if found:
                target, turn.values["link_arg"] = found
                if turn.user.lang:
                    return await self._enter(turn, target)
                turn.values["then"] = target
        command = self.flows.commands.get(name)
        if command is None:
            turn.say("common.unknown_command")
            return await self._enter(turn, "menu")
        turn.values["args"] = args.strip()
        await self._enter(turn, command.flow)

    async def _on_choice(self, turn: Turn, data: str) -> None:
        if data.startswith(OPEN_FLOW):  # a button on a broadcast: open a journey, like a deep link
            found = self.flows.link_target(data[len(OPEN_FLOW):])
            return await self._enter(turn, found[0] if found else "menu")
        parsed = parse_callback(data)
        step = self._current_step(turn)
        if parsed is not None and parsed[2] == QUICK_EXIT and self.flows.flows.get(parsed[0], None) and self.flows.flows[parsed[0]].quick_exit:
            return await self._quick_exit(turn)
        if parsed is None or step is None or parsed[:2] != (turn.conversation.flow, turn.conversation.step):
            return await self._stale_button(turn)
        choice = next((c for c in self._visible(turn, step) if c.id == parsed[2]), None)
        if choice is None:
            return await self._stale_button(turn)
        await self._take(turn, choice)

    async def _on_media(self, turn: Turn) -> None:
        step = self._current_step(turn)
        event = turn.event
        if step is not None and event.location is not None and step.ask and "location" in step.accepts:
            turn.values[step.ask] = {"location": event.location}
            return await self._run(turn, turn.conversation.flow or "menu", step.next or "")
        if step is not None and step.collect and event.attachments:
            collected = list(turn.values.get(step.collect) or [])
            collected += event.attachments
            turn.values[step.collect] = collected
            turn.say("common.attachment_received", count=len(collected))
            return await self._run(turn, turn.conversation.flow or "menu", step.id, announce=False)
        if event.text:
            return await self._on_text(turn, event.text)
        turn.say("common.not_understood")
        await self._enter(turn, "menu")

    async def _on_text(self, turn: Turn, text: str) -> None:
        step = self._current_step(turn)
        if step is not None and step.choices:
            choice = self._choice_from_text(turn, step, text)
            if choice is not None:
                return await self._take(turn, choice)
        if step is not None and step.ask and ("text" in step.accepts or "phone" in step.accepts):
            turn.values[step.ask] = text[:MAX_ANSWER_CHARS]
            return await self._run(turn, turn.conversation.flow or "menu", step.next or "")
        intent = self._intent_from_text(turn, text)
        if intent is not None:
            return await self._enter(turn, intent)
        if turn.user.lang is None:
            return await self._enter(turn, "start")
        turn.say("common.not_understood")
        await self._enter(turn, "menu")

    def _choice_from_text(self, turn: Turn, step: Step, text: str) -> Choice | None:
        visible = self._visible(turn, step)
        stripped = text.strip()
        if stripped.isdigit() and 1 <= int(stripped) <= len(visible) and not step.ask:
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

    async def _stale_button(self, turn: Turn) -> None:
        turn.say("common.old_button")
        step = self._current_step(turn)
        if step is not None and (step.choices or step.ask):
            return await self._run(turn, turn.conversation.flow or "menu", step.id, announce=True, act=False)
        await self._enter(turn, "menu")

    # -- quick exit ------------------------------------------------------------------------

    def _keep_trail(self, turn: Turn) -> None:
        """While in a quick-exit flow, remember the user's own messages so they can be removed."""
        flow = self.flows.flows.get(turn.conversation.flow or "")
        if flow is not None and flow.quick_exit and turn.event.message_ref:
            turn.values[TRAIL] = [*turn.values.get(TRAIL, []), turn.event.message_ref]

    async def _quick_exit(self, turn: Turn) -> None:
        since = turn.values.get(TRAIL_SINCE)
        refs = list(turn.values.get(TRAIL, []))
        if since:
            sent = await turn.session.exec(
                select(OutboxMessage.result_ref).where(
                    OutboxMessage.channel == turn.event.channel, OutboxMessage.chat == turn.event.reply_to,
                    col(OutboxMessage.id) >= int(since), OutboxMessage.kind == "message", col(OutboxMessage.result_ref).is_not(None))
            )
            refs += [ref for ref in sent if ref]
        turn.outputs.extend(Deletion(ref) for ref in dict.fromkeys(refs))
        turn.values = {k: v for k, v in turn.values.items() if k in ("origin", "destination")}
        turn.conversation.flow = turn.conversation.step = None
        turn.pending = [turn.text("quick_exit.cover")]

    async def _start_trail(self, turn: Turn) -> None:
        last = (await turn.session.exec(select(OutboxMessage.id).order_by(col(OutboxMessage.id).desc()).limit(1))).first()
        turn.values[TRAIL_SINCE] = int(last or 0) + 1
        turn.values[TRAIL] = [turn.event.message_ref] if turn.event.message_ref else []

    # -- moving through steps -------------------------------------------------------------

    def _current_step(self, turn: Turn) -> Step | None:
        flow = self.flows.flows.get(turn.conversation.flow or "")
        return flow.steps.get(turn.conversation.step or "") if flow else None

    def _visible(self, turn: Turn, step: Step) -> list[Choice]:
        choices = [c for c in step.choices if matches(c.when, self._values(turn))]
        preferred = (turn.event.client_lang or "").split("-")[0].lower()
        if preferred and any(c.set_lang == preferred for c in choices):
            choices.sort(key=lambda c: c.set_lang != preferred)
        return choices

    def _values(self, turn: Turn) -> dict[str, Any]:
        return {**turn.values, "lang": turn.user.lang}

    async def _take(self, turn: Turn, choice: Choice) -> None:
        turn.values.update(choice.set)
        if choice.set_lang:
            turn.user.lang = choice.set_lang
            turn.lang = choice.set_lang
        if choice.goto:
            return await self._enter(turn, self._resolve(turn, choice.goto))
        await self._run(turn, turn.conversation.flow or "menu", choice.next or "")

    def _resolve(self, turn: Turn, target: str) -> str:
        match = VAR.match(target)
        if not match:
            return target
        value = turn.values.get(match.group(1))
        return str(value) if value in self.flows.flows else "menu"

    async def _enter(self, turn: Turn, flow_id: str) -> None:
        flow = self.flows.flows.get(flow_id) or self.flows.flows["menu"]
        await self._trail_for(turn, flow.quick_exit)
        await self._run(turn, flow.id, flow.start)

    async def _trail_for(self, turn: Turn, quick_exit: bool) -> None:
        if quick_exit and TRAIL_SINCE not in turn.values:
            await self._start_trail(turn)
        elif not quick_exit:
            turn.values.pop(TRAIL, None)
            turn.values.pop(TRAIL_SINCE, None)

    async def _run(self, turn: Turn, flow_id: str, step_id: str, *, announce: bool = True, act: bool = True) -> None:
        for _ in range(MAX_HOPS):
            flow = self.flows.flows[flow_id]
            step = flow.steps[step_id]
            turn.values.update(step.set)
            if step.branch:
                step_id = next(c.next for c in step.branch if matches(c.when, self._values(turn)))
                continue
            if step.emergency:
                country = self._fill(turn, step.emergency)
                self.show_hotlines(turn, "" if country in ("all", "other") else country, emergency_only=True)
                self._flush(turn)  # the numbers stand alone, before any further question
            if announce:
                for key in step.say:
                    turn.say(key, **self._params(turn))
                if step.facts:
                    self._show_facts(turn, self._fill(turn, step.facts))
                if step.hotlines:
                    self.show_hotlines(turn, self._fill(turn, step.hotlines))
            jump = await self.actions[step.action](turn) if step.action and act else None
            if jump:
                step_id = jump
                continue
            announce = True
            target = self._resolve(turn, step.goto) if step.goto else None
            for name in step.clear:
                turn.values.pop(name, None)
            if step.choices or step.ask:
                turn.conversation.flow, turn.conversation.step = flow_id, step_id
                buttons = self._buttons(turn, flow_id, step)
                if flow.quick_exit:
                    buttons.append(Button(callback_data(flow_id, step_id, QUICK_EXIT), turn.text("common.quick_exit")))
                if buttons or turn.pending:
                    self._flush(turn, buttons, step.columns)
                return
            if target:
                flow_id, step_id = target, self.flows.flows[target].start
                await self._trail_for(turn, self.flows.flows[target].quick_exit)
                continue
            if step.next:
                step_id = step.next
                continue
            turn.conversation.flow, turn.conversation.step = None, None
            turn.values.pop(TRAIL, None)
            turn.values.pop(TRAIL_SINCE, None)
            return
        raise FlowLoop(f"{flow_id}:{step_id}")

    @staticmethod
    def _params(turn: Turn) -> dict[str, object]:
        """Answers a text may show, e.g. {report_code}; escaped, as users typed some of them."""
        return {k: html.escape(str(v)) for k, v in turn.values.items() if isinstance(v, str | int) and not k.startswith("_")}

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

    def _flush(self, turn: Turn, buttons: list[Button] | None = None, columns: int | None = None) -> None:
        """Join what was said since the last message into as few messages as fit."""
        if not turn.pending and not buttons:
            return
        parts = split_text("\n\n".join(turn.pending)) if turn.pending else [self.texts.get(turn.lang, "common.choose")]
        turn.pending = []
        for part in parts[:-1]:
            turn.outputs.append(Message(part))
        width = columns or (2 if buttons and max(len(b.label) for b in buttons) <= 16 else 1)
        turn.outputs.append(Message(parts[-1], buttons or [], width))

    def source_line(self, turn: Turn, source_ids: list[str], verified: object | None = None) -> str:
        labels = [f"[{sid}] {self.content.sources[sid].label}" for sid in source_ids if sid in self.content.sources]
        line = turn.text("common.sources", sources=html.escape("; ".join(labels)))
        if verified:
            line += " · " + turn.text("common.verified_on", date=str(verified))
        return f"<i>{line}</i>"

    def _show_facts(self, turn: Turn, topic: str) -> None:
        facts = self.content.facts_for(topic, turn.values.get("origin"), turn.values.get("destination"))
        if not facts:
            turn.say("guide.no_facts")
            return
        for fact in facts:
            turn.say_html(f"• {turn.text(fact.text_key)}\n{self.source_line(turn, fact.sources)}")

    def show_hotlines(self, turn: Turn, country: str, *, emergency_only: bool = False) -> None:
        """The numbers for a country; with emergency_only, the emergency numbers of every
        country when none is known yet, so someone in danger is never asked first."""
        countries = [country] if country else list(self.content.hotlines)
        if emergency_only:
            lines = []
            for code in countries:
                numbers = [h for h in self.content.hotlines_for(code) if h.emergency]
                if numbers:
                    listed = ", ".join(f"<b>{html.escape(h.number)}</b>" for h in numbers)
                    lines.append(f"🚨 {self._country_name(turn, code)}: {listed}")
            turn.say("report.emergency_header")
            turn.say_html("\n".join(lines) if lines else turn.text("hotlines.none_verified", country=self._country_name(turn, country)))
            return
        numbers = self.content.hotlines_for(country)
        name = self._country_name(turn, country)
        if not numbers:
            turn.say("hotlines.none_verified", country=name)
            return
        turn.say("hotlines.header", country=name)
        for hotline in sorted(numbers, key=lambda h: not h.emergency):
            marker = "🚨 " if hotline.emergency else "☎️ "
            turn.say_html(
                f"{marker}<b>{html.escape(hotline.number)}</b>: {turn.text(hotline.what or '')}\n"
                f"{self.source_line(turn, hotline.sources, hotline.verified_on)}"
            )

    def _country_name(self, turn: Turn, code: str) -> str:
        return turn.text(f"country.{code}") if self.texts.has(f"country.{code}") else code
