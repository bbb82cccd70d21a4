"""The `usage` service's raw log: usage.api.list, with the tenancy rules of SPEC §2, and its
live tail (SPEC §7.2): usage.api.subscribe and usage.api.unsubscribe."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from commands import presenters
from commands.params import PageParams, WindowParams, scoped_filter
from gateway.core.context import CallContext
from gateway.core.errors import InvalidParams, RateLimited
from gateway.core.registry import Command

__all__ = ["COMMANDS", "ListApiUsageParams", "list_api_usage"]


class ListApiUsageParams(PageParams):
    """`usage.api.list`'s params: the usage filters and a page (SPEC §3)."""


async def list_api_usage(params: ListApiUsageParams, ctx: CallContext) -> dict[str, Any]:
    usage_filter = scoped_filter(params, ctx)
    count, records = await ctx.services.reader.list(
        usage_filter, offset=params.offset, limit=params.limit
    )
    return presenters.listing(count, records)


class SubscribeParams(WindowParams):
    """The listing's filters; a time window means nothing to what has not happened yet."""

    @model_validator(mode="after")
    def _no_window(self) -> SubscribeParams:
        if self.last is not None or self.start is not None:
            raise ValueError("a live tail takes no last, start or end")
        return self


async def subscribe(params: SubscribeParams, ctx: CallContext) -> dict[str, str]:
    push = ctx.connection.push
    if push is None:
        raise InvalidParams(
            "invalid params: a live tail needs a WebSocket connection to push records on"
        )
    usage_filter = scoped_filter(params, ctx)
    subscription = ctx.services.tail.subscribe(ctx.connection, usage_filter, push)
    if subscription is None:
        raise RateLimited("rate limited: this connection holds the most live tails it may")
    return {"subscriptionId": subscription}


class UnsubscribeParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    subscription_id: str | None = Field(None, alias="subscriptionId", min_length=1, max_length=64)


async def unsubscribe(params: UnsubscribeParams, ctx: CallContext) -> dict[str, int]:
    """End one of this connection's live tails, or all of them without `subscriptionId`."""
    return {"ended": ctx.services.tail.unsubscribe(ctx.connection, params.subscription_id)}


COMMANDS = (
    Command(
        "usage.api.list", ListApiUsageParams, list_api_usage, log_result=presenters.listing_summary
    ),
    Command("usage.api.subscribe", SubscribeParams, subscribe),
    Command("usage.api.unsubscribe", UnsubscribeParams, unsubscribe),
)
