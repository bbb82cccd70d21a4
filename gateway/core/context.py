"""What a command handler may know about its call: identity, connection and services."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gateway.core.bindings import UnsharedBindings
from gateway.core.errors import InvalidSession
from gateway.core.ports import (
    Administration,
    DeviceData,
    LoginGuard,
    SessionBindings,
    Sessions,
    Things,
    UsageAnalytics,
    UsageExport,
    UsageReader,
    UsageSink,
)
from gateway.core.ratelimit import FailedLogins
from gateway.core.records import RecordIds, Session
from gateway.core.tail import UsageTail

__all__ = ["CallContext", "Connection", "CoreConfig", "Services"]


@dataclass(slots=True)
class Connection:
    """One caller's channel: a WebSocket connection, an MQTT namespace or an HTTP request.

    `binds_sessions` says whether a session opened here is remembered for later envelopes on the
    same channel (WebSocket connections and isolated-mode MQTT namespaces; never classic MQTT).
    `shared_as` names the channel where other gateways may serve it too (an isolated-mode MQTT
    namespace behind a shared subscription): its binding is then also kept in
    `Services.bindings`, and `binding_checked` says when it was last read from there
    (time.monotonic()).
    """

    transport: str
    client_id: str = ""
    remote_addr: str = ""
    binds_sessions: bool = False
    session_token: str | None = None
    session: Session | None = None
    shared_as: str | None = None
    binding_checked: float = 0.0
    # Sends a server message on this connection (WebSocket only: the live tail's notifications).
    push: Callable[[dict[str, Any]], Awaitable[None]] | None = None

    def bind(self, session: Session | None, token: str | None) -> None:
        self.session, self.session_token = session, token


@dataclass(frozen=True, slots=True)
class CoreConfig:
    """The settings the protocol core and the commands read (the composition root fills it)."""

    instance_name: str = "tr50gw"
    max_payload: int = 256 * 1024
    max_commands: int = 500
    log_cap: int = 64 * 1024
    session_ttl: int = 86400
    auth_max_failures: int = 10
    auth_failure_window_s: int = 300
    durable_replies: bool = False


@dataclass(frozen=True, slots=True)
class Services:
    """Everything a handler reaches through `ctx.services`, typed by the ports; built once."""

    config: CoreConfig
    usage: UsageSink
    reader: UsageReader
    analytics: UsageAnalytics
    exports: UsageExport
    tail: UsageTail
    sessions: Sessions
    devices: DeviceData
    things: Things
    admin: Administration
    clock: Callable[[], datetime]
    record_ids: RecordIds = field(default_factory=RecordIds)
    # api.authenticate's brute-force guard: failed logins per username and per client, in this
    # process's memory unless the storage shares them between gateways (a DuckLake catalog).
    failed_logins: LoginGuard = field(default_factory=FailedLogins)
    # Sessions bound to isolated-mode MQTT namespaces, shared by the gateways on a DuckLake
    # catalog; on a DuckDB file only in the namespaces' connections (this no-op).
    bindings: SessionBindings = field(default_factory=UnsharedBindings)


@dataclass(slots=True)
class CallContext:
    services: Services
    connection: Connection
    session: Session | None
    session_token: str | None
    received_at: datetime
    delivery: str | None = None  # the MQTT QoS 1 delivery answered (UsageRecord.delivery)
    logged: bool = True  # False: a redelivery a previous run logged (Dispatcher.handle's `log`)
    opened: tuple[Session, str] | None = field(default=None)

    def require_session(self) -> Session:
        if self.session is None:
            raise InvalidSession("authentication session is invalid: no valid session")
        return self.session

    def open_session(self, session: Session, token: str) -> None:
        """Called by api.authenticate: the rest of the envelope runs as this session."""
        self.opened = (session, token)
        self.session = session
        self.session_token = token
