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

from bot.engine.content import Content, Hotline
from bot.engine.events import MAX_VISIBLE_CHARS, Button, Deletion, Event, Message, Output, split_text, visible_len
from bot.engine.flows import (NAV_BACK, NAV_CONTINUE, NAV_MENU, NAV_MORE, NAV_SOURCES, QUICK_EXIT, RESUME, VAR, Choice, FlowSet, Step,
                              callback_data, matches, parse_callback)
from bot.engine.i18n import Translator
from bot.engine.matching import contains_keyword, first_match, fold, part_of, split_keywords
from bot.engine.understand import UNKNOWN, Understander, normalise
from storage.models import Conversation, OutboxMessage, User, utcnow
from storage.people import delete_conversation, load_person, save_conversation

log = logging.getLogger(__name__)

MAX_HOPS = 64
MAX_ANSWER_CHARS = 4000
OPEN_FLOW = "go:"
TRAIL = "_trail"
TRAIL_SINCE = "_trail_since"
PATH = "_path"      # the waiting steps of the current flow, for Back
CARD = "_card"      # what is left of the card being read (More) and its sources (Sources)
CARD_CHARS = 600    # the first screen of an answer
OFFER_SCORE = 0.5   # a request typed in the middle of a journey is offered only when this clear
ZAWGYI_TOLD = "_zawgyi_told"
HUBS = {"menu"}     # flows where a typed request opens at once: there is no place to lose
EMERGENCY_KINDS = ("police", "emergency", "ambulance", "fire")
LANGUAGE_COUNTRY = {"km": "KH", "lo": "LA", "th": "TH", "vi": "VN", "my": "MM"}


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
    card_shown: bool = False  # More and Sources go under the question that follows a card, not under every later one

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
    def __init__(self, flows: FlowSet, content: Content, texts: Translator, default_language: str = "en",
                 understander: Understander | None = None) -> None:
        self.flows = flows
        self.content = content
        self.texts = texts
        self.default_language = default_language
        self.understander = understander or Understander({})
        self.actions: dict[str, Action] = {}
        self.max_attachments = 10
        # Asked, in turn, about what someone sent outside any question before "not understood"
        # is said: a feature may take it (e.g. an addition to the person's open case).
        self.followups: list[Callable[[Turn], Awaitable[bool]]] = []

    def register(self, name: str, action: Action) -> None:
        self.actions[name] = action

    async def load_user(self, session: AsyncSession, channel: str, address: str) -> User:
        """The person (made if new), attached to the session for features to read and change."""
        user, _, _ = await load_person(session, channel, address)
        return user

    async def set_language(self, session: AsyncSession, channel: str, address: str, lang: str) -> None:
        if lang not in self.texts.locales:
            raise ValueError(f"unknown language {lang!r}; known: {', '.join(self.texts.languages)}")
        user = await self.load_user(session, channel, address)
        user.lang = lang
        session.add(user)

    def language_for(self, user: User, client_lang: str | None) -> str:
        if user.lang:
            return user.lang
        client = (client_lang or "").split("-")[0].lower()
        return client if client in self.texts.locales else self.default_language

    async def handle(self, session: AsyncSession, event: Event) -> list[Output]:
        user, conversation, stored = await load_person(session, event.channel, event.address)
        if not user.reachable:  # someone who blocked the bot and came back can be written to again
            user.reachable = True
            session.add(user)
        turn = Turn(self, session, event, user, conversation, self.language_for(user, event.client_lang), dict(conversation.vars or {}))
        self._keep_trail(turn)
        # Conversations.handle read the words as Unicode; once, how to switch the keyboard, in Burmese.
        if event.zawgyi and not turn.values.get(ZAWGYI_TOLD):
            turn.values[ZAWGYI_TOLD] = True
            turn.say_html(self.texts.get("my" if "my" in self.texts.languages else turn.lang, "zawgyi.tip"))
        if event.command is not None:
            await self._on_command(turn, event.command, event.args)
        elif event.choice is not None:
            await self._on_choice(turn, event.choice)
        elif event.contact_phone is not None:
            await self._on_contact(turn, event.contact_phone)
        elif event.location is not None or event.attachments:
            await self._on_media(turn)
        elif event.text is not None:
            await self._on_text(turn, event.text)
        self._flush(turn)
        if turn.forget:
            await delete_conversation(session, user.id)  # type: ignore[arg-type]
            await session.delete(user)
            return turn.outputs
        conversation.vars = dict(turn.values)
        conversation.updated_at = utcnow()
        await save_conversation(session, conversation, stored=stored)
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
        if data.startswith(OPEN_FLOW):  # a button on a broadcast or an offer: open a journey, like a deep link
            return await self._enter(turn, self.flows.open_target(data[len(OPEN_FLOW):]) or "menu")
        parsed = parse_callback(data)
        step = self._current_step(turn)
        if parsed is not None and parsed[2] == QUICK_EXIT and self.flows.flows.get(parsed[0], None) and self.flows.flows[parsed[0]].quick_exit:
            return await self._quick_exit(turn)
        if parsed is None or step is None or parsed[:2] != (turn.conversation.flow, turn.conversation.step):
            return await self._stale_button(turn)
        if parsed[2] in (NAV_BACK, NAV_MENU, NAV_CONTINUE, NAV_MORE, NAV_SOURCES):
            return await self._navigate(turn, step, parsed[2])
        choice = next((c for c in self._visible(turn, step) if c.id == parsed[2]), None)
        if choice is None:
            return await self._stale_button(turn)
        await self._take(turn, choice)

    async def _on_contact(self, turn: Turn, phone: str) -> None:
        """A shared contact answers a phone question; anywhere else it is not an answer."""
        step = self._current_step(turn)
        if step is not None and step.ask and "phone" in step.accepts:
            return await self._take_answer(turn, step, phone)
        if step is not None and (step.choices or step.ask):
            turn.say("common.need_text" if step.ask else "common.reask")
            return await self._run(turn, turn.conversation.flow or "menu", step.id, announce=False, act=False)
        turn.say("common.not_understood")
        await self._enter(turn, "menu")

    async def _on_media(self, turn: Turn) -> None:
        step = self._current_step(turn)
        event = turn.event
        if step is not None and event.location is not None and step.ask and "location" in step.accepts:
            turn.values[step.ask] = {"location": event.location}
            return await self._run(turn, turn.conversation.flow or "menu", step.next or "")
        if step is not None and step.collect and event.attachments:
            collected = list(turn.values.get(step.collect) or [])
            room = max(self.max_attachments - len(collected), 0)
            collected += event.attachments[:room]
            turn.values[step.collect] = collected
            dropped = len(event.attachments) - min(room, len(event.attachments))
            if dropped:  # kept count goes with the report, so that the partner knows it was cut
                turn.values[f"{step.collect}_dropped"] = int(turn.values.get(f"{step.collect}_dropped") or 0) + dropped
                turn.say("common.attachments_limit", limit=self.max_attachments)
            else:
                turn.say("common.attachment_received", count=len(collected))
            return await self._run(turn, turn.conversation.flow or "menu", step.id, announce=False)
        if event.text:
            return await self._on_text(turn, event.text)
        idle = step is None or (turn.conversation.flow or "") in HUBS
        if not idle and step is not None and (step.choices or step.ask):
            turn.say("common.need_text" if step.ask else "common.reask")
            return await self._run(turn, turn.conversation.flow or "menu", step.id, announce=False, act=False)
        if await self._followed_up(turn):
            return None
        turn.say("common.not_understood")
        await self._enter(turn, "menu")

    async def _followed_up(self, turn: Turn) -> bool:
        for followup in self.followups:
            if await followup(turn):
                return True
        return False

    async def _on_text(self, turn: Turn, text: str) -> None:
        """Typed text, in this order: an answer to this step (a label, a number, yes / no /
        not sure, a country, back, menu, skip, cancel); danger, which shows the numbers and
        stays; another clear request, offered with a button while the place is kept; else the
        question again, shorter. Nobody is dropped."""
        step = self._current_step(turn)
        flow = self.flows.flows.get(turn.conversation.flow or "")
        if step is None or flow is None or flow.id in HUBS or not (step.choices or step.ask):
            return await self._on_idle_text(turn, text)
        choice = self._choice_from_text(turn, step, text) if step.choices else None
        if choice is not None:
            return await self._take(turn, choice)
        answer = self.understander.answer(text, turn.lang, whole=bool(step.ask))
        if answer in ("back", "menu", "cancel"):
            return await self._navigate(turn, step, {"back": NAV_BACK, "menu": NAV_MENU}.get(answer, "cancel"))
        if step.ask and self._accepts_text(step):
            return await self._take_answer(turn, step, text)
        understood = self.understander.understand(text, turn.lang)
        if understood.intent == "danger":
            danger = next((c for c in self._visible(turn, step) if "danger" in c.means), None)
            if danger is not None:
                return await self._take(turn, danger)
            self.show_emergency(turn)
            self._flush(turn)
            return await self._run(turn, flow.id, step.id, announce=False, act=False)
        target = self.understander.intent_flows.get(understood.intent)
        if target and target != flow.id and understood.score >= OFFER_SCORE and target in self.flows.flows:
            return self._offer(turn, flow.id, step, target, understood.intent)
        turn.say("common.reask")
        await self._run(turn, flow.id, step.id, announce=False, act=False)

    async def _on_idle_text(self, turn: Turn, text: str) -> None:
        if turn.user.lang is None:
            intent = self._intent_from_text(turn, text)
            return await self._enter(turn, intent or "start")
        understood = self.understander.understand(text, turn.lang)
        target = self.understander.intent_flows.get(understood.intent)
        if not understood.danger_word and understood.score < OFFER_SCORE:
            keyword_flow = self._intent_from_text(turn, text)  # an NGO's own keywords decide what the examples leave open
            if keyword_flow is not None:
                return await self._enter(turn, keyword_flow)
        if understood.intent != UNKNOWN and target in self.flows.flows:
            return await self._enter_with_slots(turn, target, understood.slots)
        if await self._followed_up(turn):
            return None
        turn.say("common.not_understood")
        suggestions = [Button(OPEN_FLOW + flow, turn.text(f"intent.{name}"))
                       for name, score in understood.runners_up
                       if score >= 0.15 and (flow := self.understander.intent_flows.get(name, "")) in self.flows.flows
                       and self.texts.has(f"intent.{name}")][:3]
        await self._enter(turn, "menu")
        if suggestions and turn.outputs and isinstance(turn.outputs[-1], Message):
            turn.outputs.insert(len(turn.outputs) - 1, Message(turn.text("common.did_you_mean"), suggestions, 1))

    async def _enter_with_slots(self, turn: Turn, flow_id: str, slots: dict[str, str]) -> None:
        """A first message that names a route or a category fills those answers in."""
        for name in ("origin", "destination"):
            if name in slots:
                turn.values[name] = slots[name]
        category = self.understander.report_categories.get(slots.get("category", ""))
        if flow_id == "report" and category and not turn.values.get("category"):
            turn.values["category"] = category
        await self._enter(turn, flow_id)

    def _accepts_text(self, step: Step) -> bool:
        return "text" in step.accepts or "phone" in step.accepts

    async def _take_answer(self, turn: Turn, step: Step, text: str) -> None:
        flow_id = turn.conversation.flow or "menu"
        if "phone" in step.accepts and "text" not in step.accepts and sum(ch.isdigit() for ch in text) < 6:
            turn.say("common.need_phone")
            return await self._run(turn, flow_id, step.id, announce=False, act=False)
        if not text.strip():
            turn.say("common.need_text")
            return await self._run(turn, flow_id, step.id, announce=False, act=False)
        if not turn.values.get("urgent") and self.understander.names_danger(text, turn.lang):
            self.show_emergency(turn)
            self._flush(turn)
        turn.values[step.ask] = text[:MAX_ANSWER_CHARS]  # type: ignore[index]
        await self._run(turn, flow_id, step.next or "")

    def _offer(self, turn: Turn, flow_id: str, step: Step, target: str, intent: str) -> None:
        """Another request in the middle of a journey: a button for it, and one to go on."""
        turn.say("common.offer")
        keep = "common.continue_report" if self.flows.flows[flow_id].keeps_draft else "common.continue"
        turn.flush([Button(OPEN_FLOW + target, turn.text(f"intent.{intent}")),
                    Button(callback_data(flow_id, step.id, NAV_CONTINUE), turn.text(keep))], 1)

    async def _navigate(self, turn: Turn, step: Step, action: str) -> None:
        flow_id = turn.conversation.flow or "menu"
        flow = self.flows.flows[flow_id]
        if action == NAV_MENU:
            return await self._enter(turn, "menu")
        if action == "cancel":
            if flow.keeps_draft:
                turn.conversation.flow = turn.conversation.step = None
                return await self._enter(turn, "cancel" if "cancel" in self.flows.flows else "menu")
            return await self._enter(turn, "menu")
        if action == NAV_CONTINUE:
            return await self._run(turn, flow_id, step.id, act=False)
        if action in (NAV_MORE, NAV_SOURCES):
            self._card_next(turn) if action == NAV_MORE else self._card_sources(turn)
            return await self._run(turn, flow_id, step.id, announce=False, act=False)
        path = [s for s in turn.values.get(PATH) or [] if s in flow.steps]
        if path and path[-1] == step.id:
            path.pop()
        if not path:
            return await self._enter(turn, "menu")
        previous = path.pop()
        turn.values[PATH] = path
        await self._run(turn, flow_id, previous, act=False)

    def _choice_from_text(self, turn: Turn, step: Step, text: str) -> Choice | None:
        visible = self._visible(turn, step)
        stripped = text.strip()
        if stripped.isdigit() and 1 <= int(stripped) <= len(visible) and not step.ask:
            return visible[int(stripped) - 1]
        folded = fold(stripped)
        for choice in visible:
            if fold(self._label(turn, choice)) == folded:
                return choice
        found = [(len(kw), -index, choice) for index, choice in enumerate(visible) if choice.keywords
                 for kw in self._keywords(turn, choice.keywords) if contains_keyword(text, kw)]
        if found:  # the longest keyword wins: "ລູກຂ້ອຍ" (my child) is someone else, though it holds "ຂ້ອຍ" (me)
            return max(found, key=lambda f: f[:2])[2]
        danger = self.understander.is_danger_word(normalise(text), turn.lang)
        answer = None if danger else self.understander.answer(text, turn.lang, whole=bool(step.ask))
        if answer is not None:
            meant = next((c for c in visible if answer in c.means), None)
            if meant is not None:
                return meant
        country = None if step.ask else self.understander.country(text, turn.lang)
        if country is not None:
            return next((c for c in visible if c.id == country or country in c.set.values()), None)
        return None if step.ask else self._choice_from_part(turn, visible, text)

    def _choice_from_part(self, turn: Turn, visible: list[Choice], text: str) -> Choice | None:
        """Part of one label, typed: "ខ្មែរ" for ភាសាខ្មែរ, the Lao words for "kept the passport"
        inside a longer category label. Only when that part is in no other label, and at least
        three letters (a Latin part as whole words)."""
        if sum(ch.isalnum() for ch in text) < 3:
            return None
        holding = [choice for choice in visible if part_of(text, self._label(turn, choice))]
        return holding[0] if len(holding) == 1 else None

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
        if choice.goto == RESUME:
            return await self._resume(turn)
        if choice.goto:
            return await self._enter(turn, self._resolve(turn, choice.goto))
        await self._run(turn, turn.conversation.flow or "menu", choice.next or "")

    async def _resume(self, turn: Turn) -> None:
        """Back to the step where a draft was left (the menu's "Continue your report")."""
        saved = turn.values.pop(RESUME, None)
        if not (isinstance(saved, list) and len(saved) >= 2 and saved[0] in self.flows.flows and saved[1] in self.flows.flows[saved[0]].steps):
            return await self._enter(turn, "menu")
        flow_id, step_id = saved[0], saved[1]
        await self._trail_for(turn, self.flows.flows[flow_id].quick_exit)
        turn.values[PATH] = list(saved[2]) if len(saved) > 2 and isinstance(saved[2], list) else [step_id]
        await self._run(turn, flow_id, step_id, act=False)

    def _resolve(self, turn: Turn, target: str) -> str:
        match = VAR.match(target)
        if not match:
            return target
        value = turn.values.get(match.group(1))
        return str(value) if value in self.flows.flows else "menu"

    async def _enter(self, turn: Turn, flow_id: str) -> None:
        flow = self.flows.flows.get(flow_id) or self.flows.flows["menu"]
        self._keep_draft(turn)
        turn.values.pop(PATH, None)
        turn.values.pop(CARD, None)
        await self._trail_for(turn, flow.quick_exit)
        await self._run(turn, flow.id, flow.start)

    def _keep_draft(self, turn: Turn) -> None:
        """Leaving a journey that keeps a draft (the report) at one of its questions: remember
        where, so that the menu and the journey itself offer to continue it."""
        current = self.flows.flows.get(turn.conversation.flow or "")
        step = self._current_step(turn)
        offers_resume = step is not None and any(c.goto == RESUME for c in step.choices)
        if current is not None and current.keeps_draft and step is not None and (step.choices or step.ask) and not offers_resume:
            turn.values[RESUME] = [current.id, step.id, list(turn.values.get(PATH) or [step.id])]

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
                if country in self.content.hotlines and step.emergency != "all":
                    self.show_emergency(turn, country, only=True)
                else:
                    self.show_emergency(turn)
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
                path = [s for s in turn.values.get(PATH) or [] if s in flow.steps]
                if not path or path[-1] != step_id:
                    path.append(step_id)
                turn.values[PATH] = path[-24:]
                buttons = self._buttons(turn, flow_id, step)
                nav = self._nav(turn, flow_id, step)
                if buttons or nav or turn.pending:
                    self._flush(turn, buttons, step.columns, nav)
                return
            if target:
                flow_id, step_id = target, self.flows.flows[target].start
                turn.values.pop(PATH, None)
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

    def _nav(self, turn: Turn, flow_id: str, step: Step) -> list[Button]:
        """One navigation row on every question of a journey: More and Sources while a card
        is being read, Back, Menu, and Quick exit where the journey has it."""
        flow = self.flows.flows[flow_id]
        ids = {c.id for c in step.choices}
        row: list[Button] = []
        card = turn.values.get(CARD)
        if isinstance(card, dict) and turn.card_shown:
            if card.get("pages"):
                row.append(Button(callback_data(flow_id, step.id, NAV_MORE), turn.text("card.more")))
            if card.get("sources"):
                row.append(Button(callback_data(flow_id, step.id, NAV_SOURCES), turn.text("card.sources")))
        if flow.nav and flow.id not in HUBS:
            if "back" not in ids:
                row.append(Button(callback_data(flow_id, step.id, NAV_BACK), turn.text("common.back")))
            if "menu" not in ids:
                row.append(Button(callback_data(flow_id, step.id, NAV_MENU), turn.text("common.nav_menu")))
        if flow.quick_exit:
            row.append(Button(callback_data(flow_id, step.id, QUICK_EXIT), turn.text("common.quick_exit")))
        return row

    def _flush(self, turn: Turn, buttons: list[Button] | None = None, columns: int | None = None, nav: list[Button] | None = None) -> None:
        """Join what was said since the last message into as few messages as a phone screen
        carries (MAX_VISIBLE_CHARS each)."""
        if not turn.pending and not buttons and not nav:
            return
        parts = split_text("\n\n".join(turn.pending)) if turn.pending else [self.texts.get(turn.lang, "common.choose")]
        turn.pending = []
        for part in parts[:-1]:
            turn.outputs.append(Message(part))
        width = columns or (2 if buttons and max(len(b.label) for b in buttons) <= 16 else 1)
        turn.outputs.append(Message(parts[-1], buttons or [], width, nav=nav or []))

    # -- cards: the point first, then More, and Sources in plain words ---------------------

    def card(self, turn: Turn, items: list[tuple[str, list[str]]], *, first: int = CARD_CHARS, details: list[str] | None = None) -> None:
        """Say the first screen of items (HTML, source ids); keep the rest, then the details,
        for More."""
        already = sum(visible_len(p) + 2 for p in turn.pending)
        pages = _pages([html_ for html_, _ in items], max(200, first - already)) + _pages(details or [], MAX_VISIBLE_CHARS - 100)
        sources = list(dict.fromkeys(sid for _, ids in items for sid in ids))
        if not pages:
            return
        for item in pages[0]:
            turn.say_html(item)
        self._flush(turn)  # the card is a message of its own: the point first, the next question after it
        turn.values[CARD] = {"pages": pages[1:], "sources": sources}
        turn.card_shown = True

    def _card_next(self, turn: Turn) -> None:
        card = turn.values.get(CARD)
        if not isinstance(card, dict) or not card.get("pages"):
            turn.say("card.no_more")
            return
        page, *rest = card["pages"]
        for item in page:
            turn.say_html(item)
        self._flush(turn)
        turn.values[CARD] = {**card, "pages": rest}
        turn.card_shown = True

    def _card_sources(self, turn: Turn) -> None:
        card = turn.values.get(CARD)
        ids = card.get("sources") if isinstance(card, dict) else None
        if not ids:
            turn.say("card.no_sources")
            return
        lines = []
        for sid in ids:
            source = self.content.sources.get(sid)
            if source is None:
                continue
            name = html.escape(source.name or source.publisher)
            lines.append(f"• <a href=\"{html.escape(source.url)}\">{name}</a>" if source.url else f"• {name}")
        checked = max((d for d in self.content.checked_dates(ids) if d), default=None)
        turn.say("card.sources_header")
        turn.say_html("\n".join(dict.fromkeys(lines)))
        if checked:
            turn.say("card.checked", date=checked.isoformat())
        turn.values[CARD] = {**card, "sources": []}  # type: ignore[dict-item]
        turn.card_shown = True

    def source_line(self, turn: Turn, source_ids: list[str], verified: object | None = None) -> str:
        """Kept for features that still cite inline: publishers' names in plain words."""
        names = [html.escape(self.content.sources[sid].name or self.content.sources[sid].publisher)
                 for sid in source_ids if sid in self.content.sources]
        return f"<i>{turn.text('common.sources', sources='; '.join(dict.fromkeys(names)))}</i>"

    def _show_facts(self, turn: Turn, topic: str) -> None:
        origin, destination = turn.values.get("origin"), turn.values.get("destination")
        facts = self.content.facts_for(topic, origin, destination)
        if facts and not any(f.origin or f.destination for f in facts) and (origin or destination) and self.content.has_route_facts(topic):
            turn.say("guide.general_only")
        if not facts:
            turn.say("guide.no_facts")
            return
        self.card(turn, [(f"• {turn.text(fact.text_key)}", fact.sources) for fact in facts])

    def _here(self, turn: Turn) -> str | None:
        """The country a person most likely is in: the report's answer, else their language's."""
        country = turn.values.get("country")
        if isinstance(country, str) and country in self.content.hotlines:
            return country
        return LANGUAGE_COUNTRY.get(turn.lang)

    def _number_line(self, turn: Turn, hotline: Hotline) -> str:
        """One line a phone shows whole: the number, then what it is for (More has the rest)."""
        marker = "🚨" if hotline.emergency else "☎️"
        return f"{marker} <b>{html.escape(hotline.number)}</b> {html.escape(self._kind(turn, hotline))}".rstrip()

    def show_emergency(self, turn: Turn, country: str | None = None, *, only: bool = False) -> None:
        """Police and ambulance first, each number labelled: the country the person is in,
        then (unless `only`) the others, one short line each."""
        here = country or self._here(turn)
        order = ([here] if here in self.content.hotlines else []) + ([] if only else [c for c in self.content.hotlines if c != here])
        lines = []
        for code in order:
            numbers = sorted((h for h in self.content.hotlines_for(code) if h.emergency),
                             key=lambda h: EMERGENCY_KINDS.index(h.kind) if h.kind in EMERGENCY_KINDS else 9)
            if not numbers:
                continue
            listed = " · ".join(f"<b>{html.escape(h.number)}</b> {html.escape(self._kind(turn, h))}" for h in numbers)
            lines.append(f"🚨 {self._country_name(turn, code)}: {listed}")
        turn.say("report.emergency_header")
        if only and not lines:
            turn.say("hotlines.none_verified", country=self._country_name(turn, here or ""))
        else:
            turn.say_html("\n".join(lines) if lines else turn.text("hotlines.none_anywhere"))
        turn.values[CARD] = {"pages": [], "sources": list(dict.fromkeys(s for c in order for h in self.content.hotlines_for(c) if h.emergency for s in h.sources))}
        turn.card_shown = True

    def _kind(self, turn: Turn, hotline: Hotline) -> str:
        key = f"hotline.kind.{hotline.kind}"
        return turn.text(key) if hotline.kind and self.texts.has(key) else (turn.text(hotline.what) if hotline.what else "")

    def show_hotlines(self, turn: Turn, country: str, *, emergency_only: bool = False) -> None:
        """A country's numbers, the number first on each line and what it is for after it;
        with emergency_only and no country known, every country's emergency numbers."""
        if emergency_only:
            return self.show_emergency(turn, country or None)
        numbers = self.content.hotlines_for(country)
        name = self._country_name(turn, country)
        if not numbers:
            turn.say("hotlines.none_verified", country=name)
            return
        ordered = sorted(numbers, key=lambda h: (not h.emergency, EMERGENCY_KINDS.index(h.kind) if h.kind in EMERGENCY_KINDS else 9))
        self.card(turn, [(turn.text("hotlines.header", country=name), [])] + [(self._number_line(turn, h), h.sources) for h in ordered],
                  details=[f"<b>{html.escape(h.number)}</b>: {turn.text(h.what)}" for h in ordered if h.what])

    def _country_name(self, turn: Turn, code: str) -> str:
        return turn.text(f"country.{code}") if self.texts.has(f"country.{code}") else code


def _pages(items: list[str], first: int, rest: int = MAX_VISIBLE_CHARS - 100) -> list[list[str]]:
    """Items grouped into screens: the first at most `first` visible characters, the others
    at most `rest`; an item longer than a screen is a screen of its own."""
    pages: list[list[str]] = []
    current: list[str] = []
    size, limit = 0, first
    for item in items:
        length = visible_len(item) + 2
        if current and size + length > limit:
            pages.append(current)
            current, size, limit = [], 0, rest
        current.append(item)
        size += length
    if current:
        pages.append(current)
    return pages
