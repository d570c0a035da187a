"""Pure ASGI middleware (no BaseHTTPMiddleware: it costs a task per request on the hot path)."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.exceptions import HTTPException

from app.core import metrics
from app.core.logging import request_id_var

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

logger = logging.getLogger("app.access")
error_logger = logging.getLogger("app.error")

# Incoming ids are echoed into logs and headers: accept only short, plain tokens.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


async def _send_json(send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]]) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class RequestContextMiddleware:
    """Request id (honours X-Request-ID), one JSON access line and the metrics per request (app.core.metrics),
    and the catch-all 500.

    The catch-all lives here rather than in Starlette's ServerErrorMiddleware so that the 500 still
    carries the request id and the failure is logged once, with the id.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.unhandled_errors = 0  # read by tests: fuzzed input must never get here

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                request_id = candidate if _REQUEST_ID.match(candidate) else ""
                break
        request_id = request_id or uuid.uuid4().hex
        id_header = (b"x-request-id", request_id.encode())
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 0
        metrics.IN_FLIGHT.inc()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), id_header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            self.unhandled_errors += 1
            error_logger.exception("unhandled error", extra={"method": scope["method"], "path": scope["path"]})
            if status:  # the response already started: all we can do is let the server drop the connection
                raise
            status = 500
            body = {"detail": "internal server error", "request_id": request_id}
            await _send_json(send, 500, body, [id_header])
        finally:
            seconds = time.perf_counter() - started
            metrics.IN_FLIGHT.dec()
            # The router left the matched route in the scope (the same dict all the way down).
            metrics.observe_request(scope["method"], scope.get("route"), scope["path"], status, seconds)
            logger.info(
                "request",
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round(seconds * 1000, 2),
                },
            )
            request_id_var.reset(token)


class BodyTooLargeError(HTTPException):
    """An HTTPException so that FastAPI's body parsing passes it through as a 413 instead of a 400."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"request body too large (limit {max_bytes} bytes)")


class BodySizeLimitMiddleware:
    """Reject request bodies over a limit with 413, by Content-Length or while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit():
                    await _send_json(send, 400, {"detail": "invalid Content-Length header"}, [])
                    return
                if int(value) > self.max_bytes:
                    await self._reject(send)
                    return
                break
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLargeError(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLargeError:
            if started:
                raise
            await self._reject(send)

    async def _reject(self, send: Send) -> None:
        await _send_json(send, 413, {"detail": BodyTooLargeError(self.max_bytes).detail}, [])
