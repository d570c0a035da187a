"""Domain errors; the API maps each class to one HTTP status with the message as `detail`."""

from __future__ import annotations


class AppError(Exception):
    status_code = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFoundError(AppError):
    status_code = 404


class ConflictError(AppError):
    status_code = 409


class BusyError(AppError):
    """Capacity reached; the client may retry later."""

    status_code = 429
    retry_after_seconds = 5
