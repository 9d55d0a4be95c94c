"""Wiring: builds the pieces from settings and starts them. Nothing else lives here."""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import signal
from datetime import timedelta
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

from bot import features, logs
from bot.conversation import Conversations
from bot.engine.content import Content, load_content
from bot.engine.flows import FlowSet, load_flows
from bot.engine.i18n import Translator
from bot.engine.runner import Engine
from bot.engine.understand import Understander
from bot.inbox import Inbox
from bot.outbox import Outbox
from bot.scheduler import Clock, ScheduleLease
from bot.settings import Settings
from bot.supervise import supervise
from storage import Database, connect, crypto

T = TypeVar("T")


class StartupError(Exception):
    """The bot cannot start as configured; the message says what to change."""


log = logging.getLogger(__name__)


@dataclass
class Core:
    settings: Settings
    db: Database
    flows: FlowSet
    content: Content
    texts: Translator
    engine: Engine
    inbox: Inbox
    outbox: Outbox
    conversations: Conversations
    parts: dict[str, Any] = field(default_factory=dict)
    # How each channel links to the bot with a start payload (a staff invite, a campaign's deep
    # link): the channel's to build, so no feature knows a platform's URLs.
    links: dict[str, Callable[[str], str]] = field(default_factory=dict)
    message_links: dict[str, Callable[[str, str | None], str | None]] = field(default_factory=dict)
    # Where campaigns go: the channels whose people can be written to at any time.
    broadcast_channels: tuple[str, ...] = ("telegram",)
    # Whose addresses ADMIN_TELEGRAM_IDS holds.
    admin_channel: str = "telegram"

    def deep_link(self, channel: str, payload: str) -> str | None:
        build = self.links.get(channel)
        return build(payload) if build else None

    def message_link(self, channel: str, chat: str, message_id: str | None) -> str | None:
        """A link that opens a message the bot sent (a case card), where the channel has one."""
        build = self.message_links.get(channel)
        return build(chat, message_id) if build else None

    def part(self, name: str, make: Callable[[], T]) -> T:
        """A feature's long-lived object for this core, made on first use."""
        if name not in self.parts:
            self.parts[name] = make()
        return self.parts[name]  # type: ignore[no-any-return]

    async def close(self) -> None:
        await self.db.close()


def load_engine(settings: Settings) -> tuple[FlowSet, Content, Translator, Engine]:
    flows = load_flows(settings.flows_dir)
    content = load_content(settings.flows_dir)
    texts = Translator.from_dir(settings.locales_dir)
    understander = Understander.from_dir(settings.flows_dir / "understanding")
    engine = Engine(flows, content, texts, settings.default_language, understander)
    engine.max_attachments = settings.report_max_attachments
    return flows, content, texts, engine


async def build_core(settings: Settings) -> Core:
    flows, content, texts, engine = load_engine(settings)
    crypto.use(crypto.Vault(crypto.load_keys(settings.saferoute_keys, settings.key_file)))
    db = await connect(settings.database_url)
    inbox, outbox = Inbox(db), Outbox(db, lease=timedelta(seconds=settings.outbox_lease_seconds))
    core = Core(settings, db, flows, content, texts, engine, inbox, outbox, Conversations(db, engine, inbox, outbox))
    from bot.channels.telegram_links import deep_link, message_link

    core.links["telegram"] = lambda payload: deep_link(settings.bot_username, payload)
    core.message_links["telegram"] = message_link
    for feature in features.modules():
        if hasattr(feature, "actions"):
            engine.actions.update(feature.actions(core))
    return core


def configure_logging(level: str, fmt: str = "text") -> None:
    logs.configure(level, fmt)


WEBHOOK_SECRET = re.compile(r"^[A-Za-z0-9_-]{1,256}$")


def webhook_settings(settings: Settings) -> tuple[str, str] | None:
    """Webhook mode's URL and secret, or None for polling; a clear error for what cannot work."""
    url = settings.telegram_webhook_url
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.netloc or not parts.path.strip("/"):
        raise StartupError(f"TELEGRAM_WEBHOOK_URL must be a full URL with a path, e.g. https://bot.example.org/telegram/<random>; got {url!r}")
    secret = settings.telegram_webhook_secret or ""
    if not WEBHOOK_SECRET.match(secret):
        raise StartupError("webhook mode needs TELEGRAM_WEBHOOK_SECRET: 1 to 256 of A-Z a-z 0-9 _ - (Telegram sends it with every update)")
    if not settings.serves_http:
        raise StartupError("webhook mode serves the webhook on API_HOST:API_PORT (or API_SOCKET); API_PORT=0 turns that server off")
    return url, secret


