"""SQLAlchemy engine and session factory."""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from app.core.config import ConfigError, Settings

# psycopg_pool retries a failed connection with exponential backoff for this long before giving up
# (default 5 minutes, by then 1-2 minutes between attempts); a later checkout then starts afresh at
# once. Short, so a database that comes back is connected to within about a second, not minutes:
# the readiness check, which checks out a connection every READY_CHECK_INTERVAL, keeps one attempt
# in flight while it is down.
READ_POOL_RECONNECT_SECONDS = 2.0


def create_db_engine(settings: Settings) -> Engine:
    # No pool_pre_ping: it costs a round trip per checkout on the prediction hot path. A connection broken
    # by a database restart fails one request with 503 and SQLAlchemy then invalidates the pool.
    return create_engine(
        settings.sqlalchemy_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_size,
        pool_recycle=1800,
        pool_timeout=10,
        connect_args={"connect_timeout": 5, "application_name": "nn-playground"},
    )


def create_read_pool(settings: Settings) -> AsyncConnectionPool:
    """Async pool for the hot read paths (prediction, readiness) that run on the event loop.

    Autocommit: single reads need no transaction, which saves the BEGIN/ROLLBACK round trips.
    Opened and closed by the app's lifespan, in the event loop that uses it.
    """
    conninfo = settings.sqlalchemy_url.set(drivername="postgresql").render_as_string(hide_password=False)
    return AsyncConnectionPool(
        conninfo,
        min_size=1,
        max_size=settings.db_pool_size,
        kwargs={"autocommit": True, "connect_timeout": 5, "application_name": "nn-playground"},
        timeout=10,
        reconnect_timeout=READ_POOL_RECONNECT_SECONDS,
        name="read",
        open=False,
    )


def create_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def db_error_reason(exc: BaseException) -> str:
    """A one-line, password-free description of a driver error."""
    orig = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    return " ".join(str(orig).split()) or type(orig).__name__


def check_connection(engine: Engine) -> None:
    """Fail start-up with a message naming DATABASE_URL when the database cannot be reached."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except DBAPIError as exc:
        reason = db_error_reason(exc)
        password = engine.url.password
        if password:  # belt and braces: drivers do not echo it, but the message ends up in logs
            reason = reason.replace(str(password), "***")
        target = engine.url.render_as_string(hide_password=True)
        raise ConfigError(f"DATABASE_URL: cannot connect to {target}: {reason}") from None
