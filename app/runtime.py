"""Process-wide objects created at start-up and closed at shutdown."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import anyio.to_thread
import torch
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.core.config import Settings
from app.core.db import check_connection, create_db_engine, create_read_pool, create_session_factory
from app.core.migrations import script_revisions
from app.ml.device import resolve_device
from app.services.predictor import PredictorCache
from app.services.readiness import ReadinessMonitor
from app.services.reads import Reads

logger = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    device: torch.device
    alembic_head: str
    known_revisions: frozenset[str]
    read_pool: AsyncConnectionPool
    reads: Reads
    predictor: PredictorCache
    readiness: ReadinessMonitor

    @classmethod
    def start(cls, settings: Settings) -> Runtime:
        """Validate the environment (raises ConfigError with a safe message). Web processes never train."""
        device = resolve_device(settings.torch_device)
        head, known = script_revisions(settings.alembic_script_location)
        engine = create_db_engine(settings)
        try:
            check_connection(engine)
        except Exception:
            engine.dispose()
            raise
        session_factory = create_session_factory(engine)
        read_pool = create_read_pool(settings)
        reads = Reads(read_pool, settings.db_read_retry_seconds)
        readiness = ReadinessMonitor(
            read_pool,
            head,
            known,
            interval=settings.ready_check_interval,
            timeout=settings.ready_check_timeout,
            max_age=settings.ready_max_age,
        )
        return cls(
            settings,
            engine,
            session_factory,
            device,
            head,
            known,
            read_pool,
            reads,
            PredictorCache(reads, touch_seconds=settings.model_touch_seconds),
            readiness,
        )

    async def open(self) -> None:
        """The async half of start-up; runs in the event loop that will serve requests."""
        await self.read_pool.open(wait=True, timeout=10)
        await self.readiness.start()
        logger.info(
            "started",
            extra={
                "release_id": self.settings.release_id,
                "device": self.device.type,
                "database": self.settings.database_url_masked,
                "alembic_head": self.alembic_head,
            },
        )

    async def aclose(self) -> None:
        """Release every connection (trainings run in the workers and are not affected)."""
        await self.readiness.stop()  # first: /readyz says "shutting down"
        await self.read_pool.close()
        await anyio.to_thread.run_sync(self.engine.dispose)  # closing connections may wait on the network
        logger.info("stopped")
