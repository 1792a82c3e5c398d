"""Persistence: SQLModel tables, async engine, Alembic migrations."""
