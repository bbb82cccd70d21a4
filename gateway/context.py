"""What a command handler may know about its call: identity, connection and services."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from gateway.errors import InvalidSession
from gateway.ratelimit import FailedLogins
from storage.analytics import UsageAnalytics

if TYPE_CHECKING:
    from gateway.settings import Settings
    from storage.identity import IdentityStore, Session
    from storage.usage import UsageLog

__all__ = ["CallContext", "Connection", "Services"]


@dataclass(slots=True)
class Connection:
    """One caller's channel: a WebSocket connection, an MQTT namespace or an HTTP request.

    `binds_sessions` says whether a session opened here is remembered for later envelopes on the
    same channel (WebSocket connections and isolated-mode MQTT namespaces; never classic MQTT).
    """

    transport: str
    client_id: str = ""
    remote_addr: str = ""
    binds_sessions: bool = False
    session_token: str | None = None
    session: Session | None = None

    def bind(self, session: Session | None, token: str | None) -> None:
        self.session, self.session_token = session, token


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    identity: IdentityStore
    usage: UsageLog
    clock: Callable[[], datetime]
    # api.authenticate's brute-force guard: failed logins per username and per client, kept in
    # this process's memory (built once with the Services by the composition root).
    failed_logins: FailedLogins = field(default_factory=FailedLogins)

    @property
    def analytics(self) -> UsageAnalytics:
        """Aggregates over the usage log (a stateless view: each query takes a reader cursor)."""
        return UsageAnalytics(self.usage.database)


@dataclass(slots=True)
class CallContext:
    services: Services
    connection: Connection
    session: Session | None
    session_token: str | None
    received_at: datetime
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
