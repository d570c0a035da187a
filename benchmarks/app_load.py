"""Load benchmark of the app: `.venv/bin/python benchmarks/app_load.py [--requests N] [--concurrency C]`.

Starts its own throwaway PostgreSQL, migrates it, runs `uvicorn app.main:app --workers 2` on a
loopback port, trains a small model, then fires a fixed number of requests per scenario from C
concurrent keep-alive connections and prints throughput, latency percentiles, errors, worker RSS,
the app's import time and the time from process start to the first 200 on /readyz. Last, the loop stays
free: /readyz and a model read from 4 clients, alone and beside a 200 x 200 boundary and a 1000-row
prediction sent again and again.

The load generator is raw asyncio streams with pre-built HTTP/1.1 requests (on uvloop): the client
shares the machine's cores with the server, so it has to be much cheaper per request than the server
to measure the server rather than itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# The throwaway PostgreSQL and uvicorn helpers are shared with the test suite. In place of this folder
# (sys.path[0] when run as a script), whose queue.py would shadow the standard library's (psycopg imports it).
sys.path[0:1] = [str(REPO_ROOT), str(REPO_ROOT / "tests" / "app")]

import httpx  # noqa: E402
from alembic.config import Config  # noqa: E402
from appserver import AppServer  # noqa: E402
from pgcluster import PgCluster  # noqa: E402
from workerproc import WorkerProcess  # noqa: E402

from alembic import command  # noqa: E402

PREDICT_BODY = json.dumps({"inputs": [[0.5, 0.5]]}).encode()
# The heavy requests of the "loop stays free" figures: a 1000-row prediction and a 200 x 200 boundary
# (MAX_PREDICT_ROWS and MAX_GRID_RESOLUTION's defaults).
HEAVY_PREDICT_BODY = json.dumps({"inputs": [[i / 1000 - 0.5, 0.5 - i / 1000] for i in range(1000)]}).encode()


@dataclass
class Result:
    name: str
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]
    cpu_us: dict[str, float] = field(default_factory=dict)  # CPU time per request: app, postgres, client

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def build_request(method: str, path: str, port: int, body: bytes = b"") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: keep-alive\r\n"
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


async def read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    match = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    if match is None:
        raise RuntimeError("response without Content-Length")
    await reader.readexactly(int(match.group(1)))
    return status


async def run_beside_heavy(
    name: str, port: int, request: bytes, total: int, concurrency: int, heavy: list[bytes]
) -> Result:
    """run_scenario while one client per HEAVY request sends it again and again on its own connection."""
    stop = asyncio.Event()
    sent = 0

    async def hammer(heavy_request: bytes) -> None:
        nonlocal sent
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while not stop.is_set():
                writer.write(heavy_request)
                if await read_response(reader) != 200:
                    raise RuntimeError("a heavy request failed")
                sent += 1
        finally:
            writer.close()

    hammers = [asyncio.create_task(hammer(h)) for h in heavy]
    await asyncio.sleep(0.5)  # the heavy requests are under way
    result = await run_scenario(name, port, request, total, concurrency)
    stop.set()
    await asyncio.gather(*hammers)
    result.name += f" (beside {sent} heavy)"
    return result


async def run_scenario(name: str, port: int, request: bytes, total: int, concurrency: int) -> Result:
    latencies: list[float] = []
    errors = 0
    remaining = total

    async def worker() -> None:
        nonlocal remaining, errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                writer.write(request)
                try:
                    status = await read_response(reader)
                except (OSError, RuntimeError, asyncio.IncompleteReadError):
                    errors += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    continue
                latencies.append((time.perf_counter() - started) * 1000)
                if status != 200:
                    errors += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Result(name, total, errors, time.perf_counter() - started, latencies)


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the given processes (those that vanished count as 0)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / ticks


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def run_load(port: int, model_id: int, total: int, concurrency: int, app_pids: list[int], pg_pid: int) -> list[Result]:
    scenarios = [
        ("GET /api/models/{id}", build_request("GET", f"/api/models/{model_id}", port)),
        ("POST /api/models/{id}/predict", build_request("POST", f"/api/models/{model_id}/predict", port, PREDICT_BODY)),
    ]
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is pinned in app/requirements.txt
        loop_factory = asyncio.new_event_loop
    results = []
    for name, request in scenarios:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(run_scenario(name, port, request, min(200, total), concurrency))  # warm-up
            pg_pids = [pg_pid, *children(pg_pid)]
            before = (cpu_seconds(app_pids), cpu_seconds(pg_pids), time.process_time())
            result = runner.run(run_scenario(name, port, request, total, concurrency))
            after = (cpu_seconds(app_pids), cpu_seconds(pg_pids), time.process_time())
            result.cpu_us = {
                role: (end - start) / total * 1e6
                for role, start, end in zip(("app", "postgres", "client"), before, after, strict=True)
            }
            results.append(result)
    # The loop stays free: /readyz and a model read from 4 clients, alone and while one 200 x 200 boundary
    # and one 1000-row prediction are sent again and again (both computed off the event loop).
    heavy = [
        build_request("GET", f"/api/models/{model_id}/boundary?resolution=200", port),
        build_request("POST", f"/api/models/{model_id}/predict", port, HEAVY_PREDICT_BODY),
    ]
    for name, request in (
        ("GET /readyz", build_request("GET", "/readyz", port)),
        ("GET /api/models/{id} x4", build_request("GET", f"/api/models/{model_id}", port)),
    ):
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            count = max(200, total // 4)
            alone = runner.run(run_scenario(name, port, request, count, 4))
            beside = runner.run(run_beside_heavy(name, port, request, count, 4, heavy))
            for result in (alone, beside):
                result.cpu_us = {role: float("nan") for role in ("app", "postgres", "client")}
            results += [alone, beside]
    return results


def import_time(env: dict[str, str]) -> tuple[float, list[tuple[str, float]]]:
    """Wall time of `import app.main` in a fresh interpreter, and the slowest third-party packages."""
    code = "import time; t = time.perf_counter(); import app.main; print(time.perf_counter() - t)"
    command = [sys.executable, "-X", "importtime", "-c", code]
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=True)
    packages: dict[str, float] = {}
    for line in result.stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \| \s*(\S+)", line)
        # Root packages only (their cumulative time includes their submodules); not the app itself.
        if match and "." not in match.group(2) and match.group(2) != "app":
            name = match.group(2)
            packages[name] = max(packages.get(name, 0.0), int(match.group(1)) / 1e6)
    slowest = sorted(packages.items(), key=lambda item: item[1], reverse=True)[:5]
    return float(result.stdout.strip().splitlines()[-1]), slowest


def worker_pids(server: AppServer) -> list[int]:
    """uvicorn's worker processes (multiprocessing spawn children; not the resource tracker)."""
    pids = []
    for pid in server.pids()[1:]:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        if b"spawn_main" in cmdline:
            pids.append(pid)
    return pids


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def train_model(base_url: str) -> int:
    token = httpx.post(f"{base_url}/api/owners", timeout=30).raise_for_status().json()["token"]
    with httpx.Client(base_url=base_url, timeout=30, headers={"Authorization": f"Bearer {token}"}) as client:
        model = client.post(
            "/api/models",
            json={"name": "bench", "dataset": "xor", "layers": [{"width": 16, "activation": "tanh"}] * 2},
        ).json()
        session = client.post(f"/api/models/{model['id']}/sessions", json={"epochs": 50, "learning_rate": 0.05}).json()
        deadline = time.monotonic() + 120
        while (state := client.get(f"/api/sessions/{session['id']}").json())["status"] in ("queued", "running"):
            if time.monotonic() > deadline:
                raise TimeoutError("training did not finish")
            time.sleep(0.1)
        if state["status"] != "completed":
            raise RuntimeError(f"training ended {state['status']}: {state['error']}")
        print(f"trained model {model['id']}: accuracy {state['accuracy']:.3f} after {state['current_epoch']} epochs")
        return int(model["id"])


