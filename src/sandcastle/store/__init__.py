"""Durable state: SQLAlchemy models, the database handle, repositories, Alembic migrations."""
