"""The composition root: settings -> storage -> registry -> dispatcher -> transports."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from commands import build_registry
from gateway.context import Services
from gateway.dispatcher import Dispatcher
from gateway.http import start_http_server
from gateway.mqtt import MqttTransport
from gateway.settings import Settings
from gateway.websocket import start_websocket_server
from storage.compaction import Compactor
from storage.db import Database
from storage.identity import IdentityStore
from storage.usage import UsageLog

__all__ = ["Gateway", "utc_now"]

logger = logging.getLogger("tr50gw")


def utc_now() -> datetime:
    """The gateway's clock: naive datetimes in UTC, as stored in DuckDB."""
    return datetime.now(UTC).replace(tzinfo=None)


class Gateway:
    """One running gateway: `serve()` runs until `stop()`; `ready` is set once it listens."""

    def __init__(self, settings: Settings, clock: Callable[[], datetime] = utc_now) -> None:
        self.settings = settings
        self.database = Database(settings.db, memory_limit=settings.db_memory_limit)
        self.usage = UsageLog(self.database, flush_interval=settings.flush_interval_ms / 1000)
        self.identity = IdentityStore(self.database, clock)
        self.compactor = (
            Compactor(self.database, clock, interval=settings.compact_interval_s)
            if settings.compact_interval_s > 0
            else None
        )
        self.services = Services(settings, self.identity, self.usage, clock)
        self.dispatcher = Dispatcher(build_registry(), self.services)
        self.ws_port: int | None = None
        self.http_port: int | None = None
        self.mqtt: MqttTransport | None = None
        self.ready = asyncio.Event()
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def serve(self) -> None:
        settings = self.settings
        logger.info("tr50gw starting as %s, usage log %s", settings.instance_name, settings.db)
        try:
            async with asyncio.TaskGroup() as group:
                target = settings.mqtt_target
                if target is not None:
                    self.mqtt = MqttTransport(
                        self.dispatcher,
                        target,
                        client_id=settings.client_id,
                        classic=settings.mqtt_classic,
                        shared_group=settings.shared_group,
                        max_payload=settings.max_payload,
                        max_reply=settings.mqtt_max_reply,
                    )
                    mqtt_task = group.create_task(self.mqtt.run())
                else:
                    mqtt_task = None
                server = None
                if settings.ws_port >= 0:
                    server = await start_websocket_server(
                        self.dispatcher,
                        settings.ws_host,
                        settings.ws_port,
                        max_payload=settings.max_payload,
                        allowed_origins=settings.ws_allowed_origins,
                        max_connections=settings.ws_max_connections,
                    )
                    self.ws_port = server.port
                    logger.info(
                        "websocket listening on ws://%s:%s/api", settings.ws_host, self.ws_port
                    )
                http = None
                if settings.http_port >= 0:
                    http = await start_http_server(
                        self.dispatcher,
                        settings.ws_host,
                        settings.http_port,
                        max_payload=settings.max_payload,
                    )
                    self.http_port = http.port
                self.ready.set()
                await self._stop.wait()
                # Stop taking requests on every transport; each finishes what is in
                # flight (replies sent, MQTT acks written) before it closes.
                if mqtt_task is not None:
                    mqtt_task.cancel()
                if server is not None:
                    await server.drain_and_close()
                if http is not None:
                    await http.close()
        finally:
            if self.compactor is not None:
                await asyncio.to_thread(self.compactor.close)
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.usage.close)
            self.database.close()
            logger.info("tr50gw stopped (%d calls logged)", self.usage.submitted)
