"""Settings read from the environment (see .env.example at the repository root)."""

from __future__ import annotations

from functools import lru_cache
from ipaddress import IPv4Address
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, IPvAnyAddress, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

REPO_ROOT = Path(__file__).resolve().parents[2]

# Schemes accepted in DATABASE_URL; all of them are served by the psycopg 3 driver.
_POSTGRES_SCHEMES = {"postgres", "postgresql", "postgresql+psycopg"}

# A readiness check (app.services.readiness) that gets no answer from the database within this many
# seconds is abandoned; it does not by itself make the process unready (see Settings.ready_max_age).
READY_CHECK_TIMEOUT_SECONDS = 2.0


class ConfigError(RuntimeError):
    """Invalid or unusable configuration; the message is safe to print (no secrets)."""


def normalize_database_url(raw: str) -> URL:
    """Parse DATABASE_URL and pin the psycopg 3 driver. Errors never echo the URL (it holds the password)."""
    try:
        url = make_url(raw.strip())
    except ArgumentError:
        raise ValueError("not a valid database URL (expected postgresql://user:password@host:port/dbname)") from None
    if url.drivername not in _POSTGRES_SCHEMES:
        raise ValueError(f"unsupported scheme {url.drivername!r}; use postgresql:// or postgresql+psycopg://")
    if not url.database:
        raise ValueError("the URL names no database")
    return url.set(drivername="postgresql+psycopg")


def masked_url(url: URL) -> str:
    return url.render_as_string(hide_password=True)


