"""The WebSocket transport: `ws://HOST:PORT/api`, one envelope per message, replies in order.

Messages up to the configured payload limit are dispatched; larger ones up to four times the limit
are read and answered -90011 (and logged); beyond that the library closes the connection with
1009 before the message is buffered, and the gateway logs that as a -90011 call too.

Every handshake passes `_Admission` first: a path other than /api is refused 404, an Origin not
on the allow-list (and not the gateway's own console: the handshake's host on the HTTP port)
403, one connection too many 503. Memory per connection is bounded both ways:
at most `max_queue` frames wait to be handled before the gateway stops reading; a reply waits in
`send` while more than `write_limit` bytes are unsent, and the gateway stops reading meanwhile
(`GatewayConnection`). A client that sends and never reads therefore fills only socket buffers.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from gateway.core.codec import encode
from gateway.core.context import Connection
from gateway.core.dispatcher import Dispatcher
from gateway.core.errors import MalformedEnvelope, PayloadTooLarge

__all__ = ["NO_ORIGIN", "GatewayConnection", "WebSocketTransport", "server_options"]

logger = logging.getLogger("tr50gw.websocket")

NO_ORIGIN = ""
"""The allow-list entry that admits handshakes without an Origin header (non-browser clients)."""

_LIMIT_LOG_INTERVAL = 5.0  # a full server is hammered by retries: one log line per interval
_RETRY_AFTER = "5"  # seconds, in the 503's Retry-After header
_ORIGIN_LOG_CAP = 100  # the Origin is the client's text: logged truncated and quoted


class GatewayConnection(ServerConnection):
    """A server connection that stops reading from its client while it cannot write to it.

    websockets answers every Ping frame with a Pong as soon as the frame is read, whether or not
    the write buffer drains, and stops reading only when `max_queue` data frames wait. So a client
    that sends Pings and never reads made the gateway buffer Pongs without bound (measured
    before this class: +190 MB of RSS in 10 s from one client). Reading therefore
    pauses while the frame queue is full or writing is paused (more than `write_limit` bytes
    unsent), and resumes only when neither holds.

    It also reports when its TCP connection is gone, handshake or not: that is what gives back
    its place under the connection limit.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lost = False
        self._frame_queue_full = False
        self._on_lost: list[Callable[[], None]] = []

    def when_lost(self, callback: Callable[[], None]) -> None:
        """Call `callback` once the TCP connection is closed (never if `lost` is already True)."""
        self._on_lost.append(callback)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        # The frame queue would call transport.pause_reading/resume_reading itself, and its
        # resume would undo a pause for writing: both reasons go through _update_reading.
        self.recv_messages.pause = self._queue_full
        self.recv_messages.resume = self._queue_drained

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        try:
            super().connection_lost(exc)
        finally:
            callbacks, self._on_lost = self._on_lost, []
            for callback in callbacks:
                callback()

    def pause_writing(self) -> None:
        super().pause_writing()
        self._update_reading()

    def resume_writing(self) -> None:
        super().resume_writing()
        self._update_reading()

    def _queue_full(self) -> None:
        self._frame_queue_full = True
        self._update_reading()

    def _queue_drained(self) -> None:
        self._frame_queue_full = False
        self._update_reading()

    def _update_reading(self) -> None:
        # Both are no-ops when the transport already is in that state, or is closing.
        if self._frame_queue_full or self.paused:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()


def _normalized_origin(origin: str) -> str:
    # Scheme and host are case-insensitive; an Origin header never ends with "/", a config might.
    return origin.strip().rstrip("/").lower()


def _peer(connection: ServerConnection) -> str:
    address = connection.remote_address
    return str(address[0]) if address else "?"


