"""Attributes of a thing (SPEC §6, deviceWISE's IoT Portal API): attribute.publish and
thing.attr.set, thing.attr.get, thing.attr.unset (tenancy: `commands.things`).

An attribute is a string with a history of settings; its value is the setting with the latest
`ts`. As on deviceWISE, a setting that repeats the current value and correlation id is not
stored unless `republish` is true; `attribute.publish` with `"value": null` unsets, like
`thing.attr.unset`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from commands.params import Timestamp
from commands.things import KEY, ThingParam, acting_on
from gateway.core.buckets import format_utc
from gateway.core.context import CallContext
from gateway.core.errors import NotFound
from gateway.core.records import AttributeValue
from gateway.core.registry import Command

__all__ = ["COMMANDS"]

_VALUE_MAX = 4096


class GetParams(ThingParam):
    key: str = KEY


class UnsetParams(ThingParam):
    key: str = KEY


class SetParams(ThingParam):
    key: str = KEY
    value: str = Field(max_length=_VALUE_MAX)
    republish: bool = False
    corr_id: str | None = Field(None, alias="corrId", max_length=256)


class PublishParams(ThingParam):
    key: str = KEY
    value: str | None = Field(max_length=_VALUE_MAX)
    ts: Timestamp | None = None
    republish: bool = False
    corr_id: str | None = Field(None, alias="corrId", max_length=256)


async def _store(
    ctx: CallContext,
    thing_key: str | None,
    key: str,
    value: str | None,
    *,
    ts: datetime | None = None,
    corr_id: str | None = None,
    republish: bool = False,
) -> None:
    org_id, thing = await acting_on(thing_key, ctx)
    devices = ctx.services.devices
    setting = AttributeValue(
        org_id=org_id,
        thing_key=thing,
        key=key,
        ts=ts or ctx.received_at,
        value=value,
        corr_id=corr_id,
        received_at=ctx.received_at,
    )
    if not republish:
        current = await devices.attribute_current(org_id, thing, key)
        repeats = (current is None and value is None) or (
            current is not None
            and current.value == value
            and current.corr_id == corr_id
            and setting.ts >= current.ts
        )
        if repeats:
            return
    devices.publish_attributes([setting])


async def publish(params: PublishParams, ctx: CallContext) -> None:
    await _store(
        ctx,
        params.thing_key,
        params.key,
        params.value,
        ts=params.ts,
        corr_id=params.corr_id,
        republish=params.republish,
    )


async def attr_set(params: SetParams, ctx: CallContext) -> None:
    await _store(
        ctx,
        params.thing_key,
        params.key,
        params.value,
        corr_id=params.corr_id,
        republish=params.republish,
    )


async def attr_unset(params: UnsetParams, ctx: CallContext) -> None:
    await _store(ctx, params.thing_key, params.key, None)


async def attr_get(params: GetParams, ctx: CallContext) -> dict[str, Any]:
    org_id, thing = await acting_on(params.thing_key, ctx)
    current = await ctx.services.devices.attribute_current(org_id, thing, params.key)
    if current is None or current.value is None:
        raise NotFound(f"not found: attribute {params.key[:64]!r} is not set")
    return {"value": current.value, "ts": format_utc(current.ts)}


COMMANDS = (
    Command("attribute.publish", PublishParams, publish),
    Command("thing.attr.set", SetParams, attr_set),
    Command("thing.attr.get", GetParams, attr_get),
    Command("thing.attr.unset", UnsetParams, attr_unset),
)
