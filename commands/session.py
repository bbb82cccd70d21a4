"""The `session` service: session.info and session.end."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from commands.timeparse import format_timestamp
from gateway.context import CallContext
from gateway.registry import Command

__all__ = ["COMMANDS", "end_session", "session_info"]


class SessionInfoParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class SessionEndParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


async def session_info(params: SessionInfoParams, ctx: CallContext) -> dict[str, Any]:
    session = ctx.require_session()
    remaining = (session.expires_at() - ctx.services.clock()).total_seconds()
    info: dict[str, Any] = {
        "id": ctx.session_token,
        "orgId": session.org_id,
        "orgKey": session.org_key,
        "whoAmI": session.whoami,
        "hasSuperOps": session.has_super_ops,
        "hasOrgAdmin": session.has_org_admin,
        "ttl": max(0, int(remaining)),
        "startTime": format_timestamp(session.start_time),
        "lastAccessed": format_timestamp(session.last_accessed),
    }
    if session.is_thing:
        info["thingKey"] = session.subject
        info["appId"] = session.app_id
    else:
        info["userName"] = session.subject
        info["role"] = session.role
    return info


async def end_session(params: SessionEndParams, ctx: CallContext) -> None:
    ctx.require_session()
    if ctx.session_token is not None:
        await ctx.services.identity.end(ctx.session_token)
    if ctx.connection.session is ctx.session:
        ctx.connection.bind(None, None)
    ctx.session = None
    ctx.session_token = None


COMMANDS = [
    Command("session.info", SessionInfoParams, session_info, secret_result_keys=frozenset({"id"})),
    Command("session.end", SessionEndParams, end_session),
]
