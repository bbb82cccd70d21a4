"""The `api` service: api.authenticate, with its brute-force guard.

The guard (`Services.failed_logins`, a `LoginGuard`: one process's memory over a DuckDB file,
PostgreSQL shared by every gateway over a DuckLake catalog) counts failed
logins under two keys per attempt: the login subject (the username, case-folded; for a thing the
appId together with the thingKey, so one device with a stale token cannot lock out its whole fleet,
while guessing a 256-bit appToken is hopeless anyway) and the client (an isolated-mode MQTT
namespace, which the broker's ACL ties to the MQTT client id, or the socket peer address for
WebSocket and HTTP). Once either key has `auth_max_failures` failures within
`auth_failure_window_s`, attempts answer -90012 before any password is checked, right password
included, until enough failures leave the sliding window.

Chosen: a refused attempt is not counted as another failure (otherwise a client retrying at any
pace would keep itself, or an attacker a victim, locked out for ever), and a success clears no
failure: the client's counter must not be reset by an attacker's own valid account, and the
username's failures simply age out. Classic-mode MQTT has no client key (its topics are chosen
per message, so they identify no one); only the username counts there.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.core.context import CallContext, Connection
from gateway.core.errors import AuthenticationFailed, RateLimited
from gateway.core.ratelimit import RateLimitExceeded
from gateway.core.registry import Command

__all__ = ["COMMANDS", "AuthenticateParams", "authenticate", "login_keys"]

logger = logging.getLogger("tr50gw.auth")


class AuthenticateParams(BaseModel):
    """Either `{username, password}` (a user) or `{appId, appToken, thingKey}` (a thing)."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=False)

    username: str | None = Field(None, min_length=1, max_length=320)
    password: str | None = Field(None, max_length=1024)
    app_id: str | None = Field(None, alias="appId", min_length=1, max_length=128)
    app_token: str | None = Field(None, alias="appToken", max_length=1024)
    thing_key: str | None = Field(None, alias="thingKey", min_length=1, max_length=256)

    @model_validator(mode="after")
    def _one_form(self) -> AuthenticateParams:
        user_form = self.username is not None and self.password is not None
        thing_form = None not in (self.app_id, self.app_token, self.thing_key)
        user_any = self.username is not None or self.password is not None
        thing_any = any(v is not None for v in (self.app_id, self.app_token, self.thing_key))
        if user_form and not thing_any:
            return self
        if thing_form and not user_any:
            return self
        raise ValueError("give either username and password, or appId, appToken and thingKey")


def login_keys(params: AuthenticateParams, connection: Connection) -> tuple[Hashable, ...]:
    """The guard's keys for one attempt: its subject, then its client when there is one."""
    subject: Hashable
    if params.username is not None:
        subject = ("user", params.username.casefold())
    else:
        subject = ("thing", params.app_id, params.thing_key)
    if connection.transport == "mqtt":
        if connection.binds_sessions and connection.client_id:  # an isolated-mode namespace
            return subject, ("client", "mqtt", connection.client_id)
        return (subject,)
    if connection.remote_addr:
        return subject, ("client", "addr", connection.remote_addr)
    return (subject,)


async def authenticate(params: AuthenticateParams, ctx: CallContext) -> dict[str, Any]:
    services = ctx.services
    sessions = services.sessions
    config = services.config
    window = timedelta(seconds=config.auth_failure_window_s)
    limit = config.auth_max_failures
    guard = services.failed_logins
    attempt = await guard.admit(
        login_keys(params, ctx.connection), services.clock(), limit=limit, window=window
    )
    if isinstance(attempt, RateLimitExceeded):
        raise RateLimited(f"rate limited: too many failed logins; retry in {attempt.retry_after} s")
    ttl = config.session_ttl
    try:
        if params.username is not None and params.password is not None:
            result = await sessions.authenticate_user(params.username, params.password, ttl)
        else:
            assert params.app_id and params.app_token is not None and params.thing_key
            result = await sessions.authenticate_thing(
                params.app_id, params.app_token, params.thing_key, ttl
            )
    except BaseException:
        await attempt.withdraw()  # no verdict on the credentials: not a failure
        raise
    if result is None:
        for key in attempt.reached_limit:
            logger.warning(
                "login locked for %s: %d failed logins within %d s",
                guard.describe(key),
                limit,
                config.auth_failure_window_s,
            )
        raise AuthenticationFailed("authentication failed: bad credentials")
    await attempt.withdraw()
    session, token = result
    ctx.open_session(session, token)
    return {"sessionId": token}


COMMANDS = (
    Command(
        "api.authenticate",
        AuthenticateParams,
        authenticate,
        needs_session=False,
        secret_result_keys=frozenset({"sessionId"}),
    ),
)