class Settings(BaseSettings):
    """All runtime configuration. Field names map to upper-case environment variables."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    database_url: SecretStr
    allowed_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    torch_device: Literal["auto", "cpu", "cuda"] = "auto"
    torch_threads: int = Field(1, ge=1, le=64)
    # Queued + running trainings across the whole deployment; more get 429.
    max_concurrent_trainings: int = Field(100, ge=1, le=100_000)
    max_epochs: int = Field(1000, ge=1, le=100_000)
    max_layers: int = Field(8, ge=1, le=64)
    max_width: int = Field(256, ge=1, le=4096)
    max_batch_size: int = Field(1024, ge=1, le=65_536)
    max_samples: int = Field(5000, ge=10, le=100_000)
    max_predict_rows: int = Field(1000, ge=1, le=100_000)
    max_grid_resolution: int = Field(200, ge=2, le=1000)
    max_body_bytes: int = Field(1_048_576, ge=1024)
    db_pool_size: int = Field(10, ge=1, le=200)
    # How long an idempotent read (GET) keeps retrying on a broken connection (a database restart or
    # failover) before it answers 503; 0 fails it at once. A restart of PostgreSQL takes seconds; an RDS
    # Multi-AZ failover takes 1-2 minutes, which no request should wait through (docs/RUNBOOK.md).
    db_read_retry_seconds: float = Field(10.0, ge=0, le=60)
    # How long a new connection keeps trying while the server refuses the login's password: a password
    # rotation changes it on the server and then in every host's PGPASSFILE (libpq reads that file at each
    # new connection, so no process restarts), a few seconds apart. 0 fails at once.
    db_auth_retry_seconds: float = Field(30.0, ge=0, le=300)
    # The server cancels a statement of the app's running longer than this (PostgreSQL statement_timeout).
    db_statement_timeout_seconds: float = Field(30.0, gt=0, le=3600)
    # Training workers (python -m app.worker); the web processes read the heartbeat settings too.
    worker_device: Literal["cpu", "cuda"] = "cpu"
    worker_concurrency: int = Field(1, ge=1, le=64)
    # The name the worker registers under (GET /api/workers, sessions' owner_host); "" is the host name.
    # Containers sharing the host's network share its host name, so the deploy sets the inventory name.
    worker_host: str = Field("", max_length=255, pattern=r"^[A-Za-z0-9._-]*$")
    worker_heartbeat_seconds: float = Field(5.0, gt=0, le=3600)
    worker_stalled_seconds: float = Field(30.0, gt=0, le=86_400)
    worker_poll_seconds: float = Field(2.0, gt=0, le=3600)
    # The worker's Prometheus metrics (app.worker.metrics) over HTTP on this address and port; port 0: none.
    worker_metrics_port: int = Field(0, ge=0, le=65_535)
    worker_metrics_address: IPvAnyAddress = IPv4Address("127.0.0.1")
    checkpoint_interval_seconds: float = Field(60.0, gt=0, le=86_400)
    # Worker deaths and internal errors a session survives (resuming from its checkpoint) before it is interrupted.
    job_max_failures: int = Field(3, ge=0, le=1000)
    # Owners and quotas (app/README.md, Owners). Each owner (a token from POST /api/owners) may keep this
    # many models, have this many trainings queued or running, and start this many epochs in any hour.
    owner_max_models: int = Field(20, ge=1, le=100_000)
    owner_max_active_trainings: int = Field(2, ge=1, le=10_000)
    owner_max_epochs_per_hour: int = Field(20_000, ge=1, le=100_000_000)
    # true: reads (lists, models, sessions, metrics, predictions) show each owner only their own rows.
    owner_only_reads: bool = False
    # May delete any model and stop any session (and read everything); from the secrets store. Unset: none.
    operator_token: SecretStr | None = None
    # A process records a model's use (a prediction) in the database at most this often.
    model_touch_seconds: float = Field(3600.0, gt=0, le=86_400)
    # Retention, run by the workers (app.worker.retention) on RETENTION_CRON: finished sessions (with their
    # metrics and checkpoints) older than RETENTION_SESSION_DAYS, unless their weights are a model's
    # current ones; models unused for RETENTION_MODEL_DAYS with no queued or running training; owners
    # with nothing left, created more than RETENTION_MODEL_DAYS ago. 0 keeps them forever.
    retention_session_days: int = Field(30, ge=0, le=36_500)
    retention_model_days: int = Field(90, ge=0, le=36_500)
    retention_cron: str = Field("17 3 * * *", max_length=100)
    ready_check_interval: float = Field(2.0, gt=0, le=3600)
    release_id: str = "dev"
    git_sha: str = "unknown"
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    alembic_script_location: Path = REPO_ROOT / "alembic"

    @field_validator("database_url", mode="before")
    @classmethod
    def _normalize_url(cls, value: object) -> str:
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if not isinstance(value, str) or not value.strip():
            raise ValueError("must be set to a PostgreSQL URL")
        return normalize_database_url(value).render_as_string(hide_password=False)

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("operator_token", mode="before")
    @classmethod
    def _operator_token(cls, value: object) -> object:
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if not isinstance(value, str) or len(value.strip()) < 32:
            raise ValueError("must be at least 32 characters (a generated secret), or empty for no operator")
        return value.strip()

    @field_validator("retention_cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        from croniter import croniter  # procrastinate's own dependency, which reads it

        if not croniter.is_valid(value):
            raise ValueError("is not a cron expression (minute hour day month weekday, e.g. '17 3 * * *')")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("worker_stalled_seconds")
    @classmethod
    def _stalled_after_heartbeats(cls, value: float, info: ValidationInfo) -> float:
        heartbeat = info.data.get("worker_heartbeat_seconds")
        if heartbeat is not None and value <= 2 * heartbeat:
            raise ValueError("must be more than twice WORKER_HEARTBEAT_SECONDS (a late heartbeat is not a death)")
        return value

    @property
    def sqlalchemy_url(self) -> URL:
        return make_url(self.database_url.get_secret_value())

    @property
    def database_url_masked(self) -> str:
        return masked_url(self.sqlalchemy_url)

    @property
    def ready_check_timeout(self) -> float:
        return READY_CHECK_TIMEOUT_SECONDS

    @property
    def ready_max_age(self) -> float:
        """Seconds after the last successful readiness check until /readyz answers 503 without a new one.

        Three intervals plus one check timeout: two checks may time out in a row (a saturated host or
        database) and the third may be running, before the process stops claiming to be ready. A check
        that fails outright (connection refused, wrong schema) makes it unready at once. 8 s by default.
        """
        return 3 * self.ready_check_interval + self.ready_check_timeout


def _describe(exc: ValidationError) -> str:
    # Pydantic's own text includes the offending input, which for DATABASE_URL is the password: rebuild it.
    parts = []
    for error in exc.errors(include_input=False, include_url=False):
        field = ".".join(str(part) for part in error["loc"]).upper() or "settings"
        message = "is not set" if error["type"] == "missing" else error["msg"].removeprefix("Value error, ")
        parts.append(f"{field} {message}")
    return "invalid configuration: " + "; ".join(parts)


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment (plus explicit overrides); raise ConfigError with a safe message."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
