"""The `location` service (SPEC §6, deviceWISE's IoT Portal API): location.publish,
location.batch, location.current and location.history (tenancy: `commands.things`).

deviceWISE also locates a thing from cell towers or Wi-Fi networks (`mcc`, `cells`, `wifi`...)
through a geolocation service; this gateway has none, so `lat` and `lng` are required. The
address fields are kept as the display text the device sent.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from commands.params import Timestamp
from commands.things import (
    BATCH_MAX_ENTRIES,
    SeriesWindow,
    ThingParam,
    acting_on,
    history_summary,
)
from gateway.core.buckets import format_utc
from gateway.core.context import CallContext
from gateway.core.errors import NotFound
from gateway.core.records import LocationValue
from gateway.core.registry import Command

__all__ = ["COMMANDS"]

_TEXT = 256
_Label = Annotated[str, Field(max_length=_TEXT)]


class Fix(BaseModel):
    """One location: where, how well, and the address the device shows."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=False)

    lat: float = Field(ge=-90, le=90, allow_inf_nan=False)
    lng: float = Field(ge=-180, le=180, allow_inf_nan=False)
    heading: float | None = Field(None, allow_inf_nan=False)
    altitude: float | None = Field(None, allow_inf_nan=False)
    speed: float | None = Field(None, allow_inf_nan=False)
    fix_acc: float | None = Field(None, alias="fixAcc", allow_inf_nan=False)
    fix_type: str | None = Field(None, alias="fixType", max_length=_TEXT)
    ts: Timestamp | None = None
    corr_id: str | None = Field(None, alias="corrId", max_length=_TEXT)
    street_number: str | None = Field(None, alias="streetNumber", max_length=_TEXT)
    street: str | None = Field(None, max_length=_TEXT)
    city: str | None = Field(None, max_length=_TEXT)
    state: str | None = Field(None, max_length=_TEXT)
    zip_code: str | None = Field(None, alias="zipCode", max_length=_TEXT)
    country: str | None = Field(None, max_length=_TEXT)
    # Sent by device-cloud-python (Wind River's client), null unless set; accepted, changes
    # nothing: every location is stored.
    debounce: bool | None = None


class PublishParams(ThingParam, Fix):
    pass


class BatchParams(ThingParam):
    ts: Timestamp | None = None
    corr_id: str | None = Field(None, alias="corrId", max_length=_TEXT)
    # device-cloud-python sends labels here ("location_batch", "Location Batch") beside its
    # entries; ignored (only the entries are locations).
    lat: _Label | float | None = None
    lng: _Label | float | None = None
    data: list[Fix] = Field(min_length=1, max_length=BATCH_MAX_ENTRIES)


class CurrentParams(ThingParam):
    pass


class HistoryParams(ThingParam, SeriesWindow):
    pass


def _value(
    org_id: str, thing_key: str, fix: Fix, ts: datetime, corr_id: str | None, ctx: CallContext
) -> LocationValue:
    return LocationValue(
        org_id=org_id,
        thing_key=thing_key,
        ts=ts,
        lat=fix.lat,
        lng=fix.lng,
        heading=fix.heading,
        altitude=fix.altitude,
        speed=fix.speed,
        fix_acc=fix.fix_acc,
        fix_type=fix.fix_type,
        corr_id=corr_id,
        street_number=fix.street_number,
        street=fix.street,
        city=fix.city,
        state=fix.state,
        zip_code=fix.zip_code,
        country=fix.country,
        received_at=ctx.received_at,
    )


# The optional fields a location object shows when they were published, in the wire's names
# (the params' aliases): heading ... fixType, streetNumber ... country.
_OPTIONAL = {
    name: field.alias or name
    for name, field in Fix.model_fields.items()
    if name not in ("lat", "lng", "ts", "corr_id", "debounce")
}


def shown(value: LocationValue) -> dict[str, Any]:
    """deviceWISE's location object: what was published, nothing invented."""
    shown: dict[str, Any] = {"lat": value.lat, "lng": value.lng}
    for name, wire in _OPTIONAL.items():
        if (item := getattr(value, name)) is not None:
            shown[wire] = item
    shown["ts"] = format_utc(value.ts)
    if value.corr_id is not None:
        shown["corrId"] = value.corr_id
    return shown


async def publish(params: PublishParams, ctx: CallContext) -> None:
    org_id, thing_key = await acting_on(params.thing_key, ctx)
    ts = params.ts or ctx.received_at
    ctx.services.devices.publish_locations(
        [_value(org_id, thing_key, params, ts, params.corr_id, ctx)]
    )


async def batch(params: BatchParams, ctx: CallContext) -> None:
    """Every entry is checked before any is stored (as property.batch)."""
    org_id, thing_key = await acting_on(params.thing_key, ctx)
    ctx.services.devices.publish_locations(
        [
            _value(
                org_id,
                thing_key,
                fix,
                fix.ts or params.ts or ctx.received_at,
                fix.corr_id if fix.corr_id is not None else params.corr_id,
                ctx,
            )
            for fix in params.data
        ]
    )


async def current(params: CurrentParams, ctx: CallContext) -> dict[str, Any]:
    org_id, thing_key = await acting_on(params.thing_key, ctx)
    values = await ctx.services.devices.location_history(
        org_id, thing_key, start=None, end=None, records=1
    )
    if not values:
        raise NotFound("not found: the thing has published no location")
    return shown(values[0])


async def history(params: HistoryParams, ctx: CallContext) -> dict[str, Any]:
    org_id, thing_key = await acting_on(params.thing_key, ctx)
    start, end = params.bounds(ctx)
    values = await ctx.services.devices.location_history(
        org_id, thing_key, start=start, end=end, records=params.records
    )
    return {"values": [shown(value) for value in values]}


COMMANDS = (
    Command("location.publish", PublishParams, publish),
    Command("location.batch", BatchParams, batch),
    Command("location.current", CurrentParams, current),
    Command("location.history", HistoryParams, history, log_result=history_summary),
)
