"""The WebSocket transport: `ws://HOST:PORT/api`, one envelope per message, replies in order.

Messages up to the configured payload limit are dispatched; larger ones up to four times the limit
are read and answered -90011 (and logged); beyond that the library closes the connection with
1009 before the message is buffered, and the gateway logs that as a -90011 call too.
"""

from __future__ import annotations

import itertools
import logging
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from gateway.context import Connection
from gateway.dispatcher import Dispatcher
from gateway.errors import PayloadTooLarge

__all__ = ["server_options", "start_websocket_server"]

logger = logging.getLogger("tr50gw.websocket")
_connection_ids = itertools.count(1)


def _only_api_path(connection: ServerConnection, request: Request) -> Response | None:
    if request.path.split("?", 1)[0] != "/api":
        return connection.respond(HTTPStatus.NOT_FOUND, "TR50 is served at /api\n")
    return None


def server_options(max_payload: int) -> dict[str, Any]:
    """The server's settings, shared with the benchmark's bare echo server to compare fairly."""
    return {
        "process_request": _only_api_path,
        "max_size": max_payload * 4,
        "max_queue": 16,
        "write_limit": 256 * 1024,
        "ping_interval": 20,
        "ping_timeout": 20,
    }


async def start_websocket_server(
    dispatcher: Dispatcher, host: str, port: int, max_payload: int
) -> Server:
    async def handle(websocket: ServerConnection) -> None:
        peer = websocket.remote_address
        connection = Connection(
            transport="ws",
            client_id=f"ws-{next(_connection_ids)}",
            remote_addr=str(peer[0]) if peer else "",
            binds_sessions=True,
        )
        try:
            async for message in websocket:
                reply = await dispatcher.handle(message, connection)
                await websocket.send(reply.decode())
        except ConnectionClosed as closed:
            if closed.sent is not None and closed.sent.code == 1009:
                await dispatcher.record_rejected(
                    connection, PayloadTooLarge("payload too large: message closed with 1009"), ""
                )

    return await serve(handle, host, port, **server_options(max_payload))
