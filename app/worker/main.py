"""The training worker process: a procrastinate worker on the queue of its device.

    python -m app.worker          # settings from the environment, like the app (see .env.example)

* takes jobs from `training-<WORKER_DEVICE>`, WORKER_CONCURRENCY at a time, each in its own thread;
* heartbeats every WORKER_HEARTBEAT_SECONDS (procrastinate_workers) and describes itself in
  `training_workers` (host, pid, release, device) for `GET /api/workers` and for `device: auto`;
* sweeps stalled jobs of dead workers back into the queue (app.worker.recovery);
* also takes the `maintenance` queue: the daily retention (app.worker.retention, RETENTION_CRON), which
  procrastinate's periodic deferrer in every worker queues once per tick for the whole fleet;
* SIGTERM / SIGINT: takes no new job, lets each running training finish its epoch, checkpoint and go
  back to the queue, then exits 0. A second signal does not hurry it (systemd's stop timeout does).
* a run that ends without a signal (procrastinate stops a worker whose listener lost the database, as in a
  database restart) exits 1, so that systemd starts the worker again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable

import procrastinate
from procrastinate import JobContext, RetryDecision
from procrastinate.exceptions import JobAborted
from procrastinate.jobs import Job
from procrastinate.retry import BaseRetryStrategy
from procrastinate.worker import Worker
from sqlalchemy import delete, insert

from app.core.config import ConfigError, Settings, load_settings
from app.core.db import auth_retrying_connection_class, check_connection, create_db_engine
from app.core.logging import configure_logging
from app.ml.device import configure_threads, resolve_device
from app.models import TrainingWorker
from app.services import queue
from app.services.ownership import Owner
from app.worker import metrics, recovery, retention
from app.worker.training_job import Aborted, Requeue, Superseded, TrainingRun, WorkerContext, record_failure

logger = logging.getLogger("app.worker")

CONTEXT_KEY = "training"
# The most each step of the worker's own clean-up at exit may take (side tasks, unregistering).
SHUTDOWN_STEP_SECONDS = 10.0


class RequeueStrategy(BaseRetryStrategy):
    """Retry at once exactly when the job asked for it (Requeue); our own counters decide when to give up."""

    def get_retry_decision(self, *, exception: BaseException, job: Job) -> RetryDecision | None:
        return RetryDecision() if isinstance(exception, Requeue) else None


def build_app(settings: Settings) -> procrastinate.App:
    conninfo = settings.sqlalchemy_url.set(drivername="postgresql").render_as_string(hide_password=False)
    connector = procrastinate.PsycopgConnector(
        conninfo=conninfo,
        min_size=1,
        max_size=max(2, settings.worker_concurrency + 2),
        kwargs={"application_name": "nn-playground-worker", "connect_timeout": 5},
        # A refused password (a rotation between the server's change and PGPASSFILE's) is retried.
        connection_class=auth_retrying_connection_class(settings.db_auth_retry_seconds),
    )
    app = procrastinate.App(connector=connector)
    app.task(name=queue.TASK_NAME, pass_context=True, retry=RequeueStrategy())(train_session)
    # Every worker defers it; procrastinate_periodic_defers keeps it to one job per tick for the fleet.
    maintenance = app.task(name=retention.TASK_NAME, queue=retention.QUEUE, pass_context=True)(retention_task)
    app.periodic(cron=settings.retention_cron, periodic_id=retention.TASK_NAME)(maintenance)
    return app


async def retention_task(context: JobContext, timestamp: int) -> None:
    """The daily retention (app.worker.retention), then procrastinate's own clean-up of finished jobs."""
    ctx: WorkerContext = context.additional_context[CONTEXT_KEY]
    await asyncio.to_thread(retention.run_retention, ctx.engine, ctx.settings)
    if ctx.settings.retention_session_days > 0:
        await context.app.job_manager.delete_old_jobs(
            nb_hours=24 * ctx.settings.retention_session_days,
            include_failed=True,
            include_cancelled=True,
            include_aborted=True,
        )


