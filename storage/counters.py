"""Anonymous counters that concurrent transactions add to without losing a count.

Reading a count and writing it back one higher loses one of two reports counted at once
on PostgreSQL (each transaction read the same count), and two first reports of a month
both insert the row, one failing on its unique key: with two workers, or two batches
written side by side, a person got an apology instead of their report filed. One
`INSERT … ON CONFLICT DO UPDATE SET count = count + 1` does it in one step on both stores.
"""

from __future__ import annotations

from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from storage.db import upsert


async def add_one(session: AsyncSession, model: type[Any], **cell: Any) -> None:
    """Count one more in the row of `model` named by `cell` (the columns of its unique key)."""
    table = model.__table__
    postgres = session.bind is not None and session.bind.dialect.name == "postgresql"
    statement = upsert(table, postgres=postgres).values(**cell, count=1)
    statement = statement.on_conflict_do_update(index_elements=list(cell), set_={"count": table.c["count"] + 1})
    await session.exec(statement)  # type: ignore[call-overload]
