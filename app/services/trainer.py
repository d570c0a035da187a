"""Runs training sessions in a bounded thread pool and persists their progress.

The live torch objects stay in this process; status, per-epoch metrics and final weights go to the
database as they happen, so any host can report on a session or serve the trained model.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch
from sqlalchemy import Engine, func, insert, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from app.core.config import Settings
from app.ml.datasets import generate
from app.ml.network import build_network, layer_specs, state_dict_to_bytes
from app.ml.training import EpochResult, TrainingDivergedError, TrainingParams, train
from app.models import ACTIVE_STATUSES, EpochMetric, ModelWeights, NetworkModel, SessionStatus, TrainingSession
from app.services import sessions
from app.services.errors import BusyError, ConflictError, NotFoundError
from app.services.ownership import Owner

logger = logging.getLogger(__name__)

# Metrics are written at most this often (and after the last epoch): fast epochs would otherwise
# cost one transaction each. The stop flag is read back with the same round trip.
FLUSH_INTERVAL_SECONDS = 0.25
STOP_POLL_SECONDS = 1.0


@dataclass
class _Run:
    session_id: int
    stop: threading.Event = field(default_factory=threading.Event)


class TrainingManager:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        session_factory: sessionmaker[Session],
        device: torch.device,
        owner: Owner,
    ) -> None:
        self._settings = settings
        self._engine = engine
        self._session_factory = session_factory
        self.device = device
        self.owner = owner
        self._executor = ThreadPoolExecutor(settings.training_workers, thread_name_prefix="trainer")
        self._runs: dict[int, _Run] = {}
        self._reserved = 0
        self._lock = threading.Lock()
        self._closing = False
        self._heartbeat_stop = threading.Event()
        self._heartbeat = threading.Thread(target=self._heartbeat_loop, name="session-heartbeat", daemon=True)

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Recover sessions orphaned by earlier processes, then start heartbeating."""
        try:
            recovered = sessions.recover_local_sessions(self._engine, self.owner)
            recovered += sessions.sweep_stale_sessions(self._engine, self.owner, self._settings.session_stale_seconds)
        except Exception as exc:  # e.g. schema not migrated yet: /readyz reports that, start anyway
            logger.warning("session recovery skipped: %s", exc.__class__.__name__)
        else:
            if recovered:
                logger.info("marked orphaned sessions interrupted", extra={"session_ids": recovered})
        self._heartbeat.start()

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop every run of this process, wait for the workers, and mark what is left interrupted."""
        with self._lock:
            self._closing = True
            runs = list(self._runs.values())
        for run in runs:
            run.stop.set()
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._heartbeat_stop.set()
        self._heartbeat.join(timeout)
        try:
            leftover = sessions.interrupt_own_sessions(self._engine, self.owner)
        except Exception:
            logger.exception("could not mark sessions interrupted at shutdown")
        else:
            if leftover:
                logger.info("marked queued sessions interrupted at shutdown", extra={"session_ids": leftover})

    @property
    def active_count(self) -> int:
        with self._lock:
            return len(self._runs) + self._reserved

    # -- API entry points ------------------------------------------------------------------------

    def start_session(self, db: Session, model_id: int, params: TrainingParams) -> TrainingSession:
        """Create a queued session and hand it to the pool. Raises BusyError when at capacity."""
        self._reserve()
        submitted = False
        try:
            if db.get(NetworkModel, model_id) is None:
                raise NotFoundError(f"model {model_id} not found")
            # Do not let a session of a dead host block this model until the heartbeat sweep runs.
            sessions.sweep_stale_sessions(self._engine, self.owner, self._settings.session_stale_seconds)
            row = TrainingSession(
                model_id=model_id,
                status=SessionStatus.QUEUED.value,
                epochs=params.epochs,
                learning_rate=params.learning_rate,
                batch_size=params.batch_size,
                optimizer=params.optimizer,
                seed=params.seed,
                device=self.device.type,
                owner_host=self.owner.host,
                owner_pid=self.owner.pid,
                owner_instance=self.owner.instance,
            )
            db.add(row)
            try:
                db.commit()
            except IntegrityError:
                db.rollback()
                if db.get(NetworkModel, model_id) is None:
                    raise NotFoundError(f"model {model_id} not found") from None
                raise ConflictError(
                    f"model {model_id} already has a queued or running training session; stop it first"
                ) from None
            db.refresh(row)
            submitted = True  # from here on _submit owns the reservation
            self._submit(row.id)
            return row
        finally:
            if not submitted:
                self._release()

    def stop_local(self, session_id: int) -> None:
        """Make a run of this process stop now instead of at its next metrics flush."""
        with self._lock:
            run = self._runs.get(session_id)
        if run is not None:
            run.stop.set()

    # -- internals -------------------------------------------------------------------------------

    def _reserve(self) -> None:
        with self._lock:
            if self._closing:
                raise BusyError("the server is shutting down; retry on another instance")
            if len(self._runs) + self._reserved >= self._settings.max_concurrent_trainings:
                raise BusyError(
                    f"too many trainings on this server (limit {self._settings.max_concurrent_trainings}); "
                    "retry when one finishes"
                )
            self._reserved += 1

    def _release(self) -> None:
        with self._lock:
            self._reserved -= 1

    def _submit(self, session_id: int) -> None:
        run = _Run(session_id)
        with self._lock:
            self._reserved -= 1
            if not self._closing:
                self._runs[session_id] = run
                self._executor.submit(self._run, run)
                return
        # Shutdown began while the session row was being written: it will never run here.
        sessions.interrupt(self._engine, [session_id], sessions.INTERRUPTED_SHUTDOWN)
        raise BusyError("the server is shutting down; retry on another instance")

    def _run(self, run: _Run) -> None:
        try:
            self._execute(run)
        except Exception as exc:
            logger.exception("training session failed", extra={"session_id": run.session_id})
            self._finish_failed(run.session_id, f"internal error: {exc.__class__.__name__}")
        finally:
            with self._lock:
                self._runs.pop(run.session_id, None)

    def _execute(self, run: _Run) -> None:
        with self._session_factory() as db:
            claimed = db.execute(
                update(TrainingSession)
                .where(TrainingSession.id == run.session_id, TrainingSession.status == SessionStatus.QUEUED)
                .values(status=SessionStatus.RUNNING.value, started_at=func.now(), heartbeat_at=func.now())
                .returning(TrainingSession)
            ).scalar_one_or_none()
            db.commit()
            if claimed is None:  # stopped (or declared dead) while it waited in the queue
                return
            model = db.get_one(NetworkModel, claimed.model_id)
        params = TrainingParams(
            epochs=claimed.epochs,
            learning_rate=claimed.learning_rate,
            batch_size=claimed.batch_size,
            optimizer=claimed.optimizer,
            seed=claimed.seed,
        )
        data = generate(model.dataset, **model.dataset_params)
        net = build_network(model.input_dim, model.output_dim, layer_specs(model.layers), seed=params.seed)
        logger.info(
            "training started",
            extra={"session_id": run.session_id, "model_id": model.id, "device": self.device.type},
        )
        progress = _Progress(self._engine, run)
        try:
            done = train(net, data, params, self.device, progress.on_epoch, progress.should_stop)
        except TrainingDivergedError as exc:
            progress.flush()
            self._finish_failed(run.session_id, str(exc))
            return
        progress.flush()
        if done == params.epochs:
            status = SessionStatus.COMPLETED
        elif self._closing:
            status = SessionStatus.INTERRUPTED
        else:
            status = SessionStatus.STOPPED
        self._finish(run.session_id, model.id, status, net if done > 0 else None)
        logger.info(
            "training finished",
            extra={"session_id": run.session_id, "status": status.value, "epochs_done": done, "loss": progress.loss},
        )

    def _finish(self, session_id: int, model_id: int, status: SessionStatus, net: torch.nn.Module | None) -> None:
        error = sessions.INTERRUPTED_SHUTDOWN if status == SessionStatus.INTERRUPTED else None
        with self._engine.begin() as conn:
            updated = conn.execute(
                update(TrainingSession)
                .where(TrainingSession.id == session_id, TrainingSession.status == SessionStatus.RUNNING)
                .values(status=status.value, finished_at=func.now(), error=error)
                .returning(TrainingSession.id)
            ).first()
            if updated is None:  # another process declared it dead meanwhile: keep its verdict
                logger.warning("session no longer running; result discarded", extra={"session_id": session_id})
                return
            if net is not None:
                stmt = pg_insert(ModelWeights).values(
                    model_id=model_id, session_id=session_id, data=state_dict_to_bytes(net)
                )
                conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=[ModelWeights.model_id],
                        set_={
                            "session_id": stmt.excluded.session_id,
                            "data": stmt.excluded.data,
                            "created_at": func.now(),
                        },
                    )
                )

    def _finish_failed(self, session_id: int, message: str) -> None:
        try:
            with self._engine.begin() as conn:
                conn.execute(
                    update(TrainingSession)
                    .where(TrainingSession.id == session_id, TrainingSession.status.in_(ACTIVE_STATUSES))
                    .values(status=SessionStatus.FAILED.value, finished_at=func.now(), error=message[:1000])
                )
        except Exception:
            logger.exception("could not record failure", extra={"session_id": session_id})

    def _heartbeat_loop(self) -> None:
        interval = self._settings.session_heartbeat_seconds
        while not self._heartbeat_stop.wait(interval):
            try:
                sessions.heartbeat(self._engine, self.owner)
                stale = sessions.sweep_stale_sessions(self._engine, self.owner, self._settings.session_stale_seconds)
                if stale:
                    logger.info("marked stale sessions interrupted", extra={"session_ids": stale})
            except Exception as exc:
                logger.warning("session heartbeat failed: %s", exc.__class__.__name__)


class _Progress:
    """Buffers per-epoch metrics and writes them in small batches; reads the stop flag back.

    Between flushes (e.g. during one long epoch) the stop flag is still polled every
    STOP_POLL_SECONDS, so a stop sent to another host takes effect promptly.
    """

    def __init__(self, engine: Engine, run: _Run) -> None:
        self._engine = engine
        self._run = run
        self._pending: list[EpochResult] = []
        self._last_sync = time.monotonic()
        self.loss: float | None = None

    def on_epoch(self, result: EpochResult) -> bool:
        self._pending.append(result)
        self.loss = result.loss
        if time.monotonic() - self._last_sync >= FLUSH_INTERVAL_SECONDS:
            return self.flush()
        return not self._run.stop.is_set()

    def should_stop(self) -> bool:
        if not self._run.stop.is_set() and time.monotonic() - self._last_sync >= STOP_POLL_SECONDS:
            self.flush()
        return self._run.stop.is_set()

    def flush(self) -> bool:
        """Persist pending metrics and the heartbeat; return False when the session should stop."""
        self._last_sync = time.monotonic()
        pending, self._pending = self._pending, []
        with self._engine.begin() as conn:
            if pending:
                conn.execute(
                    insert(EpochMetric),
                    [
                        {"session_id": self._run.session_id, "epoch": r.epoch, "loss": r.loss, "accuracy": r.accuracy}
                        for r in pending
                    ],
                )
            values: dict[str, object] = {"heartbeat_at": func.now()}
            if pending:
                last = pending[-1]
                values |= {"current_epoch": last.epoch, "loss": last.loss, "accuracy": last.accuracy}
            stop_requested = conn.execute(
                update(TrainingSession)
                .where(TrainingSession.id == self._run.session_id)
                .values(values)
                .returning(TrainingSession.stop_requested)
            ).scalar_one_or_none()
        if stop_requested or stop_requested is None:  # None: the session row is gone (model deleted)
            self._run.stop.set()
        return not self._run.stop.is_set()