def train_session(context: JobContext, session_id: int) -> str:
    """The task: one run of a session (in a worker thread; procrastinate runs sync tasks in threads)."""
    ctx: WorkerContext = context.additional_context[CONTEXT_KEY]
    assert context.job.id is not None
    run = TrainingRun(ctx, session_id, context.job.id, context.should_abort)
    result = "error"
    metrics.RUNNING.inc()
    try:
        result = run.run()
        return result
    except Requeue:
        result = "requeued"
        raise
    except Superseded:
        result = "superseded"
        raise  # procrastinate marks this job failed; the run that replaced it owns the session
    except Aborted as exc:
        result = "stopped"
        raise JobAborted(str(exc)) from None
    except Exception as exc:
        logger.exception("training run failed", extra={"session_id": session_id, "job_id": context.job.id})
        reason = f"internal error: {exc.__class__.__name__}"
        if record_failure(ctx, session_id, context.job.id, run.attempt, reason):
            result = "requeued"
            raise Requeue(reason) from exc
        raise
    finally:
        metrics.RUNNING.dec()
        metrics.JOBS.labels(result if result in metrics.RESULTS else "error").inc()


async def _register(
    ctx: WorkerContext, worker: Worker, settings: Settings, on_running: Callable[[], None], registered: list[int]
) -> None:
    while worker.worker_id is None:
        await asyncio.sleep(0.02)
    worker_id = worker.worker_id
    registered.append(worker_id)
    on_running()

    def write() -> None:
        with ctx.engine.begin() as conn:
            conn.execute(
                insert(TrainingWorker).values(
                    id=worker_id,
                    host=ctx.owner.host,
                    pid=ctx.owner.pid,
                    release_id=settings.release_id,
                    device=ctx.device.type,
                    concurrency=settings.worker_concurrency,
                )
            )

    await asyncio.to_thread(write)
    logger.info(
        "worker registered",
        extra={"worker_id": worker_id, "device": ctx.device.type, "queue": queue.queue_name(ctx.device.type)},
    )


async def _sweep(app: procrastinate.App, ctx: WorkerContext, settings: Settings, stop: asyncio.Event) -> None:
    # Ends on `stop`, not on cancellation alone: a cancellation that lands inside a database call can come
    # back as a database error, which the handler below would swallow (the worker then hung at exit).
    while not stop.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), settings.worker_heartbeat_seconds)
        if stop.is_set():
            return
        try:
            stalled = await app.job_manager.get_stalled_jobs(
                seconds_since_heartbeat=settings.worker_stalled_seconds, task_name=queue.TASK_NAME
            )
            # A retention run whose worker died is simply queued again (it is safe to repeat).
            for job in await app.job_manager.get_stalled_jobs(
                seconds_since_heartbeat=settings.worker_stalled_seconds, task_name=retention.TASK_NAME
            ):
                await app.job_manager.retry_job(job)
            for job in stalled:
                assert job.id is not None
                await asyncio.to_thread(
                    recovery.recover_job,
                    ctx.engine,
                    job.id,
                    settings.worker_stalled_seconds,
                    settings.job_max_failures,
                )
            await app.job_manager.prune_stalled_workers(settings.worker_stalled_seconds)
            await asyncio.to_thread(recovery.forget_pruned_workers, ctx.engine)
        except Exception:
            logger.exception("stalled-job sweep failed")


