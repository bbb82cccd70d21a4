"""The composition root: settings -> storage -> registry -> dispatcher -> transports.

`assemble` is the one place the parts are wired: `Gateway` (the CLI's `serve`), the tests and the
tools all build through it, so what they test is what runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from commands import build_registry, presenters, rest
from commands.plugins import Plugin, discover, load_plugins
from gateway.core.context import CoreConfig, Services
from gateway.core.dispatcher import Dispatcher
from gateway.core.observed import ObservedUsageSink
from gateway.core.ports import Provisioning
from gateway.core.registry import Registry
from gateway.core.tail import UsageTail
from gateway.settings import Settings
from gateway.transports import Transport
from gateway.transports.console import ConsoleAssets
from gateway.transports.http import ROUTES, HttpTransport
from gateway.transports.metrics import Metrics
from gateway.transports.mqtt import MqttTransport
from gateway.transports.websocket import WebSocketTransport
from storage.duckdb import DuckDBStorage
from storage.duckdb.writer import BatchWriter
from storage.ducklake import DuckLakeStorage

__all__ = [
    "Assembly",
    "Gateway",
    "assemble",
    "build_command_registry",
    "build_transports",
    "core_config",
    "open_provisioning",
    "utc_now",
]

logger = logging.getLogger("tr50gw")


def utc_now() -> datetime:
    """The gateway's clock: naive datetimes in UTC, as stored in DuckDB."""
    return datetime.now(UTC).replace(tzinfo=None)


def core_config(settings: Settings) -> CoreConfig:
    return CoreConfig(
        instance_name=settings.instance_name,
        max_payload=settings.max_payload,
        max_commands=settings.max_commands,
        log_cap=settings.log_cap,
        session_ttl=settings.session_ttl,
        auth_max_failures=settings.auth_max_failures,
        auth_failure_window_s=settings.auth_failure_window_s,
        durable_replies=settings.durable_replies,
    )


HEALTHY_COMMIT_LAG = 30.0
"""Seconds a record may wait for its writer's commit before `/healthz` answers 503."""