class _Admission:
    """websockets' `process_request` hook: which handshakes may become connections.

    It runs on the event loop and never awaits, so between checking the count and taking a place
    nothing else runs: two handshakes cannot both take the last place. A place is taken before
    the handshake completes and given back when the TCP connection closes, including when the
    handshake then fails (bad headers, client gone, open timeout), so nothing leaks places.
    """

    def __init__(
        self,
        allowed_origins: Iterable[str],
        max_connections: int | None,
        console_port: Callable[[], int | None] = lambda: None,
    ) -> None:
        self._origins = frozenset(_normalized_origin(origin) for origin in allowed_origins)
        self._console_port = console_port
        self._max_connections = max_connections
        self.open_connections = 0
        self._limit_refusals = 0
        self._limit_logged_at = -math.inf

    def __call__(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path.split("?", 1)[0] != "/api":
            return connection.respond(HTTPStatus.NOT_FOUND, "TR50 is served at /api\n")
        if self._origins and not self._origin_allowed(connection, request):
            return connection.respond(HTTPStatus.FORBIDDEN, "Origin not allowed\n")
        if self._max_connections is not None:
            return self._take_place(connection, self._max_connections)
        return None

    def _origin_allowed(self, connection: ServerConnection, request: Request) -> bool:
        values = request.headers.get_all("Origin")
        if len(values) > 1:  # RFC 6454 7.3: a user agent sends at most one
            refused = f"{len(values)} Origin headers"
        else:
            origin = values[0] if values else NO_ORIGIN
            if _normalized_origin(origin) in self._origins or self._is_console(origin, request):
                return True
            refused = f"Origin {origin[:_ORIGIN_LOG_CAP]!r}" if origin else "no Origin header"
        logger.warning("websocket handshake from %s refused (403): %s", _peer(connection), refused)
        return False

    def _is_console(self, origin: str, request: Request) -> bool:
        """Whether `origin` is the gateway's own console: the host this handshake was sent to
        (its Host header), on the HTTP port that serves the console, over http or https."""
        port = self._console_port()
        if port is None or not origin:
            return False
        try:
            parsed, host = urlsplit(origin), urlsplit("//" + request.headers.get("Host", ""))
            return (
                parsed.scheme in ("http", "https")
                and parsed.hostname is not None
                and parsed.hostname == host.hostname
                and parsed.port == port
                and not parsed.path
            )
        except ValueError:  # a port that is no number, a malformed IPv6 address
            return False

    def _take_place(self, connection: ServerConnection, limit: int) -> Response | None:
        if not isinstance(connection, GatewayConnection):
            raise TypeError("the connection limit needs create_connection=GatewayConnection")
        if connection.lost:  # gone while its request waited: it will never be served
            return None
        if self.open_connections >= limit:
            self._log_limit_refusal(connection, limit)
            response = connection.respond(
                HTTPStatus.SERVICE_UNAVAILABLE, "Too many connections, try again later\n"
            )
            response.headers["Retry-After"] = _RETRY_AFTER
            return response
        self.open_connections += 1
        connection.when_lost(self._give_back_place)
        return None

    def _give_back_place(self) -> None:
        self.open_connections -= 1

    def _log_limit_refusal(self, connection: ServerConnection, limit: int) -> None:
        self._limit_refusals += 1
        now = time.monotonic()
        if now - self._limit_logged_at < _LIMIT_LOG_INTERVAL:
            return
        logger.warning(
            "websocket connection limit (%d) reached: %d handshake(s) refused (503) since the "
            "last report, the latest from %s",
            limit,
            self._limit_refusals,
            _peer(connection),
        )
        self._limit_logged_at = now
        self._limit_refusals = 0


def server_options(
    max_payload: int,
    *,
    allowed_origins: Iterable[str] = (),
    max_connections: int | None = None,
    console_port: Callable[[], int | None] = lambda: None,
) -> dict[str, Any]:
    """The server's settings, shared with the benchmark's bare echo server to compare fairly.

    `allowed_origins` empty admits any Origin; `max_connections` None sets no limit;
    `console_port` is the HTTP port of the gateway's console, whose origin is always admitted.
    """
    return {
        "process_request": _Admission(allowed_origins, max_connections, console_port),
        "create_connection": GatewayConnection,
        "max_size": max_payload * 4,
        "max_queue": 16,
        "write_limit": 256 * 1024,
        "ping_interval": 20,
        "ping_timeout": 20,
    }


class WebSocketTransport:
    """`ws://HOST:PORT/api`: one envelope per message, its reply on the same connection.

    Also what a graceful stop needs: which connections are mid-command.
    """

    name = "ws"

    def __init__(
        self,
        dispatcher: Dispatcher,
        host: str,
        port: int,
        *,
        max_payload: int,
        allowed_origins: Iterable[str] = (),
        max_connections: int | None = None,
        drain_grace: float = 10.0,
        console_port: Callable[[], int | None] = lambda: None,
    ) -> None:
        self._dispatcher = dispatcher
        self._host = host
        self._requested_port = port
        self._options = server_options(
            max_payload,
            allowed_origins=allowed_origins,
            max_connections=max_connections,
            console_port=console_port,
        )
        self._drain_grace = drain_grace
        self._connection_ids = itertools.count(1)
        self._busy: dict[ServerConnection, bool] = {}
        self._draining = False
        self._all_closed = asyncio.Event()
        self._server: Server | None = None

    @property
    def port(self) -> int | None:
        if self._server is None:
            return None
        return int(next(iter(self._server.sockets)).getsockname()[1])

    async def start(self) -> None:
        self._server = await serve(self._handle, self._host, self._requested_port, **self._options)
        logger.info("websocket listening on ws://%s:%s/api", self._host, self.port)

    @staticmethod
    def _pusher(websocket: ServerConnection) -> Callable[[dict[str, Any]], Awaitable[None]]:
        """Sends a server message (a live tail's notification) on the connection."""

        async def push(message: dict[str, Any]) -> None:
            await websocket.send(encode(message).decode())

        return push

    @property
    def open_connections(self) -> int:
        """Connections being served right now."""
        return len(self._busy)

    async def _handle(self, websocket: ServerConnection) -> None:
        peer = websocket.remote_address
        connection = Connection(
            transport="ws",
            client_id=f"ws-{next(self._connection_ids)}",
            remote_addr=str(peer[0]) if peer else "",
            binds_sessions=True,
        )
        connection.push = self._pusher(websocket)
        self._busy[websocket] = False
        try:
            async for message in websocket:
                if self._draining:  # arrived after the stop began: not taken, not logged
                    break
                self._busy[websocket] = True
                reply = await self._dispatcher.handle(message, connection)
                await websocket.send(reply.decode())
                self._busy[websocket] = False
                if self._draining:
                    await websocket.close(1001, "gateway stopping")
                    break
        except ConnectionClosed as closed:
            # The library closes before the message reaches us; the call is logged all the same.
            code = closed.sent.code if closed.sent is not None else None
            if code == 1009:
                await self._dispatcher.reject(
                    connection, PayloadTooLarge("payload too large: message closed with 1009")
                )
            elif code == 1007:
                await self._dispatcher.reject(
                    connection,
                    MalformedEnvelope("malformed envelope: text frame not UTF-8, closed with 1007"),
                )
        finally:
            self._dispatcher.connection_closed(connection)
            del self._busy[websocket]
            if self._draining and not self._busy:
                self._all_closed.set()

    async def stop(self) -> None:
        """Stop accepting; let every command in progress finish and send its reply; then close.

        A connection between commands is closed (1001) at once; one mid-command closes right
        after sending its reply. Messages a client sent that were not taken get no reply and no
        record: every record of this gateway stands for a reply it sent.
        """
        server = self._server
        if server is None:
            return
        self._draining = True
        server.close(close_connections=False)
        idle = [websocket for websocket, busy in self._busy.items() if not busy]
        await asyncio.gather(
            *(websocket.close(1001, "gateway stopping") for websocket in idle),
            return_exceptions=True,
        )
        if not self._busy:
            self._all_closed.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._all_closed.wait(), self._drain_grace)
        server.close()  # whatever is left after the timeout
        await server.wait_closed()
