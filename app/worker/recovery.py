"""Stalled-job recovery: sessions whose worker stopped heartbeating go back to the queue (or give up).

procrastinate finds them (`get_stalled_jobs`: status `doing` and the worker's heartbeat older than
WORKER_STALLED_SECONDS, or the worker row already pruned) but leaves the decision to the application.
Every worker runs this sweep every WORKER_HEARTBEAT_SECONDS, for all training queues, so a dead CUDA
worker's job is re-queued even when only CPU workers are left (it then waits for a CUDA worker).
Each job is re-checked under row locks inside one transaction, so two sweeping workers never both
recover the same job, and the session's bookkeeping and the job's state change together.
"""

from __future__ import annotations

import logging

from sqlalchemy import Connection, Engine, func, text, update

from app.models import ACTIVE_STATUSES, SessionStatus, TrainingSession
from app.services import queue

logger = logging.getLogger(__name__)

INTERRUPTED_STALLED = (
    "its worker stopped sending heartbeats {failures} times (JOB_MAX_FAILURES={limit}); gave up resuming it"
)

_LOCK_JOB_SQL = text(
    """
    SELECT j.id FROM procrastinate_jobs j
    WHERE j.id = :job_id AND j.status = 'doing'
      AND (j.worker_id IS NULL OR NOT EXISTS (
            SELECT 1 FROM procrastinate_workers p
            WHERE p.id = j.worker_id AND p.last_heartbeat >= now() - make_interval(secs => :stalled)))
    FOR UPDATE OF j
    """
)
_FORGET_WORKERS_SQL = text(
    "DELETE FROM training_workers w WHERE NOT EXISTS (SELECT 1 FROM procrastinate_workers p WHERE p.id = w.id)"
)


def recover_job(engine: Engine, job_id: int, stalled_seconds: float, max_failures: int) -> str | None:
    """Re-queue (or give up on) one stalled training job; returns what was done, None if nothing."""
    with engine.begin() as conn:
        if conn.execute(_LOCK_JOB_SQL, {"job_id": job_id, "stalled": stalled_seconds}).first() is None:
            return None  # another worker recovered it, or its worker came back
        queue.lock_model_of(conn, job_id=job_id)
        session = conn.execute(
            update(TrainingSession)
            .where(TrainingSession.job_id == job_id, TrainingSession.status.in_(ACTIVE_STATUSES))
            .where(TrainingSession.stop_requested.is_(False))
            .values(failures=TrainingSession.failures + 1)
            .returning(TrainingSession.id, TrainingSession.failures, TrainingSession.device)
        ).first()
        if session is None:  # stopped, finished or deleted meanwhile: nothing left to run
            queue.finish(conn, job_id, "aborted")
            _stop_if_requested(conn, job_id)
            return "finished"
        if session.failures <= max_failures:
            # A new job rather than procrastinate's retry of this one: should the "dead" worker still be
            # alive (a network partition), its late report on the old job can then not overwrite the
            # status of the job its successor runs; its writes to the session are fenced (attempts).
            queue.finish(conn, job_id, "failed")
            new_job = queue.defer(conn, session.id, session.device)
            conn.execute(
                update(TrainingSession)
                .where(TrainingSession.id == session.id)
                .values(status=SessionStatus.QUEUED.value, job_id=new_job)
            )
            logger.warning(
                "stalled training re-queued",
                extra={"session_id": session.id, "job_id": job_id, "new_job_id": new_job, "failures": session.failures},
            )
            return "retried"
        conn.execute(
            update(TrainingSession)
            .where(TrainingSession.id == session.id)
            .values(
                status=SessionStatus.INTERRUPTED.value,
                finished_at=func.now(),
                error=INTERRUPTED_STALLED.format(failures=session.failures, limit=max_failures),
            )
        )
        queue.finish(conn, job_id, "failed")
        logger.error("stalled training interrupted", extra={"session_id": session.id, "job_id": job_id})
        return "interrupted"


def _stop_if_requested(conn: Connection, job_id: int) -> None:
    # A running session whose stop was requested but whose worker died: it is stopped now.
    conn.execute(
        update(TrainingSession)
        .where(TrainingSession.job_id == job_id, TrainingSession.status.in_(ACTIVE_STATUSES))
        .values(status=SessionStatus.STOPPED.value, finished_at=func.now())
    )


def forget_pruned_workers(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(_FORGET_WORKERS_SQL)
