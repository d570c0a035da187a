"""The local stack's webhook receiver (scripts/alert_receiver.py), which the site scenario reads to see the
pages of the monitoring host: it keeps every notification whole and in order, with its arrival time,
answers them back, and refuses what is not one, as a separate process on loopback like `make up` runs it."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

RECEIVER = Path(__file__).resolve().parents[2] / "scripts" / "alert_receiver.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    port, file = free_port(), tmp_path / "state" / "alerts.jsonl"
    process = subprocess.Popen([sys.executable, str(RECEIVER), "--port", str(port), "--file", str(file)])
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None, "the receiver exited"
                assert time.monotonic() < deadline, "the receiver did not answer within 10 s"
                time.sleep(0.05)
        yield url, file
    finally:
        process.terminate()
        process.wait(10)


def payload(name: str, status: str) -> dict[str, object]:
    """The shape of Alertmanager's webhook body (version 4), trimmed."""
    alert = {"status": status, "labels": {"alertname": name, "instance": "web1"}, "annotations": {"summary": "x"}}
    return {"version": "4", "status": status, "receiver": "oncall", "alerts": [alert]}


def test_every_notification_is_kept_whole_in_order_with_its_arrival_time(receiver: tuple[str, Path]) -> None:
    url, file = receiver
    before = time.time()
    sent = [payload("NnpHostDown", "firing"), payload("NnpHostDown", "resolved"), payload("NnpDiskFilling", "firing")]
    for body in sent:
        assert httpx.post(f"{url}/alerts", json=body, timeout=5).status_code == 200
    lines = [json.loads(line) for line in file.read_text().splitlines()]
    assert [line["body"] for line in lines] == sent
    times = [line["received"] for line in lines]
    assert times == sorted(times)
    assert before <= times[0] <= time.time()
    assert oct(file.parent.stat().st_mode & 0o777) == "0o700"
    answer = httpx.get(url, timeout=5)
    assert answer.headers["content-type"] == "application/x-ndjson"
    assert [json.loads(line)["body"] for line in answer.text.splitlines()] == sent


@pytest.mark.parametrize(
    ("body", "message"),
    [(b"", "expected a JSON body"), (b"{not json", "not JSON"), (b"x" * ((1 << 20) + 1), "at most 1 MiB")],
)
def test_what_is_not_a_notification_is_refused_and_not_kept(
    receiver: tuple[str, Path], body: bytes, message: str
) -> None:
    url, file = receiver
    answer = httpx.post(f"{url}/alerts", content=body, timeout=5)
    assert answer.status_code == 400
    assert message in answer.text
    assert not file.exists() or file.read_text() == ""
