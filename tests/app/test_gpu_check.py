"""scripts/gpu-check.sh: its CPU path end to end (so that it keeps working where there is no GPU),
and its refusal of `--device cuda` where CUDA is missing."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "gpu-check.sh"


def run_check(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), "--python", sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_cpu_run_passes_every_check(tmp_path: Path) -> None:
    output = tmp_path / "gpu-check.json"
    result = run_check("--device", "cpu", "--output", str(output), timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(output.read_text())
    assert report["result"] == "pass"
    assert report["device"] == "cpu"
    assert report["error"] is None
    # Every check, informational ones included, passes on CPU; a check that is dropped fails the count.
    failed = [check for check in report["checks"] if not check["ok"]]
    assert not failed, failed
    assert len(report["checks"]) == 12
    assert all(check["required"] for check in report["checks"])

    results = report["results"]
    epochs = report["training"]["epochs"]
    assert results["cpu_training"]["attempts"] == 1
    assert results["cpu_training"]["accuracy"] >= 0.95
    resumed = results["interrupted_training"]
    assert resumed["attempts"] == 3  # one SIGTERM, one SIGKILL
    assert 0 < resumed["resumed_from_epochs"][0] < resumed["resumed_from_epochs"][1] < epochs
    assert resumed["metrics_rows"] == epochs
    assert resumed["accuracy"] >= 0.95
    assert resumed["checkpoints_written"] >= 2
    assert resumed["handover_sigterm_s"] < 10
    assert resumed["handover_sigkill_s"] < 20
    assert results["weights"] == {"bit_identical": True, "max_abs_diff": 0.0}
    assert report["environment"]["torch"] == torch.__version__
    metrics = results["worker_metrics"]
    assert [info["device"] for info in metrics["info"]] == ["cpu"]
    assert metrics["completed"] == 2
    assert metrics["gpu_memory"] == {"allocated": None, "reserved": None, "total": None}

    assert "train on cpu" in result.stdout
    assert "handover to the standby worker after SIGTERM" in result.stdout
    assert "PASS in" in result.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="this host has CUDA")
def test_cuda_without_cuda_fails_fast_with_a_clear_message(tmp_path: Path) -> None:
    output = tmp_path / "gpu-check.json"
    started = time.monotonic()
    result = run_check("--output", str(output), timeout=60)  # --device cuda is the default
    assert result.returncode == 2
    assert "CUDA is not available to" in result.stderr
    assert "--device cpu" in result.stderr
    assert time.monotonic() - started < 30
    assert not output.exists()  # it stopped before PostgreSQL and the report
