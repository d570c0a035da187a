"""GPU check: train xor on a real worker on `--device` (cuda by default), interrupt it twice, let it resume.

    scripts/gpu-check.sh [--python PYTHON] [--device cuda|cpu] [--output FILE]

Starts a throwaway PostgreSQL (the distribution's binaries), migrates it, runs `uvicorn app.main:app`
and `python -m app.worker` processes (WORKER_DEVICE=<device>, TORCH_THREADS=1, the short test timings
of tests/app/workerproc.py), and through the HTTP API:

1. trains xor once without interruption on the device (after a 2-epoch warm-up in the same worker),
   and with `--device cuda` the same training on a CPU worker for the timing comparison;
2. trains it again, SIGTERMs the worker once it has a checkpoint (the run checkpoints at the end of
   its epoch and goes back to the queue; a standby worker resumes it), then SIGKILLs the worker of the
   resumed run (its job comes back once its heartbeat is WORKER_STALLED_SECONDS old, from the last
   periodic checkpoint);
3. checks: the workers registered on the device, the sessions ran there, both trainings completed with
   accuracy >= 0.95, the interrupted one with attempts >= 2 and one metrics row per epoch, the
   handovers were quick, and its final weights equal the uninterrupted run's. Bit identity is
   required on CPU; on CUDA the maximum absolute difference is reported and not required.

Prints a report and writes it as JSON (artifacts/gpu-check.json). Exit 0 only when every required
check passed; 1 when one failed; 2 when CUDA is not available for `--device cuda` (checked first,
before PostgreSQL is started).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
# The throwaway PostgreSQL, uvicorn and worker helpers are shared with the test suite and the benchmarks.
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "tests" / "app")]

# torch warns at import when numpy is missing; nothing here needs numpy.
warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

import httpx  # noqa: E402
import psycopg  # noqa: E402
import torch  # noqa: E402
from alembic.config import Config  # noqa: E402
from appserver import AppServer  # noqa: E402
from pgcluster import PgCluster, free_port  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from workerproc import FAST_WORKER_ENV, WorkerProcess  # noqa: E402

from alembic import command  # noqa: E402

DEFAULT_OUTPUT = REPO_ROOT / "artifacts" / "gpu-check.json"
MIN_ACCURACY = 0.95
# Generous bounds: with the test timings a SIGTERM hands over within a poll (0.3 s) and a SIGKILL
# within WORKER_STALLED_SECONDS (2) + a sweep (0.5) + a poll.
MAX_SIGTERM_HANDOVER_S = 10.0
MAX_SIGKILL_HANDOVER_S = 20.0

# About 2 s of one idle CPU core (4 ms an epoch); ends at 0.99-1.0 accuracy (>= 0.95 from about epoch 20
# on). Long enough for the interrupted run to be caught twice on a fast machine: with 100 epochs, a quiet
# CPU finished the resumed run before its second interruption (0.4 s a training).
XOR_MODEL: dict[str, Any] = {
    "dataset": "xor",
    "dataset_params": {"n_samples": 200, "noise": 0.05, "seed": 0},
    "layers": [{"width": 16, "activation": "tanh"}, {"width": 16, "activation": "tanh"}],
}
XOR_TRAINING: dict[str, Any] = {
    "epochs": 500,
    "learning_rate": 0.01,
    "batch_size": 32,
    "optimizer": "adam",
    "seed": 3,
    # Frequent checkpoints, so that the run can be interrupted early and resumes close to where it stopped.
    "checkpoint_interval_seconds": 0.2,
}


class Stopwatch:
    """Seconds spent in each phase of the check, for the report."""

    def __init__(self) -> None:
        self.started = self.last = time.monotonic()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.monotonic()
        self.laps[name] = round(now - self.last, 2)
        self.last = now

    def total(self) -> float:
        return time.monotonic() - self.started


class CheckError(RuntimeError):
    """A step that could not go on (a timeout, a session that ended the wrong way)."""


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    required: bool = True


def cuda_unavailable_message() -> str:
    build = torch.version.cuda or "none (a CPU build)"
    return (
        f"gpu-check: CUDA is not available to {sys.executable} (torch {torch.__version__}, CUDA build: {build}).\n"
        "  Run it on a host with an NVIDIA GPU and its driver, with a Python whose torch is a CUDA build\n"
        "  (scripts/gpu-check.sh --python /path/to/venv/bin/python), or check the CPU path with --device cpu."
    )


def environment(device: str) -> dict[str, Any]:
    env: dict[str, Any] = {
        "python": sys.executable,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
    }
    if device == "cuda":
        env["device_name"] = torch.cuda.get_device_name(0)
        env["device_count"] = torch.cuda.device_count()
    else:
        env["device_name"] = f"CPU ({os.cpu_count()} cores, TORCH_THREADS=1)"
    return env


def seconds_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, step: float = 0.02) -> float:
    """Seconds until predicate() was true; CheckError after `timeout`."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise CheckError(f"{what}: not within {timeout:.0f} s")
        time.sleep(step)
    return time.monotonic() - start


