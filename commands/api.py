"""The `api` service: api.authenticate."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.context import CallContext
from gateway.errors import AuthenticationFailed
from gateway.registry import Command

__all__ = ["COMMANDS", "AuthenticateParams", "authenticate"]


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


async def authenticate(params: AuthenticateParams, ctx: CallContext) -> dict[str, Any]:
    identity = ctx.services.identity
    ttl = ctx.services.settings.session_ttl
    if params.username is not None and params.password is not None:
        result = await identity.authenticate_user(params.username, params.password, ttl)
    else:
        assert params.app_id and params.app_token is not None and params.thing_key
        result = await identity.authenticate_thing(
            params.app_id, params.app_token, params.thing_key, ttl
        )
    if result is None:
        raise AuthenticationFailed("authentication failed: bad credentials")
    session, token = result
    ctx.open_session(session, token)
    return {"sessionId": token}


COMMANDS = [
    Command(
        "api.authenticate",
        AuthenticateParams,
        authenticate,
        needs_session=False,
        secret_result_keys=frozenset({"sessionId"}),
    ),
]