async def run_telegram(settings: Settings) -> None:
    from bot.channels.telegram import TelegramChannel

    assert settings.telegram_bot_token
    webhook = webhook_settings(settings)
    core = await build_core(settings)
    channel = TelegramChannel(settings.telegram_bot_token, settings.telegram_api_base_url, core.conversations, core.inbox,
                              core.outbox, core.flows, core.texts, poll_timeout=settings.poll_timeout, rate=settings.rate,
                              webhook=webhook, shared_rate=core.db.is_postgres)
    api = None
    senders = [sender for feature in features.modules() if hasattr(feature, "senders") for sender in feature.senders(core)]
    web_chat = None
    if settings.web_chat and settings.serves_http:
        from bot.channels.web import WebChat

        web_chat = WebChat(core.conversations, core.outbox, core.texts, origins=settings.embedding_origins)
        senders.append(web_chat.sender)
    running: list[asyncio.Task[None]] = []

    def alive() -> bool:
        return channel.sending() and all(not task.done() for task in running)

    if settings.serves_http:
        from bot.api.app import serve
        from bot.features.broadcasts import feature as broadcasts

        try:
            api = await serve(broadcasts(core), settings.api_host, settings.api_port, alive,
                              (urlsplit(webhook[0]).path, channel.on_webhook) if webhook else None, socket=settings.api_socket,
                              web_chat=web_chat)
        except OSError as exc:
            await core.close()
            raise StartupError(f"the staff API cannot listen on {settings.http_address} ({exc.strerror or exc}); "
                               "choose another API_PORT or API_SOCKET, or API_PORT=0 to turn it off") from exc
    running += [asyncio.create_task(supervise(f"{sender.channel} sender", sender.run)) for sender in senders]
    clock = Clock([job for feature in features.modules() if hasattr(feature, "jobs") for job in feature.jobs(core)],
                  ScheduleLease(core.db, ttl=settings.schedule_lease_seconds, renew_every=settings.schedule_lease_seconds / 4)).start()
    # Everything loaded so far (flows, texts, library modules) lives as long as the process;
    # frozen, it is no longer walked by every full garbage collection, whose pauses otherwise
    # stalled sending several times a second in a large broadcast.
    gc.freeze()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, channel.request_stop)
    try:
        await channel.run()
    finally:
        if api is not None:
            await api.cleanup()
        await clock.stop()
        for sender, task in zip(senders, running, strict=True):
            await sender.stop(task)
        await core.close()


async def run_web(settings: Settings) -> None:
    """The web chat alone (no Telegram): the bot's HTTP server with the chat at its root."""
    from bot.api.app import serve
    from bot.channels.web import WebChat
    from bot.features.broadcasts import feature as broadcasts

    if not settings.serves_http:
        raise StartupError("the web chat is served on API_HOST:API_PORT (or API_SOCKET); API_PORT=0 turns that server off")
    core = await build_core(settings)
    web_chat = WebChat(core.conversations, core.outbox, core.texts, origins=settings.embedding_origins)
    senders = [web_chat.sender, *(s for f in features.modules() if hasattr(f, "senders") for s in f.senders(core))]
    stopping = asyncio.Event()
    running = [asyncio.create_task(supervise(f"{sender.channel} sender", sender.run)) for sender in senders]
    try:
        api = await serve(broadcasts(core), settings.api_host, settings.api_port, lambda: all(not t.done() for t in running),
                          socket=settings.api_socket, web_chat=web_chat)
    except OSError as exc:
        for sender, task in zip(senders, running, strict=True):
            await sender.stop(task)
        await core.close()
        raise StartupError(f"the web chat cannot listen on {settings.http_address} ({exc.strerror or exc})") from exc
    log.info("web chat on %s", settings.http_address)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    try:
        await stopping.wait()
    finally:
        await api.cleanup()
        for sender, task in zip(senders, running, strict=True):
            await sender.stop(task)
        await core.close()


def with_core(settings: Settings, work: Callable[[Core], Awaitable[int]]) -> int:
    """Run one command-line task against the database, closing it whatever happens."""

    async def run() -> int:
        core = await build_core(settings)
        try:
            return await work(core)
        finally:
            await core.close()

    return asyncio.run(run())


async def run_terminal(settings: Settings, *, user: str, lang: str | None) -> None:
    from bot.channels.terminal import TerminalChat

    core = await build_core(settings)
    try:
        await TerminalChat(core.conversations, core.outbox, core.texts, user=user, lang=lang).run()
    finally:
        await core.close()


async def rotate_keys(settings: Settings) -> dict[str, int]:
    vault = crypto.Vault(crypto.load_keys(settings.saferoute_keys, settings.key_file))
    crypto.use(vault)
    db = await connect(settings.database_url)
    try:
        return await crypto.rotate_all(db.engine, vault)
    finally:
        await db.close()
