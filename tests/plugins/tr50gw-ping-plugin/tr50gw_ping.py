"""A plugin registering `diag.ping`, which tr50gw already has: the start must stop."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from gateway.core.context import CallContext
from gateway.core.registry import Command

__all__ = ["COMMANDS"]


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


async def ping(params: NoParams, ctx: CallContext) -> None:
    return None


COMMANDS = (Command("diag.ping", NoParams, ping, needs_session=False),)
