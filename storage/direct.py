"""The statements every update runs, compiled once and run on the driver's own connection.

SQLAlchemy's execution of a statement already compiled and cached (a greenlet, the
connection's and the execution context's bookkeeping, a result object) costs about 27 µs
of CPU; sqlite3 runs the same small indexed statement in 2 µs. A conversation step runs
five or six such statements, so that machinery was the largest single cost left on the
update path (bench.updates --profile). A `Prepared` statement is compiled by SQLAlchemy,
with its type processing (dates, JSON, encryption at rest) applied as SQLAlchemy would,
and, where `statements_inline()` lets the statement run on the event loop's thread, run on
the sqlite3 connection in the transaction already open. On PostgreSQL it runs on asyncpg's
connection under SQLAlchemy's adapter, with the adapter's transaction and prepared
statements. Anywhere else (a statement that must go to SQLite's thread, many rows in one
INSERT on PostgreSQL) it goes through SQLAlchemy as before, with the same answer.
"""

from __future__ import annotations

import re
import sqlite3
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import Executable

from storage.sqlite_driver import inline_connection

Params = Mapping[str, Any]
_STATUS = re.compile(r"(?:SELECT|UPDATE|DELETE|INSERT \d+) (\d+)")


def _asyncpg_adapted(connection: AsyncConnection) -> Any:
    """SQLAlchemy's asyncpg adapter under an open AsyncConnection, if it is one and has
    the parts run on here (they are SQLAlchemy's internals: without them, its own way)."""
    if connection.dialect.driver != "asyncpg":
        return None
    sync = connection.sync_connection
    if sync is None or sync.closed:
        return None
    adapted = sync.connection.dbapi_connection
    if not all(hasattr(adapted, name) for name in ("_execute_mutex", "_transaction", "_start_transaction", "_prepare", "_connection",
                                                   "_handle_exception")):
        return None
    return adapted


def _processed(form: _Form, rows: list[Any]) -> list[tuple[Any, ...]]:
    """Rows as SQLAlchemy would give them: dates parsed, JSON read, encrypted columns decrypted."""
    if not rows or not any(form.results):
        return rows
    return [tuple(value if process is None else process(value) for value, process in zip(row, form.results)) for row in rows]


class NotPreparable(Exception):
    """The statement needs something only SQLAlchemy's execution does (a Python-side column
    default, an onupdate): a programming error, found when it is first compiled."""


@dataclass(frozen=True, slots=True)
class Ran:
    keys: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    rowcount: int

    def scalars(self) -> list[Any]:
        return [row[0] for row in self.rows]

    def mappings(self) -> list[dict[str, Any]]:
        return [dict(zip(self.keys, row)) for row in self.rows]


@dataclass(frozen=True, slots=True)
class _Form:
    sql: str
    binds: tuple[tuple[str, Any, Callable[[Any], Any] | None], ...]  # name, value if not given, processor
    keys: tuple[str, ...]
    results: tuple[Callable[[Any], Any] | None, ...]
    values_clause: tuple[str, str, str] | None  # an INSERT split around its VALUES tuple, for many rows in one statement


