"""Every setting SafeRoute reads, from the environment, in one place."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    telegram_bot_token: str | None = Field(default=None, description="Bot token from @BotFather; without it the bot runs as a terminal chat.")
    telegram_api_base_url: str = Field(
        default="https://api.telegram.org/bot",
        description="Bot API base URL; the token is appended. Point it at a self-hosted Bot API server or the test fake.",
    )
    database_url: str = Field(
        default=f"sqlite+aiosqlite:///{PROJECT_ROOT / 'data' / 'saferoute.db'}",
        description="SQLAlchemy async URL: sqlite+aiosqlite:///path or postgresql+asyncpg://user@host/db.",
    )
    flows_dir: Path = Field(default=PROJECT_ROOT / "flows", description="Flow and content files.")
    locales_dir: Path = Field(default=PROJECT_ROOT / "locales", description="Gettext PO files, one per language.")
    default_language: str = Field(default="en", description="Language used before a user has chosen one.")
    poll_timeout: int = Field(default=30, description="Seconds one getUpdates long poll waits.")
    outbox_lease_seconds: float = Field(
        default=60.0,
        description="How long a claimed outgoing message is reserved for its sender; after a crash it is sent again once this passes.",
    )
    saferoute_keys: str | None = Field(
        default=None,
        description="Comma-separated Fernet keys for data at rest; the first encrypts. Unset: a key file in data/ is made and used.",
    )
    key_file: Path = Field(default=PROJECT_ROOT / "data" / "secret.key", description="Where the local key lives when SAFEROUTE_KEYS is unset.")
    report_retention_days: int = Field(default=180, description="Closed cases are purged after this many days; anonymous counts stay.")
    reports_per_hour: int = Field(default=3, description="Reports one person may send in an hour; more are refused kindly, with the numbers.")
    report_max_attachments: int = Field(default=10, description="Photos, voice notes and documents kept with one report; partners are told of any cut.")
    admin_telegram_ids: str = Field(default="", description="Comma-separated Telegram user ids of the first admins.")
    schedule_lease_seconds: float = Field(default=20.0, description="How long the worker that fires schedules holds them without "
                                          "renewing (every quarter of this); another worker takes over after.")
    campaign_pass_seconds: float = Field(default=30.0, description="How often due campaigns are started and finished runs reported.")
    send_rate: float = Field(default=25.0, description="Messages a second the Telegram sender never exceeds in any one-second window.")
    paid_broadcast: bool = Field(default=False, description="Send broadcasts with allow_paid_broadcast (Telegram Stars) and allow up to PAID_SEND_RATE.")
    paid_send_rate: float = Field(default=1000.0, description="The rate limit in paid-broadcast mode.")
    bot_username: str = Field(default="SafeRouteBot", description="The bot's Telegram username (without @), for t.me links such as staff invites.")
    telegram_webhook_url: str | None = Field(
        default=None, description="Webhook mode: the public https URL Telegram posts updates to; served at its path on API_HOST:API_PORT.")
    telegram_webhook_secret: str | None = Field(
        default=None, description="Webhook mode: the secret Telegram sends in X-Telegram-Bot-Api-Secret-Token (1-256 of A-Z a-z 0-9 _ -).")
    api_host: str = Field(default="127.0.0.1", description="Where the staff HTTP API listens.")
    api_port: int = Field(default=8080, description="Port of the staff HTTP API; 0 turns it off.")
    api_socket: str | None = Field(
        default=None, description="Serve the HTTP server on this Unix socket instead of API_HOST:API_PORT (a proxy on the same machine).")

    web_chat: bool = Field(default=True, description="Serve the web chat at the root of the HTTP server (API_HOST:API_PORT).")
    web_chat_origins: str = Field(default="", description="Sites that may embed the web chat in a frame, comma-separated, e.g. https://ngo.example.org.")

    @property
    def embedding_origins(self) -> tuple[str, ...]:
        return tuple(o.strip() for o in self.web_chat_origins.split(",") if o.strip().startswith("https://"))

    @property
    def serves_http(self) -> bool:
        return bool(self.api_socket or self.api_port)

    @property
    def http_address(self) -> str:
        return f"unix:{self.api_socket}" if self.api_socket else f"{self.api_host}:{self.api_port}"

    @property
    def admin_ids(self) -> set[str]:
        return {part.strip() for part in self.admin_telegram_ids.split(",") if part.strip()}

    @property
    def rate(self) -> float:
        return self.paid_send_rate if self.paid_broadcast else self.send_rate

    log_level: str = Field(default="INFO")
    log_format: Literal["text", "json"] = Field(default="text", description="json: one JSON object per line.")

    def private_files(self) -> list[Path]:
        """Files that hold secrets or people's data on this machine."""
        files = [self.key_file]
        if self.database_url.startswith("sqlite") and ":///" in self.database_url:
            files.append(Path(self.database_url.split(":///", 1)[1]))
        return files


    @field_validator("database_url", mode="before")
    @classmethod
    def async_driver(cls, value: object) -> object:
        """Take the URL forms every other tool uses (sqlite:///file, postgresql://…) and pick
        the async driver the bot runs on."""
        if not isinstance(value, str):
            return value
        scheme, sep, rest = value.partition("://")
        if not sep:
            raise ValueError("write sqlite:///path/to/saferoute.db or postgresql://user:password@host/database")
        drivers = {"sqlite": "sqlite+aiosqlite", "sqlite+aiosqlite": "sqlite+aiosqlite", "postgres": "postgresql+asyncpg",
                   "postgresql": "postgresql+asyncpg", "postgresql+asyncpg": "postgresql+asyncpg", "postgresql+psycopg2": "postgresql+asyncpg",
                   "postgresql+psycopg": "postgresql+asyncpg"}
        if scheme.lower() not in drivers:
            raise ValueError(f"'{scheme}://' is not a database SafeRoute runs on; write sqlite:///path/to/saferoute.db "
                             "or postgresql://user:password@host/database")
        return f"{drivers[scheme.lower()]}://{rest}"

    def shown(self) -> dict[str, str]:
        """Every setting as it is in effect, secrets masked (`python -m bot check --settings`)."""
        shown: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is not None and any(word in name for word in ("token", "secret", "keys", "password")):
                value = "•••• (set)"
            elif name == "database_url":
                value = re.sub(r"(://[^:/@]+:)[^@]+@", r"\1••••@", str(value))
            shown[name.upper()] = str(value)
        return shown


class SettingsError(ValueError):
    """Settings that cannot work: one line per setting, saying what to write."""


def load_settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = [f"{'.'.join(str(p) for p in error['loc']).upper() or 'settings'}: {error['msg'].removeprefix('Value error, ')}"
                 for error in exc.errors()]
        raise SettingsError("; ".join(lines)) from None