class GpuCheck:
    def __init__(self, device: str, database_url: str, server: AppServer, watch: Stopwatch) -> None:
        self.device = device
        self.url = database_url
        self.server = server
        self.watch = watch
        self.http = server.client(owner=False)  # the server is not up yet: the token comes once it is
        self.db = psycopg.connect(database_url, autocommit=True)
        self.workers: list[WorkerProcess] = []
        self.checks: list[Check] = []
        self.results: dict[str, Any] = {}

    # -- plumbing ----------------------------------------------------------------------------------

    def check(self, name: str, ok: bool, detail: str, required: bool = True) -> None:
        self.checks.append(Check(name, bool(ok), detail, required))

    def spawn(self, device: str, **env: str) -> WorkerProcess:
        worker = WorkerProcess(self.url, WORKER_DEVICE=device, RELEASE_ID="gpu-check", **env)
        self.workers.append(worker)
        return worker.start(wait=False)

    def row(self, sql: str, *params: Any) -> tuple[Any, ...] | None:
        result = self.db.execute(sql, params).fetchone()  # type: ignore[arg-type]
        return tuple(result) if result is not None else None

    def session_row(self, session_id: int) -> tuple[str, int, int]:
        row = self.row("SELECT status, attempts, current_epoch FROM training_sessions WHERE id = %s", session_id)
        assert row is not None
        return str(row[0]), int(row[1]), int(row[2])

    def checkpoint_epoch(self, session_id: int) -> int:
        row = self.row("SELECT epoch FROM training_checkpoints WHERE session_id = %s", session_id)
        return int(row[0]) if row else 0

    def api(self, method: str, path: str, expect: int = 200, **kwargs: Any) -> dict[str, Any]:
        response = self.http.request(method, path, **kwargs)
        if response.status_code != expect:
            raise CheckError(f"{method} {path}: {response.status_code} {response.text[:500]}")
        return dict(response.json())

    def create_model(self, name: str) -> int:
        return int(self.api("POST", "/api/models", 201, json={"name": name, **XOR_MODEL})["id"])

    def start_session(self, model_id: int, device: str, **overrides: Any) -> int:
        body = {**XOR_TRAINING, "device": device, **overrides}
        return int(self.api("POST", f"/api/models/{model_id}/sessions", 202, json=body)["id"])

    def session(self, session_id: int) -> dict[str, Any]:
        return self.api("GET", f"/api/sessions/{session_id}")

    def wait_finished(self, session_id: int, timeout: float = 300) -> dict[str, Any]:
        wait_until(lambda: self.session_row(session_id)[0] not in ("queued", "running"), timeout, "training finished")
        # The worker is idle again (for the next session) only once procrastinate has recorded the job's end.
        sql = "SELECT j.status FROM procrastinate_jobs j JOIN training_sessions s ON s.job_id = j.id WHERE s.id = %s"
        wait_until(lambda: (self.row(sql, session_id) or ("",))[0] != "doing", 30, "job ended")
        session = self.session(session_id)
        if session["status"] != "completed":
            raise CheckError(f"session {session_id} ended {session['status']}: {session.get('error')}")
        return session

    def weights(self, model_id: int) -> dict[str, torch.Tensor]:
        row = self.row("SELECT data FROM model_weights WHERE model_id = %s", model_id)
        if row is None:
            raise CheckError(f"model {model_id} has no weights")
        return torch.load(io.BytesIO(row[0]), weights_only=True)  # type: ignore[no-any-return]

    def worker_of(self, session_id: int) -> WorkerProcess:
        row = self.row("SELECT owner_pid FROM training_sessions WHERE id = %s", session_id)
        for worker in self.workers:
            if row is not None and worker.proc is not None and worker.pid == row[0]:
                return worker
        raise CheckError(f"session {session_id} is run by no worker of this check (pid {row})")

    def checkpoints_written(self, session_id: int) -> int:
        return sum(
            1
            for worker in self.workers
            for record in worker.log_records()
            if record.get("msg") == "checkpoint written" and record.get("session_id") == session_id
        )

    def close(self) -> None:
        for worker in self.workers:
            worker.close()
        self.http.close()
        self.db.close()

    # -- steps -------------------------------------------------------------------------------------

    def timed_training(self, device: str) -> tuple[dict[str, Any], int]:
        """A 2-epoch warm-up (CUDA context, cuBLAS, allocator), then the training; its session and model id."""
        warm_up = self.create_model(f"warm-up-{device}")
        self.wait_finished(self.start_session(warm_up, device, epochs=2))
        model_id = self.create_model(f"xor-{device}")
        session = self.wait_finished(self.start_session(model_id, device))
        train_s = seconds_between(session["started_at"], session["finished_at"])
        self.results[f"{device}_training"] = {
            "session_id": session["id"],
            "train_s": round(train_s, 3),
            "ms_per_epoch": round(train_s / session["epochs"] * 1000, 2),
            "accuracy": session["accuracy"],
            "attempts": session["attempts"],
        }
        self.check(
            f"{device}: uninterrupted training completed, accuracy >= {MIN_ACCURACY}",
            session["attempts"] == 1 and session["device"] == device and session["accuracy"] >= MIN_ACCURACY,
            f"accuracy {session['accuracy']:.4f} in {train_s:.2f} s, attempts {session['attempts']},"
            f" device {session['device']}",
        )
        return session, model_id

    def worker_metrics(self, port: int) -> None:
        """The first worker's Prometheus metrics (app.worker.metrics): what it is, its two trainings, and on
        CUDA the device's memory as torch sees it."""
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        samples = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

        def value(name: str, **labels: str) -> float | None:
            return samples.get((name, tuple(sorted(labels.items()))))

        info = [labels for (name, labels), v in samples.items() if name == "nnp_worker_info" and v == 1]
        completed = value("nnp_worker_jobs_total", result="completed")
        memory = {kind: value("nnp_worker_gpu_memory_bytes", kind=kind) for kind in ("allocated", "reserved", "total")}
        self.results["worker_metrics"] = {"info": [dict(x) for x in info], "completed": completed, "gpu_memory": memory}
        self.check(
            f"worker metrics name the {self.device} worker and count its 2 trainings",
            len(info) == 1 and dict(info[0])["device"] == self.device and completed == 2,
            f"nnp_worker_info {[dict(x) for x in info]}, completed {completed}",
        )
        if self.device == "cuda":
            total = memory["total"] or 0
            self.check(
                "worker metrics report the GPU's memory",
                total > 0 and memory["allocated"] is not None and memory["reserved"] is not None,
                ", ".join(f"{kind} {(v or 0) / 2**20:.1f} MiB" for kind, v in memory.items()),
            )
        else:
            self.check("a CPU worker reports no GPU memory", all(v is None for v in memory.values()), f"{memory}")

    def checkpointed_past(self, session_id: int, epoch: int) -> bool:
        status, _, current = self.session_row(session_id)
        if status not in ("queued", "running"):
            raise CheckError(f"the training ended ({status}, epoch {current}) before it could be interrupted")
        return self.checkpoint_epoch(session_id) > epoch

    def interrupted_training(self) -> tuple[dict[str, Any], int]:
        """The same training, SIGTERMed once and SIGKILLed once; each time a standby worker resumes it.

        Three idle workers are registered before it starts: whichever claims it, two are left to resume it.
        """
        model_id = self.create_model(f"xor-{self.device}-resumed")
        session_id = self.start_session(model_id, self.device)
        resumed_from: list[int] = []
        handovers: dict[str, float] = {}
        # A SIGTERMed worker exits only after its run was handed back (seconds later): not waited for here.
        interrupted: list[tuple[str, WorkerProcess]] = []
        for attempt, signame in enumerate(("SIGTERM", "SIGKILL"), start=1):
            floor = max(resumed_from, default=0)
            # Interrupt only once this run has checkpointed past its own start, so that it resumes later on.
            wait_until(lambda f=floor: self.checkpointed_past(session_id, f), 60, f"checkpoint before {signame}")
            status, attempts, epoch = self.session_row(session_id)
            if (status, attempts) != ("running", attempt):
                raise CheckError(f"before {signame}: session {status} at epoch {epoch}, attempts {attempts}")
            current = self.worker_of(session_id)
            assert current.proc is not None
            sent = time.monotonic()
            current.proc.send_signal(signal.SIGTERM if signame == "SIGTERM" else signal.SIGKILL)
            # Claiming a session sets it running and counts the attempt in one update.
            wait_until(lambda a=attempt: self.session_row(session_id)[1] == a + 1, 120, f"resumed after {signame}")
            handovers[signame] = time.monotonic() - sent
            interrupted.append((signame, current))
            resumed_from.append(int(self.session(session_id)["resumed_from_epoch"] or 0))
        session = self.wait_finished(session_id)
        exits = {}
        for signame, worker in interrupted:
            assert worker.proc is not None
            exits[signame] = worker.proc.wait(60)
        metrics = self.api("GET", f"/api/sessions/{session_id}/metrics")["items"]
        epochs = [item["epoch"] for item in metrics]
        checkpoints = self.checkpoints_written(session_id)
        self.results["interrupted_training"] = {
            "session_id": session_id,
            "attempts": session["attempts"],
            "resumed_from_epochs": resumed_from,
            "checkpoints_written": checkpoints,
            "handover_sigterm_s": round(handovers["SIGTERM"], 3),
            "handover_sigkill_s": round(handovers["SIGKILL"], 3),
            "accuracy": session["accuracy"],
            "metrics_rows": len(epochs),
        }
        self.check(
            "resumed training completed with attempts >= 2 on the device",
            session["attempts"] >= 2 and session["device"] == self.device,
            f"attempts {session['attempts']}, resumed from epochs {resumed_from}, device {session['device']}",
        )
        self.check(
            "resumed from a checkpoint after each interrupt",
            len(resumed_from) == 2 and 0 < resumed_from[0] < resumed_from[1] and checkpoints >= 2,
            f"resumed from epochs {resumed_from}, {checkpoints} checkpoints written",
        )
        self.check(
            "one metrics row per epoch, no gaps",
            epochs == list(range(1, XOR_TRAINING["epochs"] + 1)),
            f"{len(epochs)} rows for {XOR_TRAINING['epochs']} epochs"
            + ("" if len(set(epochs)) == len(epochs) else " (duplicates)"),
        )
        last = metrics[-1]["accuracy"] if metrics else None
        self.check(
            f"resumed training accuracy >= {MIN_ACCURACY}",
            session["accuracy"] is not None and session["accuracy"] >= MIN_ACCURACY and last == session["accuracy"],
            f"final accuracy {session['accuracy']}, last metrics row {last}",
        )
        self.check(
            "the SIGTERMed worker exited 0",
            exits["SIGTERM"] == 0,
            f"exit codes {exits} (a SIGKILLed process reports -{int(signal.SIGKILL)})",
        )
        self.check(
            f"SIGTERM handover < {MAX_SIGTERM_HANDOVER_S:.0f} s",
            handovers["SIGTERM"] < MAX_SIGTERM_HANDOVER_S,
            f"{handovers['SIGTERM']:.2f} s from the signal to the session running on the standby",
        )
        self.check(
            f"SIGKILL handover < {MAX_SIGKILL_HANDOVER_S:.0f} s",
            handovers["SIGKILL"] < MAX_SIGKILL_HANDOVER_S,
            f"{handovers['SIGKILL']:.2f} s (WORKER_STALLED_SECONDS 2 + a sweep + a poll)",
        )
        return session, model_id

    def compare_weights(self, reference_model: int, resumed_model: int) -> None:
        reference, resumed = self.weights(reference_model), self.weights(resumed_model)
        if reference.keys() != resumed.keys():
            raise CheckError(f"different weights: {sorted(reference)} and {sorted(resumed)}")
        diff = max(float((reference[k] - resumed[k]).abs().max()) for k in reference)
        identical = all(torch.equal(reference[k], resumed[k]) for k in reference)
        self.results["weights"] = {"bit_identical": identical, "max_abs_diff": diff}
        # On CUDA some kernels are not deterministic run to run: the difference is reported, not required.
        self.check(
            "resumed weights equal the uninterrupted run's",
            identical,
            f"max abs difference {diff:.3g}" + ("" if self.device == "cpu" else " (informational on cuda)"),
            required=self.device == "cpu",
        )

    def run(self) -> None:
        metrics_port = free_port()
        first = self.spawn(self.device, WORKER_METRICS_PORT=str(metrics_port))
        comparison = self.spawn("cpu") if self.device == "cuda" else None
        self.server.wait_ready(120)
        self.http.headers.update(self.server.owner_header())
        for worker in (first, comparison):
            if worker is not None:
                worker.wait_registered(120)
        self.watch.lap("app server and first workers started")
        listed = self.api("GET", "/api/workers")["items"]
        devices = sorted({w["device"] for w in listed if w["pid"] == first.pid})
        self.check(f"worker registered with device {self.device}", devices == [self.device], f"devices {devices}")
        # Alone on its queue: the warm-up and the timed run land on the same worker.
        _, reference_model = self.timed_training(self.device)
        self.watch.lap(f"warm-up and training on {self.device}")
        self.worker_metrics(metrics_port)
        # The standbys start only now (while the CPU comparison, if any, trains on its own queue).
        standbys = [self.spawn(self.device), self.spawn(self.device)]
        if comparison is not None:
            self.timed_training("cpu")
            device_s = self.results[f"{self.device}_training"]["train_s"]
            cpu_s = self.results["cpu_training"]["train_s"]
            self.results["cpu_over_device"] = round(cpu_s / device_s, 2) if device_s else None
            self.watch.lap("warm-up and training on cpu")
        for worker in standbys:
            worker.wait_registered(120)
        self.watch.lap("standby workers started")
        _, resumed_model = self.interrupted_training()
        self.watch.lap("interrupted training")
        self.compare_weights(reference_model, resumed_model)

    def log_tails(self) -> Iterator[str]:
        for worker in self.workers:
            with contextlib.suppress(OSError):
                pid = worker.pid if worker.proc is not None else None
                yield f"--- worker {worker.env['WORKER_DEVICE']} pid {pid}\n{worker.log_text()[-2000:]}"


