"""Readiness, checked in the background and cached: /readyz answers without touching the database.

Load balancers probe /readyz on every host every few seconds. A database query per probe queued behind
real traffic on a saturated host, timed out, and had healthy hosts taken out of service. Instead one
task per process checks the database and its schema every READY_CHECK_INTERVAL seconds and /readyz
reports the last result:

* a check that answers decides at once: ready, or not ready with a reason (database error, schema
  behind);
* a check that gets no answer within the check timeout (a saturated host or database, a network
  partition) changes nothing by itself; the last answer stands until it is `ready_max_age` old.

Reasons are fixed phrases, safe to publish; the driver's error text (host names, addresses, logins)
goes to the log only, once per change of state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import anyio
import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from app.core.migrations import database_revision

logger = logging.getLogger(__name__)

STARTING = "starting"
SHUTTING_DOWN = "shutting down"
DATABASE_UNREACHABLE = "database unreachable"
DATABASE_ERROR = "database check failed"
CHECK_FAILED = "readiness check failed"
CHECK_OVERDUE = "readiness check overdue"


@dataclass(frozen=True)
class Readiness:
    """What /readyz reports; `reason` is set exactly when not ready."""

    reason: str | None
    schema_revision: str | None = None
    expected_revision: str = ""
    schema_newer: bool = False

    @property
    def ready(self) -> bool:
        return self.reason is None


@dataclass(frozen=True)
class CheckResult:
    """A check that got an answer: the revision found and, when not ready, why."""

    finished_at: float  # on the monitor's clock (time.monotonic)
    revision: str | None
    reason: str | None


class ReadinessMonitor:
    """Runs the check on the async read pool and keeps its last answer."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        alembic_head: str,
        known_revisions: frozenset[str],
        *,
        interval: float,
        timeout: float,
        max_age: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool = pool
        self.alembic_head = alembic_head
        self.known_revisions = known_revisions
        self.interval = interval
        self.timeout = timeout
        self.max_age = max_age
        self._clock = clock
        self.last: CheckResult | None = None
        self.attempts = 0  # checks finished, answered or not
        self.shutting_down = False
        self._no_answer = False  # the latest check timed out
        self._logged: str | None = None  # the state last logged: "ready", "no answer" or a reason
        self._task: asyncio.Task[None] | None = None
        self._first_attempt = asyncio.Event()

    # -- what /readyz reports --------------------------------------------------------------------

    def current(self) -> Readiness:
        if self.shutting_down:
            return Readiness(SHUTTING_DOWN)
        last = self.last
        if last is None:
            return Readiness(STARTING)
        if last.reason is not None:
            return Readiness(last.reason)
        if self._clock() - last.finished_at > self.max_age:
            stale = f"{DATABASE_UNREACHABLE}: no answer within {self.timeout:g} s" if self._no_answer else CHECK_OVERDUE
            return Readiness(stale)
        return Readiness(
            None,
            schema_revision=last.revision,
            expected_revision=self.alembic_head,
            schema_newer=last.revision != self.alembic_head,
        )

    def schema_reason(self, revision: str | None) -> str | None:
        """Why this schema revision is not servable, or None.

        A revision this release does not know was written by a newer release: during a rolling deploy
        the migration runs once before any host switches, and hosts still on the old release must keep
        serving (migrations are expand/contract). A known older revision, or none, means a migration is
        pending.
        """
        if revision != self.alembic_head and (revision is None or revision in self.known_revisions):
            found = revision or "none (not migrated)"
            return f"schema revision is {found}, expected {self.alembic_head}; run alembic upgrade head"
        return None

    # -- the check -------------------------------------------------------------------------------

    async def check(self) -> None:
        """One check, bounded by the timeout; never raises (except cancellation)."""
        detail = ""
        try:
            with anyio.fail_after(self.timeout):
                async with self._pool.connection(timeout=self.timeout) as conn:
                    revision = await database_revision(conn)
        except (TimeoutError, PoolTimeout) as exc:
            self._no_answer = True
            detail = f"no answer within {self.timeout:g} s ({type(exc).__name__})"
        except psycopg.Error as exc:
            reason = DATABASE_UNREACHABLE if isinstance(exc, psycopg.OperationalError) else DATABASE_ERROR
            self._answered(None, reason)
            detail = " ".join(str(exc).split()) or type(exc).__name__
        except Exception as exc:  # a bug here must not end the checks; the traceback goes to the log
            logger.exception("readiness check raised")
            self._answered(None, CHECK_FAILED)
            detail = type(exc).__name__
        else:
            self._answered(revision, self.schema_reason(revision))
        self.attempts += 1
        self._first_attempt.set()
        self._log_change(detail)

    def _answered(self, revision: str | None, reason: str | None) -> None:
        self._no_answer = False
        self.last = CheckResult(self._clock(), revision, reason)

    def _log_change(self, detail: str) -> None:
        state = self.current()
        key = "no answer" if state.ready and self._no_answer else state.reason or "ready"
        if key == self._logged:
            return
        previous, self._logged = self._logged, key
        if key == "ready":
            message = "ready" if previous is None else "ready again"
            logger.info(message, extra={"schema_revision": state.schema_revision})
        elif key == "no answer":
            logger.warning(
                "readiness check got no answer; still ready until the last answer is %g s old",
                self.max_age,
                extra={"detail": detail},
            )
        else:
            logger.warning("not ready: %s", state.reason, extra={"detail": detail})

    # -- lifecycle -------------------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            started = self._clock()
            await self.check()
            await anyio.sleep(max(0.0, self.interval - (self._clock() - started)))

    async def start(self) -> None:
        """Start checking (the first check at once) and wait for its outcome, at most one check timeout.

        So a process normally serves its first request already ready; if the first check gets no
        answer in time, /readyz says "starting" until one does.
        """
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="readiness-check")
        with anyio.move_on_after(self.timeout + 1.0):
            await self._first_attempt.wait()

    async def stop(self) -> None:
        """/readyz answers "shutting down" from now on; the checks end."""
        self.shutting_down = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