async def run_worker(settings: Settings) -> None:
    device = resolve_device(settings.worker_device, "WORKER_DEVICE")
    engine = create_db_engine(settings)
    check_connection(engine)
    ctx = WorkerContext(settings, engine, device, Owner(host=settings.worker_host) if settings.worker_host else Owner())
    app = build_app(settings)
    registered: list[int] = []
    server = metrics.MetricsServer(str(settings.worker_metrics_address), settings.worker_metrics_port)
    if settings.worker_metrics_port:
        try:
            server.start(
                engine, device, ctx.owner.host, settings.release_id, lambda: registered[0] if registered else None
            )
        except OSError as exc:
            engine.dispose()
            raise ConfigError(
                f"cannot serve metrics on {settings.worker_metrics_address} port {settings.worker_metrics_port}"
                f" (WORKER_METRICS_ADDRESS, WORKER_METRICS_PORT): {exc.strerror or exc}"
            ) from None
    try:
        await _run(app, ctx, registered)
    finally:
        server.stop()
    if not ctx.draining.is_set():
        # procrastinate stops a worker whose listener or periodic deferrer failed (a database restart
        # cut their connections). Nobody asked for it: a failure, so that systemd starts it again.
        raise WorkerStoppedError("the worker stopped without being asked to (its database connection failed?)")
    logger.info("worker stopped")


async def _run(app: procrastinate.App, ctx: WorkerContext, registered: list[int]) -> None:
    settings, device, loop = ctx.settings, ctx.device, asyncio.get_running_loop()
    async with app.open_async():
        worker = Worker(
            app,
            queues=[queue.queue_name(device.type), retention.QUEUE],
            name=f"training-{device.type}",
            concurrency=settings.worker_concurrency,
            fetch_job_polling_interval=settings.worker_poll_seconds,
            abort_job_polling_interval=settings.worker_poll_seconds,
            update_heartbeat_interval=settings.worker_heartbeat_seconds,
            stalled_worker_timeout=settings.worker_stalled_seconds,
            install_signal_handlers=False,
            additional_context={CONTEXT_KEY: ctx},
        )

        def on_signal(signum: int) -> None:
            if not ctx.draining.is_set():
                logger.info(
                    "stopping: running trainings checkpoint at the end of their epoch", extra={"signal": signum}
                )
            ctx.draining.set()
            worker.stop()

        def handle_signals() -> None:
            # Only once the worker runs: Worker.run() forgets a stop() that came before it. A signal before
            # this point ends the process the default way, which is fine: it has taken no job yet.
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, on_signal, sig)

        stop = asyncio.Event()
        side = [
            asyncio.create_task(_register(ctx, worker, settings, handle_signals, registered), name="register"),
            asyncio.create_task(_sweep(app, ctx, settings, stop), name="sweep"),
        ]
        try:
            await worker.run()
        finally:
            stop.set()
            for task in side:
                task.cancel()
            # Bounded: a side task stuck in a call to a database that is away must not keep the process
            # from exiting (systemd then starts a new one).
            done, pending = await asyncio.wait(side, timeout=SHUTDOWN_STEP_SECONDS)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    logger.warning("%s ended with %r", task.get_name(), task.exception())
            for task in pending:
                logger.warning("%s did not stop within %s s; exiting anyway", task.get_name(), SHUTDOWN_STEP_SECONDS)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.to_thread(_unregister, ctx), SHUTDOWN_STEP_SECONDS)
            ctx.engine.dispose()


class WorkerStoppedError(RuntimeError):
    """The worker's run ended without a stop signal."""


def _unregister(ctx: WorkerContext) -> None:
    with contextlib.suppress(Exception), ctx.engine.begin() as conn:
        conn.execute(
            delete(TrainingWorker).where(TrainingWorker.pid == ctx.owner.pid, TrainingWorker.host == ctx.owner.host)
        )


def main() -> int:
    try:
        settings = load_settings()
    except ConfigError as exc:
        configure_logging("info")
        logger.critical("start-up failed: %s", exc)
        return 2
    configure_logging(settings.log_level)
    configure_threads(settings.torch_threads)
    try:
        asyncio.run(run_worker(settings))
    except ConfigError as exc:
        logger.critical("start-up failed: %s", exc)
        return 2
    except WorkerStoppedError as exc:
        logger.critical("%s: exiting 1, so that systemd starts it again (Restart=on-failure)", exc)
        return 1
    return 0
