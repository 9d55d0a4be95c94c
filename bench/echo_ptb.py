"""A bare python-telegram-bot echo bot, python-telegram-bot's defaults: the baseline for
`python -m bench.updates`. Usage: python -m bench.echo_ptb TOKEN BASE_URL"""

from __future__ import annotations

import sys

from telegram import Update
from telegram.ext import Application, ContextTypes, MessageHandler, filters


async def echo(update: Update, _context: ContextTypes.DEFAULT_TYPE) -> None:
    assert update.message is not None and update.message.text is not None
    await update.message.reply_text(update.message.text)


def main() -> None:
    token, base_url = sys.argv[1], sys.argv[2]
    app = Application.builder().token(token).base_url(base_url).build()
    app.add_handler(MessageHandler(filters.TEXT, echo))
    app.run_polling(timeout=2, allowed_updates=["message"])


if __name__ == "__main__":
    main()
