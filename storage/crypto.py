"""Encryption at rest for what people tell the bot.

Keys come from SAFEROUTE_KEYS (comma-separated Fernet keys). The first encrypts; all
decrypt, so a key is rotated by putting a new one first, running
`python -m bot rotate-keys`, then dropping the old one. Without SAFEROUTE_KEYS a key is
made once in the data folder, which is fine on a laptop and wrong in production.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import Text
from sqlalchemy.types import TypeDecorator

from storage import jsontext

log = logging.getLogger(__name__)


class KeyError_(RuntimeError):
    """No usable key: the bot must not store people's words in clear."""


class Vault:
    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise KeyError_("no encryption key")
        self._fernet = MultiFernet([Fernet(k.encode() if isinstance(k, str) else k) for k in keys])
        first = keys[0].encode() if isinstance(keys[0], str) else keys[0]
        self._pseudonym_key = hashlib.sha256(b"saferoute-pseudonym:" + first).digest()

    def pseudonym(self, value: str, purpose: str) -> str:
        """A keyed hash (HMAC-SHA256): stable for the same value while the first key stays,
        and not reversible by hashing every possible id, as a plain hash is."""
        return hmac.new(self._pseudonym_key, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()[:16]

    def encrypt(self, text: str) -> str:
        return self._fernet.encrypt(text.encode()).decode()

    def decrypt(self, token: str) -> str:
        return self._fernet.decrypt(token.encode()).decode()

    def rotate(self, token: str) -> str:
        return self._fernet.rotate(token.encode()).decode()


_active: Vault | None = None


def use(vault: Vault) -> None:
    global _active
    _active = vault


def active() -> Vault:
    if _active is None:
        raise KeyError_("encryption is not configured; call storage.crypto.use() at start")
    return _active


def load_keys(env_value: str | None, key_file: Path) -> list[str]:
    if env_value:
        return [k.strip() for k in env_value.split(",") if k.strip()]
    if key_file.exists():
        return [key_file.read_text().strip()]
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key().decode()
    descriptor = os.open(key_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)  # private from its first byte
    with os.fdopen(descriptor, "w") as out:
        out.write(key)
    log.warning("SAFEROUTE_KEYS is not set: made a local key in %s (set SAFEROUTE_KEYS in production)", key_file)
    return [key]


class EncryptedText(TypeDecorator[str]):
    """Text stored as a Fernet token."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Any) -> str | None:
        if value is None or isinstance(value, _Raw):
            return value
        return active().encrypt(value)

    def process_result_value(self, value: str | None, dialect: Any) -> str | None:
        if value is None:
            return None
        try:
            return active().decrypt(value)
        except InvalidToken as exc:
            raise KeyError_("a stored value cannot be decrypted with the configured keys") from exc


class EncryptedJSON(TypeDecorator[Any]):
    """A JSON value stored as a Fernet token."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> str | None:
        if value is None or isinstance(value, _Raw):
            return value
        return active().encrypt(jsontext.dumps(value))

    def process_result_value(self, value: str | None, dialect: Any) -> Any:
        if value is None:
            return None
        try:
            return json.loads(active().decrypt(value))
        except InvalidToken as exc:
            raise KeyError_("a stored value cannot be decrypted with the configured keys") from exc


async def rotate_all(engine: Any, vault: Vault) -> dict[str, int]:
    """Re-encrypt every encrypted column with the first key (after a new key was put first).
    Works on the raw tokens, so it needs no knowledge of what they hold."""
    from sqlalchemy import select, type_coerce, update
    from sqlmodel import SQLModel

    counts: dict[str, int] = {}
    async with engine.begin() as conn:
        for table in SQLModel.metadata.sorted_tables:
            encrypted = [c for c in table.columns if isinstance(c.type, EncryptedText | EncryptedJSON)]
            if not encrypted:
                continue
            key = list(table.primary_key.columns)[0]
            for column in encrypted:
                rows = (await conn.execute(select(key, type_coerce(column, Text())).where(column.is_not(None)))).all()
                for row_id, token in rows:
                    await conn.execute(update(table).where(key == row_id).values({column.name: _Raw(vault.rotate(token))}))
                counts[f"{table.name}.{column.name}"] = len(rows)
    return counts


class _Raw(str):
    """A token that is already encrypted: stored as it is."""
