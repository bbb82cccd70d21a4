"""The `diag` service: diag.ping and diag.time, the two commands that need no session."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from commands.timeparse import format_timestamp
from gateway.context import CallContext
from gateway.registry import Command

__all__ = ["COMMANDS", "ping", "server_time"]


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


async def ping(params: NoParams, ctx: CallContext) -> None:
    return None


async def server_time(params: NoParams, ctx: CallContext) -> dict[str, Any]:
    return {"time": format_timestamp(ctx.services.clock())}


COMMANDS = [
    Command("diag.ping", NoParams, ping, needs_session=False),
    Command("diag.time", NoParams, server_time, needs_session=False),
]
