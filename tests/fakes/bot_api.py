"""A local fake of the Telegram Bot API, served over real HTTP by aiohttp.

python-telegram-bot talks to it exactly as it would to api.telegram.org. It keeps chats,
messages and pending updates in memory, refuses what Telegram refuses (unknown token or
chat, text over 4096 characters, button data over 64 bytes, malformed HTML, a user who
blocked the bot), and lets a test play the users: send text, press buttons, and wait for
what the bot sent. Benchmarks reuse it.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import math
from collections import deque
import json
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

import aiohttp
from aiohttp import web

TEXT_LIMIT = 4096
CALLBACK_LIMIT = 64
TELEGRAM_TAGS = {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "a", "code", "pre", "span", "tg-spoiler", "blockquote", "tg-emoji"}
ENTITY_OR_AMP = re.compile(r"&(?![a-zA-Z]+;|#[0-9]+;|#x[0-9a-fA-F]+;)")
JSON_FIELDS = {"reply_markup", "reply_parameters", "commands", "allowed_updates", "entities", "scope", "link_preview_options", "reply_parameters"}


# How long a test waits for something before failing. Only a failing test ever waits this
# long; it is generous because a bot process starting on a machine kept busy (the suite runs
# on four workers, `.ci/under-load` adds a busy core) can take many seconds to answer.
WAIT = 45.0

class ApiError(Exception):
    def __init__(self, code: int, description: str, parameters: dict[str, Any] | None = None) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.parameters = parameters


class _EntityParser(HTMLParser):
    """Parses like Telegram: only its tags, properly nested; returns the visible text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.text: list[str] = []
        self.error: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in TELEGRAM_TAGS:
            self.error = self.error or f'Unsupported start tag "{tag}"'
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.error = self.error or f'Unmatched end tag "{tag}"'
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def visible_text(html_text: str) -> str:
    """The text a user sees, or ApiError as Telegram would raise it for bad markup."""
    if html_text.count("<") != html_text.count(">"):
        raise ApiError(400, "Bad Request: can't parse entities: unclosed or stray '<'")
    if ENTITY_OR_AMP.search(html_text):
        raise ApiError(400, "Bad Request: can't parse entities: character '&' is reserved")
    parser = _EntityParser()
    parser.feed(html_text)
    parser.close()
    if parser.error or parser.stack:
        raise ApiError(400, f"Bad Request: can't parse entities: {parser.error or 'unclosed tag ' + parser.stack[-1]}")
    return "".join(parser.text)


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _update_chat(update: dict[str, Any]) -> str:
    """The chat an update belongs to (Telegram posts one chat's updates one at a time)."""
    for kind in ("message", "edited_message", "my_chat_member"):
        if kind in update:
            return str(update[kind]["chat"]["id"])
    query = update.get("callback_query")
    if query is not None:
        return str(query["message"]["chat"]["id"]) if query.get("message") else str(query["from"]["id"])
    return f"update:{update['update_id']}"


@dataclass
class SentMessage:
    message_id: int
    chat_id: int
    text: str
    html: str
    buttons: list[list[dict[str, Any]]] = field(default_factory=list)
    deleted: bool = False
    reply_to: int | None = None
    media: dict[str, str] | None = None
    force_reply: bool = False
    from_user: int | None = None
    sent_hour: float = 0.0
    topic: int | None = None  # in a forum group: the topic it is in (None: General)

    @property
    def labels(self) -> list[str]:
        return [b["text"] for row in self.buttons for b in row]

    def button(self, label: str) -> dict[str, Any]:
        for row in self.buttons:
            for b in row:
                if b["text"] == label:
                    return b
        raise AssertionError(f"no button {label!r} in {self.labels}")


@dataclass
class FakeUser:
    id: int
    first_name: str
    language_code: str | None = None
    blocked_bot: bool = False


