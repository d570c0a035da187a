"""The training queue: procrastinate's jobs, called through its SQL functions inside our own transactions.

Web processes never import procrastinate's App: they only create sessions, defer and cancel jobs, and
read the worker list. Calling the library's SQL functions (schema vendored by Alembic revision 0002)
on the SQLAlchemy connection is what lets a session row and its job commit or roll back together:
procrastinate's own `defer` runs on its own connector (its own connection and transaction), so with
it a crash between the two commits could leave a session without a job or a job without a session.
The function names carry a version suffix (`_v1`, `_v2`): a procrastinate upgrade that changes one
is a new migration and a change here, both in the same release.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Connection, text

# The worker registers its task under this name; jobs name it.
TASK_NAME = "train_session"

Device = Literal["cpu", "cuda"]


def queue_name(device: str) -> str:
    """One queue per device: a CUDA worker takes only CUDA jobs and a CPU worker only CPU jobs."""
    return f"training-{device}"


def job_lock(session_id: int) -> str:
    # procrastinate runs at most one job per lock at a time: belt and braces with the session fencing.
    return f"training-session-{session_id}"


_DEFER_SQL = text(
    """
    SELECT unnest(procrastinate_defer_jobs_v1(ARRAY[
        ROW(:queue, :task, 0, :lock, NULL, CAST(:args AS jsonb), NULL)
    ]::procrastinate_job_to_defer_v1[]))
    """
)
# abort => true: a queued job is cancelled, a running one gets abort_requested (its worker is notified).
_CANCEL_SQL = text("SELECT procrastinate_cancel_job_v1(:job_id, true, false)")
_FINISH_SQL = text("SELECT procrastinate_finish_job_v1(:job_id, CAST(:status AS procrastinate_job_status), false)")

_LIVE_WORKER_SQL = text(
    """
    SELECT EXISTS (
        SELECT 1 FROM training_workers w JOIN procrastinate_workers p ON p.id = w.id
        WHERE w.device = :device AND p.last_heartbeat > now() - make_interval(secs => :stalled)
    )
    """
)
_WORKERS_SQL = text(
    """
    SELECT w.id, w.host, w.pid, w.release_id, w.device, w.concurrency, w.started_at, p.last_heartbeat,
           p.last_heartbeat > now() - make_interval(secs => :stalled) AS alive,
           (SELECT count(*) FROM procrastinate_jobs j WHERE j.worker_id = w.id AND j.status = 'doing') AS running_jobs
    FROM training_workers w JOIN procrastinate_workers p ON p.id = w.id
    ORDER BY w.id
    """
)


# A transaction that makes a session queued or running adds an entry for its model to the unique index
# uq_training_sessions_active_model. Two such transactions for one model (a client starting a training while
# a worker claims or requeues the model's previous one) would each wait for the other's uncommitted entry:
# a deadlock, which PostgreSQL ends by failing one of them (a 503 for the client, seen under make test). So
# each first locks the model's row: a new session with FOR NO KEY UPDATE (start_session), a worker with FOR
# SHARE here; the two conflict, so one waits for the other to commit, and the unique index then answers.
_LOCK_MODEL_SQL = text(
    """
    SELECT 1 FROM models WHERE id = (
        SELECT model_id FROM training_sessions WHERE id = :session_id OR job_id = :job_id LIMIT 1
    ) FOR SHARE
    """
)


def lock_model_of(conn: Connection, *, session_id: int | None = None, job_id: int | None = None) -> None:
    """Take the model lock above for the session (by id, or by its job's id) before changing its status."""
    conn.execute(_LOCK_MODEL_SQL, {"session_id": session_id, "job_id": job_id})


def defer(conn: Connection, session_id: int, device: str) -> int:
    """Queue the training job of a session, in the caller's transaction; returns the job id."""
    args = json.dumps({"session_id": session_id})
    job_id = conn.execute(
        _DEFER_SQL, {"queue": queue_name(device), "task": TASK_NAME, "lock": job_lock(session_id), "args": args}
    ).scalar_one()
    return int(job_id)


def cancel(conn: Connection, job_id: int) -> None:
    conn.execute(_CANCEL_SQL, {"job_id": job_id})


def finish(conn: Connection, job_id: int, status: Literal["succeeded", "failed", "aborted"]) -> None:
    conn.execute(_FINISH_SQL, {"job_id": job_id, "status": status})


def has_live_worker(conn: Connection, device: str, stalled_seconds: float) -> bool:
    return bool(conn.execute(_LIVE_WORKER_SQL, {"device": device, "stalled": stalled_seconds}).scalar_one())


@dataclass(frozen=True)
class WorkerInfo:
    id: int
    host: str
    pid: int
    release_id: str
    device: str
    concurrency: int
    started_at: object
    last_heartbeat: object
    alive: bool
    running_jobs: int


def list_workers(conn: Connection, stalled_seconds: float) -> list[WorkerInfo]:
    rows = conn.execute(_WORKERS_SQL, {"stalled": stalled_seconds}).mappings().all()
    return [WorkerInfo(**row) for row in rows]
