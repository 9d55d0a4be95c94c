"""The async engine, sessions and schema migrations.

SQLite (WAL mode) is the zero-setup default; PostgreSQL (asyncpg) is the production and
multi-process store. The same code runs on both.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import event, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from storage import sqlite_driver

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
READ_ONLY = "saferoute_read_only"
_REVISION = re.compile(r"^(down_revision|revision) = (.*)$", re.MULTILINE)  # a name, None, or a tuple of names (a merge)


def alembic_config(url: str | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url:
        cfg.set_main_option("sqlalchemy.url", url)
    return cfg


def _upgrade(connection: Connection) -> None:
    from alembic import command

    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")


class Database:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.is_postgres = engine.dialect.name == "postgresql"
        self._sessions = async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)
        self._writers = asyncio.Lock()
        self._reads = async_sessionmaker(engine.execution_options(**{READ_ONLY: True}), class_=AsyncSession, expire_on_commit=False)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session for reading: on SQLite it takes no write lock, so a long write (a campaign
        queuing its audience) never holds back someone's /status. Nothing in it is committed."""
        async with self._reads() as session:
            yield session

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        if self.is_postgres:
            async with self._sessions() as session, session.begin():
                yield session
            return
        # SQLite has one write lock, and a connection waiting for it polls with growing sleeps:
        # behind a writer that takes the lock back at once (a campaign queuing its audience a
        # chunk at a time) it could wait for the whole job. Writers in this process queue here
        # in turn instead; the busy timeout still covers another process.
        async with self._writers, self._sessions() as session, session.begin():
            yield session

    async def migrate(self) -> None:
        """Bring the schema to the code's version. A database already there (every restart)
        is only read: Alembic, a fifth of a second to import, is not loaded at all."""
        if await self._at(newest_migration()):
            return
        async with self.engine.begin() as conn:
            if self.is_postgres:  # workers starting together: the first migrates, the others wait and find nothing to do
                await conn.exec_driver_sql("SELECT pg_advisory_xact_lock(727001)")
            await conn.run_sync(_upgrade)

    async def _at(self, revision: str | None) -> bool:
        if revision is None:
            return False
        try:
            async with self.engine.connect() as conn:
                return (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar() == revision
        except Exception:  # no schema yet (a new database): Alembic makes it
            return False

    async def close(self) -> None:
        await self.engine.dispose()


def upsert(table: Any, *, postgres: bool) -> Any:
    """An INSERT that can say ON CONFLICT: each store's own (both have it, with one syntax)."""
    return (pg_insert if postgres else sqlite_insert)(table)


def newest_migration() -> str | None:
    """The head revision read from the migration files themselves (each names itself and the
    one before); None unless they form one line, and then Alembic decides."""
    revisions: set[str] = set()
    before: set[str] = set()
    for path in (MIGRATIONS_DIR / "versions").glob("*.py"):
        for kind, value in _REVISION.findall(path.read_text(encoding="utf-8")):
            (revisions if kind == "revision" else before).update(re.findall(r"'([^']+)'", value.split("#")[0]))
    heads = revisions - before
    return heads.pop() if len(heads) == 1 else None


def head_revision() -> str | None:
    """The schema version this code expects: the newest migration."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def schema_revision(db: Database) -> str | None:
    """The schema version the database is at."""
    async with db.session() as session:
        return (await session.execute(text("SELECT version_num FROM alembic_version"))).scalar()


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    # SQLAlchemy, not the sqlite3 module, decides when transactions begin (see _begin_immediate).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _begin_immediate(conn: Connection) -> None:
    """Take SQLite's write lock when a transaction starts. A transaction that reads and
    then writes would otherwise fail at once with "database is locked" whenever another
    connection writes in between, as busy_timeout does not cover that upgrade. A read-only
    session begins a deferred transaction: in WAL mode it reads a snapshot and waits for no one."""
    conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READ_ONLY) else "BEGIN IMMEDIATE")


def private_file(path: Path) -> None:
    """Create a file readable by its owner only, from its first byte (Telegram ids and
    encrypted reports live in it); an existing file is left as it is (`check` warns)."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        pass


async def connect(url: str, *, migrate: bool = True) -> Database:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            private_file(Path(parsed.database))
        if parsed.get_driver_name() == "aiosqlite":
            parsed = parsed.set(drivername=f"sqlite+{sqlite_driver.DRIVER}")
        # The connection is made on aiosqlite's thread and, inside `statements_inline`, used
        # on the event loop's (never both at once: each statement is awaited or run in place).
        engine = create_async_engine(parsed, connect_args={"check_same_thread": False})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", _begin_immediate)
    else:
        engine = create_async_engine(url, pool_pre_ping=True)
    db = Database(engine)
    if migrate:
        await db.migrate()
    return db
