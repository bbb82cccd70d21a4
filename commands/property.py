"""The `property` service (SPEC §6, deviceWISE's IoT Portal API): property.publish,
property.batch, property.current and property.history (tenancy: `commands.things`)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from commands.params import Timestamp, bucket_plan
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
from gateway.core.errors import NotFound
from gateway.core.records import PropertyValue
from gateway.core.registry import Command

__all__ = ["COMMANDS"]


class ThingParams(ThingParam):
    key: str = KEY


class PublishParams(ThingParams):
    value: float = Field(allow_inf_nan=False)
    ts: Timestamp | None = None
    corr_id: str | None = Field(None, alias="corrId", max_length=256)
    # deviceWISE aggregates published values into hourly statistics when set; here every value
    # is kept and property.aggregate (a later step) computes statistics at read time.
    aggregate: bool | None = None


class BatchEntry(BaseModel):
    """One value of a batch; `key`, `ts` and `corrId` default to the batch's own."""

    model_config = ConfigDict(extra="forbid", strict=True)

    key: str | None = Field(None, min_length=1, max_length=256)
    value: float = Field(allow_inf_nan=False)
    ts: Timestamp | None = None
    corr_id: str | None = Field(None, alias="corrId", max_length=256)
    # device-cloud-python (Wind River's client) spells an entry's corrId `corrid` and sends it
    # always, null when unset: taken as the entry's corrId when `corrId` is absent.
    corrid: str | None = Field(None, max_length=256)

    @property
    def own_corr_id(self) -> str | None:
        return self.corr_id if self.corr_id is not None else self.corrid


class BatchParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    thing_key: str | None = Field(None, alias="thingKey", min_length=1, max_length=256)
    key: str | None = Field(None, min_length=1, max_length=256)
    ts: Timestamp | None = None
    corr_id: str | None = Field(None, alias="corrId", max_length=256)
    aggregate: bool | None = None
    # device-cloud-python sends a label here ("Property Batch"); ignored, as deviceWISE must
    # have ignored it for that client to work.
    value: str | None = Field(None, max_length=256)
    data: list[BatchEntry] = Field(min_length=1, max_length=BATCH_MAX_ENTRIES)

    @model_validator(mode="after")
    def _keys(self) -> BatchParams:
        if self.key is None:
            for index, entry in enumerate(self.data):
                if entry.key is None:
                    raise ValueError(f"data.{index} has no key and the batch gives none")
        return self


class AggregateParams(ThingParams, SeriesWindow):
    calc: Literal["avg", "sum", "min", "max", "count"]
    series: Literal["hour", "day"]
    timezone: str = Field("UTC", min_length=1, max_length=64)
    split: bool = False


class CurrentParams(ThingParams):
    ts: Timestamp | None = None


class HistoryParams(ThingParams, SeriesWindow):
    split: bool = False


def _value(value: PropertyValue) -> dict[str, Any]:
    shown: dict[str, Any] = {"value": value.value, "ts": format_utc(value.ts)}
    if value.corr_id is not None:
        shown["corrId"] = value.corr_id
    return shown


async def publish(params: PublishParams, ctx: CallContext) -> None:
    org_id, thing_key = await acting_on(params.thing_key, ctx)
    ctx.services.devices.publish(
        [
            PropertyValue(
                org_id=org_id,
                thing_key=thing_key,
                key=params.key,
                ts=params.ts or ctx.received_at,
                value=params.value,
                corr_id=params.corr_id,
                received_at=ctx.received_at,
            )
        ]
    )


async def batch(params: BatchParams, ctx: CallContext) -> None:
    """Every entry is validated before any is stored: a batch with a bad entry stores nothing
    and its -90002 names the entry (deviceWISE stores the entries before the bad one)."""
    org_id, thing_key = await acting_on(params.thing_key, ctx)
    ctx.services.devices.publish(
        [
            PropertyValue(
                org_id=org_id,
                thing_key=thing_key,
                key=entry.key or params.key or "",
                ts=entry.ts or params.ts or ctx.received_at,
                value=entry.value,
                corr_id=entry.own_corr_id if entry.own_corr_id is not None else params.corr_id,
                received_at=ctx.received_at,
            )
            for entry in params.data
        ]
    )


async def current(params: CurrentParams, ctx: CallContext) -> dict[str, Any]:
    org_id, thing_key = await acting_on(params.thing_key, ctx)
    value = await ctx.services.devices.current(org_id, thing_key, params.key, params.ts)
    if value is None:
        raise NotFound(f"not found: no value of property {params.key[:64]!r}")
    return _value(value)


async def history(params: HistoryParams, ctx: CallContext) -> dict[str, Any]:
    org_id, thing_key = await acting_on(params.thing_key, ctx)
    start, end = params.bounds(ctx)
    values = await ctx.services.devices.history(
        org_id, thing_key, params.key, start=start, end=end, records=params.records
    )
    if params.split:
        return {
            "values": [value.value for value in values],
            "timestamps": [format_utc(value.ts) for value in values],
        }
    return {"values": [_value(value) for value in values]}


async def aggregate(params: AggregateParams, ctx: CallContext) -> dict[str, Any]:
    """One value per `series` bucket (in `timezone`, as the usage analytics bucket) that holds
    values, oldest first; by default over the last 24 hours."""
    org_id, thing_key = await acting_on(params.thing_key, ctx)
    start, end = params.bounds(ctx)
    end = end or ctx.services.clock()
    start = start or end - timedelta(hours=24)
    plan = await bucket_plan(start, end, params.series, params.timezone)
    results = await ctx.services.devices.property_aggregate(
        org_id, thing_key, params.key, plan, params.calc, end
    )
    pairs = [(label, value) for label, value in zip(plan.labels, results, strict=True)
             if value is not None]  # fmt: skip
    if params.split:
        return {"values": [value for _, value in pairs], "timestamps": [ts for ts, _ in pairs]}
    return {"values": [{"value": value, "ts": ts} for ts, value in pairs]}


COMMANDS = (
    Command("property.publish", PublishParams, publish),
    Command("property.batch", BatchParams, batch),
    Command("property.current", CurrentParams, current),
    Command("property.history", HistoryParams, history, log_result=history_summary),
    Command("property.aggregate", AggregateParams, aggregate, log_result=history_summary),
)
