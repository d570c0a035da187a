"""SQLAlchemy engine and session factory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import OperationalError as SAOperationalError
from sqlalchemy.orm import Session, sessionmaker

from app.core.config import ConfigError, Settings

logger = logging.getLogger(__name__)
T = TypeVar("T")

# psycopg_pool retries a failed connection with exponential backoff for this long before giving up
# (default 5 minutes, by then 1-2 minutes between attempts); a later checkout then starts afresh at
# once. Short, so a database that comes back is connected to within about a second, not minutes:
# the readiness check, which checks out a connection every READY_CHECK_INTERVAL, keeps one attempt
# in flight while it is down.
READ_POOL_RECONNECT_SECONDS = 2.0


def connect_args(settings: Settings) -> dict[str, Any]:
    """libpq settings of every connection the app opens (both pools and the workers' engine).

    TCP keepalives (first probe after 30 s idle, then every 10 s, dead after 3 unanswered) and a TCP
    user timeout of 30 s: a connection to a server that vanished (a failover moves the address, a host
    dies) is found dead within a minute instead of the kernel's default of about two hours (idle) or
    fifteen minutes (unacknowledged data). statement_timeout bounds any one statement on the server.
    """
    statement_ms = round(settings.db_statement_timeout_seconds * 1000)
    return {
        "connect_timeout": 5,
        "application_name": "nn-playground",
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
        "tcp_user_timeout": 30_000,
        "options": f"-c statement_timeout={statement_ms}",
    }


# How libpq words a refused password (the server's FATAL 28P01, which libpq reports without its SQLSTATE)
# and a login that had no password to send (PGPASSFILE missing, unreadable or without a matching line).
AUTH_FAILURES = ("password authentication failed", "no password supplied")


def is_auth_failure(exc: BaseException) -> bool:
    """The server refused the login's password, or there was none to send (not a network error)."""
    return isinstance(exc, psycopg.OperationalError) and any(text in str(exc) for text in AUTH_FAILURES)


def _auth_retry_delay(exc: psycopg.OperationalError, delays: Iterator[float], budget_seconds: float) -> float | None:
    """The pause before the next attempt after `exc`, logged; None (re-raise) unless it is an auth failure
    and the budget lasts. Shared by the sync and the async connect below."""
    delay = next(delays, None) if is_auth_failure(exc) else None
    if delay is not None:
        logger.warning(
            "the database refused the app login's password; a rotation writes the new one to PGPASSFILE right "
            f"after changing it: connecting again in {delay:.2f} s (for up to {budget_seconds:g} s)"
        )
    return delay


def connect_with_auth_retry(connect: Callable[[], T], budget_seconds: float) -> T:
    """connect(), again while the server refuses the password, for at most budget_seconds of retries.

    A password rotation changes the login's password on the server first and then the passfile on every
    host (deploy.yml): for those seconds a new connection fails authentication. Nothing ran on such a
    connection, so the retry is safe for writes too. Any other error is raised at once.
    """
    delays = retry_delays(budget_seconds)
    while True:
        try:
            return connect()
        except psycopg.OperationalError as exc:
            if (delay := _auth_retry_delay(exc, delays, budget_seconds)) is None:
                raise
            time.sleep(delay)


def auth_retrying_connection_class(budget_seconds: float) -> type[psycopg.AsyncConnection[Any]]:
    """An AsyncConnection class whose connect() retries a refused password (connect_with_auth_retry), for
    psycopg_pool's pools (the read pool; procrastinate's, in the workers)."""

    class AuthRetryingAsyncConnection(psycopg.AsyncConnection[Any]):
        @classmethod
        async def connect(cls, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
            delays = retry_delays(budget_seconds)
            while True:
                try:
                    return await super().connect(*args, **kwargs)
                except psycopg.OperationalError as exc:
                    if (delay := _auth_retry_delay(exc, delays, budget_seconds)) is None:
                        raise
                    await asyncio.sleep(delay)

    return AuthRetryingAsyncConnection


def create_db_engine(settings: Settings) -> Engine:
    # No pool_pre_ping (a round trip per checkout): a connection broken by a database restart fails its
    # statement, SQLAlchemy then invalidates the whole pool, and the reads retry (read_with_retry).
    engine = create_engine(
        settings.sqlalchemy_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_size,
        pool_recycle=1800,
        pool_timeout=10,
        connect_args=connect_args(settings),
    )
    budget = settings.db_auth_retry_seconds

    @event.listens_for(engine, "do_connect")
    def _connect(dialect: Any, conn_rec: Any, cargs: Any, cparams: Any) -> Any:
        return connect_with_auth_retry(lambda: dialect.connect(*cargs, **cparams), budget)

    return engine


def retry_delays(budget_seconds: float) -> Iterator[float]:
    """Pauses between the attempts of an idempotent read: 0.05 s doubling to 1 s, while the budget lasts."""
    deadline = time.monotonic() + budget_seconds
    delay = 0.05
    while time.monotonic() + delay <= deadline:
        yield delay
        delay = min(delay * 2, 1.0)


def is_broken_connection(exc: DBAPIError) -> bool:
    """A lost or refused connection (worth a retry), not a bad statement (never worth one)."""
    return bool(exc.connection_invalidated) or isinstance(exc, SAOperationalError)


def read_with_retry(db: Session, read: Callable[[Session], T], budget_seconds: float) -> T:
    """Runs an idempotent read, again after a broken connection, for at most budget_seconds of retries.

    For GET endpoints on the ORM: a database restart breaks every pooled connection at once; each retry
    gets a new one (SQLAlchemy invalidated the pool) as soon as the server accepts connections again.
    Never for writes: a write whose COMMIT was cut off may have happened.
    """
    delays = retry_delays(budget_seconds)
    while True:
        try:
            return read(db)
        except DBAPIError as exc:
            delay = next(delays, None) if is_broken_connection(exc) else None
            if delay is None:
                raise
            logger.warning("database connection lost; retrying the read in %.2f s", delay)
            with contextlib.suppress(DBAPIError):
                db.rollback()
            time.sleep(delay)


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
        kwargs={"autocommit": True, **connect_args(settings)},
        timeout=10,
        connection_class=auth_retrying_connection_class(settings.db_auth_retry_seconds),
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
