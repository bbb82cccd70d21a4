"""The `log` service (SPEC §6, deviceWISE's IoT Portal API): log.publish and log.list.

A log entry belongs to a thing, or with `global: true` to the thing's org. `level` is 0 (error),
1 (warning) or 2 (information, the default). `log.list` answers a thing its own entries and a
user its org's (one thing's with `thingKey`), newest first.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from commands.params import Paging, Timestamp
from commands.presenters import listing_summary
from commands.things import ThingParam, TimeWindow, acting_on
from gateway.core.buckets import format_utc
from gateway.core.context import CallContext
from gateway.core.records import LogEntry, LogQuery
from gateway.core.registry import Command

__all__ = ["COMMANDS"]

MSG_MAX = 8192

# A strict int (not a boolean, not a string): 0 error, 1 warning, 2 information.
Level = Annotated[int, Field(ge=0, le=2)]


class PublishParams(ThingParam):
    msg: str = Field(min_length=1, max_length=MSG_MAX)
    level: Level = 2
    ts: Timestamp | None = None
    corr_id: str | None = Field(None, alias="corrId", max_length=256)
    global_: bool = Field(False, alias="global")


class ListParams(ThingParam, TimeWindow, Paging):
    level: Level | None = None
    corr_id: str | None = Field(None, alias="corrId", min_length=1, max_length=256)


async def publish(params: PublishParams, ctx: CallContext) -> None:
    session = ctx.require_session()
    if params.global_:
        org_id, thing_key = session.org_id, None
    else:
        org_id, thing_key = await acting_on(params.thing_key, ctx)
    ctx.services.devices.publish_logs(
        [
            LogEntry(
                id=ctx.services.record_ids.new(),
                org_id=org_id,
                thing_key=thing_key,
                ts=params.ts or ctx.received_at,
                level=params.level,
                msg=params.msg,
                corr_id=params.corr_id,
                received_at=ctx.received_at,
            )
        ]
    )


def _entry(entry: LogEntry) -> dict[str, Any]:
    shown: dict[str, Any] = {
        "id": entry.id,
        "ts": format_utc(entry.ts),
        "thingKey": entry.thing_key,
        "level": entry.level,
        "msg": entry.msg,
    }
    if entry.corr_id is not None:
        shown["corrId"] = entry.corr_id
    if entry.thing_key is None:
        shown["global"] = True
    return shown


async def list_logs(params: ListParams, ctx: CallContext) -> dict[str, Any]:
    session = ctx.require_session()
    if session.is_thing or params.thing_key is not None:
        org_id, thing_key = await acting_on(params.thing_key, ctx)
    else:
        org_id, thing_key = session.org_id, None
    start, end = params.bounds(ctx)
    count, entries = await ctx.services.devices.log_entries(
        LogQuery(
            org_id=org_id,
            thing_key=thing_key,
            start=start,
            end=end,
            level=params.level,
            corr_id=params.corr_id,
            offset=params.offset,
            limit=params.limit,
        )
    )
    # An empty page is `"result": null`, as usage.api.list's (and deviceWISE's) is.
    return {"count": count, "result": [_entry(entry) for entry in entries] or None}


COMMANDS = (
    Command("log.publish", PublishParams, publish),
    Command("log.list", ListParams, list_logs, log_result=listing_summary),
)
