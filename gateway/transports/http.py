"""The HTTP surface (SPEC §4, §7): `POST /api` (a TR50 envelope as the body), `GET /healthz`
and `GET /metrics`.

aiohttp parses HTTP; this module maps a request onto a `Connection` and the dispatcher's reply
onto a response. On `POST /api` TR50 errors travel in a 200 body, as on every other transport; a
`sessionId` header stands in for an `auth` block (an `auth` block in the body still wins). Each
request is its own connection: nothing binds, so a login answers a session id for later headers.
Bodies up to four times the payload limit are read and answered -90011 by the codec; larger ones
are refused by aiohttp before they are buffered, and answered and logged as -90011 here.

The other routes are logged too, as usage records with service `rest` and the route's name as
command (`rest.healthz`, `rest.metrics`), so what reaches the HTTP port shows up in its own
analytics; a `sessionId` header or `Authorization: Bearer <id>` names who called.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

from gateway.core.context import Connection
from gateway.core.dispatcher import Dispatcher
from gateway.core.errors import PayloadTooLarge
from gateway.transports.metrics import Metrics

__all__ = ["ROUTES", "Health", "HttpTransport"]

logger = logging.getLogger("tr50gw.http")
_JSON = "application/json"
ROUTES = ("healthz", "metrics")
"""The names of the routes logged as `rest.<name>` (besides `POST /api`'s TR50 commands)."""

Health = Callable[[], tuple[bool, dict[str, Any]]]
"""Whether the gateway can do its job (its writers store what they are given), and details."""


class HttpTransport:
    """One HTTP port: `POST /api`, `GET /healthz`, `GET /metrics`."""

    name = "http"

    def __init__(
        self,
        dispatcher: Dispatcher,
        host: str,
        port: int,
        *,
        max_payload: int,
        clock: Callable[[], datetime],
        health: Health,
        metrics: Metrics,
    ) -> None:
        self._dispatcher = dispatcher
        self._host = host
        self._requested_port = port
        self._max_body = max_payload * 4
        self._clock = clock
        self._health = health
        self._metrics = metrics
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    @property
    def port(self) -> int | None:
        return self._port

    async def start(self) -> None:
        app = web.Application(client_max_size=self._max_body)
        app.router.add_post("/api", self._handle)
        app.router.add_get("/healthz", self._logged("healthz", self._healthz))
        app.router.add_get("/metrics", self._logged("metrics", self._metrics_text))
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._requested_port)
        await site.start()
        self._port = int(self._runner.addresses[0][1])  # the bound one when the port is 0
        logger.info("http listening on http://%s:%s/api", self._host, self._port)

    @staticmethod
    def _connection(request: web.Request) -> Connection:
        token = request.headers.get("sessionId")
        authorization = request.headers.get("Authorization", "")
        if token is None and authorization[:7].lower() == "bearer ":
            token = authorization[7:].strip()
        return Connection(
            transport="http",
            remote_addr=request.remote or "",
            session_token=token[:512] if token else None,
        )

    async def _handle(self, request: web.Request) -> web.Response:
        connection = self._connection(request)
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

    def _logged(
        self, route: str, respond: Callable[[], Awaitable[tuple[web.Response, str]]]
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        """A route whose every call becomes a usage record `rest.<route>`: the request line as
        its request, the summary `respond` gives as its response."""

        async def handler(request: web.Request) -> web.Response:
            received_at, started = self._clock(), time.perf_counter_ns()
            response, summary = await respond()
            await self._dispatcher.record_route(
                self._connection(request),
                route,
                orjson.dumps({"method": request.method, "path": request.path_qs}).decode(),
                summary,
                None,  # answered as it should be, 503 included: the status is in the summary
                received_at=received_at,
                started=started,
            )
            return response

        return handler

    async def _healthz(self) -> tuple[web.Response, str]:
        healthy, details = self._health()
        document = {"status": "ok" if healthy else "unhealthy", **details}
        body = orjson.dumps(document)
        return web.Response(body=body, status=200 if healthy else 503, content_type=_JSON), (
            body.decode()
        )

    async def _metrics_text(self) -> tuple[web.Response, str]:
        text, content_type = self._metrics.render()
        response = web.Response(body=text)
        response.headers["Content-Type"] = content_type
        return response, orjson.dumps({"bytes": len(text)}).decode()

    async def stop(self) -> None:
        """Stop accepting; requests in progress finish and are answered (aiohttp's shutdown)."""
        if self._runner is not None:
            await self._runner.cleanup()
