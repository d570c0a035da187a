"""The playground page in headless Chromium through the front door, trusting only lb's certificate.
The screenshot (artifacts/site/playground.png) shows the trained decision boundary."""

from __future__ import annotations

from stack import ARTIFACTS, LB_URL, STATE

from tests.browser.playground import drive_playground, spki_hash


def test_the_playground_trains_and_draws_through_the_front_door() -> None:
    result = drive_playground(
        LB_URL,
        ARTIFACTS / "playground.png",
        tls_spki_hash=spki_hash(STATE / "tls" / "lb.pem"),
        timeout_s=120,
        layers=((8, "tanh"), (6, "relu")),
        epochs=60,
    )
    assert result.status == "completed", result.status_text
    assert result.epoch == result.epochs == 60
    assert result.accuracy is not None, result.status_text
    assert result.accuracy >= 0.9, result.status_text
    assert result.loss_chart.epochs_shown == len(result.server_losses) == 60
    assert result.loss_chart.deviation(result.server_losses) < 0.03
    assert result.boundary_before.painted < 0.5
    assert result.boundary.painted > 0.95
    assert result.boundary.hue_count() >= 2
    assert not result.console_errors, result.console_errors
    assert result.screenshot.stat().st_size > 10_000
