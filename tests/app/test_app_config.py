"""Settings, start-up checks and their error messages."""

from __future__ import annotations

import re

import pytest
from conftest import REPO_ROOT
from pgcluster import PgCluster, free_port

from app.core.config import ConfigError, Settings, load_settings, normalize_database_url
from app.core.db import check_connection, create_db_engine
from app.ml.device import resolve_device

SECRET = "s3cr3t-pa55"


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "ALLOWED_ORIGINS", "TORCH_DEVICE", "MAX_EPOCHS", "LOG_LEVEL", "READY_CHECK_INTERVAL"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("raw", "driver"),
    [
        ("postgresql://u:p@db:5432/app", "postgresql+psycopg"),
        ("postgresql+psycopg://u:p@db/app", "postgresql+psycopg"),
        ("postgres://u:p@db/app", "postgresql+psycopg"),
    ],
)
def test_database_url_forms_are_normalised_to_psycopg3(raw: str, driver: str) -> None:
    url = normalize_database_url(raw)
    assert url.drivername == driver
    assert url.database == "app"


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgresql://app:{SECRET}@db.internal:5432/nnp")
    monkeypatch.setenv("ALLOWED_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("TORCH_DEVICE", "cpu")
    monkeypatch.setenv("MAX_EPOCHS", "50")
    monkeypatch.setenv("LOG_LEVEL", "WARNING")
    settings = Settings()  # type: ignore[call-arg]
    assert settings.allowed_origins == ["https://a.example", "https://b.example"]
    assert settings.max_epochs == 50
    assert settings.log_level == "warning"
    assert settings.sqlalchemy_url.drivername == "postgresql+psycopg"
    assert SECRET not in settings.database_url_masked
    assert SECRET not in repr(settings)


def test_missing_database_url_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"DATABASE_URL is not set"):
        load_settings()


@pytest.mark.parametrize(
    "raw",
    [f"mysql://root:{SECRET}@db/app", f"postgresql://root:{SECRET}@db", f"::{SECRET}::", "   "],
)
def test_invalid_database_url_is_explained_without_the_password(raw: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(database_url=raw)
    message = str(info.value)
    assert "DATABASE_URL" in message
    assert SECRET not in message
    assert info.value.__cause__ is None  # the pydantic error (which echoes the input) is not chained


def test_out_of_range_limit_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"WORKER_CONCURRENCY"):
        load_settings(database_url="postgresql://u@h/d", worker_concurrency=0)


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("CHECKPOINT_INTERVAL_SECONDS", "0"),
        ("CHECKPOINT_INTERVAL_SECONDS", "-5"),
        ("CHECKPOINT_INTERVAL_SECONDS", "often"),
        ("WORKER_DEVICE", "tpu"),
        ("WORKER_DEVICE", "auto"),  # a worker serves one queue: it must say which
        ("WORKER_HEARTBEAT_SECONDS", "0"),
        ("JOB_MAX_FAILURES", "-1"),
        ("WORKER_HOST", "web 1"),
    ],
)
def test_bad_worker_settings_name_the_variable(monkeypatch: pytest.MonkeyPatch, setting: str, value: str) -> None:
    monkeypatch.setenv(setting, value)
    with pytest.raises(ConfigError, match=setting):
        load_settings(database_url="postgresql://u@h/d")


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("DB_READ_RETRY_SECONDS", "-1"),
        ("DB_READ_RETRY_SECONDS", "61"),
        ("DB_READ_RETRY_SECONDS", "a while"),
        ("DB_STATEMENT_TIMEOUT_SECONDS", "0"),
        ("DB_STATEMENT_TIMEOUT_SECONDS", "3601"),
    ],
)
def test_bad_database_timeouts_name_the_variable(monkeypatch: pytest.MonkeyPatch, setting: str, value: str) -> None:
    monkeypatch.setenv(setting, value)
    with pytest.raises(ConfigError, match=setting):
        load_settings(database_url="postgresql://u@h/d")


def test_stall_timeout_must_exceed_two_heartbeats() -> None:
    with pytest.raises(ConfigError, match=r"WORKER_STALLED_SECONDS must be more than twice WORKER_HEARTBEAT_SECONDS"):
        load_settings(database_url="postgresql://u@h/d", worker_heartbeat_seconds=5, worker_stalled_seconds=10)
    assert load_settings(database_url="postgresql://u@h/d", worker_heartbeat_seconds=5).worker_stalled_seconds == 30


def test_readiness_max_age_derives_from_the_check_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = load_settings(database_url="postgresql://u@h/d")
    assert (defaults.ready_check_interval, defaults.ready_check_timeout, defaults.ready_max_age) == (2.0, 2.0, 8.0)
    monkeypatch.setenv("READY_CHECK_INTERVAL", "0.5")
    assert load_settings(database_url="postgresql://u@h/d").ready_max_age == 3 * 0.5 + 2.0


@pytest.mark.parametrize("value", [0, -1.5, "soon"])
def test_ready_check_interval_must_be_a_positive_number(value: object) -> None:
    with pytest.raises(ConfigError, match=r"READY_CHECK_INTERVAL"):
        load_settings(database_url="postgresql://u@h/d", ready_check_interval=value)


def test_unreachable_database_fails_with_a_safe_message() -> None:
    settings = load_settings(database_url=f"postgresql://app:{SECRET}@127.0.0.1:{free_port()}/nnp")
    engine = create_db_engine(settings)
    try:
        with pytest.raises(ConfigError) as info:
            check_connection(engine)
    finally:
        engine.dispose()
    message = str(info.value)
    assert message.startswith("DATABASE_URL: cannot connect to postgresql+psycopg://app:***@127.0.0.1:")
    assert SECRET not in message


def test_wrong_password_fails_with_a_safe_message(pg: PgCluster) -> None:
    settings = load_settings(
        database_url=f"postgresql://postgres:{SECRET}@127.0.0.1:{pg.port}/postgres", db_auth_retry_seconds=0
    )
    engine = create_db_engine(settings)
    try:
        with pytest.raises(ConfigError, match=r"password authentication failed") as info:
            check_connection(engine)
    finally:
        engine.dispose()
    assert SECRET not in str(info.value)


def test_env_example_documents_every_setting() -> None:
    text = (REPO_ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", text, flags=re.MULTILINE))
    assert documented == {name.upper() for name in Settings.model_fields}


def test_torch_device_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(ConfigError, match=r"TORCH_DEVICE=cuda but CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match=r"WORKER_DEVICE=cuda but CUDA is not available"):
        resolve_device("cuda", "WORKER_DEVICE")
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    assert resolve_device("auto").type == "cuda"
    assert resolve_device("cpu").type == "cpu"
