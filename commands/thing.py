"""The `thing` service (SPEC §6, §10, deviceWISE's IoT Portal API): thing.find, thing.list,
thing.update (name and tags) and thing.delete (with its data).

A thing is registered the first time it authenticates. `lastSeen` is when the thing itself last
called the gateway (a user publishing on its behalf does not count), `null` if it never did
since. A thing session sees only itself; a user session its org's things.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from commands.admin import in_org, user_session
from commands.alarm import shown as shown_alarm
from commands.location import shown as shown_location
from commands.params import Paging
from commands.presenters import listing_summary
from commands.things import acting_on
from gateway.core.buckets import format_utc
from gateway.core.context import CallContext
from gateway.core.errors import InvalidParams, NotFound, PermissionDenied
from gateway.core.records import ThingSummary
from gateway.core.registry import Command

__all__ = ["COMMANDS"]

KEYS_MAX = 2000  # things named in one `keys` filter, as many as a page holds
Field_ = Literal["key", "name", "orgId", "tags", "createdOn", "lastSeen"]
FIELDS: Final = ("key", "name", "orgId", "tags", "createdOn", "lastSeen")
"""What `thing.list` can show of a thing (`show` picks some, in this order)."""

_SORTS: Final = r"^[+-]?(key|name|createdOn|lastSeen)$"


class FindParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    key: str | None = Field(None, min_length=1, max_length=256)


class ListParams(Paging):
    sort: str = Field("-lastSeen", pattern=_SORTS)
    keys: list[str] | None = Field(None, min_length=1, max_length=KEYS_MAX)
    has_loc: bool = Field(False, alias="hasLoc")
    show: list[Field_] | None = Field(None, min_length=1, max_length=len(FIELDS))
    hide_fields: bool = Field(False, alias="hideFields")


def _summary(thing: ThingSummary) -> dict[str, Any]:
    return {
        "key": thing.thing_key,
        "name": thing.name or thing.thing_key,  # never named: the key stands in
        "orgId": thing.org_id,
        "tags": list(thing.tags),
        "createdOn": format_utc(thing.created_at),
        "lastSeen": None if thing.last_seen is None else format_utc(thing.last_seen),
    }


async def find(params: FindParams, ctx: CallContext) -> dict[str, Any]:
    org_id, thing_key = await acting_on(params.key, ctx)
    found = await ctx.services.things.things(org_id, [thing_key])
    if not found:  # registered between the check and now, then gone: as if never there
        raise NotFound(f"not found: no thing {thing_key[:64]!r} in this org")
    state = await ctx.services.devices.thing_state(org_id, thing_key)
    shown = _summary(found[0])
    shown["properties"] = {
        value.key: {"value": value.value, "ts": format_utc(value.ts)} for value in state.properties
    }
    shown["alarms"] = {value.key: shown_alarm(value) for value in state.alarms}
    shown["attrs"] = {
        value.key: {"value": value.value, "ts": format_utc(value.ts)} for value in state.attributes
    }
    shown["locEnabled"] = state.location is not None
    if state.location is not None:
        shown["loc"] = shown_location(state.location)
    return shown


def _sort_key(column: str) -> Any:
    if column == "lastSeen":
        return lambda thing: thing.last_seen or datetime.min
    if column == "createdOn":
        return lambda thing: thing.created_at
    if column == "name":
        return lambda thing: thing.name or thing.thing_key
    return lambda thing: thing.thing_key


async def list_things(params: ListParams, ctx: CallContext) -> dict[str, Any]:
    session = ctx.require_session()
    keys = params.keys
    if session.is_thing:  # a thing sees itself only
        keys = [key for key in (keys or [session.subject]) if key == session.subject]
    show = set(params.show or FIELDS)
    things = await ctx.services.things.things(session.org_id, keys)
    if params.has_loc:
        located = await ctx.services.devices.located_things(session.org_id)
        things = [thing for thing in things if thing.thing_key in located]
    descending = params.sort.startswith("-")
    column = params.sort.lstrip("+-")
    # Ties (and things never seen) in key order whichever way the column sorts.
    things.sort(key=lambda thing: thing.thing_key)
    things.sort(key=_sort_key(column), reverse=descending)
    page = things[params.offset : params.offset + params.limit]
    result: dict[str, Any] = {"count": len(things)}
    if not params.hide_fields:
        result["fields"] = [name for name in FIELDS if name in show]
    result["result"] = [
        {name: value for name, value in _summary(thing).items() if name in show} for thing in page
    ] or None
    return result


TAG = Field(min_length=1, max_length=100)
DELETE_MAX = 100  # things one thing.delete names


class UpdateParams(BaseModel):
    """deviceWISE names the thing `key` in its example and `thingKey` in its table: both work.
    `orgKey`: Super-Ops acting in another org."""

    model_config = ConfigDict(extra="forbid", strict=True)

    key: str | None = Field(None, min_length=1, max_length=256)
    thing_key: str | None = Field(None, alias="thingKey", min_length=1, max_length=256)
    name: str | None = Field(None, min_length=1, max_length=200)
    tags: list[Annotated[str, TAG]] | None = Field(None, max_length=100)
    org_key: str | None = Field(None, alias="orgKey", min_length=1, max_length=64)

    @model_validator(mode="after")
    def _one_key(self) -> UpdateParams:
        if self.key is not None and self.thing_key is not None:
            raise ValueError("give key or thingKey, not both")
        return self


class DeleteParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    key: str | list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        min_length=1, max_length=DELETE_MAX
    )
    org_key: str | None = Field(None, alias="orgKey", min_length=1, max_length=64)


async def _administered(ctx: CallContext, key: str | None, org_key: str | None) -> tuple[str, str]:
    """The `(orgId, thingKey)` a user session administers: in its org (Super-Ops: `orgKey`'s),
    -90008 when it is not there (another org's included), then -90003 for a plain user."""
    session = user_session(ctx)
    if key is None:
        raise InvalidParams("invalid params: key is required for a user session")
    org = await in_org(ctx, session, org_key)
    if not await ctx.services.devices.thing_exists(org.org_id, key):
        raise NotFound(f"not found: no thing {key[:64]!r} in this org")
    if not session.has_org_admin:
        raise PermissionDenied("permission denied: needs an org-admin or Super-Ops user")
    return org.org_id, key


async def update(params: UpdateParams, ctx: CallContext) -> None:
    """A thing renames or re-tags itself; an org-admin its org's things, Super-Ops any org's
    (tags replace the thing's whole set, as deviceWISE's do); a plain user: -90003."""
    key = params.key or params.thing_key
    if ctx.require_session().is_thing and params.org_key is None:
        org_id, thing_key = await acting_on(key, ctx)
    else:
        org_id, thing_key = await _administered(ctx, key, params.org_key)
    tags = None if params.tags is None else sorted(set(params.tags))
    await ctx.services.admin.update_thing(org_id, thing_key, params.name, tags)


async def delete(params: DeleteParams, ctx: CallContext) -> None:
    """Things, each with its device data, its sessions ended; usage records stay. Every key
    must exist (-90008 names the first that does not; then none is deleted)."""
    keys = [params.key] if isinstance(params.key, str) else list(dict.fromkeys(params.key))
    targets = [await _administered(ctx, key, params.org_key) for key in keys]
    for org_id, thing_key in targets:
        await ctx.services.admin.delete_thing(org_id, thing_key)


COMMANDS = (
    Command("thing.find", FindParams, find),
    Command("thing.list", ListParams, list_things, log_result=listing_summary),
    Command("thing.update", UpdateParams, update),
    Command("thing.delete", DeleteParams, delete),
)
