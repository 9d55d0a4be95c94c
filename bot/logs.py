"""Logs that cannot leak what people tell SafeRoute.

The bot's own messages carry ids and event keys only, but at DEBUG python-telegram-bot,
aiohttp, SQLAlchemy and APScheduler print updates, request parameters and URLs: message
text, names, phone numbers, Telegram ids and the bot token. One filter on the handlers
rewrites every record, from every logger and at every level, before it is written:
tokens, phone-like numbers and long ids are masked, and the values of fields that hold
people's words or names are replaced. Exceptions are kept as their type and traceback
frames; their messages go through the same rewriting. `LOG_FORMAT=json` writes one JSON
object per line: time, level, logger, the line's template as its event key, the message, and
the id of the update being handled when there is one.
"""

from __future__ import annotations

import json
import logging
import re
from contextvars import ContextVar

TOKEN = re.compile(r"(?<!\d)\d{5,12}:[A-Za-z0-9_-]{30,}")
PEOPLES_FIELDS = ("text", "caption", "first_name", "last_name", "username", "description", "phone_number", "phone", "title",
                  "body", "place", "address", "question", "explanation", "bio", "name", "query", "data", "url")
_FIELD = re.compile(r"""(["']?(?:%s)["']?\s*[:=]\s*)(?:"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^,)}\]\s]+)""" % "|".join(PEOPLES_FIELDS))
_NUMBER = re.compile(r"(?<![\w.])[+]?\d[\d \-().]{5,}\d(?![\w.])")
_LONG_ID = re.compile(r"(?<![\w.])-?\d{6,}(?![\w.])")


DATABASE_LOGGERS = ("aiosqlite", "sqlalchemy", "asyncpg", "alembic")
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")
_STATEMENT = re.compile(r"^['\"]\s*(SELECT|INSERT|UPDATE|DELETE|BEGIN|COMMIT|ROLLBACK|RELEASE|SAVEPOINT|PRAGMA|CREATE|ALTER|DROP|WITH)\b", re.I)


def redact(text: str, *, database: bool = False) -> str:
    if database:  # statement parameters hold whatever was typed into a plain column (campaign names, links, ids)
        text = _QUOTED.sub(lambda m: m.group(0) if _STATEMENT.match(m.group(0)) else "'[…]'", text)
    text = TOKEN.sub("[token]", text)
    text = _FIELD.sub(lambda m: m.group(1) + "[…]", text)
    text = _NUMBER.sub("[number]", text)
    return _LONG_ID.sub("[id]", text)


# The update being handled, so that its log lines can be followed in JSON logs ("update").
UPDATE: ContextVar[str | None] = ContextVar("update", default=None)


class Redactor(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "event"):  # the line's template, also rewritten: some libraries put data in it
            record.event = redact(str(record.msg), database=record.name.startswith(DATABASE_LOGGERS))[:120]
            record.update = UPDATE.get()
        try:
            message = record.getMessage()
        except Exception:  # a record whose arguments do not fit its format: keep the format only
            message = str(record.msg)
        record.msg, record.args = redact(message, database=record.name.startswith(DATABASE_LOGGERS)), None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None  # formatted (and rewritten) above; the raw exception is not written
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name,
                 "event": getattr(record, "event", record.msg), "message": record.getMessage()}
        if getattr(record, "update", None):
            entry["update"] = record.update
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False)


def install(handler: logging.Handler) -> None:
    if not any(isinstance(f, Redactor) for f in handler.filters):
        handler.addFilter(Redactor())


def configure(level: str, fmt: str = "text") -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        install(handler)
        if fmt == "json":
            handler.setFormatter(JsonFormatter())
    # httpx logs every request URL, and a Bot API URL contains the bot token (masked anyway).
    logging.getLogger("httpx").setLevel(logging.WARNING)
