"""The playground page in a real browser: Debian's headless Chromium, driven by Selenium through Debian's
chromedriver, against a real uvicorn process and a throwaway PostgreSQL, over loopback HTTP.

What the page shows is read back from the page itself (the #status line, the pixels of the loss chart
and of the decision boundary canvas; see tests/browser/playground.py) and checked against what the
server recorded. The screenshot lands in artifacts/browser/playground-app.png.

A second test serves the app over HTTPS with a self-signed certificate and checks that the driver's
SPKI pin makes Chromium trust that certificate, and only that one.

Skips only where /usr/bin/chromium is missing and NNP_REQUIRE_BROWSER is unset (or empty); with
NNP_REQUIRE_BROWSER set, a missing browser fails the test.
"""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import psycopg
import pytest
from appserver import REPO_ROOT, AppServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from faultproxy import FaultProxy
from workerproc import WorkerProcess

from tests.browser.playground import (
    CHROMEDRIVER,
    CHROMIUM,
    PlaygroundError,
    PlaygroundResult,
    drive_playground,
    spki_hash,
)

SCREENSHOT = REPO_ROOT / "artifacts" / "browser" / "playground-app.png"
TLS_SCREENSHOT = REPO_ROOT / "artifacts" / "browser" / "playground-app-tls.png"
LAYERS = ((8, "tanh"), (6, "relu"))
EPOCHS = 60


def require_browser() -> None:
    hint = "scripts/host-deps.sh installs the chromium and chromium-driver packages"
    if not CHROMIUM.exists():
        if os.environ.get("NNP_REQUIRE_BROWSER"):
            pytest.fail(f"{CHROMIUM} is missing and NNP_REQUIRE_BROWSER is set ({hint})")
        pytest.skip(f"{CHROMIUM} is missing ({hint}; set NNP_REQUIRE_BROWSER=1 to fail instead)")
    if not CHROMEDRIVER.exists():
        pytest.fail(f"{CHROMIUM} is installed but {CHROMEDRIVER} is not ({hint})")


@pytest.fixture(scope="module")
def server(database_url: str, worker: WorkerProcess) -> Iterator[AppServer]:
    require_browser()
    with AppServer({"DATABASE_URL": database_url, "TORCH_DEVICE": "cpu", "RELEASE_ID": "browser"}) as app_server:
        yield app_server


def self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for 127.0.0.1: (cert.pem, key.pem)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@pytest.fixture(scope="module")
def tls_server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AppServer, Path]]:
    """The app over HTTPS (uvicorn reads UVICORN_SSL_* from the environment) and its certificate."""
    require_browser()
    cert, key = self_signed(tmp_path_factory.mktemp("tls"), "app")
    env = {"DATABASE_URL": database_url, "TORCH_DEVICE": "cpu", "RELEASE_ID": "browser-tls"}
    app_server = AppServer({**env, "UVICORN_SSL_CERTFILE": str(cert), "UVICORN_SSL_KEYFILE": str(key)})
    app_server.base_url = f"https://127.0.0.1:{app_server.port}"
    trust = ssl.create_default_context(cafile=str(cert))
    try:
        app_server.start(wait=False)
        deadline = time.monotonic() + 60
        while True:
            assert app_server.proc is not None
            assert app_server.proc.poll() is None, app_server.log_text()[-4000:]
            try:
                if httpx.get(f"{app_server.base_url}/readyz", verify=trust, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.1)
        yield app_server, cert
    finally:
        app_server.close()


def test_define_and_train_a_network_in_the_browser(server: AppServer) -> None:
    SCREENSHOT.unlink(missing_ok=True)
    result = drive_playground(
        server.base_url, SCREENSHOT, dataset="xor", n_samples=200, noise=0.05, layers=LAYERS, epochs=EPOCHS
    )
    report = f"{result.status_text!r}, timings {result.timings}, screenshot {SCREENSHOT}"

    # The page: the session completed, and nothing went wrong in the browser.
    assert result.status == "completed", report
    assert not result.status_is_error, report
    assert (result.epoch, result.epochs) == (EPOCHS, EPOCHS), report
    assert result.console_errors == (), report

    # The server trained exactly what was defined through the form.
    model = result.server_model
    assert model["dataset"] == "xor"
    assert (model["dataset_params"]["n_samples"], model["dataset_params"]["noise"]) == (200, 0.05)
    assert [(layer["width"], layer["activation"]) for layer in model["layers"]] == list(LAYERS)
    assert model["weights_version"] == result.session_id
    losses = result.server_losses
    assert len(losses) == EPOCHS
    assert losses[-1] < 0.5 * losses[0], losses
    assert result.final_loss == pytest.approx(losses[-1], abs=1e-4)  # the status line shows the last epoch
    assert result.accuracy is not None
    assert result.accuracy >= 0.9, report

    # The loss chart: a line across the plot that falls, showing every epoch the server recorded (its
    # label reads "epoch 60"; the page fetches the metrics once more after the final status, so epochs
    # flushed just before it are on the chart too) and matching the server's losses point for point.
    chart = result.loss_chart
    assert chart.span > 0.95, f"loss line covers {chart.span:.0%} of the plot"
    assert chart.mean(0.0, 0.02) > chart.mean(0.9, 1.0) + 0.4, chart.points  # starts high, ends low
    assert chart.epochs_shown == len(losses), f"the loss chart shows {chart.epochs_shown} of {len(losses)} epochs"
    deviation = chart.deviation(losses)
    assert deviation < 0.03, f"the loss line is off by {deviation:.1%} of the plot height"

    # The decision boundary: before training only the points were drawn; now the whole canvas is
    # painted, in (at least) two class colours, and the inner quadrants follow XOR: each quadrant has
    # the colour of the points that were drawn there before training.
    before, after = result.boundary_before, result.boundary
    assert before.painted < 0.5, before
    assert after.painted > 0.95, after
    assert after.hue_count() >= 2, after.hues
    inner = [(1, 1), (1, 2), (2, 1), (2, 2)]  # top-left, top-right, bottom-left, bottom-right
    assert [after.cells[r][c] for r, c in inner] == [before.cells[r][c] for r, c in inner], (before, after)
    assert after.cells[1][1] == after.cells[2][2] != after.cells[1][2] == after.cells[2][1], after.cells

    print(f"browser check: {report}; loss chart: {chart.epochs_shown} epochs, off by {deviation:.2%}")
    assert SCREENSHOT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    problems = [r for r in server.log_records() if r.get("level") in ("error", "critical")]
    assert problems == []


