"""The `org` service (SPEC §10, deviceWISE's `org.*`): create, list, find, update.

Super-Ops creates orgs and sees every one; anyone else sees only its own org (`org.list` lists
it alone, `org.find` of another is -90008), and an org-admin may rename its own. Departures from
deviceWISE: `key` keeps its case (deviceWISE capitalizes it) and may be 1 to 64 letters, digits,
`-`, `_` or `.`; an org has no profile, locale, domain or sub-orgs.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from commands.admin import NAME, admin_session, in_org, refusals, stamp, user_session
from commands.params import Paging
from commands.presenters import listing_summary
from gateway.core.context import CallContext
from gateway.core.errors import NotFound, PermissionDenied
from gateway.core.records import OrgInfo
from gateway.core.registry import Command

__all__ = ["COMMANDS", "ORG_KEY", "shown"]

ORG_KEY = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class CreateParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    key: str = ORG_KEY
    name: NAME = Field(min_length=1)
    desc: NAME = ""


class FindParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    id: str | None = Field(None, min_length=1, max_length=64)
    key: str | None = Field(None, min_length=1, max_length=64)

    @model_validator(mode="after")
    def _one(self) -> FindParams:
        if self.id is not None and self.key is not None:
            raise ValueError("give id or key, not both")
        return self


class UpdateParams(FindParams):
    name: NAME | None = Field(None, min_length=1)
    desc: NAME | None = None


def shown(org: OrgInfo) -> dict[str, Any]:
    return {
        "id": org.org_id,
        "key": org.org_key,
        "name": org.name,
        "desc": org.description,
        "createdOn": stamp(org.created_at),
        "updatedOn": stamp(org.updated_at),
    }


async def create(params: CreateParams, ctx: CallContext) -> dict[str, Any]:
    if not user_session(ctx).has_super_ops:
        raise PermissionDenied("permission denied: creating an org needs Super-Ops")
    with refusals("key"):
        org = await ctx.services.admin.create_org(params.key, params.name, params.desc)
    return {"id": org.org_id}


async def list_orgs(params: Paging, ctx: CallContext) -> dict[str, Any]:
    session = user_session(ctx)
    only = None if session.has_super_ops else session.org_id
    count, orgs = await ctx.services.admin.orgs(only, params.offset, params.limit)
    return {"count": count, "result": [shown(org) for org in orgs] or None}


async def _found(params: FindParams, ctx: CallContext) -> OrgInfo:
    session = user_session(ctx)
    if params.id is None and params.key is None:
        return await in_org(ctx, session, None)
    org = await ctx.services.admin.org(org_id=params.id, org_key=params.key)
    if org is None or not (session.has_super_ops or org.org_id == session.org_id):
        raise NotFound("not found: no such org")
    return org


async def find(params: FindParams, ctx: CallContext) -> dict[str, Any]:
    return shown(await _found(params, ctx))


async def update(params: UpdateParams, ctx: CallContext) -> None:
    org = await _found(params, ctx)  # another org's: -90008 before any -90003
    admin_session(ctx)
    with refusals("key"):
        await ctx.services.admin.update_org(org.org_id, params.name, params.desc)


COMMANDS = (
    Command("org.create", CreateParams, create),
    Command("org.list", Paging, list_orgs, log_result=listing_summary),
    Command("org.find", FindParams, find),
    Command("org.update", UpdateParams, update),
)
