"""Alembic environment: runs on the connection SafeRoute hands it, or on sqlalchemy.url
when called from the alembic command line (`alembic -c storage/alembic.ini …`)."""

from alembic import context
from sqlalchemy import create_engine, pool
from sqlmodel import SQLModel

import importlib
import pkgutil

import storage

for _module in pkgutil.iter_modules(storage.__path__):
    if _module.name not in ("migrations", "db", "crypto"):
        importlib.import_module(f"storage.{_module.name}")  # registers each feature's tables

config = context.config
target_metadata = SQLModel.metadata


def run_migrations(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run_migrations(connection)
else:
    url = config.get_main_option("sqlalchemy.url").replace("+aiosqlite", "").replace("+asyncpg", "+psycopg")
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as conn:
        run_migrations(conn)
