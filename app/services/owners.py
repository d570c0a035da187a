"""Owners and their quotas: who may change a model or a session, and how much each owner may ask for.

An owner is a random token (POST /api/owners) that a browser keeps in an HttpOnly cookie and an API
client sends as `Authorization: Bearer`. The database keeps only its SHA-256. The operator token (from
the secrets store, OPERATOR_TOKEN) may delete and stop anything and read everything; it owns nothing.

Quotas are checked in the transaction that creates the row, after locking the owner's row, so that two
requests of one owner racing on two hosts cannot both take the last unit of a quota.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.models import ACTIVE_STATUSES, NetworkModel, Owner, TrainingSession
from app.services.errors import BusyError, ForbiddenError, UnauthorizedError

TOKEN_PREFIX = "nnp_"  # noqa: S105 - a prefix, not a secret
# nnp_ + 43 characters of URL-safe base64 (32 random bytes).
TOKEN_PATTERN = re.compile(r"nnp_[A-Za-z0-9_-]{43}")
COOKIE_NAME = "nnp_owner"
HOUR = timedelta(hours=1)


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True)
class Caller:
    """Who sent a request: an owner, the operator, or nobody (owner_id None, not operator)."""

    owner_id: int | None = None
    operator: bool = False

    def may_change(self, owner_id: int) -> bool:
        return self.operator or self.owner_id == owner_id

    def require_owner(self, action: str) -> int:
        """The owner id, for an action that creates something an owner keeps."""
        if self.owner_id is None:
            if self.operator:
                raise ForbiddenError(f"the operator token owns nothing and cannot {action}; use an owner token")
            raise UnauthorizedError(f"an owner token is required to {action}; {WHERE_OWNERS_COME_FROM}")
        return self.owner_id

    def require_someone(self, action: str) -> None:
        """401 before anything is looked up (even whether the row exists), for a request with no token."""
        if self.owner_id is None and not self.operator:
            raise UnauthorizedError(f"an owner token is required to {action}; {WHERE_OWNERS_COME_FROM}")

    def require_change(self, owner_id: int, what: str, action: str) -> None:
        self.require_someone(f"{action} {what}")
        if not self.may_change(owner_id):
            raise ForbiddenError(f"{what} belongs to another owner; only its owner (or the operator) may {action} it")


ANONYMOUS = Caller()
OPERATOR = Caller(operator=True)
WHERE_OWNERS_COME_FROM = (
    "POST /api/owners issues one (kept as a cookie by browsers; API clients send it as Authorization: Bearer)"
)


@dataclass(frozen=True)
class Reader:
    """Whose rows a request may read: everyone's, unless OWNER_ONLY_READS makes reads owner-only."""

    caller: Caller
    everything: bool

    def may_read(self, owner_id: int) -> bool:
        return self.everything or self.caller.may_change(owner_id)


def operator_matches(token: str, settings: Settings) -> bool:
    if settings.operator_token is None:
        return False
    return hmac.compare_digest(token.encode(), settings.operator_token.get_secret_value().encode())


def parse_authorization(header: str) -> str:
    """The token of an `Authorization: Bearer <token>` header; 401 naming the header otherwise."""
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthorizedError(f"Authorization header: expected 'Bearer <token>'; {WHERE_OWNERS_COME_FROM}")
    return token.strip()


def create_owner(db: Session) -> tuple[int, str]:
    token = new_token()
    owner = Owner(token_hash=token_hash(token))
    db.add(owner)
    db.commit()
    return owner.id, token


def lock_owner(db: Session, owner_id: int) -> None:
    """Serialise one owner's quota checks until the transaction ends (other owners are not held up)."""
    if db.scalar(select(Owner.id).where(Owner.id == owner_id).with_for_update()) is None:
        raise UnauthorizedError(f"owner token not recognised (removed by retention?); {WHERE_OWNERS_COME_FROM}")


def model_count(db: Session, owner_id: int) -> int:
    return db.scalar(select(func.count()).select_from(NetworkModel).where(NetworkModel.owner_id == owner_id)) or 0


def active_trainings(db: Session, owner_id: int) -> int:
    mine = TrainingSession.owner_id == owner_id
    return db.scalar(select(func.count()).where(mine, TrainingSession.status.in_(ACTIVE_STATUSES))) or 0


def _recent_epochs(db: Session, owner_id: int) -> list[tuple[datetime, int]]:
    """(started, epochs) of the owner's sessions created in the last hour, oldest first. A queued or running
    session counts the epochs it asked for; a finished one the epochs it ran."""
    active = TrainingSession.status.in_(ACTIVE_STATUSES)
    counted = case((active, TrainingSession.epochs), else_=TrainingSession.current_epoch)
    rows = db.execute(
        select(TrainingSession.created_at, counted)
        .where(TrainingSession.owner_id == owner_id, TrainingSession.created_at > func.now() - HOUR)
        .order_by(TrainingSession.created_at)
    ).all()
    return [(row[0], int(row[1])) for row in rows]


def epochs_last_hour(db: Session, owner_id: int) -> int:
    return sum(epochs for _, epochs in _recent_epochs(db, owner_id))


def check_model_quota(db: Session, owner_id: int, settings: Settings) -> None:
    if model_count(db, owner_id) >= settings.owner_max_models:
        raise ForbiddenError(
            f"quota owner_max_models: an owner may keep at most {settings.owner_max_models} models "
            "(OWNER_MAX_MODELS); delete one first",
            quota="owner_max_models",
        )


def check_training_quota(db: Session, owner_id: int, epochs: int, settings: Settings) -> None:
    limit = settings.owner_max_active_trainings
    if active_trainings(db, owner_id) >= limit:
        raise BusyError(
            f"quota owner_max_active_trainings: an owner may have at most {limit} trainings queued or running "
            "(OWNER_MAX_ACTIVE_TRAININGS); retry when one finishes, or stop one",
            quota="owner_max_active_trainings",
            retry_after_seconds=10,
        )
    hourly = settings.owner_max_epochs_per_hour
    if epochs > hourly:
        raise ForbiddenError(
            f"quota owner_max_epochs_per_hour: {epochs} epochs is more than an owner may start in an hour "
            f"({hourly}, OWNER_MAX_EPOCHS_PER_HOUR)",
            quota="owner_max_epochs_per_hour",
        )
    recent = _recent_epochs(db, owner_id)
    used = sum(n for _, n in recent)
    if used + epochs <= hourly:
        return
    # Retry once enough of the hour's sessions have aged out of it.
    now = db.scalar(select(func.now()))
    assert now is not None
    freed, wait = 0, 3600.0
    for started, n in recent:
        freed += n
        if used - freed + epochs <= hourly:
            wait = (started + HOUR - now).total_seconds()
            break
    raise BusyError(
        f"quota owner_max_epochs_per_hour: this owner started {used} epochs in the last hour and may start at "
        f"most {hourly} (OWNER_MAX_EPOCHS_PER_HOUR); {epochs} more fit in about {max(1, round(wait))} s",
        quota="owner_max_epochs_per_hour",
        retry_after_seconds=max(1, int(wait + 0.999)),
    )


@dataclass(frozen=True)
class Usage:
    models: int
    active_trainings: int
    epochs_last_hour: int


def usage(db: Session, owner_id: int) -> Usage:
    return Usage(model_count(db, owner_id), active_trainings(db, owner_id), epochs_last_hour(db, owner_id))
