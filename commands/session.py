"""The `session` service: session.info and session.end."""

from __future__ import annotations

from typing import Any

from commands.params import NoParams
from gateway.core.buckets import format_utc
from gateway.core.context import CallContext
from gateway.core.registry import Command

__all__ = ["COMMANDS", "end_session", "session_info"]


class SessionInfoParams(NoParams):
    pass


class SessionEndParams(NoParams):
    pass


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
        "startTime": format_utc(session.start_time),
        "lastAccessed": format_utc(session.last_accessed),
    }
    if session.is_thing:
        info["thingKey"] = session.subject
        info["appId"] = session.app_id
    else:
        info["userName"] = session.subject
        info["role"] = session.role
    return info


async def end_session(params: SessionEndParams, ctx: CallContext) -> None:
    session = ctx.require_session()
    if ctx.session_token is not None:
        await ctx.services.sessions.end(ctx.session_token)
    else:  # bound to its namespace through another gateway: known here by its hash alone
        await ctx.services.sessions.end_hashed(session.token_hash)
    if ctx.connection.session is ctx.session:
        ctx.connection.bind(None, None)
    ctx.session = None
    ctx.session_token = None


COMMANDS = (
    Command("session.info", SessionInfoParams, session_info, secret_result_keys=frozenset({"id"})),
    Command("session.end", SessionEndParams, end_session),
)
