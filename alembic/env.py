"""Alembic environment: DATABASE_URL from the environment, metadata from app.models."""

from __future__ import annotations

import os
from logging.config import fileConfig

from sqlalchemy import create_engine
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from alembic import context
from app.core.config import normalize_database_url
from app.core.migrations import include_name
from app.models import Base

config = context.config
target_metadata = Base.metadata

# Programmatic callers (tests, the app's tooling) set configure_logger=False to keep their own logging.
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def database_url() -> URL:
    raw = config.attributes.get("database_url") or os.environ.get("DATABASE_URL", "")
    if not raw.strip():
        raise SystemExit("DATABASE_URL is not set; export it (postgresql://user:password@host:port/dbname)")
    try:
        return normalize_database_url(raw)
    except ValueError as exc:
        raise SystemExit(f"DATABASE_URL is invalid: {exc}") from None


def run_migrations_offline() -> None:
    context.configure(url=database_url(), target_metadata=target_metadata, literal_binds=True, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


def lock_timeout_ms() -> int:
    """How long a migration's statement waits for a table lock (MIGRATION_LOCK_TIMEOUT_SECONDS, default 5).

    A migration that alters a table queues for its exclusive lock behind every open transaction on it, and
    every query of the app queues behind the migration: waiting long would stall the service. Past the
    timeout the migration fails, changes nothing (one transaction) and the deploy stops with the previous
    release serving; rerun it when the long transaction has ended.
    """
    raw = config.attributes.get("lock_timeout_seconds") or os.environ.get("MIGRATION_LOCK_TIMEOUT_SECONDS", "5")
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= 3600:
        raise SystemExit(f"MIGRATION_LOCK_TIMEOUT_SECONDS must be a number of seconds in (0, 3600], got {raw!r}")
    return round(seconds * 1000)


def run_migrations_online() -> None:
    engine = create_engine(
        database_url(), poolclass=NullPool, connect_args={"options": f"-c lock_timeout={lock_timeout_ms()}"}
    )
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                compare_type=True,
                compare_server_default=True,
                include_name=include_name,
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
