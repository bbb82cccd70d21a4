"""Usage analytics commands (`usage.api.activity`, `.times`, `.statuses`, `.breakdown`,
`.endpoints`, `.history`, `.get`): the tenancy and filters of usage.api.list, bucketed in a zone."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from commands import presenters
from commands.params import RECORD_ID, PageParams, WindowParams, bucket_plan, scoped_filter
from gateway.core.buckets import BucketPlan
from gateway.core.context import CallContext
from gateway.core.errors import InvalidParams, NotFound
from gateway.core.records import UsageFilter, UsageRecord
from gateway.core.registry import Command

__all__ = ["COMMANDS", "find_record", "planned_filter"]

DEFAULT_WINDOW = timedelta(hours=24)
Interval = Literal["year", "quarter", "month", "week", "day", "hour", "minute", "second"]


class AnalyticsParams(WindowParams):
    interval: Interval | None = None
    timezone: str = Field("UTC", min_length=1, max_length=64)


class BreakdownParams(AnalyticsParams):
    by: Literal["service", "command", "who", "org"]
    top: int = Field(10, ge=1, le=100)


class HistoryParams(WindowParams):
    series: Literal["hour", "day"] = "day"
    dimension: Literal["service", "org"] = "service"
    timezone: str = Field("UTC", min_length=1, max_length=64)


class EndpointsParams(PageParams):
    pass


class GetParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    id: str = Field(min_length=1, max_length=64)
    show_all: bool = Field(False, alias="showAll")


def _window(params: WindowParams, ctx: CallContext) -> UsageFilter:
    """The scoped filter, with the default window (the last 24 hours) when none was given."""
    if params.last is None and params.start is None:
        params = params.model_copy(update={"last": DEFAULT_WINDOW})
    return scoped_filter(params, ctx)


async def planned_filter(
    params: WindowParams, ctx: CallContext, interval: str | None, timezone: str
) -> tuple[UsageFilter, BucketPlan]:
    usage_filter = _window(params, ctx)
    start, end = usage_filter.start, usage_filter.end or ctx.services.clock()
    assert start is not None  # _window always sets one
    plan = await bucket_plan(start, end, interval, timezone)
    # The filter's end is explicit, so the buckets and the rows counted in them always agree.
    return replace(usage_filter, end=end), plan


async def activity(params: AnalyticsParams, ctx: CallContext) -> dict[str, Any]:
    usage_filter, plan = await planned_filter(params, ctx, params.interval, params.timezone)
    return presenters.activity(plan, await ctx.services.analytics.activity(usage_filter, plan))


async def times(params: AnalyticsParams, ctx: CallContext) -> dict[str, Any]:
    usage_filter, plan = await planned_filter(params, ctx, params.interval, params.timezone)
    return presenters.times(plan, await ctx.services.analytics.times(usage_filter, plan))


async def statuses(params: AnalyticsParams, ctx: CallContext) -> dict[str, Any]:
    usage_filter, plan = await planned_filter(params, ctx, params.interval, params.timezone)
    return presenters.statuses(plan, await ctx.services.analytics.statuses(usage_filter, plan))


async def breakdown(params: BreakdownParams, ctx: CallContext) -> dict[str, Any]:
    usage_filter, plan = await planned_filter(params, ctx, params.interval, params.timezone)
    keyed = await ctx.services.analytics.by_key(usage_filter, plan, params.by, params.top)
    return presenters.breakdown(plan, params.by, keyed)


async def history(params: HistoryParams, ctx: CallContext) -> dict[str, Any]:
    usage_filter, plan = await planned_filter(params, ctx, params.series, params.timezone)
    keyed = await ctx.services.analytics.by_key(usage_filter, plan, params.dimension, None)
    return presenters.history(plan, keyed)


async def endpoints(params: EndpointsParams, ctx: CallContext) -> dict[str, Any]:
    usage_filter = _window(params, ctx)
    page = await ctx.services.analytics.endpoints(
        usage_filter, offset=params.offset, limit=params.limit
    )
    return presenters.endpoints(page, params.limit)


async def find_record(ctx: CallContext, record_id: str, *, show_all: bool) -> UsageRecord:
    """The record with that id the session may see (NotFound otherwise: another org's record
    is not found either); the id must be a UUID."""
    usage_filter = scoped_filter(WindowParams(showAll=show_all), ctx)
    record = await ctx.services.reader.get(usage_filter, record_id)
    if record is None:
        raise NotFound("not found: no usage record with that id")
    return record


async def get(params: GetParams, ctx: CallContext) -> dict[str, Any]:
    if not RECORD_ID.fullmatch(params.id):
        raise InvalidParams("invalid params: id must be a record id (a UUID)")
    return presenters.usage_record(await find_record(ctx, params.id, show_all=params.show_all))


def _buckets_summary(result: dict[str, Any]) -> dict[str, Any]:
    """What the usage log keeps of an analytics reply: its shape, not its series."""
    summary: dict[str, Any] = {
        key: result[key] for key in ("interval", "timezone", "by") if key in result
    }
    summary["buckets"] = len(result.get("result") or result.get("ts") or ())
    return summary


def _record_summary(result: dict[str, Any]) -> dict[str, Any]:
    return {"id": result["id"]}


COMMANDS = (
    Command("usage.api.activity", AnalyticsParams, activity, log_result=_buckets_summary),
    Command("usage.api.times", AnalyticsParams, times, log_result=_buckets_summary),
    Command("usage.api.statuses", AnalyticsParams, statuses, log_result=_buckets_summary),
    Command("usage.api.breakdown", BreakdownParams, breakdown, log_result=_buckets_summary),
    Command("usage.api.history", HistoryParams, history, log_result=_buckets_summary),
    Command(
        "usage.api.endpoints", EndpointsParams, endpoints, log_result=presenters.listing_summary
    ),
    Command("usage.api.get", GetParams, get, log_result=_record_summary),
)
