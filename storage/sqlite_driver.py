"""SQLite through aiosqlite, one trip to its thread per statement, or none.

aiosqlite runs each call on the connection's own thread and wakes the event loop for each
answer. SQLAlchemy's adapter makes four such calls for a SELECT (open a cursor, execute,
fetch, close) and three for a write; the profile of the update path found about fifty
hand-offs per update, each a thread wake-up and a self-pipe write for the loop. This
cursor does the four in one call on that thread, with the same results and errors.

Even one trip costs about 0.15 ms of CPU (measured: 0.25 ms for `SELECT 1` through
SQLAlchemy, 0.002 ms for sqlite3 itself), more than the small statements of a conversation
step take to run. Inside `statements_inline()`, statements run on the event loop's thread:
only where the write lock is already held (so no statement waits for another connection)
and the statements are small and indexed. BEGIN, which may wait for another process's
lock, and COMMIT, which syncs the disk, still go to the thread.
"""

from __future__ import annotations

import collections
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from sqlalchemy.dialects import registry
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
    SQLiteDialect_aiosqlite,
)
from sqlalchemy.util import EMPTY_DICT
from sqlalchemy.util.concurrency import await_

DRIVER = "saferoute_aiosqlite"
_INLINE: ContextVar[bool] = ContextVar("saferoute_sqlite_inline", default=False)


@contextmanager
def statements_inline() -> Iterator[None]:
    """Run this task's SQLite statements on the event loop's thread until the block ends.
    For transactions that hold the write lock and run only small indexed statements (a
    conversation step): a statement that ran long here would hold up every other task."""
    token = _INLINE.set(True)
    try:
        yield
    finally:
        _INLINE.reset(token)


def inline_connection(connection: Any) -> sqlite3.Connection | None:
    """The sqlite3 connection under an open SQLAlchemy AsyncConnection, if this task's
    statements may run on the loop's thread now (`statements_inline`, SQLite, nothing of
    the connection's on aiosqlite's thread); otherwise None."""
    if not _INLINE.get() or connection.dialect.driver != DRIVER:
        return None
    sync = connection.sync_connection
    if sync is None or sync.closed:
        return None
    adapted = sync.connection.dbapi_connection
    if adapted is None or adapted._execute_mutex.locked():
        return None
    return adapted._connection._conn  # type: ignore[no-any-return]


def _run_statement(conn: sqlite3.Connection, operation: str, parameters: Any, many: bool) -> tuple[Any, list[Any], int, int | None]:
    cursor = conn.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else []
        return description, rows, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


class OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    __slots__ = ("_description", "_rowcount", "_lastrowid")

    def __init__(self, adapt_connection: AsyncAdapt_aiosqlite_connection) -> None:  # no cursor is opened ahead
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> int | None:  # type: ignore[override]
        return self._lastrowid

    @property
    def arraysize(self) -> int:
        return 1

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        pass

    async def _async_soft_close(self) -> None:
        return None

    def close(self) -> None:
        self._rows.clear()

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        try:
            run = self._run_here if self._inline(operation) else self._run
            return await_(run(operation, parameters, many=False))
        except Exception as error:
            self._adapt_connection._handle_exception(error)

    def executemany(self, operation: Any, seq_of_parameters: Any) -> Any:
        try:
            run = self._run_here if self._inline(operation) else self._run
            return await_(run(operation, seq_of_parameters, many=True))
        except Exception as error:
            self._adapt_connection._handle_exception(error)

    def _inline(self, operation: str) -> bool:
        return _INLINE.get() and not self._adapt_connection._execute_mutex.locked() and not operation.startswith("BEGIN")

    async def _run_here(self, operation: Any, parameters: Any, *, many: bool) -> None:
        # A coroutine that never suspends: SQLAlchemy's async layer insists on one being
        # awaited, and awaiting it does not give the loop to another task mid-transaction.
        self._description, rows, self._rowcount, self._lastrowid = _run_statement(self._connection._conn, operation, parameters, many)
        self._rows = collections.deque(rows)

    async def _run(self, operation: Any, parameters: Any, *, many: bool) -> None:
        async with self._adapt_connection._execute_mutex:
            conn = self._connection
            self._description, rows, self._rowcount, self._lastrowid = await conn._execute(
                _run_statement, conn._conn, operation, parameters, many)
        self._rows = collections.deque(rows)

    def nextset(self) -> None:
        return None

    def setinputsizes(self, *inputsizes: Any) -> None:
        return None


class OneTripConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()
    _cursor_cls = OneTripCursor


class OneTripDBAPI(AsyncAdapt_aiosqlite_dbapi):
    def connect(self, *arg: Any, **kw: Any) -> Any:
        adapted = super().connect(*arg, **kw)
        adapted.__class__ = OneTripConnection
        return adapted


class OneTripDialect(SQLiteDialect_aiosqlite):
    driver = DRIVER
    supports_statement_cache = True

    @classmethod
    def import_dbapi(cls) -> Any:
        return OneTripDBAPI(__import__("aiosqlite"), __import__("sqlite3"))


registry.register(f"sqlite.{DRIVER}", __name__, "OneTripDialect")
