"""The deploy's gate for a training worker: has this process registered, alive, with the release and device?

    python -m app.worker.check --host web1 --pid 4242 --release 20261202-abc --device cpu --timeout 60

Reads `training_workers` and procrastinate's heartbeats (the table `GET /api/workers` shows) with the same
settings as the worker (DATABASE_URL and the rest from the environment), every second until a worker row
matches all of --host, --pid (the unit's main process), --release and --device and is alive, or until
--timeout. Prints the matching row as JSON and exits 0; otherwise prints every worker it saw on stderr
and exits 1 (2 for bad settings). It needs no web server, so hosts that only train (the gpu group) are
gated the same way as web hosts.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence

from sqlalchemy.exc import SQLAlchemyError

from app.core.config import ConfigError, load_settings
from app.core.db import create_db_engine
from app.services import queue


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m app.worker.check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", required=True, help="WORKER_HOST the worker registers under")
    parser.add_argument("--pid", type=int, required=True, help="the worker's main process id")
    parser.add_argument("--release", required=True, help="the release the worker must run")
    parser.add_argument("--device", required=True, choices=["cpu", "cuda"], help="the device it must report")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait (default 60)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"worker check: bad settings: {exc}", file=sys.stderr)
        return 2
    engine = create_db_engine(settings)
    wanted = {"host": args.host, "pid": args.pid, "release_id": args.release, "device": args.device}
    deadline = time.monotonic() + args.timeout
    seen: list[dict[str, object]] = []
    last_error = ""
    try:
        while True:
            try:
                with engine.connect() as conn:
                    workers = queue.list_workers(conn, settings.worker_stalled_seconds)
                last_error = ""
            except SQLAlchemyError as exc:  # the database may be restarting: keep trying until the deadline
                workers, last_error = [], f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
            seen = [dataclasses.asdict(w) for w in workers]
            for row in seen:
                if row["alive"] and all(row[key] == value for key, value in wanted.items()):
                    print(json.dumps(row, default=str))
                    return 0
            if time.monotonic() >= deadline:
                break
            time.sleep(1.0)
    finally:
        engine.dispose()
    print(
        f"worker check: no live worker with {json.dumps(wanted)} within {args.timeout:g} s"
        + (f"; last database error: {last_error}" if last_error else "")
        + f"; workers seen: {json.dumps(seen, default=str)}",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
