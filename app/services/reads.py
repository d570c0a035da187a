"""Hot reads on the event loop: the endpoints clients poll or hammer (model, session, metrics,
prediction) query through a psycopg async pool instead of ORM sessions in the thread pool. Under load,
a thread-pool hop plus a transaction (BEGIN ... ROLLBACK) per request costs several times the query
itself. Writes stay on the ORM (app.services.models / sessions, app.worker).
"""

from __future__ import annotations

import asyncio
import logging
from itertools import chain
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from app.core.db import retry_delays
from app.schemas.training import SessionOut
from app.services.errors import NotFoundError
from app.services.owners import Reader

logger = logging.getLogger(__name__)

_MODEL_SQL = """
    SELECT m.id, m.owner_id, m.name, m.dataset, m.dataset_params, m.layers, m.task, m.input_dim, m.output_dim,
           m.created_at, m.last_used_at, w.session_id AS weights_version
    FROM models m LEFT JOIN model_weights w ON w.model_id = m.id
    WHERE m.id = %s
"""
# Every field of the response is a column of the same name.
_SESSION_SQL = f"SELECT {', '.join(SessionOut.model_fields)} FROM training_sessions WHERE id = %s"  # noqa: S608
_METRICS_SQL = """
    SELECT epoch, loss, accuracy FROM epoch_metrics
    WHERE session_id = %s AND epoch > %s ORDER BY epoch LIMIT %s
"""


class Reads:
    def __init__(self, pool: AsyncConnectionPool, retry_seconds: float) -> None:
        self._pool = pool
        self._retry_seconds = retry_seconds

    async def model(self, model_id: int, reader: Reader) -> dict[str, Any]:
        """The model, or 404 (also for one the reader may not see: its existence is not told)."""
        row = await self.one(_MODEL_SQL, (model_id,))
        if row is None or not reader.may_read(row["owner_id"]):
            raise NotFoundError(f"model {model_id} not found")
        return row

    async def session(self, session_id: int, reader: Reader) -> dict[str, Any]:
        row = await self.one(_SESSION_SQL, (session_id,))
        if row is None or not reader.may_read(row["owner_id"]):
            raise NotFoundError(f"training session {session_id} not found")
        return row

    async def execute(self, sql: str, params: tuple[Any, ...]) -> None:
        """A write that may be lost without harm (a model's last use): no retry."""
        async with self._pool.connection() as conn:
            await conn.execute(sql, params, prepare=True)

    async def metrics(self, session_id: int, after_epoch: int, limit: int) -> list[dict[str, Any]]:
        return await self.rows(_METRICS_SQL, (session_id, after_epoch, limit))

    async def one(self, sql: str, params: tuple[Any, ...]) -> dict[str, Any] | None:
        rows = await self.rows(sql, params)
        return rows[0] if rows else None

    async def rows(self, sql: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
        """Every read here is idempotent: a broken connection (a database restart or failover breaks every
        pooled one at once) is retried for DB_READ_RETRY_SECONDS. The pool then drops its broken idle
        connections and opens new ones as soon as the server accepts them. A PoolTimeout has waited its
        10 s for a connection already and is not retried."""
        for delay in chain(retry_delays(self._retry_seconds), [None]):
            try:
                return await self._fetch(sql, params)
            except PoolTimeout:
                raise
            except psycopg.OperationalError:
                if delay is None:
                    raise
                logger.warning("database connection lost; retrying the read in %.2f s", delay)
                await self._pool.check()
                await asyncio.sleep(delay)
        raise AssertionError("unreachable: the last delay is None")

    async def _fetch(self, sql: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
        async with self._pool.connection() as conn:
            cursor = conn.cursor(row_factory=dict_row)
            await cursor.execute(sql, params, prepare=True)
            return await cursor.fetchall()