class FakeBotApi:
    def __init__(self, token: str = "123456:AAF-test-token-shaped-like-telegrams-35", *, bot_id: int = 123456, username: str = "saferoute_test_bot") -> None:
        self.token = token
        self.bot = {"id": bot_id, "is_bot": True, "first_name": "SafeRoute", "username": username,
                    "can_join_groups": True, "can_read_all_group_messages": False, "supports_inline_queries": False}
        self.users: dict[int, FakeUser] = {}
        self.groups: dict[int, str] = {}
        self.messages: dict[int, list[SentMessage]] = {}
        self.updates: list[dict[str, Any]] = []
        self.delivered: list[dict[str, Any]] = []
        self.commands: dict[str | None, list[dict[str, str]]] = {}
        self.chat_commands: dict[int, list[dict[str, str]]] = {}  # menus set for one chat (BotCommandScopeChat)
        self.callback_answers: list[str] = []
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.errors: list[tuple[str, str]] = []
        self.hold_sends: asyncio.Event | None = None  # sendMessage waits for it: a request still on its way
        self.held = 0  # sends waiting on hold_sends
        self.held_never_arrive = False  # released held sends are dropped (they never reached Telegram) instead of done
        self.hold_receipts: asyncio.Event | None = None  # answerCallbackQuery and editMessageReplyMarkup wait for it
        self.held_receipts = 0
        self.most_held_receipts = 0  # the most receipts held at the same moment
        self.abandoned: list[str] = []  # methods carried out after the bot had given up waiting for their answer
        self._fail_next: dict[str, list[ApiError]] = {}
        self._lose_next: list[tuple[str, str]] = []
        self.lost_answers: list[tuple[str, str]] = []
        self._chat_events: dict[int, asyncio.Event] = {}
        self.webhook: tuple[str, str | None] | None = None  # (url, secret token) once setWebhook was called
        self.webhook_allowed: list[str] | None = None
        self.webhook_connections = 40
        self.webhook_posts: list[tuple[int, int]] = []  # (update_id, HTTP status the bot answered) of every post
        self._webhook_task: asyncio.Task[None] | None = None
        self.first_calls: dict[str, float] = {}  # method -> when it was first called (time.monotonic, shared by processes)  # (method, chat_id) of every request done whose answer was lost
        self._ids = itertools.count(1)
        self._update_ids = itertools.count(1000)
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._closing = False
        self.rate_limit: float | None = None
        self.accept_any_chat = False
        self.deliveries: collections.Counter[int] = collections.Counter()  # how often each update_id was handed out
        self.fault_rate = 0.0
        self.fault_kinds: tuple[str, ...] = ()
        self.faults: list[tuple[str, str]] = []  # (method, kind) of every fault injected
        self._fault_rng = random.Random(0)
        self.too_many = 0
        self._window: deque[float] = deque()
        self.sent_times: list[float] = []
        self._awaiting_reply: dict[int, float] = {}
        self.reply_latencies: list[float] = []
        self.port = 0
        # Telegram's rules the fake keeps: callback queries answerable once, while fresh; a bot's
        # message deletable for 48 hours; in groups with privacy mode (the default) the bot sees
        # only commands and replies to its own messages; per-chat send limits when set.
        self.forums: dict[int, set[int]] = {}  # forum group -> its topics' ids
        self.queries: dict[str, str] = {}  # callback query id -> "open", "answered" or "too old"
        self.hours = 0.0  # the fake's own clock for the 48-hour rule, moved by `advance_hours`
        self.privacy_mode = True
        self.dropped_by_privacy = 0
        self.chat_limits: tuple[int, int] | None = None  # (per private chat a second, per group a minute)
        self._chat_windows: dict[int, deque[float]] = {}
        self.chat_too_many = 0

    # -- server --------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bot"

    async def start(self, port: int = 0) -> FakeBotApi:
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        app.router.add_get("/__fake__/stats", self._stats)
        app.router.add_post("/__fake__/user_sends", self._control_user_sends)
        app.router.add_post("/__fake__/act", self._control_act)
        # A request whose client disconnects (a killed bot) is still carried out, as Telegram
        # carries out what reached it; `hold_sends` and `held_never_arrive` model one that had not.
        self._runner = web.AppRunner(app, handle_signals=False, handler_cancellation=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aenter__(self) -> FakeBotApi:
        return await self.start()

    # -- control endpoints, for benchmarks running the fake in another process ---------------

    async def _stats(self, request: web.Request) -> web.Response:
        polls = [t for method, t in self.first_calls.items() if method == "getUpdates"]
        return web.json_response({"sent": len(self.sent_times), "too_many": self.too_many, "first_poll": polls[0] if polls else None,
                                  "calls": len(self.calls),
                                  "first": self.sent_times[0] if self.sent_times else None,
                                  "last": self.sent_times[-1] if self.sent_times else None,
                                  "sent_times": self.sent_times if request.query.get("times") else [],
                                  "reply_latencies": self.reply_latencies})

    async def _control_user_sends(self, request: web.Request) -> web.Response:
        body = await request.json()
        user_id = int(body["user_id"])
        if user_id not in self.users:
            self.add_user(user_id, "Chatter", body.get("language_code"))
        self._awaiting_reply[user_id] = time.monotonic()
        await self.user_sends(user_id, str(body["text"]))
        return web.json_response({"ok": True})

    def _touched(self, chat_id: int) -> None:
        event = self._chat_events.pop(chat_id, None)
        if event is not None:
            event.set()

    async def _wait_in_chat(self, chat_id: int, predicate: Callable[[], Any], timeout: float) -> Any:
        """Like wait_for, but woken only by the bot's messages to this chat: hundreds of
        benchmark users waiting at once would otherwise each re-check at every request."""
        async def _wait() -> Any:
            while not (result := predicate()):
                await self._chat_events.setdefault(chat_id, asyncio.Event()).wait()
            return result
        return await asyncio.wait_for(_wait(), timeout)

    async def _control_act(self, request: web.Request) -> web.Response:
        """A user sends a text or presses a button (by its label, on the newest message that has
        it, waiting for one to come); answers when the bot's next message in the chat arrives,
        with the latency from the update being available to it."""
        body = await request.json()
        user_id = int(body["user_id"])
        if user_id not in self.users:
            self.add_user(user_id, "Person", body.get("language_code"))
        wait = float(body.get("timeout", 30))
        before = len(self.messages[user_id])
        try:
            if "press" in body:
                label = str(body["press"])
                message = await self._wait_in_chat(user_id, lambda: next((m for m in reversed(self.bot_messages(user_id))
                                                                          if m.message_id > int(body.get("after", 0)) and label in m.labels), None), wait)
                started = time.monotonic()
                await self.user_presses(user_id, message, label)
            else:
                started = time.monotonic()
                await self.user_sends(user_id, str(body["text"]))
            reply = await self._wait_in_chat(user_id, lambda: next((m for m in self.messages[user_id][before:] if m.from_user is None), None), wait)
        except TimeoutError:
            return web.json_response({"ok": False}, status=504)
        return web.json_response({"ok": True, "latency": time.monotonic() - started, "message_id": reply.message_id, "text": reply.text[:200]})

    def _rate_check(self, chat_id: int) -> None:
        """Answer 429 above the configured rate, as Telegram does."""
        now = time.monotonic()
        if chat_id in self._awaiting_reply:
            self.reply_latencies.append(now - self._awaiting_reply.pop(chat_id))
        if self.chat_limits is not None:
            per_second, per_minute_in_group = self.chat_limits
            span, most = (60.0, per_minute_in_group) if chat_id in self.groups else (1.0, per_second)
            window = self._chat_windows.setdefault(chat_id, deque())
            while window and now - window[0] >= span:
                window.popleft()
            if len(window) >= most:
                self.chat_too_many += 1
                retry = max(1, math.ceil(span - (now - window[0])))
                raise ApiError(429, f"Too Many Requests: retry after {retry}", {"retry_after": retry})
            window.append(now)
        if self.rate_limit is None:
            return
        while self._window and now - self._window[0] >= 1.0:
            self._window.popleft()
        if len(self._window) >= self.rate_limit:
            self.too_many += 1
            raise ApiError(429, "Too Many Requests: retry after 1", {"retry_after": 1})
        self._window.append(now)

    async def __aexit__(self, *exc: object) -> None:
        self._closing = True
        await self._notify()
        if self._webhook_task is not None:
            await asyncio.gather(self._webhook_task, return_exceptions=True)
        if self._runner:
            await self._runner.cleanup()

    async def _params(self, request: web.Request) -> dict[str, Any]:
        if request.content_type == "application/json":
            return dict(await request.json())
        form = await request.post()
        params: dict[str, Any] = {}
        for key, value in form.items():
            text = value if isinstance(value, str) else ""
            params[key] = json.loads(text) if key in JSON_FIELDS else text
        params.update({k: v for k, v in request.query.items() if k not in params})
        return params

    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        if request.match_info["token"] != self.token:
            return web.json_response({"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401)
        params = await self._params(request)
        self.calls.append((method, params))
        self.first_calls.setdefault(method, time.monotonic())
        await self._notify()
        handler = getattr(self, f"api_{method}", None)
        try:
            if handler is None:
                raise ApiError(404, "Not Found: method not found")
            queued = self._fail_next.get(method)
            if queued:
                raise queued.pop(0)
            fault = self._fault_for(method)
            if fault == "reset":  # the connection drops before the request is handled, as a flaky network does
                self.faults.append((method, fault))
                assert request.transport is not None
                request.transport.close()
                return web.Response(status=500)
            if fault and fault != "lost":
                self.faults.append((method, fault))
                raise {"429": ApiError(429, "Too Many Requests: retry after 1", {"retry_after": 1}),
                       "500": ApiError(500, "Internal Server Error"), "502": ApiError(502, "Bad Gateway"),
                       "403": ApiError(403, "Forbidden: bot was blocked by the user")}[fault]
            result = await handler(params)
            if request.transport is None or request.transport.is_closing():  # done, but the bot had stopped waiting for the answer
                self.abandoned.append(method)
            if fault is None and self._lose_next and self._lose_next[0] == (method, str(params.get("chat_id"))):
                self._lose_next.pop(0)
                fault = "lost"
            if fault == "lost":  # accepted and done, but the answer never reaches the bot (a read timeout, a dropped link)
                self.faults.append((method, fault))
                self.lost_answers.append((method, str(params.get("chat_id"))))
                assert request.transport is not None
                request.transport.close()
                return web.Response(status=500)
        except ApiError as err:
            self.errors.append((method, err.description))
            body: dict[str, Any] = {"ok": False, "error_code": err.code, "description": err.description}
            if err.parameters:
                body["parameters"] = err.parameters
            return web.json_response(body, status=err.code)
        return web.json_response({"ok": True, "result": result})

    # -- helpers for tests -------------------------------------------------------------------

    def inject_faults(self, rate: float, *, seed: int = 0, kinds: tuple[str, ...] = ("429", "500", "502", "reset")) -> None:
        """From now on, answer a share `rate` of requests (getUpdates included, which only
        gets 5xx and resets) with a fault Telegram or the network produces, chosen by a seeded
        generator so a failing run can be repeated. Every fault but "lost" happens before the
        request is handled; "lost" is a request Telegram accepted whose answer never came back
        (a read timeout), so the bot cannot know it arrived. "403" is a user who blocked the bot."""
        self.fault_rate, self.fault_kinds, self._fault_rng = rate, kinds, random.Random(seed)

    def _fault_for(self, method: str) -> str | None:
        if not self.fault_rate or method in ("getMe", "setMyCommands", "deleteMyCommands", "deleteWebhook"):
            return None
        if self._fault_rng.random() >= self.fault_rate:
            return None
        kinds = [k for k in self.fault_kinds if method != "getUpdates" or k in ("500", "502", "reset")]
        if method not in ("sendMessage", "sendPhoto", "sendDocument", "sendVoice"):
            kinds = [k for k in kinds if k != "403"]  # a blocked user refuses messages, not a callback answer
        return self._fault_rng.choice(kinds) if kinds else None

    def lose_next_answer(self, method: str, chat_id: int) -> None:
        """The next `method` to `chat_id` is carried out, and its answer lost on the way back."""
        self._lose_next.append((method, str(chat_id)))

    def fail_next(self, method: str, code: int, description: str, **parameters: Any) -> None:
        self._fail_next.setdefault(method, []).append(ApiError(code, description, parameters or None))

    def add_user(self, user_id: int, first_name: str = "Test", language_code: str | None = None) -> FakeUser:
        user = FakeUser(user_id, first_name, language_code)
        self.users[user_id] = user
        self.messages.setdefault(user_id, [])
        return user

    def _user_json(self, user: FakeUser) -> dict[str, Any]:
        data: dict[str, Any] = {"id": user.id, "is_bot": False, "first_name": user.first_name}
        if user.language_code:
            data["language_code"] = user.language_code
        return data

    def _chat_json(self, user: FakeUser) -> dict[str, Any]:
        return {"id": user.id, "type": "private", "first_name": user.first_name}

    def _any_chat_json(self, chat_id: int) -> dict[str, Any]:
        if chat_id in self.groups:
            return {"id": chat_id, "type": "supergroup", "title": self.groups[chat_id], **({"is_forum": True} if chat_id in self.forums else {})}
        return self._chat_json(self.users[chat_id])

    def add_group(self, chat_id: int, title: str, *, topics: tuple[int, ...] | None = None) -> None:
        """A group the bot is in; with `topics`, a forum group with those topics (General aside)."""
        self.groups[chat_id] = title
        self.messages.setdefault(chat_id, [])
        if topics is not None:
            self.forums[chat_id] = set(topics)

    def _user_message(self, chat_id: int, user_id: int, **fields: Any) -> dict[str, Any]:
        user = self.users[user_id]
        message = {"message_id": next(self._ids), "date": int(time.time()), "chat": self._any_chat_json(chat_id),
                   "from": self._user_json(user), **fields}
        stored = SentMessage(message["message_id"], chat_id, str(fields.get("text", "")), "", from_user=user_id)
        self.messages.setdefault(chat_id, []).append(stored)
        return message

    async def member_sends(self, group_id: int, user_id: int, text: str, reply_to: SentMessage | None = None) -> int:
        """A member of a group writes there, possibly replying to one of the bot's messages."""
        fields: dict[str, Any] = {"text": text}
        if reply_to is not None:
            fields["reply_to_message"] = self._message_json(reply_to)
            if reply_to.topic is not None:  # in a forum, a reply is in the topic of what it answers
                fields.update(message_thread_id=reply_to.topic, is_topic_message=True)
        if text.startswith("/"):
            fields["entities"] = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
        message = self._user_message(group_id, user_id, **fields)
        to_bot = text.startswith("/") or (reply_to is not None and reply_to.from_user is None) or f"@{self.bot['username']}" in text
        if self.privacy_mode and not to_bot:
            self.dropped_by_privacy += 1  # the group sees it; the bot, with privacy mode on, never does
            return 0
        return await self.push_update({"update_id": next(self._update_ids), "message": message})

    async def user_blocks_bot(self, user_id: int, *, blocked: bool = True) -> int:
        """The user blocks the bot (or unblocks it): from now on sends to them get 403, and the
        bot is told with a my_chat_member update, as Telegram does."""
        user = self.users[user_id]
        user.blocked_bot = blocked
        bot = {k: self.bot[k] for k in ("id", "is_bot", "first_name", "username")}
        member, kicked = {"user": bot, "status": "member"}, {"user": bot, "status": "kicked", "until_date": 0}
        old, new = (member, kicked) if blocked else (kicked, member)
        change = {"chat": self._chat_json(user), "from": self._user_json(user), "date": int(time.time()),
                  "old_chat_member": old, "new_chat_member": new}
        return await self.push_update({"update_id": next(self._update_ids), "my_chat_member": change})

    async def user_edits(self, user_id: int, message_id: int, text: str) -> int:
        """The user edits a message they sent earlier. Telegram sends it as an `edited_message`
        update, and only to a bot that asked for those in `allowed_updates`."""
        user = self.users[user_id]
        edited = {"message_id": message_id, "date": int(time.time()), "edit_date": int(time.time()), "chat": self._chat_json(user),
                  "from": self._user_json(user), "text": text}
        return await self.push_update({"update_id": next(self._update_ids), "edited_message": edited})

    def advance_hours(self, hours: float) -> None:
        self.hours += hours

    def expire_queries(self) -> None:
        """Every open callback query gets too old to answer (Telegram allows about 15 s)."""
        for query_id, state in self.queries.items():
            if state == "open":
                self.queries[query_id] = "too old"

    async def user_sends_photo(self, user_id: int, file_id: str) -> int:
        photo = [{"file_id": file_id, "file_unique_id": file_id + "-u", "width": 800, "height": 600}]
        return await self.push_update({"update_id": next(self._update_ids), "message": self._user_message(user_id, user_id, photo=photo)})

    async def user_sends_voice(self, user_id: int, file_id: str, caption: str | None = None) -> int:
        voice = {"file_id": file_id, "file_unique_id": file_id + "-u", "duration": 12, "mime_type": "audio/ogg"}
        extra = {"caption": caption} if caption else {}
        return await self.push_update({"update_id": next(self._update_ids), "message": self._user_message(user_id, user_id, voice=voice, **extra)})

    async def user_sends_contact(self, user_id: int, phone: str) -> int:
        contact = {"phone_number": phone, "first_name": self.users[user_id].first_name, "user_id": user_id}
        return await self.push_update({"update_id": next(self._update_ids), "message": self._user_message(user_id, user_id, contact=contact)})

    async def user_sends_sticker(self, user_id: int, file_id: str = "STICKER-1") -> int:
        sticker = {"file_id": file_id, "file_unique_id": file_id + "-u", "type": "regular", "width": 512, "height": 512,
                   "is_animated": False, "is_video": False}
        return await self.push_update({"update_id": next(self._update_ids), "message": self._user_message(user_id, user_id, sticker=sticker)})

    async def user_sends_location(self, user_id: int, lat: float, lon: float) -> int:
        location = {"latitude": lat, "longitude": lon}
        return await self.push_update({"update_id": next(self._update_ids), "message": self._user_message(user_id, user_id, location=location)})

    def bot_messages(self, chat_id: int) -> list[SentMessage]:
        return [m for m in self.messages.get(chat_id, []) if m.from_user is None and not m.deleted]

    async def push_update(self, update: dict[str, Any]) -> int:
        async with self._changed:
            self.updates.append(update)
            self._changed.notify_all()
        return int(update["update_id"])

    async def user_sends(self, user_id: int, text: str) -> int:
        fields: dict[str, Any] = {"text": text}
        if text.startswith("/"):
            fields["entities"] = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
        return await self.push_update({"update_id": next(self._update_ids), "message": self._user_message(user_id, user_id, **fields)})

    async def user_presses(self, user_id: int, message: SentMessage, label: str) -> int:
        """A user presses a button on a message, in a private chat or in a group."""
        user = self.users[user_id]
        data = message.button(label)["callback_data"]
        bot_message = {"message_id": message.message_id, "date": int(time.time()), "chat": self._any_chat_json(message.chat_id),
                       "from": {k: self.bot[k] for k in ("id", "is_bot", "first_name", "username")}, "text": message.text}
        query = {"id": str(next(self._ids)), "from": self._user_json(user), "message": bot_message,
                 "chat_instance": str(user.id), "data": data}
        self.queries[query["id"]] = "open"
        return await self.push_update({"update_id": next(self._update_ids), "callback_query": query})

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = WAIT) -> Any:
        """Wait until predicate() is truthy; the timeout only guards a failing test."""
        async def _wait() -> Any:
            async with self._changed:
                while not (result := predicate()):
                    await self._changed.wait()
                return result
        return await asyncio.wait_for(_wait(), timeout)

    def sent_to(self, chat_id: int) -> list[SentMessage]:
        return [m for m in self.messages.get(chat_id, []) if not m.deleted and m.from_user is None]

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # -- Bot API methods ----------------------------------------------------------------------

    async def api_getMe(self, params: dict[str, Any]) -> dict[str, Any]:
        return self.bot

    async def api_deleteWebhook(self, params: dict[str, Any]) -> bool:
        self.webhook = None
        return True

    async def api_setWebhook(self, params: dict[str, Any]) -> bool:
        url = str(params.get("url") or "")
        if not url.startswith(("https://", "http://127.0.0.1")):
            raise ApiError(400, "Bad Request: bad webhook: An HTTPS URL must be provided for webhook")
        secret = params.get("secret_token")
        if secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", str(secret)):
            raise ApiError(400, "Bad Request: secret token contains unallowed characters")
        self.webhook = (url, str(secret) if secret else None)
        allowed = params.get("allowed_updates")
        self.webhook_allowed = json.loads(allowed) if isinstance(allowed, str) else allowed
        self.webhook_connections = int(params.get("max_connections") or 40)
        if not 1 <= self.webhook_connections <= 100:
            raise ApiError(400, "Bad Request: bad webhook: max_connections must be between 1 and 100")
        if self._webhook_task is None:
            self._webhook_task = asyncio.create_task(self._post_updates())
        await self._notify()
        return True

    async def _post_updates(self) -> None:
        """Telegram's side of a webhook: updates of different chats are posted at once, up to
        the webhook's max_connections (40 unless set); a chat's next update only after the bot
        answered its last one. Each is posted until the bot answers 200 (a refusal or a dropped
        connection means trying again, as Telegram does)."""
        in_flight: set[int] = set()
        busy_chats: set[str] = set()

        def next_update() -> dict[str, Any] | None:
            allowed = self.webhook_allowed
            for update in list(self.updates):
                if update["update_id"] in in_flight:
                    continue
                if allowed and not any(kind in update for kind in allowed):
                    self.updates.remove(update)
                    continue
                chat = _update_chat(update)
                if chat in busy_chats:
                    continue
                return update
            return None

        async def post(http: aiohttp.ClientSession, update: dict[str, Any], url: str, secret: str | None) -> None:
            chat = _update_chat(update)
            headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret else {}
            try:
                async with http.post(url, json=update, headers=headers) as answer:
                    status = answer.status
            except aiohttp.ClientError:
                status = 0
            self.webhook_posts.append((int(update["update_id"]), status))
            self.deliveries.update([int(update["update_id"])])
            if status == 200:
                self.updates.remove(update)
                self.delivered.append(update)
            else:
                await asyncio.sleep(0.1)  # Telegram backs off too; the tests wait for results, not for this
            in_flight.discard(update["update_id"])
            busy_chats.discard(chat)
            await self._notify()

        posts: set[asyncio.Task[None]] = set()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            while not self._closing:
                async with self._changed:
                    await self._changed.wait_for(lambda: self._closing or (
                        self.webhook is not None and len(in_flight) < self.webhook_connections and next_update() is not None))
                    if self._closing or self.webhook is None:
                        continue
                    update = next_update()
                    if update is None:
                        continue
                    in_flight.add(update["update_id"])
                    busy_chats.add(_update_chat(update))
                url, secret = self.webhook
                task = asyncio.create_task(post(http, update, url, secret))
                posts.add(task)
                task.add_done_callback(posts.discard)
            await asyncio.gather(*posts, return_exceptions=True)

    async def api_getUpdates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        if self.webhook is not None:
            raise ApiError(409, "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first")
        offset = int(params.get("offset") or 0)
        timeout = float(params.get("timeout") or 0)
        limit = int(params.get("limit") or 100)
        async with self._changed:
            if offset:
                self.updates = [u for u in self.updates if u["update_id"] >= offset]
            if not self.updates and timeout > 0:
                try:
                    await asyncio.wait_for(self._changed.wait_for(lambda: bool(self.updates) or self._closing), timeout)
                except TimeoutError:
                    pass
            allowed = params.get("allowed_updates")
            result = [u for u in self.updates if not allowed or any(k in u for k in allowed)][:limit]
            self.delivered.extend(u for u in result if u not in self.delivered)
            self.deliveries.update(int(u["update_id"]) for u in result)
            return result

    def _chat(self, params: dict[str, Any]) -> int:
        try:
            chat_id = int(params["chat_id"])
        except (KeyError, ValueError) as exc:
            raise ApiError(400, "Bad Request: chat_id is empty") from exc
        if chat_id in self.groups:
            return chat_id
        if chat_id not in self.users and self.accept_any_chat:
            if chat_id < 0:
                self.add_group(chat_id, "Group")
                return chat_id
            self.add_user(chat_id, "Subscriber")
        if chat_id not in self.users:
            raise ApiError(400, "Bad Request: chat not found")
        if self.users[chat_id].blocked_bot:
            raise ApiError(403, "Forbidden: bot was blocked by the user")
        return chat_id

    def _buttons(self, params: dict[str, Any]) -> list[list[dict[str, Any]]]:
        markup = params.get("reply_markup") or {}
        rows = markup.get("inline_keyboard", []) if isinstance(markup, dict) else []
        for row in rows:
            for button in row:
                data = button.get("callback_data")
                if data is not None and not 1 <= len(data.encode()) <= CALLBACK_LIMIT:
                    raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
                if not button.get("text"):
                    raise ApiError(400, "Bad Request: text buttons are unallowed in the inline keyboard")
        return rows

    def _render(self, params: dict[str, Any]) -> tuple[str, str]:
        html_text = str(params.get("text") or "")
        text = visible_text(html_text) if params.get("parse_mode") == "HTML" else html_text
        if not text.strip():
            raise ApiError(400, "Bad Request: message text is empty")
        if utf16_len(text) > TEXT_LIMIT:
            raise ApiError(400, "Bad Request: message is too long")
        return text, html_text

    def _message_json(self, message: SentMessage) -> dict[str, Any]:
        sender = (self._user_json(self.users[message.from_user]) if message.from_user is not None
                  else {k: self.bot[k] for k in ("id", "is_bot", "first_name", "username")})
        data: dict[str, Any] = {"message_id": message.message_id, "date": int(time.time()), "chat": self._any_chat_json(message.chat_id),
                                "from": sender, "text": message.text or "-"}
        if message.topic is not None:
            data.update(message_thread_id=message.topic, is_topic_message=True)
        if message.buttons:
            data["reply_markup"] = {"inline_keyboard": message.buttons}
        return data

    def _reply_target(self, chat_id: int, params: dict[str, Any]) -> int | None:
        target = params.get("reply_to_message_id")
        anyway = str(params.get("allow_sending_without_reply", "")).lower() == "true"
        if target is None and isinstance(params.get("reply_parameters"), dict):
            target = params["reply_parameters"].get("message_id")
            anyway = anyway or bool(params["reply_parameters"].get("allow_sending_without_reply"))
        if target is None:
            return None
        if not any(m.message_id == int(target) and not m.deleted for m in self.messages.get(chat_id, [])):
            if anyway:
                return None
            raise ApiError(400, "Bad Request: message to be replied not found")
        return int(target)

    def _topic(self, chat_id: int, params: dict[str, Any], reply_to: int | None) -> int | None:
        """Where a message lands in a forum group: the topic asked for, else the topic of the
        message it replies to, else General."""
        asked = params.get("message_thread_id")
        if asked is not None:
            if int(asked) not in self.forums.get(chat_id, set()):
                raise ApiError(400, "Bad Request: message thread not found")
            return int(asked)
        if reply_to is not None:
            return next((m.topic for m in self.messages.get(chat_id, []) if m.message_id == reply_to), None)
        return None

    async def _send_media(self, kind: str, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = self._chat(params)
        file_id = str(params.get(kind) or "")
        if not file_id:
            raise ApiError(400, f"Bad Request: there is no {kind} in the request")
        reply_to = self._reply_target(chat_id, params)
        message = SentMessage(next(self._ids), chat_id, str(params.get("caption") or ""), "", media={"kind": kind, "file_id": file_id},
                              reply_to=reply_to, topic=self._topic(chat_id, params, reply_to))
        self.messages[chat_id].append(message)
        self._touched(chat_id)
        await self._notify()
        return self._message_json(message)

    async def api_sendPhoto(self, params: dict[str, Any]) -> dict[str, Any]:
        return await self._send_media("photo", params)

    async def api_sendDocument(self, params: dict[str, Any]) -> dict[str, Any]:
        return await self._send_media("document", params)

    async def api_sendVoice(self, params: dict[str, Any]) -> dict[str, Any]:
        return await self._send_media("voice", params)

    def _find(self, chat_id: int, message_id: Any) -> SentMessage:
        for message in self.messages.get(chat_id, []):
            if message.message_id == int(message_id) and not message.deleted:
                return message
        raise ApiError(400, "Bad Request: message to edit not found")

    async def api_sendMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = self._chat(params)
        text, html_text = self._render(params)
        buttons = self._buttons(params)
        reply_to = self._reply_target(chat_id, params)
        topic = self._topic(chat_id, params, reply_to)
        self._rate_check(chat_id)
        self.sent_times.append(time.monotonic())
        if self.hold_sends is not None:
            self.held += 1
            await self.hold_sends.wait()
            self.held -= 1
            if self.held_never_arrive:
                raise ApiError(500, "Internal Server Error: held, never arrived")
        markup = params.get("reply_markup") or {}
        message = SentMessage(next(self._ids), chat_id, text, html_text, buttons, reply_to=reply_to,
                              force_reply=isinstance(markup, dict) and bool(markup.get("force_reply")), sent_hour=self.hours,
                              topic=topic)
        self.messages[chat_id].append(message)
        self._touched(chat_id)
        await self._notify()
        return self._message_json(message)

    async def api_editMessageText(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = self._chat(params)
        message = self._find(chat_id, params.get("message_id"))
        text, html_text = self._render(params)
        buttons = self._buttons(params)
        if (text, html_text, buttons) == (message.text, message.html, message.buttons):
            raise ApiError(400, "Bad Request: message is not modified: specified new message content and reply markup are "
                                "exactly the same as a current content and reply markup of the message")
        message.text, message.html, message.buttons = text, html_text, buttons
        await self._notify()
        return self._message_json(message)

    async def _hold_receipt(self) -> None:
        if self.hold_receipts is not None:
            self.held_receipts += 1
            self.most_held_receipts = max(self.most_held_receipts, self.held_receipts)
            await self._notify()
            await self.hold_receipts.wait()
            self.held_receipts -= 1

    async def api_editMessageReplyMarkup(self, params: dict[str, Any]) -> dict[str, Any]:
        await self._hold_receipt()
        chat_id = self._chat(params)
        message = self._find(chat_id, params.get("message_id"))
        buttons = self._buttons(params)
        if buttons == message.buttons:
            raise ApiError(400, "Bad Request: message is not modified")
        message.buttons = buttons
        await self._notify()
        return self._message_json(message)

    async def api_deleteMessage(self, params: dict[str, Any]) -> bool:
        chat_id = self._chat(params)
        message = self._find(chat_id, params.get("message_id"))
        if self.hours - message.sent_hour >= 48:
            raise ApiError(400, "Bad Request: message can't be deleted for everyone")
        message.deleted = True
        await self._notify()
        return True

    async def api_answerCallbackQuery(self, params: dict[str, Any]) -> bool:
        await self._hold_receipt()
        query_id = str(params.get("callback_query_id"))
        if self.queries.get(query_id) != "open":
            raise ApiError(400, "Bad Request: query is too old and response timeout expired or query ID is invalid")
        self.queries[query_id] = "answered"
        self.callback_answers.append(query_id)
        await self._notify()
        return True

    async def api_setMyCommands(self, params: dict[str, Any]) -> bool:
        commands = params.get("commands") or []
        for command in commands:
            if not 1 <= len(command.get("command", "")) <= 32 or not 1 <= len(command.get("description", "")) <= 256:
                raise ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
        scope = params.get("scope") or {"type": "default"}
        if scope.get("type") == "chat":
            self.chat_commands[int(scope["chat_id"])] = commands
        else:
            self.commands[params.get("language_code") or None] = commands
        await self._notify()
        return True

    async def api_deleteMyCommands(self, params: dict[str, Any]) -> bool:
        scope = params.get("scope") or {"type": "default"}
        if scope.get("type") == "chat":
            self.chat_commands.pop(int(scope["chat_id"]), None)
        else:
            self.commands.pop(params.get("language_code") or None, None)
        await self._notify()
        return True

    async def api_getMyCommands(self, params: dict[str, Any]) -> list[dict[str, str]]:
        return self.commands.get(params.get("language_code") or None, [])


async def _serve(port: int, rate_limit: float | None) -> None:
    fake = FakeBotApi()
    fake.rate_limit = rate_limit
    fake.accept_any_chat = True  # any user or group the bot writes to exists
    await fake.start(port)
    print(f"fake Bot API on {fake.base_url}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Run the fake Bot API on its own (for benchmarks).")
    parser.add_argument("--port", type=int, default=0, help="0 (the default): any free port, printed on the first line")
    parser.add_argument("--rate-limit", type=float, default=None, help="answer 429 above this many sendMessage a second")
    parser.add_argument("--accept-any-chat", action="store_true", help="(always on when run on its own; kept for clarity)")
    options = parser.parse_args()
    asyncio.run(_serve(options.port, options.rate_limit))
