"""Domain errors; the API maps each class to one HTTP status with the message as `detail`."""

from __future__ import annotations


class AppError(Exception):
    status_code = 400

    def __init__(self, message: str, *, quota: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        # The owner quota that refused the request (app.services.owners), named in the answer's body.
        self.quota = quota

    def headers(self) -> dict[str, str] | None:
        return None


class NotFoundError(AppError):
    status_code = 404


class ConflictError(AppError):
    status_code = 409


class UnauthorizedError(AppError):
    """No owner token, or one that is not (or no longer) known."""

    status_code = 401

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="nnp"'}


class ForbiddenError(AppError):
    """Someone else's model or session, or a quota that waiting does not restore."""

    status_code = 403


class BusyError(AppError):
    """Capacity or a quota reached; the client may retry after Retry-After seconds."""

    status_code = 429

    def __init__(self, message: str, *, quota: str | None = None, retry_after_seconds: int = 5) -> None:
        super().__init__(message, quota=quota)
        self.retry_after_seconds = retry_after_seconds

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_seconds)}
