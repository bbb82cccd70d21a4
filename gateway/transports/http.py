"""The HTTP surface (SPEC §4, §7): `POST /api` (a TR50 envelope as the body), the REST facade's
routes, `GET /openapi.json`, `GET /healthz` and `GET /metrics`.

aiohttp parses HTTP; this module maps a request onto a `Connection` and the dispatcher's reply
onto a response. On `POST /api` TR50 errors travel in a 200 body, as on every other transport; a
`sessionId` header stands in for an `auth` block (an `auth` block in the body still wins). Each
request is its own connection: nothing binds, so a login answers a session id for later headers.
Bodies up to four times the payload limit are read and answered -90011 by the codec; larger ones
are refused by aiohttp before they are buffered, and answered and logged as -90011 here.

`GET /` is the web console (`gateway.transports.console`): its files and `GET
/console/config.json`, which tells it where the WebSocket port is; they are logged as
`rest.console`.

A REST route runs its command (`rest.<route>`, `gateway.core.routes`) through the dispatcher
with the path parameters and the query string as params, as the session of a `sessionId` header
or `Authorization: Bearer <id>`; its TR50 failure becomes an HTTP status with a JSON body
`{"error": {"code", "message"}}` (`STATUS_OF`). The other routes are logged too, as usage records
with service `rest` and the route's name as command (`rest.healthz`, `rest.metrics`,
`rest.openapi`), so what reaches the HTTP port shows up in its own analytics.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

from gateway.core.context import Connection
from gateway.core.dispatcher import Dispatcher
from gateway.core.errors import PayloadTooLarge
from gateway.core.registry import Registry
from gateway.core.routes import HttpRoute
from gateway.transports.console import ConsoleAssets
from gateway.transports.metrics import Metrics
from gateway.transports.openapi import openapi_document

__all__ = ["ROUTES", "STATUS_OF", "Health", "HttpTransport"]

logger = logging.getLogger("tr50gw.http")
_JSON = "application/json"
ROUTES = ("healthz", "metrics", "openapi", "console", "unrouted")
"""The names of the routes logged as `rest.<name>` that are not REST facade commands."""

STATUS_OF = {
    -90001: 404,  # unknown command: cannot happen for a route
    -90002: 400,  # invalid params (the message names the param)
    -90003: 403,  # permission denied (showAll without Super-Ops)
    -90004: 401,  # authentication failed
    -90005: 401,  # no valid session
    -90008: 404,  # not found (another org's record is not found either)
    -90010: 400,
    -90011: 413,
    -90012: 429,
}
"""The HTTP status of a route's TR50 failure; any other code is 500 (a bug, never bad input)."""

Health = Callable[[], tuple[bool, dict[str, Any]]]
"""Whether the gateway can do its job (its writers store what they are given), and details."""


