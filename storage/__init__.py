"""Persistence: SQLModel tables, the async engine and Alembic migrations."""

from storage.db import Database, connect

__all__ = ["Database", "connect"]
