"""A dispatcher over a real DuckDB file with a settable clock: literal JSON in, reply out."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from commands import build_registry
from gateway.context import Connection, Services
from gateway.dispatcher import Dispatcher
from gateway.settings import Settings
from storage.db import Database
from storage.identity import IdentityStore
from storage.usage import UsageLog


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class Harness:
    def __init__(self, db: Path, clock: Clock | None = None, **settings: Any) -> None:
        self.clock = clock or Clock(datetime(2024, 3, 1, 12, 0, 0))
        self.settings = Settings(
            db=db, mqtt_url="none", ws_port=-1, instance_name="unit", **settings
        )
        self.database = Database(db)
        self.usage = UsageLog(self.database)
        self.identity = IdentityStore(self.database, self.clock)
        self.dispatcher = Dispatcher(
            build_registry(), Services(self.settings, self.identity, self.usage, self.clock)
        )

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
        self.usage.close()
        self.database.close()
