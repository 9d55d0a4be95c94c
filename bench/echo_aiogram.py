"""A bare aiogram 3 echo bot (aiogram is a benchmark-only dependency: `pip install -e '.[bench]'`),
the fastest framework baseline for `python -m bench.updates`.
Usage: python -m bench.echo_aiogram TOKEN SERVER_URL (the Bot API server, without /bot)"""

from __future__ import annotations

import asyncio
import sys

from aiogram import Bot, Dispatcher
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.types import Message


async def main() -> None:
    token, server = sys.argv[1], sys.argv[2]
    bot = Bot(token, session=AiohttpSession(api=TelegramAPIServer.from_base(server)))
    dispatcher = Dispatcher()

    @dispatcher.message()
    async def echo(message: Message) -> None:
        await message.answer(message.text or "-")

    await dispatcher.start_polling(bot, polling_timeout=2, handle_signals=True)


if __name__ == "__main__":
    asyncio.run(main())
