"""The web chat: the same engine, flows and storage in a browser, for people who cannot use
Telegram (blocked in Vietnam; LINE and Zalo elsewhere; a shared phone at a drop-in centre).

A browser holds an anonymous session id (random, in its own storage; no cookie); that id is
the person's address on the "web" channel. Messages go both ways over a WebSocket, or, where
WebSockets are blocked, by POST and long polling. What the bot says goes through the outbox
like every channel's: a row for a session with no page open waits until one connects.
Everything a person types is handled as text; the page renders the bot's few HTML tags
itself and never inserts HTML it was sent.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web
from sqlmodel import col, update

from bot.conversation import Conversations
from bot.engine.events import Event, Message
from bot.engine.i18n import LANGUAGES, SOURCE_LANGUAGE, Translator
from bot.inbox import ChatPace
from bot.outbox import Outbox, RetryLater, Sender
from storage.models import OutboxMessage, utcnow

log = logging.getLogger(__name__)

CHANNEL = "web"
STATIC = Path(__file__).with_name("web_static")
SESSION = re.compile(r"^[A-Za-z0-9_-]{22,64}$")
TEXT_LIMIT = 4000
POLL_SECONDS = 25.0
WAIT_FOR_PAGE = 60.0
ACK_SECONDS = 10.0


class WebChat:
    def __init__(self, conversations: Conversations, outbox: Outbox, texts: Translator, *, origins: tuple[str, ...] = (),
                 per_address: tuple[float, int] = (5.0, 30), clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.conversations = conversations
        self.texts = texts
        self.origins = origins
        # A page closed for good leaves rows behind; they are given up after a day.
        self.sender = Sender(outbox, CHANNEL, self.deliver, idle_poll=1.0, max_age=timedelta(days=1))
        self.sockets: defaultdict[str, set[web.WebSocketResponse]] = defaultdict(set)
        self.mailboxes: defaultdict[str, deque[dict[str, Any]]] = defaultdict(lambda: deque(maxlen=50))
        self.arrived: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self.pollers: defaultdict[str, int] = defaultdict(int)
        self.acks: dict[tuple[str, str], asyncio.Future[None]] = {}
        self.sleep = sleep
        self.session_pace = ChatPace(rate=2.0, burst=8, clock=clock)
        self.address_pace = ChatPace(rate=per_address[0], burst=per_address[1], clock=clock)

    # -- what the bot says -------------------------------------------------------------------------

    async def deliver(self, row: OutboxMessage, payload: dict[str, Any]) -> str | None:
        """To the session's open page; with none open, the row waits (not a failed attempt)."""
        if row.kind == "message":
            message = Message.from_payload(payload)
            item: dict[str, Any] = {"kind": "message", "ref": str(row.id), "text": message.text, "columns": message.columns,
                                    "buttons": [{"label": b.label, "data": b.data, "url": b.url} for b in message.buttons],
                                    "nav": [{"label": b.label, "data": b.data} for b in message.nav]}
        elif row.kind == "delete":
            item = {"kind": "delete", "ref": str(payload["message_id"])}
        elif row.kind in ("clear_buttons",):
            item = {"kind": "clear_buttons", "ref": str(payload["message_id"])}
        else:
            return None  # what only another channel needs (a command menu, a callback answer)
        if not self.sockets.get(row.chat) and not self.pollers.get(row.chat):
            raise RetryLater(WAIT_FOR_PAGE, waiting=True)  # made due again as soon as a page opens (`_page_opened`)
        result = item["ref"] if item["kind"] == "message" else None
        if self.pollers.get(row.chat):
            self.mailboxes[row.chat].append(item)
            self.arrived[row.chat].set()
            return result
        # A page being reloaded may close before it has kept what was sent: the page confirms
        # each item once kept, and what it did not confirm is sent again when a page opens
        # (it recognises an item it already has by its ref).
        acked = asyncio.get_running_loop().create_future()
        self.acks[(row.chat, str(item.get("ref")))] = acked
        try:
            for socket in list(self.sockets.get(row.chat, ())):
                try:
                    await socket.send_json({**item, "ack": True})
                except ConnectionError:
                    self.sockets[row.chat].discard(socket)
            await asyncio.wait_for(acked, ACK_SECONDS)
        except (TimeoutError, ConnectionError):
            raise RetryLater(WAIT_FOR_PAGE, waiting=True) from None
        finally:
            self.acks.pop((row.chat, str(item.get("ref"))), None)
        return result

    async def _page_opened(self, session: str) -> None:
        """What waited for this session's page is due now."""
        outbox = self.sender.outbox
        async with outbox.db.transaction() as db_session:
            await db_session.exec(update(OutboxMessage).where(  # type: ignore[call-overload]
                col(OutboxMessage.channel) == CHANNEL, col(OutboxMessage.chat) == session, col(OutboxMessage.status) == "pending",
            ).values(not_before=utcnow()))
        outbox.notify()

    # -- what the person does ----------------------------------------------------------------------

    def event_for(self, session: str, data: dict[str, Any], lang: str | None) -> Event | None:
        base: dict[str, Any] = dict(channel=CHANNEL, address=session, client_lang=lang if lang in LANGUAGES else None)
        if isinstance(data.get("choice"), str) and data["choice"]:
            ref = data.get("ref")
            return Event(**base, choice=data["choice"][:64], message_ref=str(ref) if isinstance(ref, (str, int)) else None)
        text = data.get("text")
        if not isinstance(text, str) or not text.strip():
            return None
        text = text[:TEXT_LIMIT]
        if text.startswith("/"):
            head, _, args = text[1:].partition(" ")
            return Event(**base, command=head.lower()[:32], args=args.strip())
        return Event(**base, text=text)

    async def take(self, session: str, address: str, data: dict[str, Any], lang: str | None,
                   tell: Callable[[str], Awaitable[None]] | None = None) -> str | None:
        """Handle one thing the person did; None, or why it was refused. A person typing very
        fast waits in their own queue, told once, and loses nothing; a whole address sending
        more than many people could (a script) is refused."""
        event = self.event_for(session, data, lang)
        if event is None:
            return "empty"
        if self.address_pace.wait_needed(address) > 0:
            return "too_many"
        wait = self.session_pace.wait_needed(session)
        if wait > 0 and tell is not None and self.session_pace.should_tell(session):
            await tell(self.texts.get(self._lang(lang), "common.slow_down"))
        while wait > 0:
            await self.sleep(wait)
            wait = self.session_pace.wait_needed(session)
        await self.conversations.handle(event)
        return None

    # -- HTTP ----------------------------------------------------------------------------------------

    def _session(self, value: object) -> str:
        if not isinstance(value, str) or not SESSION.match(value):
            raise web.HTTPBadRequest(text='{"error": "a session id of 22 to 64 URL-safe characters"}', content_type="application/json")
        return value

    @staticmethod
    def _address(request: web.Request) -> str:
        return request.remote or "-"

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        """The session id comes in the first message, not in the URL: URLs end up in access logs."""
        lang = request.query.get("lang")
        socket = web.WebSocketResponse(heartbeat=25.0, max_msg_size=16_384)
        await socket.prepare(request)
        try:
            hello = await socket.receive_json(timeout=30)
            session = self._session(hello.get("session") if isinstance(hello, dict) else None)
        except (TypeError, ValueError, TimeoutError, web.HTTPBadRequest):
            await socket.close(code=4400, message=b"send {\"session\": ID} first")
            return socket
        self.sockets[session].add(socket)
        await self._page_opened(session)

        async def tell(text: str) -> None:
            if not socket.closed:
                await socket.send_json({"kind": "note", "text": text})

        # What the person does is handled in order by one task per page, so that a fast typist
        # waiting in their queue never holds up the page's confirmations read here.
        actions: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

        async def handle_actions() -> None:
            while (data := await actions.get()) is not None:
                try:
                    refused = await self.take(session, self._address(request), data, lang, tell)
                    if refused == "too_many":  # said, in their language: what they sent was not taken
                        await tell(self.texts.get(self._lang(lang), "web.too_many"))
                except Exception:
                    log.exception("web chat: an action could not be handled")
                    await tell(self.texts.get(self._lang(lang), "common.error"))

        worker = asyncio.create_task(handle_actions(), name="web-chat-actions")
        try:
            async for message in socket:
                if message.type != WSMsgType.TEXT:
                    continue
                try:
                    data = message.json()
                except ValueError:
                    continue
                if isinstance(data, dict) and "ack" in data:
                    acked = self.acks.get((session, str(data["ack"])))
                    if acked is not None and not acked.done():
                        acked.set_result(None)
                elif isinstance(data, dict):
                    actions.put_nowait(data)
        finally:
            self.sockets[session].discard(socket)
            if not self.sockets[session]:
                del self.sockets[session]
                for (chat, _), acked in list(self.acks.items()):  # the page went before keeping it
                    if chat == session and not acked.done():
                        acked.set_exception(ConnectionError("the page closed"))
            actions.put_nowait(None)  # what the person sent before leaving is still handled
            await worker
        return socket

    async def send(self, request: web.Request) -> web.Response:
        """The fallback where WebSockets are blocked: one action by POST."""
        data = await request.json()
        if not isinstance(data, dict):
            raise web.HTTPBadRequest(text='{"error": "a JSON object"}', content_type="application/json")
        session = self._session(data.get("session"))
        refused = await self.take(session, self._address(request), data, data.get("lang") if isinstance(data.get("lang"), str) else None)
        said = {"text": self.texts.get(self._lang(data.get("lang")), "web.too_many")} if refused == "too_many" else {}
        return web.json_response({"ok": refused is None, **({"error": refused} if refused else {}), **said},
                                 status=429 if refused == "too_many" else 200)

    async def poll(self, request: web.Request) -> web.Response:
        """Long polling: what the bot said since, waiting up to 25 s for something."""
        data = await request.json()
        session = self._session(data.get("session") if isinstance(data, dict) else None)
        self.pollers[session] += 1
        await self._page_opened(session)
        try:
            if not self.mailboxes[session]:
                self.arrived[session].clear()
                try:
                    await asyncio.wait_for(self.arrived[session].wait(), POLL_SECONDS)
                except TimeoutError:
                    pass
            items = list(self.mailboxes[session])
            self.mailboxes[session].clear()
        finally:
            self.pollers[session] -= 1
            if not self.pollers[session]:
                del self.pollers[session]
                self.arrived.pop(session, None)
                if not self.mailboxes.get(session):
                    self.mailboxes.pop(session, None)
        return web.json_response({"items": items})

    def headers(self) -> dict[str, str]:
        """No third-party anything; framed only by the origins an NGO listed."""
        ancestors = " ".join(("'self'", *self.origins))
        return {"Content-Security-Policy": f"default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self'; "
                                           f"script-src 'self'; frame-ancestors {ancestors}; base-uri 'none'; form-action 'none'",
                "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}

    def page(self, name: str, content_type: str) -> Any:
        body = (STATIC / name).read_bytes()

        async def serve(_request: web.Request) -> web.Response:
            return web.Response(body=body, content_type=content_type, charset="utf-8", headers=self.headers())

        return serve

    def _lang(self, lang: object) -> str:
        return lang if isinstance(lang, str) and lang in self.texts.languages else SOURCE_LANGUAGE

    async def page_texts(self, request: web.Request) -> web.Response:
        """The page's own words (the input's placeholder, the quick-exit button), from the locales."""
        lang = self._lang(request.query.get("lang"))
        return web.json_response({"lang": lang, **{key: self.texts.get(lang, f"web.{key}") for key in ("placeholder", "send", "quick_exit", "quick_exit_hint")}},
                                 headers=self.headers())

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/", self.page("index.html", "text/html")), web.get("/chat", self.page("index.html", "text/html")),
                web.get("/chat/app.js", self.page("app.js", "application/javascript")),
                web.get("/chat/app.css", self.page("app.css", "text/css")),
                web.get("/chat/embed.js", self.page("embed.js", "application/javascript")),
                web.get("/chat/away", self.page("away.html", "text/html")),
                web.get("/chat/texts", self.page_texts), web.get("/chat/ws", self.websocket), web.post("/chat/send", self.send), web.post("/chat/poll", self.poll)]


def new_session_id() -> str:
    """For tests and tools: what a browser makes for itself (crypto.getRandomValues)."""
    return secrets.token_urlsafe(24)
