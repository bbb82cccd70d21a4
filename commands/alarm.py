"""The `alarm` service (SPEC §6, deviceWISE's IoT Portal API): alarm.publish, alarm.batch,
alarm.current and alarm.history (tenancy: `commands.things`).

As on deviceWISE, a publish that repeats the alarm's current state is not stored unless
`republish` is true, when it is the newest (its `ts` is not older than the current one's).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from commands.params import Timestamp
from commands.things import (
    BATCH_MAX_ENTRIES,
    KEY,
    SeriesWindow,
    ThingParam,
    acting_on,
    history_summary,
)
from gateway.core.buckets import format_utc
from gateway.core.context import CallContext
from gateway.core.errors import InvalidParams, NotFound
from gateway.core.records import AlarmValue
from gateway.core.registry import Command

__all__ = ["COMMANDS"]


class AlarmState(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    state: int = Field(ge=-(2**31), le=2**31 - 1)
    msg: str | None = Field(None, max_length=4096)
    ts: Timestamp | None = None
    corr_id: str | None = Field(None, alias="corrId", max_length=256)
    lat: float | None = Field(None, ge=-90, le=90, allow_inf_nan=False)
    lng: float | None = Field(None, ge=-180, le=180, allow_inf_nan=False)


class PublishParams(ThingParam, AlarmState):
    key: str = KEY
    republish: bool = False


class BatchEntry(AlarmState):
    key: str | None = Field(None, min_length=1, max_length=256)
    # The batch's `republish` unless given (device-cloud-python sends it with every entry).
    republish: bool | None = None


class BatchParams(ThingParam):
    key: str | None = Field(None, min_length=1, max_length=256)
    ts: Timestamp | None = None
    corr_id: str | None = Field(None, alias="corrId", max_length=256)
    republish: bool = False
    # device-cloud-python (Wind River's client) sends `state: 0` beside its entries; ignored.
    state: int | None = Field(None, ge=-(2**31), le=2**31 - 1)
    data: list[BatchEntry] = Field(min_length=1, max_length=BATCH_MAX_ENTRIES)


class CurrentParams(ThingParam):
    key: str = KEY
    ts: Timestamp | None = None


class HistoryParams(ThingParam, SeriesWindow):
    key: str = KEY


def shown(value: AlarmValue) -> dict[str, Any]:
    shown: dict[str, Any] = {"state": value.state, "ts": format_utc(value.ts)}
    for wire, item in (("msg", value.msg), ("corrId", value.corr_id), ("lat", value.lat),
                       ("lng", value.lng)):  # fmt: skip
        if item is not None:
            shown[wire] = item
    return shown


def _value(
    org_id: str, thing_key: str, key: str, entry: AlarmState, ts: datetime,
    corr_id: str | None, ctx: CallContext,
) -> AlarmValue:  # fmt: skip
    return AlarmValue(
        org_id=org_id,
        thing_key=thing_key,
        key=key,
        ts=ts,
        state=entry.state,
        msg=entry.msg,
        corr_id=corr_id,
        lat=entry.lat,
        lng=entry.lng,
        received_at=ctx.received_at,
    )


async def _store(values: list[tuple[AlarmValue, bool]], ctx: CallContext) -> None:
    """Store the states, leaving out each one that would only repeat the alarm's newest state
    unless it is to be republished (its flag)."""
    if all(republish for _, republish in values):
        ctx.services.devices.publish_alarms([value for value, _ in values])
        return  # no history to read
    kept: list[AlarmValue] = []
    newest: dict[str, AlarmValue | None] = {}
    for value, republish in sorted(values, key=lambda item: item[0].ts):
        if value.key not in newest:
            found = await ctx.services.devices.alarm_history(
                value.org_id, value.thing_key, value.key, start=None, end=None, records=1
            )
            newest[value.key] = found[0] if found else None
        current = newest[value.key]
        repeats = current is not None and current.state == value.state and value.ts >= current.ts
        if repeats and not republish:
            continue
        kept.append(value)
        if current is None or value.ts >= current.ts:
            newest[value.key] = value
    if kept:
        ctx.services.devices.publish_alarms(kept)


async def publish(params: PublishParams, ctx: CallContext) -> None:
    org_id, thing_key = await acting_on(params.thing_key, ctx)
    value = _value(
        org_id, thing_key, params.key, params, params.ts or ctx.received_at, params.corr_id, ctx
    )
    await _store([(value, params.republish)], ctx)


async def batch(params: BatchParams, ctx: CallContext) -> None:
    """Every entry is checked before any is stored (as property.batch)."""
    org_id, thing_key = await acting_on(params.thing_key, ctx)
    values = []
    for index, entry in enumerate(params.data):
        key = entry.key or params.key
        if key is None:
            raise InvalidParams(f"invalid params: data.{index} has no key and the batch gives none")
        corr_id = entry.corr_id if entry.corr_id is not None else params.corr_id
        ts = entry.ts or params.ts or ctx.received_at
        republish = params.republish if entry.republish is None else entry.republish
        values.append((_value(org_id, thing_key, key, entry, ts, corr_id, ctx), republish))
    await _store(values, ctx)


async def current(params: CurrentParams, ctx: CallContext) -> dict[str, Any]:
    org_id, thing_key = await acting_on(params.thing_key, ctx)
    values = await ctx.services.devices.alarm_history(
        org_id, thing_key, params.key, start=None, end=params.ts, records=1
    )
    if not values:
        raise NotFound(f"not found: no state of alarm {params.key[:64]!r}")
    return shown(values[0])


async def history(params: HistoryParams, ctx: CallContext) -> dict[str, Any]:
    org_id, thing_key = await acting_on(params.thing_key, ctx)
    start, end = params.bounds(ctx)
    values = await ctx.services.devices.alarm_history(
        org_id, thing_key, params.key, start=start, end=end, records=params.records
    )
    return {"values": [shown(value) for value in values]}


COMMANDS = (
    Command("alarm.publish", PublishParams, publish),
    Command("alarm.batch", BatchParams, batch),
    Command("alarm.current", CurrentParams, current),
    Command("alarm.history", HistoryParams, history, log_result=history_summary),
)