def print_report(report: dict[str, Any]) -> None:
    env, device = report["environment"], report["device"]
    print(f"\ngpu-check on {device}: {env['device_name']}")
    print(f"  torch {env['torch']}, CUDA build {env['torch_cuda'] or 'none'}, python {env['python']}")
    layers = " ".join(f"{layer['width']}{layer['activation']}" for layer in XOR_MODEL["layers"])
    t = XOR_TRAINING
    print(
        f"  training: xor {XOR_MODEL['dataset_params']}, layers {layers}, {t['epochs']} epochs, batch"
        f" {t['batch_size']}, {t['optimizer']} lr {t['learning_rate']}, seed {t['seed']}"
    )
    results = report["results"]
    for name in (f"{device}_training", "cpu_training") if device == "cuda" else ("cpu_training",):
        if name in results:
            r = results[name]
            print(
                f"  train on {name.split('_')[0]:<4} {r['train_s']:7.2f} s  ({r['ms_per_epoch']} ms/epoch,"
                f" accuracy {r['accuracy']:.4f})"
            )
    if results.get("cpu_over_device") is not None:
        ratio = results["cpu_over_device"]
        print(
            f"  cpu time / {device} time: {ratio} (above 1: {device} is faster; a network this small is launch-bound)"
        )
    if "interrupted_training" in results:
        r = results["interrupted_training"]
        print(
            f"  interrupted run: attempts {r['attempts']}, resumed from epochs {r['resumed_from_epochs']},"
            f" {r['checkpoints_written']} checkpoints written"
        )
        term, kill = r["handover_sigterm_s"], r["handover_sigkill_s"]
        print(f"  handover to the standby worker after SIGTERM {term:.2f} s, after SIGKILL {kill:.2f} s")
    if "weights" in results:
        w = results["weights"]
        same, diff = w["bit_identical"], w["max_abs_diff"]
        print(f"  final weights vs the uninterrupted run: bit-identical {same}, max abs diff {diff:.3g}")
    print("  checks:")
    for check in report["checks"]:
        mark = "PASS" if check["ok"] else ("FAIL" if check["required"] else "INFO")
        print(f"    {mark}  {check['name']}: {check['detail']}")
    if report.get("error"):
        print(f"  error: {report['error']}")
    print("  phases: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in report["phases_s"].items()))
    print(f"  {report['result'].upper()} in {report['total_s']:.1f} s; written: {report['output']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="the workers' WORKER_DEVICE")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="the JSON report")
    args = parser.parse_args(argv)
    watch = Stopwatch()
    if args.device == "cuda" and not torch.cuda.is_available():
        print(cuda_unavailable_message(), file=sys.stderr)
        return 2

    cluster = PgCluster()
    server: AppServer | None = None
    check: GpuCheck | None = None
    error: str | None = None
    try:
        cluster.start()
        url = cluster.create_database("gpucheck")
        watch.lap("postgres started")
        cfg = Config(str(REPO_ROOT / "alembic.ini"))
        cfg.attributes.update(database_url=url, configure_logger=False)
        command.upgrade(cfg, "head")
        watch.lap("migrated")
        # The web process judges worker liveness (device: cuda needs a live CUDA worker) with the same timings.
        web_env = {k: FAST_WORKER_ENV[k] for k in ("WORKER_HEARTBEAT_SECONDS", "WORKER_STALLED_SECONDS")}
        # A check, not a tenant: no owner quota in its way.
        quotas = {"OWNER_MAX_ACTIVE_TRAININGS": "1000", "OWNER_MAX_EPOCHS_PER_HOUR": "100000000"}
        env = {"DATABASE_URL": url, "RELEASE_ID": "gpu-check", **web_env, **quotas}
        server = AppServer(env).start(wait=False)
        check = GpuCheck(args.device, url, server, watch)
        check.run()
    except Exception as exc:
        error = f"{exc.__class__.__name__}: {exc}"
        if check is not None:
            for tail in check.log_tails():
                print(tail, file=sys.stderr)
    finally:
        checks = check.checks if check is not None else []
        results = check.results if check is not None else {}
        if check is not None:
            check.close()
        if server is not None:
            server.close()
        cluster.stop()
    if error is not None:
        checks.append(Check("the check ran to the end", False, error))
    passed = bool(checks) and all(c.ok for c in checks if c.required)
    output = args.output.resolve()
    report: dict[str, Any] = {
        "result": "pass" if passed else "fail",
        "device": args.device,
        "environment": environment(args.device),
        "training": {**XOR_MODEL, **XOR_TRAINING},
        "worker_env": {**FAST_WORKER_ENV, "TORCH_THREADS": "1", "WORKER_CONCURRENCY": "1"},
        "results": results,
        "checks": [asdict(c) for c in checks],
        "error": error,
        "phases_s": watch.laps,
        "total_s": round(watch.total(), 1),
        "output": str(output.relative_to(REPO_ROOT) if output.is_relative_to(REPO_ROOT) else output),
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print_report(report)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