def report(
    results: list[Result], concurrency: int, rss: list[float], imports: tuple[float, list], ready_s: float
) -> None:
    print()
    header = f"{'scenario':<48}{'requests':>9}{'errors':>8}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}"
    print(header + "  CPU us/req: app / postgres / client")
    for r in results:
        rate = r.requests / r.seconds
        p50, p99, worst = r.percentile(50), r.percentile(99), max(r.latencies_ms)
        cpu = " / ".join(f"{r.cpu_us[role]:.0f}" for role in ("app", "postgres", "client"))
        print(f"{r.name:<48}{r.requests:>9}{r.errors:>8}{rate:>8.0f}{p50:>8.2f}{p99:>8.2f}{worst:>8.2f}  {cpu}")
    print(f"\nconcurrency: {concurrency} keep-alive connections; uvicorn --workers 2; CPUs: {os.cpu_count()}")
    print(f"load average during the run: {os.getloadavg()[0]:.2f} (other work on the machine skews latency)")
    print("worker RSS: " + ", ".join(f"{mb:.0f} MiB" for mb in rss))
    total, slowest = imports
    print(f"import app.main: {total:.2f} s (slowest: " + ", ".join(f"{m} {s:.2f} s" for m, s in slowest) + ")")
    print(f"process start to first 200 on /readyz: {ready_s:.2f} s")
    print("the 4-client rows: 4 keep-alive connections, the heavy ones on 2 more (no CPU figures)")
    predict = next(r for r in results if "predict" in r.name)
    verdict = "OK" if predict.percentile(99) < 25 and all(r.errors == 0 for r in results) else "MISSED"
    print(f"target (predict p99 < 25 ms, zero errors): {verdict}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per scenario")
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()

    cluster = PgCluster()
    server: AppServer | None = None
    try:
        cluster.start()
        url = cluster.create_database("bench")
        cfg = Config(str(REPO_ROOT / "alembic.ini"))
        cfg.attributes.update(database_url=url, configure_logger=False)
        command.upgrade(cfg, "head")
        env = {**os.environ, "DATABASE_URL": url, "LOG_LEVEL": "info"}
        imports = import_time(env)

        server = AppServer({"DATABASE_URL": url}, workers=2).start(wait=False)
        ready_s = server.wait_ready(timeout=120)
        # Trainings run in a worker process; it is stopped before the load so it takes no CPU from it.
        with WorkerProcess(url):
            model_id = train_model(server.base_url)
        workers = worker_pids(server)
        pg_pid = int((cluster.data / "postmaster.pid").read_text().split()[0])
        results = run_load(server.port, model_id, args.requests, args.concurrency, workers, pg_pid)
        rss = [rss_mb(pid) for pid in workers]
        report(results, args.concurrency, rss, imports, ready_s)
        return 0 if all(r.errors == 0 for r in results) else 1
    finally:
        if server is not None:
            server.close()
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
