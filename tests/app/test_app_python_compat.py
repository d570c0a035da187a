"""The app runs on Python 3.10 to 3.13: what replaced the 3.11-only features behaves as they did."""

from __future__ import annotations

import json
import logging
from datetime import datetime

from app.core.logging import JsonFormatter
from app.models import ACTIVE_STATUSES, SessionStatus


def test_session_status_prints_as_its_value() -> None:
    # As enum.StrEnum did: the value in str(), f-strings, format specs, %-formatting and JSON.
    status = SessionStatus.QUEUED
    assert str(status) == "queued"
    assert f"{status}" == "queued"
    assert f"{status:>8}" == "  queued"
    assert "%s" % status == "queued"  # noqa: UP031 - the old style is what is checked here
    assert json.dumps({"status": status}) == '{"status": "queued"}'


def test_session_status_compares_and_hashes_as_str() -> None:
    # The code compares members with database strings and looks them up in dicts keyed by str.
    assert SessionStatus.RUNNING == "running"
    assert {"running": 1}[SessionStatus.RUNNING] == 1
    assert SessionStatus("failed") is SessionStatus.FAILED
    assert isinstance(SessionStatus.FAILED, str)
    assert [str(s) for s in ACTIVE_STATUSES] == ["queued", "running"]


def test_log_timestamps_are_utc() -> None:
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "hello", None, None)
    record.created = 0.0
    entry = json.loads(JsonFormatter().format(record))
    assert entry["ts"] == "1970-01-01T00:00:00.000+00:00"
    assert datetime.fromisoformat(entry["ts"]).utcoffset() is not None
