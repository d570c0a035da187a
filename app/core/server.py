"""Uvicorn's HTTP protocol, with each response leaving the process in one write.

Uvicorn writes a response's status line and headers when the app sends `http.response.start` and its
body when the app sends `http.response.body`: two writes to the socket. A process killed between the two
(SIGKILL, the OOM killer, a crash in a C extension) leaves nginx with a complete header and a short body.
nginx has passed the header on by then, so neither nginx (`proxy_next_upstream`) nor the load balancer
(HAProxy's `retry-on`) may retry the request: the client gets a cut response. Seen in the site scenario's
kill test, about once in several thousand reads under the saturating load.

Here every write the protocol makes during one step of the event loop is held and sent as one write at
the end of that step. An app that sends its start and its body without waiting in between (every
response of this app: JSONResponse, HTMLResponse, FileResponse of the small static files, the errors)
therefore leaves in one write: a process killed at any instant has sent either the whole response or
nothing, and nothing is a connection closed before any byte, which nginx answers 502 and the load
balancer retries on the other host (GET and HEAD). A streamed response (chunks with waits in between)
still goes out chunk by chunk, as before.

Used as `uvicorn --http app.core.server:HttpProtocol` (role app's slot unit, the tests' servers).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class OneWriteTransport(asyncio.Transport):
    """A transport that collects the writes of one event-loop step and sends them as one."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def _flush(self) -> None:
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        # What was written before a close goes first (a Connection: close response, a 400).
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(len(data) for data in self._pending)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()


class HttpProtocol(HttpToolsProtocol):
    """Uvicorn's httptools protocol on a OneWriteTransport (module docstring)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(OneWriteTransport(transport, self.loop))
