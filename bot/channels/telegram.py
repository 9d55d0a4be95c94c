"""The Telegram adapter: a fetch loop that loses nothing, one generic handler, a sender.

python-telegram-bot's own polling confirms an update to Telegram as soon as it is queued
in memory, so an update in flight when the process dies is gone. Here every fetched update
is stored in the inbox first, and only the next getUpdates (whose offset confirms it) is
made after that. Each update is read from Telegram's JSON (telegram_updates) and handed to
the channel-neutral conversation service; python-telegram-bot's Bot makes the calls that
need its types (media, command menus, the webhook).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from typing import Any

from sqlmodel import select
from aiohttp import web
from telegram import BotCommand, BotCommandScopeChat
from telegram.constants import ParseMode
from telegram.error import BadRequest, ChatMigrated, Conflict, Forbidden, InvalidToken, NetworkError, RetryAfter, TimedOut
from telegram.ext import Application

from bot.channels.telegram_http import AiohttpRequest
from bot.channels.telegram_updates import CHANNEL, UnreadableUpdate, chat_of, client_language, event_from_update, is_private_message
from bot.conversation import Conversations
from bot.engine.events import Message, split_text, telegram_len
from bot.engine.flows import FlowSet
from bot.engine.i18n import SOURCE_LANGUAGE, Translator
from bot.inbox import ChatLocks, ChatPace, Inbox
from bot import logs, metrics
from bot.outbox import CannotContinue, ChatMoved, NotSentYet, Outbox, RateLimiter, Rejected, RecipientGone, RetryLater, Sender, SharedBudget
from bot.supervise import supervise
from storage.models import OutboxMessage, User

log = logging.getLogger(__name__)

# Edited messages are not asked for: an answer already acted on is not taken back by editing it.
ALLOWED_UPDATES = ["message", "callback_query", "my_chat_member"]
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
HANDLE_ATTEMPTS = 3
TELEGRAM_TEXT_LIMIT = 4096
# Sends in flight at once. Enough to reach 1000 a second at a few milliseconds per request;
# more only adds event-loop overhead and a larger burst when a 429 pauses everything.
SEND_CONNECTIONS = 32


def keyboard_json(message: Message) -> dict[str, Any]:
    buttons = [{"text": b.label, "url": b.url} if b.url else {"text": b.label, "callback_data": b.data} for b in message.buttons]
    width = max(1, message.columns)
    rows = [buttons[i : i + width] for i in range(0, len(buttons), width)]
    nav = [{"text": b.label, "callback_data": b.data} for b in message.nav]
    rows += [nav[i : i + 3] for i in range(0, len(nav), 3)]
    return {"inline_keyboard": rows}


class TelegramChannel:
    def __init__(
        self,
        token: str,
        base_url: str,
        conversations: Conversations,
        inbox: Inbox,
        outbox: Outbox,
        flows: FlowSet,
        texts: Translator,
        *,
        poll_timeout: int = 30,
        rate: float = 25.0,
        webhook: tuple[str, str] | None = None,
        shared_rate: bool = False,
    ) -> None:
        self.webhook = webhook  # (url, secret token): webhook mode instead of polling
        self.conversations = conversations
        self.inbox = inbox
        self.outbox = outbox
        self.flows = flows
        self.texts = texts
        self.poll_timeout = poll_timeout
        self.locks = ChatLocks()
        self.pace = ChatPace()
        self._http = AiohttpRequest(connections=SEND_CONNECTIONS)
        self._polling_http = AiohttpRequest(connections=1)
        self.app: Application = (Application.builder().token(token).base_url(base_url).updater(None)  # type: ignore[type-arg]
                                 .request(self._http).get_updates_request(self._polling_http).build())
        budget = SharedBudget(outbox.db, CHANNEL, rate) if shared_rate else None
        self.sender = Sender(outbox, CHANNEL, self.deliver, limiter=RateLimiter(rate, shared=budget), concurrency=SEND_CONNECTIONS,
                             bulk_batch=max(200, int(rate)), takes_replies=True)
        self._tasks: set[asyncio.Task[None]] = set()
        self._offset: int | None = None
        self._stopping = asyncio.Event()
        self._poll: asyncio.Future[Any] | None = None
        self._sender_task: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        await self.app.initialize()
        if self.webhook is not None:
            url, secret = self.webhook
            await self.app.bot.set_webhook(url, secret_token=secret, allowed_updates=ALLOWED_UPDATES)
            log.info("webhook mode: Telegram posts updates to the webhook's path")
        else:
            await self.app.bot.delete_webhook()  # back to polling: Telegram refuses getUpdates while a webhook is set
        await self.resume_pending()
        highest = await self.inbox.highest_key(CHANNEL)
        self._offset = highest + 1 if highest is not None else None

    async def on_webhook(self, request: web.Request) -> web.Response:
        """One update posted by Telegram. Without the secret: 403, nothing stored. Stored
        before the 200, so Telegram posts it again if the process dies first."""
        assert self.webhook is not None
        if not hmac.compare_digest(request.headers.get(SECRET_HEADER, "").encode(), self.webhook[1].encode()):
            log.warning("webhook: a request without the right secret token; refused")
            return web.Response(status=403)
        try:
            item = await request.json()
            int(item["update_id"])
        except (ValueError, TypeError, KeyError):
            return web.Response(status=400)
        await self.accept([item])
        return web.Response(status=200)

    async def run(self) -> None:
        """Start, then fetch and send until request_stop(). The sender is supervised: a crash
        is logged and it restarts; an error no restart can heal stops the whole bot."""
        await self.start()
        sender = asyncio.create_task(supervise("telegram sender", self.sender.run, stopping=self._stopping.is_set), name="telegram-sender")
        sender.add_done_callback(self._background_ended)
        self._sender_task = sender
        # The command menus go while updates are already being fetched: six requests fewer
        # between a start (a deploy, a crash) and the first answer. Retried until they go.
        menus = asyncio.create_task(supervise("command menus", self.register_commands, stopping=self._stopping.is_set), name="telegram-menus")
        menus.add_done_callback(self._background_ended)
        try:
            if self.webhook is None:
                await self.fetch_forever()
            else:
                await self._stopping.wait()  # updates come to on_webhook
        finally:
            menus.cancel()
            await asyncio.gather(menus, return_exceptions=True)
            await self.sender.stop(sender)
            await self.stop()
        for task in (sender, menus):
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    def sending(self) -> bool:
        """Whether the sender is running (for /readyz)."""
        return self._sender_task is not None and not self._sender_task.done()

    def _background_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.request_stop()

    def request_stop(self) -> None:
        """Stop at a safe point: only the waiting long poll is interrupted, never a database
        write, so nothing handled is left half-recorded."""
        self._stopping.set()
        if self._poll is not None:
            self._poll.cancel()

    async def stop(self, grace: float = 10.0) -> None:
        """Let updates being handled finish; one that cannot within `grace` is cancelled, and
        as its inbox row is not marked done it is handled again at the next start."""
        if self._tasks:
            _, pending = await asyncio.wait(list(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            if pending:
                log.warning("%d update(s) still being handled after %.0fs; they resume at the next start", len(pending), grace)
        await self.app.shutdown()

    def menu(self, lang: str, *, staff: bool) -> list[BotCommand]:
        return [BotCommand(c.name, self.texts.get(lang, c.description)) for c in self.flows.commands.values() if staff or not c.staff]

    async def register_commands(self) -> None:
        """Everyone's menu, per language; staff commands are added per staff chat (the
        "commands" outbox rows)."""
        for lang in self.texts.languages:
            code = None if lang == SOURCE_LANGUAGE else lang
            await self.app.bot.set_my_commands(self.menu(lang, staff=False), language_code=code)

    # -- fetching ---------------------------------------------------------------------------

    async def fetch_forever(self) -> None:
        backoff = 1.0
        while not self._stopping.is_set():
            try:
                await self.fetch_once()
                backoff = 1.0
            except asyncio.CancelledError:
                if not self._stopping.is_set():
                    raise
            except (InvalidToken, Conflict) as exc:
                raise CannotContinue(f"Telegram refused getUpdates: {type(exc).__name__} (a revoked token, or another "
                                     "instance polling the same bot)") from exc
            except Exception as exc:  # the network, or the database busy past its timeout: nothing was confirmed, so it comes again
                level = logging.WARNING if isinstance(exc, NetworkError | TimedOut) else logging.ERROR
                log.log(level, "getUpdates failed (%s); retrying in %.0fs", type(exc).__name__, backoff)
                try:
                    await asyncio.wait_for(self._stopping.wait(), backoff)
                except TimeoutError:
                    pass
                backoff = min(backoff * 2, 60)

    async def fetch_once(self, timeout: int | None = None) -> list[str]:
        """One getUpdates call: store what came, then schedule it. Returns the new keys."""
        wait = self.poll_timeout if timeout is None else timeout
        # Telegram's answer as JSON, each update read on its own: one that cannot be read
        # must not block every update behind it (the offset would never move).
        self._poll = asyncio.ensure_future(self._polling_http.call(
            self.app.bot.base_url, "getUpdates", {"offset": self._offset, "timeout": wait, "allowed_updates": ALLOWED_UPDATES},
            read_timeout=wait + 10))
        try:
            raw = await self._poll
        finally:
            self._poll = None
        if not raw:
            return []
        new = await self.accept(raw)
        self._offset = max(int(item["update_id"]) for item in raw) + 1
        return new

    async def accept(self, raw: list[dict[str, Any]]) -> list[str]:
        """Store updates as they came (from getUpdates or the webhook), then schedule the new
        ones. Returns when they are stored: only then may Telegram be told they arrived."""
        readable: list[tuple[dict[str, Any], str]] = []
        rows = []
        for item in raw:
            try:
                chat = chat_of(item)
            except UnreadableUpdate as exc:
                log.error("update %s cannot be read (%s); set aside", item.get("update_id"), exc)
                chat = "-"
            else:
                readable.append((item, chat))
            rows.append((str(item["update_id"]), chat, item))
        new = set(await self.inbox.store(CHANNEL, rows))
        metrics.UPDATES_RECEIVED.labels(CHANNEL).inc(len(new))
        for key in new - {str(u["update_id"]) for u, _ in readable}:
            await self.inbox.mark_failed(CHANNEL, key, "unreadable update")
        for update, chat in readable:
            if str(update["update_id"]) in new:
                self._schedule(update, chat)
        return sorted(new)

    def _schedule(self, update: dict[str, Any], chat: str) -> None:
        """`update` is checked (`chat_of`), `chat` what it said."""
        task = asyncio.create_task(self._dispatch(update, chat))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _dispatch(self, update: dict[str, Any], chat: str) -> None:
        key = str(update["update_id"])
        logs.UPDATE.set(key)  # this task's log lines name the update they are about
        async with self.locks.hold(chat):
            if self.webhook is not None:
                await self._handle_earlier(chat, key)
            if is_private_message(update):
                await self._keep_pace(chat, update)
            await self._process(update)

    async def _process(self, update: dict[str, Any]) -> None:
        try:
            await self._on_update(update)
        except Exception as exc:
            log.error("update %s failed: %s", update["update_id"], type(exc).__name__)
            await self.inbox.mark_failed(CHANNEL, str(update["update_id"]), type(exc).__name__)

    async def _handle_earlier(self, chat: str, key: str) -> None:
        """With several workers behind a webhook, a person's next update can reach another
        worker while the last is still being handled. Telegram posted them in order, each
        stored before the next was posted, so whoever gets to the later one first handles the
        earlier ones first; the worker that received an earlier one then finds it done."""
        for row in await self.inbox.earlier_pending(CHANNEL, chat, key):
            if row.payload is None:
                continue
            try:
                earlier = json.loads(row.payload)
                chat_of(earlier)
            except ValueError:
                continue  # set aside by the worker that stored it
            await self._process(earlier)

    async def _keep_pace(self, chat: str, update: dict[str, Any]) -> None:
        """A flood from one person waits in that person's queue; they are told once."""
        wait = self.pace.wait_needed(chat)
        if wait <= 0:
            return
        if self.pace.should_tell(chat):
            async with self.inbox.db.transaction() as session:
                chosen = (await session.exec(select(User.lang).where(User.channel == CHANNEL, User.address == chat))).first()
                client = client_language(update)
                lang = chosen or (client or SOURCE_LANGUAGE).split("-")[0]
                Outbox.add(session, CHANNEL, chat, "message", {"text": self.texts.get(lang, "common.slow_down")})
            self.outbox.notify()
        while wait > 0:
            await asyncio.sleep(wait)
            wait = self.pace.wait_needed(chat)

    async def resume_pending(self) -> None:
        """Handle updates that were stored but not finished before the last stop: scheduled
        like new ones (in order within a chat, chats concurrently), so polling starts at once."""
        pending = await self.inbox.pending(CHANNEL)
        if pending:
            log.info("resuming %d stored update(s)", len(pending))
        for row in pending:
            try:
                update = json.loads(row.payload or "{}")
                chat = chat_of(update)
            except ValueError as exc:
                await self.inbox.mark_failed(CHANNEL, row.event_key, type(exc).__name__)
                continue
            self._schedule(update, chat)

    async def idle(self) -> None:
        """Wait until every scheduled update has been handled (used by tests and shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- the one handler ------------------------------------------------------------------------

    async def _on_update(self, update: dict[str, Any]) -> None:
        key = str(update["update_id"])
        try:
            converted = event_from_update(update)
        except Exception as exc:  # logged and set aside: otherwise the update would stay pending for ever
            log.error("update %s cannot be read (%s); set aside", key, type(exc).__name__)
            await self.inbox.mark_failed(CHANNEL, key, type(exc).__name__)
            return
        if converted is None:
            row = await self.inbox.get(CHANNEL, key)
            if row is not None and row.status == "pending":
                async with self.inbox.db.transaction() as session:
                    row = await session.get(type(row), row.id)
                    await Inbox.mark_done(session, row)  # type: ignore[arg-type]
            return
        event, receipts = converted
        error = ""
        for attempt in range(HANDLE_ATTEMPTS):
            try:
                await self.conversations.handle(event, inbox_key=key, receipts=receipts)
                return
            except Exception as exc:  # the database may be briefly unavailable
                error = type(exc).__name__
                log.warning("update %s: attempt %d failed (%s)", key, attempt + 1, error, exc_info=log.isEnabledFor(logging.DEBUG))
                await asyncio.sleep(0.2 * 2**attempt)
        log.error("update %s: set aside after %d attempts (%s); `python -m bot stats` lists it", key, HANDLE_ATTEMPTS, error)
        metrics.UPDATES_HANDLED.labels(CHANNEL, "set_aside").inc()
        await self.inbox.mark_failed(CHANNEL, key, error, HANDLE_ATTEMPTS)

    # -- sending --------------------------------------------------------------------------------

    async def _reply_target(self, payload: dict[str, Any]) -> int | None:
        """A reply may point at a message id, or at an earlier outbox row (a case card)
        whose message id is known only once it was sent."""
        if payload.get("reply_to"):
            return int(payload["reply_to"])
        if payload.get("reply_to_outbox"):
            ref = await self.outbox.result_ref(int(payload["reply_to_outbox"]))
            return int(ref) if ref else None
        return None

    async def _call(self, method: str, params: dict[str, Any]) -> Any:
        """A Bot API method as one JSON request (telegram_http.AiohttpRequest.call): the
        answer as Telegram sent it, errors raised by python-telegram-bot as for its own calls."""
        return await self._http.call(self.app.bot.base_url, method, params)

    async def _send_text(self, chat_id: int, message: Message, reply_to: int | None, *, paid: bool, topic: int | None = None) -> str:
        """sendMessage as a plain request (`_call`). Only the new message's id is needed, and
        building a `telegram.Message` (and the keyboard objects) for every send was a sixth
        of the bot's CPU in a broadcast at 1000 a second. Errors are still raised by
        python-telegram-bot (RetryAfter, Forbidden, BadRequest)."""
        parts = split_text(message.text, TELEGRAM_TEXT_LIMIT, telegram_len)
        # In a forum group: a case card goes to the partner's topic; a reply follows the message it answers.
        where = {"message_thread_id": topic} if topic and reply_to is None else {}
        first = None
        for part in parts[:-1]:  # too long for one message (measured as Telegram does): the head parts go first, plain
            sent = await self._call("sendMessage", {
                "chat_id": chat_id, "text": part, "parse_mode": ParseMode.HTML, "link_preview_options": {"is_disabled": True}, **where,
                **({"reply_parameters": {"message_id": reply_to, "allow_sending_without_reply": True}} if reply_to else {})})
            first = first or str(sent["message_id"])
        request: dict[str, Any] = {"chat_id": chat_id, "text": parts[-1], "parse_mode": ParseMode.HTML,
                                   "link_preview_options": {"is_disabled": True}, **where}
        if message.force_reply:
            request["reply_markup"] = {"force_reply": True, "selective": True}
        elif message.all_buttons:
            request["reply_markup"] = keyboard_json(message)
        if reply_to is not None:  # a thread whose first message was deleted still gets the message
            request["reply_parameters"] = {"message_id": reply_to, "allow_sending_without_reply": True}
        if paid:
            request["allow_paid_broadcast"] = True
        sent = await self._call("sendMessage", request)
        return first or str(sent["message_id"])

    async def deliver(self, row: OutboxMessage, payload: dict[str, Any]) -> str | None:
        bot = self.app.bot
        chat_id = int(row.chat)
        try:
            reply_to = await self._reply_target(payload)
            if row.kind == "message":
                message = Message.from_payload(payload)
                if row.uncertain and payload.get("repeat_note"):
                    message.text = f"{payload['repeat_note']}\n{message.text}"
                return await self._send_text(chat_id, message, reply_to, paid=bool(payload.get("paid")), topic=payload.get("topic"))
            if row.kind == "delete":
                await bot.delete_message(chat_id, int(payload["message_id"]))
                return None
            if row.kind == "edit":  # a message sent earlier (a case card), rewritten in place
                ref = await self.outbox.result_ref(int(payload["edit_outbox"]))
                if ref is None:
                    return None  # never sent (cancelled): nothing to edit
                message = Message.from_payload(payload)
                await self._call("editMessageText", {
                    "chat_id": chat_id, "message_id": int(ref), "text": message.text, "parse_mode": ParseMode.HTML,
                    "link_preview_options": {"is_disabled": True}, "reply_markup": keyboard_json(message)})
                return None
            if row.kind in ("photo", "voice", "audio", "video", "document", "video_note"):
                method = getattr(bot, f"send_{row.kind}")
                sent = await method(chat_id, payload["file_id"], reply_to_message_id=reply_to, allow_sending_without_reply=True)
                return str(sent.message_id)
            if row.kind == "commands":
                scope = BotCommandScopeChat(chat_id)
                if payload.get("menu") == "staff":
                    await bot.set_my_commands(self.menu(payload.get("lang") or SOURCE_LANGUAGE, staff=True), scope=scope)
                else:
                    await bot.delete_my_commands(scope=scope)
                return None
            # The two sends of every button press, as plain requests (see _call).
            if row.kind == "ack":
                await self._call("answerCallbackQuery", {"callback_query_id": payload["callback_id"]})
                return None
            if row.kind == "clear_buttons":
                await self._call("editMessageReplyMarkup", {"chat_id": chat_id, "message_id": payload["message_id"]})
                return None
            raise Rejected(f"unknown outbox kind {row.kind}")
        except NotSentYet as exc:
            raise RetryLater(1.0, waiting=True) from exc
        except RetryAfter as exc:
            after = exc.retry_after.total_seconds() if hasattr(exc.retry_after, "total_seconds") else float(exc.retry_after)
            # A group's own limit (about 20 a minute) holds back only that group, whose later
            # messages wait behind this one; elsewhere a 429 is the bot's overall rate: all pause.
            raise RetryLater(after, pause_all=chat_id > 0) from exc
        except ChatMigrated as exc:
            raise ChatMoved(str(exc.new_chat_id)) from exc
        except (InvalidToken, Conflict) as exc:
            raise CannotContinue(f"Telegram refused the bot: {type(exc).__name__}") from exc
        except Forbidden as exc:
            raise RecipientGone() from exc
        except BadRequest as exc:
            if "thread not found" in exc.message.lower() and payload.get("topic"):
                log.warning("outbox %s: the partner's topic is gone; sent to the group's General topic", row.id)
                return await self.deliver(row, {**payload, "topic": None})
            if row.kind in ("ack", "clear_buttons", "delete", "edit"):
                return None  # an old query, a keyboard already gone, a message deleted or already as wanted: nothing left to do
            if "chat not found" in exc.message.lower():
                raise RecipientGone() from exc
            raise Rejected(exc.message) from exc
        except (TimedOut, NetworkError) as exc:  # sent, perhaps, with the answer lost on the way back
            raise RetryLater(min(2 ** row.attempts, 300), uncertain=True) from exc