class Prepared:
    """A Core statement run with as little as possible between the caller and the driver.
    `column_keys` names the columns an INSERT is given (as SQLAlchemy compiles an INSERT
    for the keys of its parameters)."""

    def __init__(self, statement: Executable, *, column_keys: Sequence[str] | None = None, many_rows: bool = False) -> None:
        self.statement = statement
        self.column_keys = list(column_keys) if column_keys is not None else None
        self.many_rows = many_rows  # an INSERT whose rows go as one statement (one VALUES tuple each)
        # Per dialect object (one per engine), held weakly: an id could be reused by a new engine's.
        self._forms: weakref.WeakKeyDictionary[Dialect, _Form] = weakref.WeakKeyDictionary()

    async def run(self, connection: AsyncConnection, params: Params | Sequence[Params] | None = None) -> Ran:
        raw = inline_connection(connection)
        if raw is None:
            adapted = _asyncpg_adapted(connection)
            if adapted is not None and not (self.many_rows and isinstance(params, Sequence)):
                return await self._run_on_asyncpg(connection, adapted, params)
            return await self._through_sqlalchemy(connection, params)
        form = self._form(connection.dialect)
        cursor = raw.cursor()
        try:
            if isinstance(params, Sequence) and self.many_rows and form.values_clause is not None:
                head, values, tail = form.values_clause
                rows, rowcount = [], 0
                step = max(1, raw.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // max(1, len(form.binds)))
                for start in range(0, len(params), step):
                    chunk = params[start:start + step]
                    cursor.execute(f"{head}{', '.join([values] * len(chunk))}{tail}",
                                   [value for one in chunk for value in self._bound(form, one)])
                    rows += cursor.fetchall() if cursor.description else []
                    rowcount += cursor.rowcount
            else:
                if isinstance(params, Sequence):
                    cursor.executemany(form.sql, [self._bound(form, one) for one in params])
                else:
                    cursor.execute(form.sql, self._bound(form, params or {}))
                rows = cursor.fetchall() if cursor.description else []
                rowcount = cursor.rowcount
        except Exception as error:
            raise self._translated(error, form.sql) from error
        finally:
            cursor.close()
        return Ran(form.keys, _processed(form, rows), rowcount)

    async def _run_on_asyncpg(self, connection: AsyncConnection, adapted: Any, params: Params | Sequence[Params] | None) -> Ran:
        """On PostgreSQL, on asyncpg's connection under SQLAlchemy's adapter, in the
        transaction the adapter keeps (begun here if no statement began it yet), with the
        adapter's cache of prepared statements; errors as SQLAlchemy raises them."""
        dialect = connection.dialect
        form = self._form(dialect)
        asof = getattr(dialect, "_invalidate_schema_cache_asof", 0)
        async with adapted._execute_mutex:
            try:
                if adapted._transaction is None:
                    await adapted._start_transaction()
                if isinstance(params, Sequence):
                    await adapted._connection.executemany(form.sql, [self._bound(form, one) for one in params])
                    rows, rowcount = [], -1
                else:
                    statement, _ = await adapted._prepare(form.sql, asof)
                    rows = [tuple(record) for record in await statement.fetch(*self._bound(form, params or {}))]
                    counted = _STATUS.match(statement.get_statusmsg() or "")
                    rowcount = int(counted.group(1)) if counted else -1
            except DBAPIError:
                raise
            except Exception as error:
                try:
                    adapted._handle_exception(error)  # raises it as the adapter's DB-API error (sqlstate kept)
                except Exception as translated:
                    raise DBAPIError.instance(form.sql, None, translated, dialect.loaded_dbapi.Error) from error
                raise
        return Ran(form.keys, _processed(form, rows), rowcount)

    @staticmethod
    def _bound(form: _Form, params: Params) -> list[Any]:
        out = []
        for name, default, process in form.binds:
            value = params.get(name, default)
            out.append(value if process is None or value is None else process(value))
        return out

    def _form(self, dialect: Dialect) -> _Form:
        form = self._forms.get(dialect)
        if form is None:
            form = self._forms[dialect] = self._compile(dialect)
        return form

    def _compile(self, dialect: Dialect) -> _Form:
        compiled: Any = self.statement.compile(dialect=dialect, column_keys=self.column_keys)  # type: ignore[attr-defined]
        if getattr(compiled, "insert_prefetch", None) or getattr(compiled, "update_prefetch", None):
            raise NotPreparable(f"{compiled.string[:60]}…: column defaults computed in Python")
        processors = compiled._bind_processors
        binds = []
        for name in compiled.positiontup:
            bind = compiled.binds[name]
            if bind.callable is not None:
                raise NotPreparable(f"{compiled.string[:60]}…: a value computed at run time ({name})")
            binds.append((name, bind.value, processors.get(name)))
        columns = compiled._result_columns
        keys = tuple(column.keyname for column in columns)
        results = tuple(column.type._cached_result_processor(dialect, None) for column in columns)
        values_clause = None
        if self.many_rows:
            head, found, rest = compiled.string.partition(" VALUES (")
            values, found_end, tail = rest.partition(")")
            if not (found and found_end) or "(" in values:
                raise NotPreparable(f"{compiled.string[:60]}…: not one VALUES tuple")
            values_clause = (f"{head} VALUES ", f"({values})", tail)
        return _Form(compiled.string, tuple(binds), keys, results, values_clause)

    async def _through_sqlalchemy(self, connection: AsyncConnection, params: Params | Sequence[Params] | None) -> Ran:
        if isinstance(params, Sequence):
            result = await connection.execute(self.statement, list(params))  # type: ignore[arg-type]
        else:
            result = await connection.execute(self.statement, dict(params or {}))  # type: ignore[arg-type]
        if result.returns_rows:
            return Ran(tuple(result.keys()), [tuple(row) for row in result.all()], result.rowcount)
        return Ran((), [], result.rowcount)

    @staticmethod
    def _translated(error: Exception, sql: str) -> Exception:
        """sqlite3's error as SQLAlchemy would raise it (IntegrityError, OperationalError…),
        so callers catch the same exceptions whichever way the statement ran."""
        if isinstance(error, sqlite3.Error):
            return DBAPIError.instance(sql, None, error, sqlite3.Error)
        return error
