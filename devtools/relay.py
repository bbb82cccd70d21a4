"""A TCP relay between a client and a server whose client-to-server direction can be held: what
the client sends meanwhile is kept, never delivered, until `release` or until the connection is
dropped. For tests of what a peer never received: a gateway's replies and acknowledgements
written to its socket but lost with it (tests/test_redelivery_after_restart.py).
"""

from __future__ import annotations

import contextlib
import socket
import threading

from devtools.broker import HOST

__all__ = ["Relay"]


class Relay:
    """Listens on a free port of 127.0.0.1 and relays each connection to `upstream_port`."""

    def __init__(self, upstream_port: int) -> None:
        self._upstream = upstream_port
        self._listener = socket.create_server((HOST, 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._holding = False
        self.held = bytearray()  # client-to-server bytes kept while holding
        self._sockets: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, name="relay-accept", daemon=True).start()

    def hold(self) -> None:
        """From now on, keep what clients send instead of delivering it."""
        with self._lock:
            self._holding = True

    def drop(self) -> None:
        """Close every relayed connection; what was held is never delivered. New connections
        are relayed normally again."""
        with self._lock:
            self._holding = False
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self.drop()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection((HOST, self._upstream))
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, upstream: bool) -> None:
        try:
            while data := source.recv(65536):
                with self._lock:
                    if upstream and self._holding:
                        self.held += data
                        continue
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
