"""The HTTP transport (SPEC §4): `POST http://HOST:PORT/api`, a TR50 envelope as the body.

aiohttp parses HTTP; this module only maps a request onto a `Connection` and the dispatcher's
reply onto a 200 response: TR50 errors travel in the body, as on every other transport. A
`sessionId` header stands in for an `auth` block (an `auth` block in the body still wins). Each
request is its own connection: nothing binds, so a login answers a session id for later headers.
Bodies up to four times the payload limit are read and answered -90011 by the codec; larger ones
are refused by aiohttp before they are buffered, and answered and logged as -90011 here.
"""

from __future__ import annotations

import logging

from aiohttp import web

from gateway.core.context import Connection
from gateway.core.dispatcher import Dispatcher
from gateway.core.errors import PayloadTooLarge

__all__ = ["HttpTransport"]

logger = logging.getLogger("tr50gw.http")
_JSON = "application/json"


class HttpTransport:
    """`POST http://HOST:PORT/api`: one envelope per request, the reply as the 200 body."""

    name = "http"

    def __init__(self, dispatcher: Dispatcher, host: str, port: int, *, max_payload: int) -> None:
        self._dispatcher = dispatcher
        self._host = host
        self._requested_port = port
        self._max_body = max_payload * 4
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    @property
    def port(self) -> int | None:
        return self._port

    async def start(self) -> None:
        app = web.Application(client_max_size=self._max_body)
        app.router.add_post("/api", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._requested_port)
        await site.start()
        self._port = int(self._runner.addresses[0][1])  # the bound one when the port is 0
        logger.info("http listening on http://%s:%s/api", self._host, self._port)

    async def _handle(self, request: web.Request) -> web.Response:
        token = request.headers.get("sessionId")
        connection = Connection(
            transport="http",
            remote_addr=request.remote or "",
            session_token=token[:512] if token else None,
        )
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            error = PayloadTooLarge(
                f"payload too large: more than {self._max_body} bytes, not read"
            )
            reply = await self._dispatcher.reject(connection, error)
        else:
            reply = await self._dispatcher.handle(body, connection)
        return web.Response(body=reply, content_type=_JSON)

    async def stop(self) -> None:
        """Stop accepting; requests in progress finish and are answered (aiohttp's shutdown)."""
        if self._runner is not None:
            await self._runner.cleanup()