@dataclass(frozen=True, slots=True)
class Assembly:
    """Everything but the transports: storage, the services the handlers see, the dispatcher,
    and the metrics every call is counted in."""

    settings: Settings
    storage: DuckDBStorage
    services: Services
    registry: Registry
    dispatcher: Dispatcher
    metrics: Metrics
    routes: Registry  # the REST facade's commands (commands/rest.py)

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Healthy while every writer stores what it is given (`GET /healthz`); the writers
        that do not, by table name."""
        failing = [
            name
            for name, writer in self.storage.writers.items()
            if not writer.healthy(HEALTHY_COMMIT_LAG)
        ]
        return (not failing, {"failing": failing} if failing else {})

    def close(self) -> None:
        """Commit every submitted record and close the storage (blocking)."""
        self.storage.close()


def assemble(
    settings: Settings,
    *,
    clock: Callable[[], datetime] = utc_now,
    registry: Registry | None = None,
) -> Assembly:
    """Open the storage and wire the core over it; `registry` defaults to the built-in commands
    and the installed plugins' (`build_command_registry`), built first so that a refused plugin
    (`PluginError`) stops the start before anything is opened."""
    registry = registry if registry is not None else build_command_registry(settings)
    storage = open_storage(
        settings,
        clock,
        memory_limit=settings.db_memory_limit,
        flush_interval=settings.flush_interval_ms / 1000,
        compact_interval=settings.compact_interval_s,
        retention_days=settings.retention_days,
        rollup_retention_days=settings.rollup_retention_days,
        use_rollups=settings.rollups,
        archive_dir=settings.archive_dir,
        retention_interval=settings.retention_interval_s,
        broker_credentials=settings.broker_credentials,
    )
    routes = Registry([rest.COMMANDS])
    metrics = Metrics([*registry.names(), *routes.names(), *(f"rest.{route}" for route in ROUTES)])
    writers = storage.writers
    metrics.labelled_gauge(
        "tr50gw_writer_backlog",
        "Rows submitted to a table's writer and not yet committed",
        "table",
        {name: _reading(writer, "backlog") for name, writer in writers.items()},
    )
    metrics.labelled_gauge(
        "tr50gw_writer_commit_lag_seconds",
        "How long the oldest uncommitted row of a table has waited, at most (0: none waits)",
        "table",
        {name: _reading(writer, "commit_lag") for name, writer in writers.items()},
    )
    metrics.labelled_counter(
        "tr50gw_writer_commits",
        "Batches of a table's rows committed",
        "table",
        {name: _reading(writer, "commits") for name, writer in writers.items()},
    )
    metrics.labelled_counter(
        "tr50gw_writer_commit_conflicts",
        "Commits of a table's rows that lost to a concurrent commit (another gateway on the"
        " same lake, or its compaction) and were tried again",
        "table",
        {name: _reading(writer, "conflicts") for name, writer in writers.items()},
    )
    metrics.labelled_counter(
        "tr50gw_lake_catalog_rollbacks",
        "On a lake: transactions rolled back in the catalog's PostgreSQL database, by every"
        " gateway since its statistics were reset (DuckLake's commit retries after a conflict"
        " among them)",
        None,
        {"": storage.catalog_rollbacks},
    )
    tail = UsageTail(presenters.usage_record)
    services = Services(
        config=core_config(settings),
        usage=ObservedUsageSink(storage.usage, metrics.observe, tail.publish),
        tail=tail,
        reader=storage.reader,
        analytics=storage.analytics,
        exports=storage.exports,
        sessions=storage.identity,
        devices=storage.devices,
        things=storage.identity,
        admin=storage.admin,
        clock=clock,
        failed_logins=storage.logins,
        bindings=storage.bindings,
    )
    return Assembly(
        settings,
        storage,
        services,
        registry,
        Dispatcher(registry, services, routes),
        metrics,
        routes,
    )


def open_storage(
    settings: Settings, clock: Callable[[], datetime], **options: Any
) -> DuckDBStorage:
    """The DuckDB file's storage, or a DuckLake catalog's (`--db ducklake:...`, its files in a
    directory or an S3-compatible object store: `ObjectStoreError` when the store refuses)."""
    if isinstance(settings.db, str):
        return DuckLakeStorage(
            settings.db,
            clock,
            data_path=settings.data_path,
            object_store=settings.object_store,
            **options,
        )
    return DuckDBStorage(settings.db, clock, **options)


def build_command_registry(settings: Settings) -> Registry:
    """The built-in commands plus those of every installed `tr50gw.commands` entry point
    (unless `--no-plugins`); each plugin is logged once it is registered."""
    plugins: list[Plugin] = load_plugins(discover()) if settings.plugins else []
    registry = build_registry(plugins)
    for plugin in plugins:
        logger.info(
            "plugin %s loaded from %s %s: %s",
            plugin.name,
            plugin.distribution,
            plugin.version,
            ", ".join(plugin.command_names),
        )
    return registry


def open_provisioning(
    db: Path, broker_credentials: Path | None = None
) -> tuple[Provisioning, Callable[[], None]]:
    """The provisioning port over the database file, and how to close it (set-up for tools:
    the benchmarks' readers); with `broker_credentials`, the broker plugin's file follows
    every change."""
    storage = DuckDBStorage(db, utc_now, broker_credentials=broker_credentials)
    return storage.identity, storage.close


def _version() -> str:
    try:
        return importlib.metadata.version("tr50gw")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout without installing
        return "0"


def _reading(writer: BatchWriter[Any], figure: str) -> Callable[[], float]:
    """Reads one of a writer's figures (`backlog`, `commit_lag`, `commits`...) when scraped."""
    return lambda: float(getattr(writer, figure))


def _open_connections_of(transport: WebSocketTransport) -> Callable[[], float]:
    return lambda: transport.open_connections


def _link_up(transport: MqttTransport) -> Callable[[], float]:
    return lambda: 1 if transport.connected.is_set() else 0


def build_transports(settings: Settings, assembly: Assembly) -> list[Transport]:
    """The transports the settings turn on, in start order; their open connections are gauges
    of the assembly's metrics."""
    dispatcher = assembly.dispatcher
    transports: list[Transport] = []
    target = settings.mqtt_target
    if target is not None:
        transports.append(
            MqttTransport(
                dispatcher,
                target,
                client_id=settings.client_id,
                classic=settings.mqtt_classic,
                shared_group=settings.shared_group,
                max_payload=settings.max_payload,
                max_reply=settings.mqtt_max_reply,
                broker_identity=settings.mqtt_broker_identity,
            )
        )
    # The console (served on the HTTP port) and the WebSocket port it talks to know each
    # other's port once both listen: each asks the other's transport when it needs it.
    websocket: WebSocketTransport | None = None
    http: HttpTransport | None = None
    if settings.ws_port >= 0:
        websocket = WebSocketTransport(
            dispatcher,
            settings.ws_host,
            settings.ws_port,
            max_payload=settings.max_payload,
            allowed_origins=settings.ws_allowed_origins,
            max_connections=settings.ws_max_connections,
            console_port=lambda: http.port if http is not None else None,
        )
        transports.append(websocket)
    if settings.http_port >= 0:
        http = HttpTransport(
            dispatcher,
            settings.ws_host,
            settings.http_port,
            max_payload=settings.max_payload,
            clock=assembly.services.clock,
            health=assembly.health,
            metrics=assembly.metrics,
            routes=(list(rest.ROUTES), assembly.routes),
            version=_version(),
            console=ConsoleAssets() if settings.console else None,
            websocket_port=lambda: websocket.port if websocket is not None else None,
        )
        transports.append(http)
    gauges: dict[str, Callable[[], float]] = {}
    for transport in transports:
        if isinstance(transport, WebSocketTransport):
            gauges["ws"] = _open_connections_of(transport)
        elif isinstance(transport, MqttTransport):
            gauges["mqtt"] = _link_up(transport)
    assembly.metrics.labelled_gauge(
        "tr50gw_open_connections",
        "Connections open now: WebSocket clients; MQTT: the gateway's link to the broker (0/1)",
        "transport",
        gauges,
    )
    return transports


class Gateway:
    """One running gateway: `serve()` runs until `stop()`; `ready` is set once it listens."""

    def __init__(self, settings: Settings, clock: Callable[[], datetime] = utc_now) -> None:
        self.settings = settings
        self.assembly = assemble(settings, clock=clock)
        self.transports = build_transports(settings, self.assembly)
        self.ready = asyncio.Event()
        self._stop = asyncio.Event()

    def _port(self, name: str) -> int | None:
        for transport in self.transports:
            if transport.name == name:
                return transport.port
        return None

    @property
    def ws_port(self) -> int | None:
        return self._port("ws")

    @property
    def http_port(self) -> int | None:
        return self._port("http")

    @property
    def mqtt(self) -> MqttTransport | None:
        for transport in self.transports:
            if isinstance(transport, MqttTransport):
                return transport
        return None

    def stop(self) -> None:
        self._stop.set()

    async def serve(self) -> None:
        settings = self.settings
        logger.info(
            "tr50gw starting as %s, usage log %s, event loop %s",
            settings.instance_name,
            settings.db_shown,
            type(asyncio.get_running_loop()).__module__.split(".")[0],
        )
        started: list[Transport] = []
        try:
            for transport in self.transports:
                await transport.start()
                started.append(transport)
            self.ready.set()
            await self._stop.wait()
        finally:
            # Stop taking requests on every transport; each finishes what is in flight (replies
            # sent, MQTT acks written) before it closes.
            outcomes = await asyncio.gather(
                *(transport.stop() for transport in started), return_exceptions=True
            )
            for transport, outcome in zip(started, outcomes, strict=True):
                if isinstance(outcome, Exception):
                    logger.error("stopping %s failed", transport.name, exc_info=outcome)
            await self.assembly.services.tail.close()
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.assembly.close)
            logger.info("tr50gw stopped (%d calls logged)", self.assembly.storage.usage.submitted)
