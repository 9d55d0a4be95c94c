"""Shared fixtures: a fresh database per test (SQLite, and PostgreSQL when
TEST_DATABASE_URL is set), the project's real content, and a running Telegram bot
against the fake Bot API."""

from __future__ import annotations

import asyncio
import io
import logging
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from bot.app import Core, build_core
from bot.channels.telegram import TelegramChannel
from bot.logs import Redactor
from bot.settings import PROJECT_ROOT, Settings
from tests.fakes.bot_api import FakeBotApi
from storage import clock, crypto
from tests.story import TelegramUser

PG_URL = os.environ.get("TEST_DATABASE_URL")
TEST_KEY = Fernet.generate_key().decode()
os.environ.setdefault("SAFEROUTE_KEYS", TEST_KEY)  # for `python -m bot` run by tests
crypto.use(crypto.Vault([os.environ["SAFEROUTE_KEYS"]]))


def own_database(url: str) -> str:
    """Under pytest-xdist each worker gets a database of its own beside TEST_DATABASE_URL's."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        return url
    parsed = make_url(url)
    return parsed.set(database=f"{parsed.database}_{worker}").render_as_string(hide_password=False)


async def reset_postgres(url: str) -> None:
    if url != PG_URL and PG_URL:
        server = create_async_engine(PG_URL, isolation_level="AUTOCOMMIT")
        async with server.connect() as conn:
            name = make_url(url).database
            await conn.exec_driver_sql("SELECT pg_advisory_lock(7311)")  # workers create their databases in turn
            try:
                if not (await conn.exec_driver_sql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'")).first():
                    await conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
            finally:
                await conn.exec_driver_sql("SELECT pg_advisory_unlock(7311)")
        await server.dispose()
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.exec_driver_sql("DROP SCHEMA IF EXISTS public CASCADE")
        await conn.exec_driver_sql("CREATE SCHEMA public")
    await engine.dispose()


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'saferoute.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each storage test runs on SQLite, and on PostgreSQL when TEST_DATABASE_URL is set."""
    if request.param == "sqlite":
        return sqlite_url(tmp_path)
    if not PG_URL:
        pytest.skip("TEST_DATABASE_URL is not set")
    url = own_database(PG_URL)
    await reset_postgres(url)
    return url


@pytest.fixture(autouse=True)
def no_bot_process_outlives_its_test() -> Iterator[None]:
    yield
    from tests.processes import BotProcess
    BotProcess.kill_leftovers()


@pytest.fixture
def daytime(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """It is 03:00 UTC (10:00 in Bangkok and Ho Chi Minh City, outside quiet hours) in this
    test and in the bot processes it starts, whatever the hour the suite runs at."""
    monkeypatch.setenv(clock.ENV, "03:00")
    monkeypatch.setenv(clock.SINCE, "")  # anchored now (by reset), inherited by the bot processes, put back after
    clock.reset()
    yield
    monkeypatch.undo()
    clock.reset()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(database_url=sqlite_url(tmp_path), telegram_bot_token=None,
                    flows_dir=PROJECT_ROOT / "flows", locales_dir=PROJECT_ROOT / "locales", poll_timeout=5)


@pytest.fixture
async def core(settings: Settings) -> AsyncIterator[Core]:
    built = await build_core(settings)
    yield built
    await built.close()


@pytest.fixture
async def fake_api() -> AsyncIterator[FakeBotApi]:
    async with FakeBotApi() as fake:
        yield fake


class RunningBot:
    """The Telegram channel running for real (fetch loop and sender) in this event loop."""

    def __init__(self, core: Core, fake: FakeBotApi) -> None:
        self.core, self.fake = core, fake
        self.channel = TelegramChannel(fake.token, fake.base_url, core.conversations, core.inbox, core.outbox,
                                       core.flows, core.texts, poll_timeout=5)
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self.channel.run())
        polls = sum(1 for method, _ in self.fake.calls if method == "getUpdates")
        await self.fake.wait_for(lambda: sum(1 for method, _ in self.fake.calls if method == "getUpdates") > polls)

    async def stop(self) -> None:
        if self.task:
            self.channel.request_stop()
            await self.task

    def user(self, user_id: int, language_code: str | None = None) -> TelegramUser:
        return TelegramUser(self.fake, user_id, language_code)


@pytest.fixture
async def running_bot(core: Core, fake_api: FakeBotApi) -> AsyncIterator[RunningBot]:
    """The bot, with every log record of every library captured at DEBUG through the
    project's redacting filter: after each end-to-end test, none of what the people in it
    typed (8 characters or more), their names, nor the token may be in the logs."""
    audit = os.environ.get("SAFEROUTE_LOG_AUDIT", "1") != "0"  # .ci/run's extra runs at other hours skip it
    captured = io.StringIO()
    handler = logging.StreamHandler(captured)
    handler.setLevel(logging.DEBUG)
    handler.addFilter(Redactor())
    root = logging.getLogger()
    level = root.level
    if audit:
        root.addHandler(handler)
        root.setLevel(logging.DEBUG)
    bot = RunningBot(core, fake_api)
    try:
        await bot.start()
        yield bot
        await bot.stop()
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    written = captured.getvalue()
    said = {m.text for messages in fake_api.messages.values() for m in messages if m.from_user is not None and len(m.text) >= 12}
    names = {u.first_name for u in fake_api.users.values() if len(u.first_name) >= 5 and u.first_name not in ("Subscriber",)}
    leaked = [s for s in said | names | {fake_api.token} if s in written and not s.startswith("/")]
    assert not leaked, f"in the DEBUG logs: {leaked[:5]}"


@pytest.fixture
async def postgres_url() -> str:
    """For what only PostgreSQL is for (several worker processes on one database)."""
    if not PG_URL:
        pytest.skip("TEST_DATABASE_URL is not set")
    url = own_database(PG_URL)
    await reset_postgres(url)
    return url
