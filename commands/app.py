"""The `app` service (SPEC §10, deviceWISE's `app.*`): applications, whose token lets things
authenticate (`appId`, `appToken`, `thingKey`).

An org-admin manages its org's applications, Super-Ops every org's (`orgKey` on `app.create`,
`showAll` on `app.list`); plain users and things: -90003; another org's app: -90008.

The token is shown once: `app.create` and `app.token.rotate` answer it and nothing else ever does,
because only its SHA-256 digest is stored. Departures from deviceWISE: `app.create` answers
`{id, token}` (deviceWISE answers the id, and `app.list`/`app.find` show tokens in clear);
tokens are always generated (32 random bytes), never chosen by the caller; rotation is
`app.token.rotate` (deviceWISE sets a new `token` with `app.update`); `app.delete` is ours.
Rotating or deleting ends every session opened with the old token, and the broker plugin's
credentials file follows, so a device holding it is refused at its next CONNECT.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from commands.admin import (
    NAME,
    admin_session,
    in_org,
    listed_org,
    refusals,
    sees,
    stamp,
    user_session,
)
from commands.params import Paging
from commands.presenters import listing_summary
from gateway.core.context import CallContext
from gateway.core.errors import NotFound
from gateway.core.records import AppInfo
from gateway.core.registry import Command

__all__ = ["COMMANDS", "shown"]


class CreateParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: NAME = Field(min_length=1)
    desc: NAME = ""
    org_key: str | None = Field(None, alias="orgKey", min_length=1, max_length=64)


class ListParams(Paging):
    show_all: bool = Field(False, alias="showAll")
    org_key: str | None = Field(None, alias="orgKey", min_length=1, max_length=64)


class AppParam(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    id: str = Field(min_length=1, max_length=64)


class UpdateParams(AppParam):
    name: NAME | None = Field(None, min_length=1)
    desc: NAME | None = None


def shown(app: AppInfo) -> dict[str, Any]:
    return {
        "id": app.app_id,
        "name": app.name,
        "desc": app.description,
        "orgId": app.org_id,
        "orgKey": app.org_key,
        "createdOn": stamp(app.created_at),
        "updatedOn": stamp(app.updated_at),
        "rotatedOn": stamp(app.token_rotated_at),
    }


async def _visible(ctx: CallContext, app_id: str) -> AppInfo:
    """The app `app_id`, if the session administers it: another org's is -90008 for every
    role; then a plain user is -90003."""
    session = user_session(ctx)
    app = await ctx.services.admin.app(app_id)
    if app is None or not sees(session, app.org_id):
        raise NotFound("not found: no such application")
    admin_session(ctx)
    return app


async def create(params: CreateParams, ctx: CallContext) -> dict[str, Any]:
    org = await in_org(ctx, user_session(ctx), params.org_key)
    admin_session(ctx)
    with refusals("name"):
        app, token = await ctx.services.admin.create_app(org.org_id, params.name, params.desc)
    return {"id": app.app_id, "token": token}


async def list_apps(params: ListParams, ctx: CallContext) -> dict[str, Any]:
    org_id = await listed_org(ctx, params.show_all, params.org_key)
    count, apps = await ctx.services.admin.apps(org_id, params.offset, params.limit)
    return {"count": count, "result": [shown(app) for app in apps] or None}


async def find(params: AppParam, ctx: CallContext) -> dict[str, Any]:
    return shown(await _visible(ctx, params.id))


async def update(params: UpdateParams, ctx: CallContext) -> None:
    app = await _visible(ctx, params.id)
    with refusals("name"):
        await ctx.services.admin.update_app(app.app_id, params.name, params.desc)


async def rotate(params: AppParam, ctx: CallContext) -> dict[str, Any]:
    app = await _visible(ctx, params.id)
    with refusals("id"):
        token = await ctx.services.admin.rotate_app_token(app.app_id)
    return {"id": app.app_id, "token": token}


async def delete(params: AppParam, ctx: CallContext) -> None:
    app = await _visible(ctx, params.id)
    with refusals("id"):
        await ctx.services.admin.delete_app(app.app_id)


COMMANDS = (
    Command("app.create", CreateParams, create),
    Command("app.list", ListParams, list_apps, log_result=listing_summary),
    Command("app.find", AppParam, find),
    Command("app.update", UpdateParams, update),
    Command("app.token.rotate", AppParam, rotate),
    Command("app.delete", AppParam, delete),
)
