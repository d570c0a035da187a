"""Retention: old sessions, unused models and empty owners go, so that a public playground's database
stays bounded. The workers run it daily as a procrastinate periodic task (RETENTION_CRON, queue
`maintenance`); on-call can run it by hand:

    python -m app.worker.retention [--dry-run]     # settings from the environment, like the worker

What goes, each rule off when its setting is 0:
* sessions finished more than RETENTION_SESSION_DAYS ago, with their metrics and checkpoints, except a
  session whose weights are still its model's current ones (those weights are the model);
* models unused (not created, trained or asked for a prediction) for RETENTION_MODEL_DAYS and with no
  queued or running training, with everything of theirs;
* owners created more than RETENTION_MODEL_DAYS ago that have no model and no session left (their
  token then stops working: the page gets a new one by itself); never the legacy owner;
* procrastinate's finished jobs older than RETENTION_SESSION_DAYS (the library's own delete_old_jobs).

Each rule deletes in batches of BATCH rows, one short transaction each, and skips rows another
transaction holds (a training starting on a model makes it used again). What was removed is logged,
with the ids, at INFO.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

from sqlalchemy import Connection, Engine, text

from app.core.config import ConfigError, Settings, load_settings
from app.core.db import create_db_engine
from app.core.logging import configure_logging

logger = logging.getLogger("app.worker.retention")

BATCH = 500
QUEUE = "maintenance"
TASK_NAME = "retention"

_OLD_SESSIONS = """
    SELECT s.id FROM training_sessions s
    WHERE s.status NOT IN ('queued', 'running')
      AND coalesce(s.finished_at, s.created_at) < now() - make_interval(days => :days)
      AND NOT EXISTS (SELECT 1 FROM model_weights w WHERE w.session_id = s.id)
    ORDER BY s.id LIMIT :batch FOR UPDATE OF s SKIP LOCKED
"""
_UNUSED_MODELS = """
    SELECT m.id FROM models m
    WHERE m.last_used_at < now() - make_interval(days => :days)
      AND NOT EXISTS (SELECT 1 FROM training_sessions s WHERE s.model_id = m.id AND s.status IN ('queued', 'running'))
    ORDER BY m.id LIMIT :batch FOR UPDATE OF m SKIP LOCKED
"""
_EMPTY_OWNERS = """
    SELECT o.id FROM owners o
    WHERE o.token_hash IS NOT NULL AND o.created_at < now() - make_interval(days => :days)
      AND NOT EXISTS (SELECT 1 FROM models m WHERE m.owner_id = o.id)
      AND NOT EXISTS (SELECT 1 FROM training_sessions s WHERE s.owner_id = o.id)
    ORDER BY o.id LIMIT :batch FOR UPDATE OF o SKIP LOCKED
"""
# Rows that go with a session (ON DELETE CASCADE), counted for the log before they go.
_SESSION_ROWS = """
    SELECT (SELECT count(*) FROM epoch_metrics WHERE session_id = ANY(:ids)) AS metrics,
           (SELECT count(*) FROM training_checkpoints WHERE session_id = ANY(:ids)) AS checkpoints
"""
_MODEL_ROWS = """
    SELECT (SELECT count(*) FROM training_sessions WHERE model_id = ANY(:ids)) AS sessions,
           (SELECT count(*) FROM epoch_metrics e JOIN training_sessions s ON s.id = e.session_id
            WHERE s.model_id = ANY(:ids)) AS metrics
"""


@dataclass
class RetentionReport:
    sessions: list[int] = field(default_factory=list)
    metrics: int = 0
    checkpoints: int = 0
    models: list[int] = field(default_factory=list)
    model_sessions: int = 0
    model_metrics: int = 0
    owners: list[int] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{len(self.sessions)} sessions ({self.metrics} metric rows, {self.checkpoints} checkpoints), "
            f"{len(self.models)} models ({self.model_sessions} sessions, {self.model_metrics} metric rows), "
            f"{len(self.owners)} owners"
        )


def _batches(
    engine: Engine, select_sql: str, table: str, days: int, dry_run: bool, count_sql: str | None
) -> Iterator[tuple[list[int], dict[str, int]]]:
    """Yield (ids, counts) per batch; deletes each batch unless dry_run (then one batch: nothing changes)."""
    while True:
        with engine.begin() as conn:
            ids = list(conn.execute(text(select_sql), {"days": days, "batch": BATCH}).scalars())
            if not ids:
                return
            counts = dict(conn.execute(text(count_sql), {"ids": ids}).mappings().one()) if count_sql else {}
            if not dry_run:
                _delete(conn, table, ids)
        yield ids, counts
        if dry_run or len(ids) < BATCH:
            return


def _delete(conn: Connection, table: str, ids: list[int]) -> None:
    conn.execute(text(f"DELETE FROM {table} WHERE id = ANY(:ids)"), {"ids": ids})  # noqa: S608 - fixed names


def run_retention(engine: Engine, settings: Settings, *, dry_run: bool = False) -> RetentionReport:
    """Apply the rules above; returns (and logs) what was removed (with dry_run: the first batch that would be)."""
    report = RetentionReport()
    if settings.retention_session_days > 0:
        days = settings.retention_session_days
        for ids, counts in _batches(engine, _OLD_SESSIONS, "training_sessions", days, dry_run, _SESSION_ROWS):
            report.sessions += ids
            report.metrics += counts["metrics"]
            report.checkpoints += counts["checkpoints"]
    if settings.retention_model_days > 0:
        days = settings.retention_model_days
        for ids, counts in _batches(engine, _UNUSED_MODELS, "models", days, dry_run, _MODEL_ROWS):
            report.models += ids
            report.model_sessions += counts["sessions"]
            report.model_metrics += counts["metrics"]
        for ids, _ in _batches(engine, _EMPTY_OWNERS, "owners", days, dry_run, None):
            report.owners += ids
    verb = "would remove" if dry_run else "removed"
    logger.info(
        "retention %s %s",
        verb,
        report.summary(),
        extra={"dry_run": dry_run, **{k: v for k, v in asdict(report).items() if isinstance(v, list)}},
    )
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.worker.retention", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="count what would go (first batch of each rule)")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        configure_logging("info")
        logger.critical("%s", exc)
        return 2
    configure_logging(settings.log_level)
    engine = create_db_engine(settings)
    try:
        report = run_retention(engine, settings, dry_run=args.dry_run)
    finally:
        engine.dispose()
    print(("would remove " if args.dry_run else "removed ") + report.summary(), file=sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