def test_the_page_says_when_a_training_was_resumed(server: AppServer, database_url: str, worker: WorkerProcess) -> None:
    """The module's only worker is stopped gracefully (as a deploy does) while the page's training runs,
    then started again: it resumes from the checkpoint written at the stop, and the page says so."""
    epochs = 100  # long enough to outlast the stop at epoch 10 (an epoch is about 0.2 s here)
    results: list[PlaygroundResult | BaseException] = []

    def drive() -> None:
        try:
            shot = SCREENSHOT.with_name("playground-app-resumed.png")
            results.append(
                drive_playground(
                    server.base_url, shot, timeout_s=180, n_samples=400, batch_size=4, epochs=epochs, layers=LAYERS
                )
            )
        except BaseException as exc:  # handed to the test thread
            results.append(exc)

    page = threading.Thread(target=drive, name="playground")
    page.start()
    deadline = time.monotonic() + 90
    with psycopg.connect(database_url, autocommit=True) as conn:
        while True:
            row = conn.execute(
                "SELECT id, current_epoch FROM training_sessions WHERE status = 'running' ORDER BY id DESC LIMIT 1"
            ).fetchone()
            if row is not None and row[1] >= 10:
                break
            assert time.monotonic() < deadline, "the page's training never ran 10 epochs"
            time.sleep(0.1)
    assert worker.terminate() == 0
    worker.start()
    page.join(200)
    [result] = results
    if isinstance(result, BaseException):
        raise result
    report = f"{result.status_text!r}, timings {result.timings}"
    assert result.status == "completed", report
    resumed = re.search(r"resumed from epoch (\d+) \(run (\d+)\)", result.status_text)
    assert resumed is not None, report
    assert int(resumed[1]) >= 10, report
    assert int(resumed[2]) == 2, report
    # Each epoch once, on the server and on the chart.
    assert len(result.server_losses) == epochs, report
    assert result.loss_chart.epochs_shown == epochs, report
    assert result.console_errors == (), report


def test_the_page_rides_out_502s_on_its_polls(server: AppServer) -> None:
    """A load balancer that does not retry (the ALB) hands the page a 502 now and then while a host's app
    process restarts; here every second poll of the session gets one. The page tries each GET again and
    the training shows through to its end: the only trace is the browser's note of the failed loads.
    Only the page's own requests fail (they carry its JSON Content-Type; the harness's read-back of the
    session afterwards does not)."""
    epochs = 40
    page_request = ("Content-Type", "application/json")
    with FaultProxy(server.base_url, "/api/sessions/", every=2, marker=page_request) as proxy:
        result = drive_playground(
            proxy.base_url, SCREENSHOT.with_name("playground-app-502.png"), epochs=epochs, layers=LAYERS
        )
    report = f"{result.status_text!r}, {proxy.injected} injected 502s, console {result.console_errors}"
    assert result.status == "completed", report
    assert not result.status_is_error, report
    # At least the first poll's two requests and the final read of the metrics: one 502 or more. How many
    # more depends on how long the training takes (it was 2 and 3 in runs here).
    assert proxy.injected >= 1, report
    assert result.loss_chart.epochs_shown == len(result.server_losses) == epochs, report
    assert all("502" in error for error in result.console_errors), report


def test_https_trusts_the_pinned_certificate_only(tls_server: tuple[AppServer, Path], tmp_path: Path) -> None:
    app_server, cert = tls_server
    TLS_SCREENSHOT.unlink(missing_ok=True)
    result = drive_playground(app_server.base_url, TLS_SCREENSHOT, tls_spki_hash=spki_hash(cert), epochs=20)
    assert result.url.startswith("https://127.0.0.1:")
    assert result.status == "completed", result.status_text
    assert result.console_errors == ()
    assert result.boundary.painted > 0.95
    assert result.loss_chart.epochs_shown == len(result.server_losses) == 20

    # Without the pin, or pinning another key, Chromium shows its certificate error page instead.
    other, _ = self_signed(tmp_path, "other")
    for pin in (None, spki_hash(other)):
        with pytest.raises(PlaygroundError, match="did not serve the playground page"):
            drive_playground(app_server.base_url, tmp_path / "refused.png", tls_spki_hash=pin, timeout_s=20)
