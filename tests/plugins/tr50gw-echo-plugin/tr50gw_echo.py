"""The `echo` service, a tr50gw plugin: `echo.say` answers with the params it was given."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from gateway.core.context import CallContext
from gateway.core.registry import Command

__all__ = ["COMMANDS"]


class SayParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    text: str
    times: int = 1


async def say(params: SayParams, ctx: CallContext) -> dict[str, Any]:
    return params.model_dump()


COMMANDS = (Command("echo.say", SayParams, say, needs_session=False),)
