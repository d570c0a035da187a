"""A loopback TCP forwarder that can be cut or stalled, then restored, to simulate database outages."""

from __future__ import annotations

import contextlib
import socket
import threading


class TcpProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        self._stalled = False
        self._listen(self._listener)

    def _listen(self, listener: socket.socket) -> None:
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # listener closed
            if self._stalled:  # accepted, never answered: the client waits for its own timeout
                with self._lock:
                    self._sockets.append(client)
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._closed:
                    client.close()
                    upstream.close()
                    return
                self._sockets += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if not self._stalled:  # stalled: bytes vanish, as in a network partition
                    sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def _drop_connections(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def cut(self) -> None:
        """Refuse new connections and drop the open ones."""
        with self._lock:
            self._closed = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self._listener.close()
        self._drop_connections()

    def stall(self) -> None:
        """Keep every connection open but forward nothing, and accept new ones without answering."""
        self._stalled = True

    def restore(self) -> None:
        """Forward again after cut() or stall(). Stalled connections are dropped: they lost bytes."""
        if self._stalled:
            self._stalled = False
            self._drop_connections()
        with self._lock:
            if not self._closed:
                return
            self._closed = False
        # SO_REUSEADDR (set by create_server) lets the port be bound again despite TIME_WAIT sockets.
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listen(self._listener)