class HttpTransport:
    """One HTTP port: `POST /api`, the REST facade's routes, `GET /openapi.json`, `GET /healthz`
    and `GET /metrics`. A session id comes in a `sessionId` header or as `Authorization: Bearer`
    on every route, `POST /api` included."""

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
        routes: tuple[list[HttpRoute], Registry] = ([], Registry([])),
        version: str = "0",
        console: ConsoleAssets | None = None,
        websocket_port: Callable[[], int | None] = lambda: None,
    ) -> None:
        """`routes`: the REST facade's routes and the registry of their commands; `console`:
        the web console's files (none: no console); `websocket_port`: where the console finds
        the WebSocket transport once it listens (None: it has none and uses `POST /api`)."""
        self._dispatcher = dispatcher
        self._host = host
        self._requested_port = port
        self._max_body = max_payload * 4
        self._clock = clock
        self._health = health
        self._metrics = metrics
        self._routes = routes[0]
        self._openapi = orjson.dumps(openapi_document(routes[0], routes[1], version))
        self._version = version
        self._console = console
        self._websocket_port = websocket_port
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    @property
    def port(self) -> int | None:
        return self._port

    async def start(self) -> None:
        app = web.Application(client_max_size=self._max_body, middlewares=[self._unrouted])
        app.router.add_post("/api", self._handle)
        app.router.add_get("/healthz", self._logged("healthz", self._healthz))
        app.router.add_get("/metrics", self._logged("metrics", self._metrics_text))
        app.router.add_get("/openapi.json", self._logged("openapi", self._openapi_json))
        if self._console is not None:
            app.router.add_get("/", self._logged("console", self._console_file))
            app.router.add_get("/console/{name:.+}", self._logged("console", self._console_file))
        for route in self._routes:
            app.router.add_route(route.method, route.path, self._route_handler(route))
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
        self, route: str, respond: Callable[[web.Request], Awaitable[tuple[web.Response, str]]]
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        """A route whose every call becomes a usage record `rest.<route>`: the request line as
        its request, the summary `respond` gives as its response."""

        async def handler(request: web.Request) -> web.Response:
            received_at, started = self._clock(), time.perf_counter_ns()
            response, summary = await respond(request)
            await self._dispatcher.record_route(
                self._connection(request),
                route,
                _request_line(request),
                summary,
                None,  # answered as it should be, 503 included: the status is in the summary
                received_at=received_at,
                started=started,
            )
            return response

        return handler

    @web.middleware
    async def _unrouted(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """A path or method no route has: aiohttp's 404 or 405, with a JSON body like every
        other error here, and logged as `rest.unrouted`."""
        try:
            return await handler(request)
        except web.HTTPException as refused:
            if refused.status not in (404, 405):
                raise
            code = -90008 if refused.status == 404 else -90001
            what = "no such route" if refused.status == 404 else "method not allowed"
            response = _error(
                refused.status, code, f"{what}: {request.method} {request.path}"[:300]
            )
            if refused.status == 405 and "Allow" in refused.headers:
                response.headers["Allow"] = refused.headers["Allow"]
            await self._dispatcher.record_route(
                self._connection(request),
                "unrouted",
                _request_line(request),
                response.text or "",
                code,
                received_at=self._clock(),
                started=time.perf_counter_ns(),
            )
            return response

    def _route_handler(
        self, route: HttpRoute
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            params: dict[str, Any] = dict(request.match_info)
            for name in set(request.query):
                values = request.query.getall(name)
                if name in params:
                    values = [params[name], *values]
                # A param given twice arrives as a list: its model refuses it (-90002, logged).
                params[name] = values[0] if len(values) == 1 else values
            outcome = await self._dispatcher.handle_route(
                self._connection(request), route.command, params
            )
            if not outcome["success"]:
                code, message = outcome["errorCodes"][0], outcome["errorMessages"][0]
                return _error(STATUS_OF.get(code, 500), code, message)
            result = outcome["params"]
            if "stream" in result:
                return await _streamed(request, result["stream"], result["headers"])
            response = web.Response(body=orjson.dumps(result["body"]), content_type=_JSON)
            for header, value in result.get("headers", {}).items():
                response.headers[header] = str(value)
            return response

        return handler

    async def _console_file(self, request: web.Request) -> tuple[web.Response, str]:
        """A console file from memory (`/` is `index.html`), revalidated by its ETag and gzipped
        when the browser accepts it; `config.json` says where the WebSocket transport listens."""
        assert self._console is not None  # the route exists only with a console
        name = request.match_info.get("name", "index.html")
        if name == "config.json":
            port = self._websocket_port()
            config = {
                "version": self._version,
                "websocket": None if port is None else {"port": port, "path": "/api"},
            }
            body = orjson.dumps(config)
            response = web.Response(body=body, content_type=_JSON)
            response.headers["Cache-Control"] = "no-store"
            return response, body.decode()
        asset = self._console.get(name)
        if asset is None:
            response = _error(404, -90008, f"no such console file: {name}"[:300])
            return response, response.text or ""
        headers = {"ETag": asset.etag, "Cache-Control": "no-cache"}
        summary = orjson.dumps({"file": name, "bytes": len(asset.body)}).decode()
        if asset.etag in request.headers.get("If-None-Match", ""):
            return web.Response(status=304, headers=headers), summary
        response = web.Response(body=asset.body, headers=headers)
        response.headers["Content-Type"] = asset.content_type
        response.enable_compression()  # gzip or deflate, as Accept-Encoding asks; else none
        return response, summary

    async def _openapi_json(self, request: web.Request) -> tuple[web.Response, str]:
        response = web.Response(body=self._openapi, content_type=_JSON)
        return response, orjson.dumps({"bytes": len(self._openapi)}).decode()

    async def _healthz(self, request: web.Request) -> tuple[web.Response, str]:
        healthy, details = self._health()
        document = {"status": "ok" if healthy else "unhealthy", **details}
        body = orjson.dumps(document)
        return web.Response(body=body, status=200 if healthy else 503, content_type=_JSON), (
            body.decode()
        )

    async def _metrics_text(self, request: web.Request) -> tuple[web.Response, str]:
        # Off the loop: a lake's catalog figure is read from PostgreSQL when scraped.
        text, content_type = await asyncio.to_thread(self._metrics.render)
        response = web.Response(body=text)
        response.headers["Content-Type"] = content_type
        return response, orjson.dumps({"bytes": len(text)}).decode()

    async def stop(self) -> None:
        """Stop accepting; requests in progress finish and are answered (aiohttp's shutdown)."""
        if self._runner is not None:
            await self._runner.cleanup()


def _error(status: int, code: int, message: str) -> web.Response:
    body = orjson.dumps({"error": {"code": code, "message": message}})
    return web.Response(body=body, status=status, content_type=_JSON)


async def _streamed(
    request: web.Request, chunks: AsyncIterator[bytes], headers: dict[str, Any]
) -> web.StreamResponse:
    """A body written chunk by chunk as the route's iterator gives it (an export): each write
    waits for the client to take the last, so a slow reader holds the rows back, not memory."""
    response = web.StreamResponse(headers={name: str(value) for name, value in headers.items()})
    response.enable_chunked_encoding()
    await response.prepare(request)
    try:
        async for chunk in chunks:
            await response.write(chunk)
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]
    await response.write_eof()
    return response


def _request_line(request: web.Request) -> dict[str, Any]:
    """What the usage log keeps of a request that is not a command: its method, path and
    query (as an object, so that the dispatcher masks a secret-looking parameter)."""
    query: dict[str, Any] = {}
    for name in request.query:
        values = request.query.getall(name)
        query[name] = values[0] if len(values) == 1 else values
    line: dict[str, Any] = {"method": request.method, "path": request.path[:1000]}
    if query:
        line["query"] = query
    return line
