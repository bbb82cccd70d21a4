"""The `usage` service: usage.api.list over the usage log, with the tenancy rules of SPEC §2."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from commands.timeparse import Duration, Timestamp
from gateway.context import CallContext
from gateway.errors import PermissionDenied
from gateway.registry import Command
from storage.usage import UsageFilter

__all__ = ["COMMANDS", "ListApiUsageParams", "list_api_usage", "scoped_filter"]


class WindowParams(BaseModel):
    """The filters shared by every usage command: who, what, when, and whose org."""

    model_config = ConfigDict(extra="forbid", strict=True)

    who: str | None = Field(None, min_length=1, max_length=320)
    service: str | None = Field(None, min_length=1, max_length=200)
    command: str | None = Field(None, min_length=1, max_length=200)
    show_all: bool = Field(False, alias="showAll")
    last: Duration | None = None
    start: Timestamp | None = None
    end: Timestamp | None = None
    has_failure: bool = Field(False, alias="hasFailure")
    search_text: str | None = Field(None, alias="searchText", min_length=1, max_length=200)
    remote_addr: str | None = Field(None, alias="remoteAddr", min_length=1, max_length=100)
    client_id: str | None = Field(None, alias="clientId", min_length=1, max_length=300)
    transport: Literal["mqtt", "ws", "http"] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> WindowParams:
        if self.command is not None and self.service is None:
            raise ValueError("command requires service")
        if self.last is not None and (self.start is not None or self.end is not None):
            raise ValueError("give either last or start/end, not both")
        if self.end is not None and self.start is None:
            raise ValueError("end requires start")
        if self.start is not None and self.end is not None and self.end < self.start:
            raise ValueError("end is before start")
        return self


class ListApiUsageParams(WindowParams):
    offset: int = Field(0, ge=0, le=10_000_000)
    limit: int = Field(100, ge=1, le=2000)


def scoped_filter(params: WindowParams, ctx: CallContext) -> UsageFilter:
    """The filter a session may run: its org (or all, for Super-Ops), its own calls for a thing."""
    session = ctx.require_session()
    if params.show_all and not session.has_super_ops:
        raise PermissionDenied("permission denied: showAll needs Super-Ops")
    start, end = params.start, params.end
    if params.last is not None:
        end = ctx.services.clock()
        start = end - params.last
    return UsageFilter(
        org_id=None if params.show_all else session.org_id,
        caller=session.whoami if session.is_thing else None,
        whoami=params.who,
        service=params.service,
        command=params.command,
        start=start,
        end=end,
        failed_only=params.has_failure,
        search_text=params.search_text,
        remote_addr=params.remote_addr,
        client_id=params.client_id,
        transport=params.transport,
    )


async def list_api_usage(params: ListApiUsageParams, ctx: CallContext) -> dict[str, Any]:
    usage_filter = scoped_filter(params, ctx)
    usage = ctx.services.usage
    await usage.wait_visible()
    count, records = await usage.list(usage_filter, offset=params.offset, limit=params.limit)
    return {"count": count, "result": records or None}


def listing_summary(result: dict[str, Any]) -> dict[str, Any]:
    """What the usage log keeps of a listing: how many matched and how many were returned."""
    return {"count": result["count"], "returned": len(result["result"] or ())}


COMMANDS = [
    Command("usage.api.list", ListApiUsageParams, list_api_usage, log_result=listing_summary),
]
