"""Owner tokens: issue one, and see what the caller may still use."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status

from app.api.deps import CallerDep, DbDep, SettingsDep
from app.core.db import read_with_retry
from app.schemas.common import error_responses
from app.schemas.owners import OwnerCreated, OwnerOut, OwnerQuotas, QuotaUse
from app.services import owners as service
from app.services.errors import UnauthorizedError

router = APIRouter(prefix="/owners", tags=["owners"])

# A browser keeps its token for a year; retention forgets an owner with nothing left after RETENTION_MODEL_DAYS.
COOKIE_MAX_AGE = 365 * 24 * 3600


@router.post("", status_code=status.HTTP_201_CREATED, responses=error_responses(429))
def create_owner(request: Request, response: Response, db: DbDep) -> OwnerCreated:
    """A new owner token. Browsers get it as an HttpOnly, SameSite=Strict cookie; API clients read it from
    the body once and send it as `Authorization: Bearer`. nginx limits how often one address may ask."""
    owner_id, token = service.create_owner(db)
    response.set_cookie(
        service.COOKIE_NAME,
        token,
        max_age=COOKIE_MAX_AGE,
        path="/api",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    response.headers["Cache-Control"] = "no-store"
    return OwnerCreated(owner_id=owner_id, token=token)


@router.get("/me", responses=error_responses(401))
def who_am_i(caller: CallerDep, db: DbDep, settings: SettingsDep) -> OwnerOut:
    """The caller's owner id and how much of each quota it uses (401 without a token)."""
    if caller.operator:
        return OwnerOut(owner_id=None, operator=True, owner_only_reads=settings.owner_only_reads, quotas=None)
    if caller.owner_id is None:
        raise UnauthorizedError(f"no owner token; {service.WHERE_OWNERS_COME_FROM}")
    owner_id = caller.owner_id
    use = read_with_retry(db, lambda s: service.usage(s, owner_id), settings.db_read_retry_seconds)
    quotas = OwnerQuotas(
        models=QuotaUse(used=use.models, limit=settings.owner_max_models),
        active_trainings=QuotaUse(used=use.active_trainings, limit=settings.owner_max_active_trainings),
        epochs_per_hour=QuotaUse(used=use.epochs_last_hour, limit=settings.owner_max_epochs_per_hour),
    )
    return OwnerOut(owner_id=owner_id, operator=False, owner_only_reads=settings.owner_only_reads, quotas=quotas)
