"""The `thing` service's lookups (SPEC §6, deviceWISE's IoT Portal API): thing.find and
thing.list.

A thing is registered the first time it authenticates. `lastSeen` is when the thing itself last
called the gateway (a user publishing on its behalf does not count), `null` if it never did
since. A thing session sees only itself; a user session its org's things.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from commands.alarm import shown as shown_alarm
from commands.location import shown as shown_location
from commands.params import Paging
from commands.presenters import listing_summary
from commands.things import acting_on
from gateway.core.buckets import format_utc
from gateway.core.context import CallContext
from gateway.core.errors import NotFound
from gateway.core.records import ThingSummary
from gateway.core.registry import Command

__all__ = ["COMMANDS"]

KEYS_MAX = 2000  # things named in one `keys` filter, as many as a page holds
Field_ = Literal["key", "name", "orgId", "createdOn", "lastSeen"]
FIELDS: Final = ("key", "name", "orgId", "createdOn", "lastSeen")
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
        "name": thing.thing_key,  # things have no names of their own yet: the key stands in
        "orgId": thing.org_id,
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
    return lambda thing: thing.thing_key  # key, and name (the key for now)


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


COMMANDS = (
    Command("thing.find", FindParams, find),
    Command("thing.list", ListParams, list_things, log_result=listing_summary),
)
