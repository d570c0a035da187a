#!/usr/bin/env python3
"""What nginx costs in front of the app, on the local stack (inventories/local, `make up`).

  .venv/bin/python benchmarks/front.py [--requests N] [--concurrency C]

The same requests from C keep-alive connections, first through web1's nginx (its plain HTTP port, where
the load balancer reaches it: real_ip, rate-limit maps, the upstream link to the live slot, a new
connection to the slot's socket per request as deployed with nginx_upstream_keepalive 0), then straight
to the live slot's Uvicorn socket (through /proc/<pid>/root of the container: run as root). Scenarios: a
model read and a one-row prediction of a model trained for it. Prints requests per second, p50, p99 and
nginx's cost (1 - rate through nginx / rate direct). The load generator is raw asyncio streams on uvloop,
as in benchmarks/app_load.py, and shares the machine's two cores with nginx and the app.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[0:1] = [str(REPO / "molecule" / "site" / "tests")]

from stack import DOMAIN, HOSTS, docker_exec, lb_client, live_slot  # noqa: E402

Opener = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


def request(method: str, path: str, body: bytes = b"") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: {DOMAIN}\r\nConnection: keep-alive\r\n"
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


async def read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    match = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    if match is None:
        raise RuntimeError(f"response without Content-Length: {head[:200]!r}")
    await reader.readexactly(int(match.group(1)))
    return int(head[9:12])


async def run(opener: Opener, payload: bytes, total: int, concurrency: int) -> tuple[float, list[float], int]:
    latencies: list[float] = []
    errors = 0
    remaining = total

    async def client() -> None:
        nonlocal remaining, errors
        reader, writer = await opener()
        try:
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                writer.write(payload)
                status = await read_response(reader)
                latencies.append((time.perf_counter() - started) * 1000)
                errors += status != 200
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies, errors


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def trained_model() -> int:
    """A small model, created and trained through the front door (a worker of the stack trains it)."""
    with lb_client(owner=True) as client:
        body = {"name": f"bench-{time.time_ns()}", "dataset": "xor", "dataset_params": {"n_samples": 200}}
        model = client.post("/api/models", json=body)
        model.raise_for_status()
        model_id = int(model.json()["id"])
        session = client.post(f"/api/models/{model_id}/sessions", json={"epochs": 20, "device": "cpu"})
        session.raise_for_status()
        deadline = time.monotonic() + 120
        while client.get(f"/api/sessions/{session.json()['id']}").json()["status"] in ("queued", "running"):
            if time.monotonic() > deadline:
                raise SystemExit("the benchmark's training did not finish in 120 s")
            time.sleep(0.5)
    return model_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000, help="requests per scenario and path")
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()

    model_id = trained_model()
    slot = live_slot("web1")
    pid = subprocess.run(
        ["docker", "inspect", "-f", "{{.State.Pid}}", "web1"], capture_output=True, text=True, check=True
    ).stdout.strip()
    socket_path = f"/proc/{pid}/root/run/nnp-app/{slot}/app.sock"
    workers = docker_exec("web1", "pgrep", "-c", "-f", f"/opt/nnp/slots/{slot}/.venv/bin/python").strip()
    port = HOSTS["web1"]["nginx_http_port"]
    paths: dict[str, Opener] = {
        "nginx": lambda: asyncio.open_connection("127.0.0.1", port),
        "direct": lambda: asyncio.open_unix_connection(socket_path),
    }
    scenarios = {
        "GET /api/models/{id}": request("GET", f"/api/models/{model_id}"),
        "POST /api/models/{id}/predict (1 row)": request(
            "POST", f"/api/models/{model_id}/predict", json.dumps({"inputs": [[0.5, 0.5]]}).encode()
        ),
    }
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is in the venv (app/requirements.txt)
        loop_factory = asyncio.new_event_loop

    print(f"web1, slot {slot} ({workers} Uvicorn processes); {args.concurrency} keep-alive connections")
    print(f"{'scenario':40} {'path':7} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6}")
    report = {}
    for name, payload in scenarios.items():
        rates = {}
        for path, opener in paths.items():
            with asyncio.Runner(loop_factory=loop_factory) as runner:
                runner.run(run(opener, payload, min(400, args.requests), args.concurrency))  # warm-up
                seconds, latencies, errors = runner.run(run(opener, payload, args.requests, args.concurrency))
            rates[path] = args.requests / seconds
            figures = {
                "requests_per_s": round(rates[path], 1),
                "p50_ms": round(percentile(latencies, 50), 2),
                "p99_ms": round(percentile(latencies, 99), 2),
                "errors": errors,
            }
            report[f"{name} via {path}"] = figures
            print(
                f"{name:40} {path:7} {figures['requests_per_s']:7.0f} {figures['p50_ms']:7.2f}"
                f" {figures['p99_ms']:7.2f} {errors:6d}"
            )
        cost = 1 - rates["nginx"] / rates["direct"]
        report[f"{name} nginx cost"] = round(cost, 3)
        print(f"{name:40} nginx costs {cost:.0%} of the direct rate (target <= 15 %)")
    out = REPO / "artifacts" / "benchmarks" / "front.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written: {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
