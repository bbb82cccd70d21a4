"""The gateway's own assembly (`gateway.app.assemble`) over a real DuckDB file, with a settable
clock and no transports: literal JSON in, reply out."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.app import Assembly, assemble
from gateway.core.context import Connection
from gateway.core.registry import Registry
from gateway.settings import Settings


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class Harness:
    def __init__(
        self,
        db: Path | str,
        clock: Clock | None = None,
        *,
        registry: Registry | None = None,
        **settings: Any,
    ) -> None:
        self.clock = clock or Clock(datetime(2024, 3, 1, 12, 0, 0))
        values: dict[str, Any] = {
            "db": db,
            "mqtt_url": "none",
            "ws_port": -1,
            "instance_name": "unit",
            "compact_interval_s": 0,  # tests compact explicitly
            "retention_days": 0,  # and apply retention explicitly
            "rollup_retention_days": 0,
        }
        values.update(settings)
        self.settings = Settings(**values)
        self._registry = registry
        self._open()

    def _open(self) -> None:
        self.assembly: Assembly = assemble(self.settings, clock=self.clock, registry=self._registry)
        self.dispatcher = self.assembly.dispatcher
        self.services = self.assembly.services
        storage = self.assembly.storage
        self.usage = storage.usage
        self.identity = storage.identity
        self.database = storage.database
        self.record_ids = self.services.record_ids

    def restart(self) -> None:
        """Close and reopen the gateway's storage, as a restart does (in-memory state is lost)."""
        self.close()
        self._open()

    def connection(
        self, transport: str = "ws", client_id: str = "ws-1", *, binds: bool = True
    ) -> Connection:
        return Connection(transport, client_id, "127.0.0.1", binds_sessions=binds)

    async def raw(self, payload: bytes | str, connection: Connection | None = None) -> Any:
        reply = await self.dispatcher.handle(payload, connection or self.connection(binds=False))
        return json.loads(reply)

    async def call(self, envelope: dict[str, Any], connection: Connection | None = None) -> Any:
        return await self.raw(json.dumps(envelope), connection)

    async def login(self, username: str, password: str) -> str:
        reply = await self.call(
            {
                "auth": {
                    "command": "api.authenticate",
                    "params": {"username": username, "password": password},
                }
            }
        )
        assert reply["auth"]["success"], reply
        return str(reply["auth"]["params"]["sessionId"])

    async def as_session(self, session_id: str, **commands: dict[str, Any]) -> Any:
        return await self.call({"auth": {"sessionId": session_id}, **commands})

    def close(self) -> None:
        self.assembly.close()


@dataclass
class Fleet:
    h: Harness
    sessions: dict[str, str] = field(default_factory=dict)

    async def call(self, caller: str, command: str, **params: Any) -> dict[str, Any]:
        reply = await self.h.as_session(
            self.sessions[caller], x={"command": command, "params": params}
        )
        outcome: dict[str, Any] = reply["x"]
        return outcome

    async def ok(self, caller: str, command: str, **params: Any) -> Any:
        outcome = await self.call(caller, command, **params)
        assert outcome["success"], outcome
        return outcome.get("params")

    async def code(self, caller: str, command: str, **params: Any) -> int:
        outcome = await self.call(caller, command, **params)
        assert outcome["success"] is False, outcome
        return int(outcome["errorCodes"][0])


async def thing_login(h: Harness, app: tuple[str, str], thing_key: str) -> str:
    reply = await h.call(
        {
            "auth": {
                "command": "api.authenticate",
                "params": {"appId": app[0], "appToken": app[1], "thingKey": thing_key},
            }
        }
    )
    assert reply["auth"]["success"], reply
    return str(reply["auth"]["params"]["sessionId"])
