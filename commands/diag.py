"""The `diag` service: diag.ping and diag.time, the two commands that need no session."""

from __future__ import annotations

from typing import Any

from commands.params import NoParams
from gateway.core.buckets import format_utc
from gateway.core.context import CallContext
from gateway.core.registry import Command

__all__ = ["COMMANDS", "ping", "server_time"]


async def ping(params: NoParams, ctx: CallContext) -> None:
    return None


async def server_time(params: NoParams, ctx: CallContext) -> dict[str, Any]:
    return {"time": format_utc(ctx.services.clock())}


COMMANDS = (
    Command("diag.ping", NoParams, ping, needs_session=False),
    Command("diag.time", NoParams, server_time, needs_session=False),
)
