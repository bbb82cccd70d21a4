"""The `usage` service's raw log: usage.api.list, with the tenancy rules of SPEC §2."""

from __future__ import annotations

from typing import Any

from commands import presenters
from commands.params import PageParams, scoped_filter
from gateway.core.context import CallContext
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


COMMANDS = (
    Command(
        "usage.api.list", ListApiUsageParams, list_api_usage, log_result=presenters.listing_summary
    ),
)
