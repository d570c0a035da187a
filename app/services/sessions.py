"""Database operations on training sessions that do not need the trainer itself."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy import Connection, Engine, case, func, select, update
from sqlalchemy.orm import Session

from app.models import ACTIVE_STATUSES, SessionStatus, TrainingSession
from app.services.errors import ConflictError, NotFoundError
from app.services.ownership import Owner, owner_is_gone

logger = logging.getLogger(__name__)

INTERRUPTED_LOCAL = "the process running this session ended before it finished"
INTERRUPTED_STALE = "the process running this session stopped sending heartbeats"
INTERRUPTED_SHUTDOWN = "the server shut down before the session finished"


def get_session(db: Session, session_id: int) -> TrainingSession:
    row = db.get(TrainingSession, session_id)
    if row is None:
        raise NotFoundError(f"training session {session_id} not found")
    return row


def request_stop(db: Session, session_id: int) -> TrainingSession:
    """Flag a session to stop. Works from any process: the owner's trainer polls the flag.

    A session still waiting in the queue is stopped right here; the owner's worker then skips it.
    """
    queued = TrainingSession.status == SessionStatus.QUEUED
    stopped = db.execute(
        update(TrainingSession)
        .where(TrainingSession.id == session_id, TrainingSession.status.in_(ACTIVE_STATUSES))
        .values(
            stop_requested=True,
            status=case((queued, SessionStatus.STOPPED.value), else_=TrainingSession.status),
            finished_at=case((queued, func.now()), else_=TrainingSession.finished_at),
        )
        .returning(TrainingSession.id)
    ).first()
    db.commit()
    row = get_session(db, session_id)
    if stopped is None:
        raise ConflictError(f"training session {session_id} is {row.status}, not running; nothing to stop")
    return row


def _mark_interrupted(conn: Connection, ids: Sequence[int], reason: str) -> list[int]:
    if not ids:
        return []
    result = conn.execute(
        update(TrainingSession)
        .where(TrainingSession.id.in_(ids), TrainingSession.status.in_(ACTIVE_STATUSES))
        .values(status=SessionStatus.INTERRUPTED.value, error=reason, finished_at=func.now())
        .returning(TrainingSession.id)
    )
    return [row.id for row in result]


def interrupt(engine: Engine, ids: Sequence[int], reason: str) -> list[int]:
    with engine.begin() as conn:
        return _mark_interrupted(conn, ids, reason)


def recover_local_sessions(engine: Engine, me: Owner) -> list[int]:
    """Mark sessions of this host whose owner process is gone as interrupted (see app.services.ownership)."""
    with engine.begin() as conn:
        rows = conn.execute(
            select(TrainingSession.id, TrainingSession.owner_pid, TrainingSession.owner_instance).where(
                TrainingSession.status.in_(ACTIVE_STATUSES), TrainingSession.owner_host == me.host
            )
        ).all()
        dead = [row.id for row in rows if owner_is_gone(me, row.owner_pid, row.owner_instance)]
        return _mark_interrupted(conn, dead, INTERRUPTED_LOCAL)


def sweep_stale_sessions(engine: Engine, me: Owner, stale_seconds: float) -> list[int]:
    """Mark sessions of any host whose owner stopped heartbeating as interrupted."""
    cutoff = func.now() - func.make_interval(0, 0, 0, 0, 0, 0, stale_seconds)
    with engine.begin() as conn:
        result = conn.execute(
            update(TrainingSession)
            .where(
                TrainingSession.status.in_(ACTIVE_STATUSES),
                TrainingSession.owner_instance != me.instance,
                TrainingSession.heartbeat_at < cutoff,
            )
            .values(status=SessionStatus.INTERRUPTED.value, error=INTERRUPTED_STALE, finished_at=func.now())
            .returning(TrainingSession.id)
        )
        return [row.id for row in result]


def heartbeat(engine: Engine, me: Owner) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(TrainingSession)
            .where(TrainingSession.owner_instance == me.instance, TrainingSession.status.in_(ACTIVE_STATUSES))
            .values(heartbeat_at=func.now())
        )


def interrupt_own_sessions(engine: Engine, me: Owner) -> list[int]:
    """At shutdown: whatever this process still has queued or running is interrupted."""
    with engine.begin() as conn:
        result = conn.execute(
            update(TrainingSession)
            .where(TrainingSession.owner_instance == me.instance, TrainingSession.status.in_(ACTIVE_STATUSES))
            .values(status=SessionStatus.INTERRUPTED.value, error=INTERRUPTED_SHUTDOWN, finished_at=func.now())
            .returning(TrainingSession.id)
        )
        return [row.id for row in result]
