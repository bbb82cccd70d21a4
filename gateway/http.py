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

from gateway.codec import encode
from gateway.context import Connection
from gateway.dispatcher import Dispatcher
from gateway.errors import PayloadTooLarge, failure

__all__ = ["HttpService", "start_http_server"]

logger = logging.getLogger("tr50gw.http")
_JSON = "application/json"
_MAX_BODY = web.AppKey("max_body", int)


class HttpService:
    def __init__(self, dispatcher: Dispatcher, runner: web.AppRunner) -> None:
        self._dispatcher = dispatcher
        self._runner = runner
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
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
                f"payload too large: more than {request.app[_MAX_BODY]} bytes, not read"
            )
            await self._dispatcher.record_rejected(connection, error, "")
            return web.Response(body=encode(failure(error.code, error.message)), content_type=_JSON)
        reply = await self._dispatcher.handle(body, connection)
        return web.Response(body=reply, content_type=_JSON)

    async def close(self) -> None:
        """Stop accepting; requests in progress finish and are answered (aiohttp's shutdown)."""
        await self._runner.cleanup()


async def start_http_server(
    dispatcher: Dispatcher, host: str, port: int, *, max_payload: int
) -> HttpService:
    max_body = max_payload * 4
    app = web.Application(client_max_size=max_body)
    app[_MAX_BODY] = max_body
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    service = HttpService(dispatcher, runner)
    app.router.add_post("/api", service.handle)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    service.port = int(runner.addresses[0][1])  # the bound one when `port` is 0
    logger.info("http listening on http://%s:%s/api", host, service.port)
    return service
